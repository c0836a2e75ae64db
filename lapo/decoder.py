"""k-shot action head: latent action -> real action, fitted on k labeled transitions; and the one
place where network outputs become actions of a gymnasium space (:class:`ActionCoding`).

LAPO §3.3 (offline decoding): a small network maps latent actions to true actions; composed with
the latent policy it turns predicted latents into actions. Two choices of the head's input for the
k labeled transitions (``head_input``):

- ``"policy"`` (default): the latent policy's prediction ``π(o_t)``, i.e. exactly what the head sees
  when the agent acts. Measured on CoinRun in a small run (250k-step demonstrator, 50k frames,
  1,000 LAM steps, k=256): mean return 6.1 vs 3.8 for ``"idm"`` (demonstrator 6.4, random 2.8;
  100 unseen levels each). At quickstart scale (3,000 LAM steps, 100k frames, seeds 0/1/2):
  0.74/0.71/0.81 normalized return vs 0.80/0.59/0.09 for ``"idm"`` (``docs/quickstart_history.md``);
  with the current recipe 0.74 vs 0.53, mean of 3 seeds (README, Results).
- ``"idm"``: the IDM's latent of the transition (LAPO's decoder), which the policy's predictions
  ``E[z | o_t]`` only approximate.

Action spaces (:class:`ActionCoding`): ``Discrete(n)`` -> n logits, cross-entropy, categorical
sampling. ``Box`` -> either RT-1-style discretization (RT-1, Brohan et al. 2022, §3: each dimension
in 256 uniform bins within its bounds, cross-entropy per dimension, bin centres decoded) or
regression (MSE, outputs clipped to the bounds).

Dimension keys: B batch, L latent dim, A logits/outputs, D action dims, K bins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from envs.pretrained import Pretrained

CONTINUOUS = ("bins", "regression")


@dataclass
class ActionCoding:
    """How network outputs map to actions of a space, and the loss that trains them.

    Attributes:
        space: the action space as :func:`envs.dataset.space_to_json` writes it.
        continuous: for ``Box``: ``bins`` (RT-1 per-dimension discretization) or ``regression``.
        bins: K bins per dimension (``bins`` only).

    Raises:
        ValueError: an unknown space type or ``continuous`` mode, a Box without finite bounds for
            ``bins``, or ``bins < 2``.
    """

    space: dict
    continuous: str = "bins"
    bins: int = 256

    def __post_init__(self):
        if self.space.get("type") not in ("Discrete", "Box"):
            raise ValueError(f"action space {self.space} is not supported: use Discrete or Box")
        if self.continuous not in CONTINUOUS:
            raise ValueError(f"continuous {self.continuous!r}: choose one of {', '.join(CONTINUOUS)}")
        if self.is_box and self.continuous == "bins":
            if self.bins < 2:
                raise ValueError(f"bins must be >= 2, got {self.bins}")
            if not np.all(np.isfinite(self.low) & np.isfinite(self.high)):
                raise ValueError("RT-1 bins need finite action bounds; use continuous='regression' for an "
                                 f"unbounded Box (low {self.space['low']}, high {self.space['high']})")

    @property
    def is_box(self) -> bool:
        return self.space["type"] == "Box"

    @property
    def dims(self) -> int:
        """D action dims (Box) or 1 (Discrete)."""
        return int(np.prod(self.space["shape"])) if self.is_box else 1

    @property
    def low(self) -> np.ndarray:
        return np.asarray(self.space["low"], np.float32)

    @property
    def high(self) -> np.ndarray:
        return np.asarray(self.space["high"], np.float32)

    @property
    def out_dim(self) -> int:
        """Network outputs A: n logits, D * K bin logits, or D values."""
        if not self.is_box:
            return int(self.space["n"])
        return self.dims * (self.bins if self.continuous == "bins" else 1)

    def describe(self) -> str:
        """The space in words, e.g. ``Discrete(15)`` or ``Box(4,)``."""
        return f"Box({', '.join(map(str, self.space['shape']))},)" if self.is_box else f"Discrete({self.space['n']})"

    def check_actions(self, actions) -> None:
        """Raise ``ValueError`` when ``actions`` cannot belong to this space: a Discrete space needs
        ``(k,)`` integers in ``[0, n)``; a Box ``(k, D)`` (or ``(k,)`` for D = 1) floats."""
        a = np.asarray(actions)
        if not self.is_box:
            if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer) or (len(a) and (a.min() < 0 or a.max() >= self.space["n"])):
                raise ValueError(f"actions of shape {a.shape} and dtype {a.dtype} do not belong to the head's "
                                 f"{self.describe()} action space: continuous actions need a head for a Box space "
                                 "(fit it on the dataset whose actions these are)")
        elif np.issubdtype(a.dtype, np.integer) or a.reshape(len(a), -1).shape[1] != self.dims:
            raise ValueError(f"actions of shape {a.shape} and dtype {a.dtype} do not belong to the head's "
                             f"{self.describe()} action space: discrete actions need a head for a Discrete space "
                             "(fit it on the dataset whose actions these are)")

    def require(self, space, where: str) -> None:
        """Raise ``ValueError`` unless this coding's space is ``space`` (gymnasium space or JSON),
        e.g. an agent evaluated in an environment of another action space."""
        from envs.dataset import space_to_json

        spec = space if isinstance(space, dict) else space_to_json(space)
        if (spec["type"], spec.get("n"), list(spec.get("shape") or [])) != (
                self.space["type"], self.space.get("n"), list(self.space.get("shape") or [])):
            other = ActionCoding(spec, "regression")
            raise ValueError(f"this agent outputs {self.describe()} actions but {where} takes {other.describe()}: "
                             "use an agent trained on that domain's video")

    def bin_of(self, actions_BD: torch.Tensor) -> torch.Tensor:
        """(B, D) float actions -> (B, D) int64 bin indices (values outside the bounds go to the edge bins)."""
        low, high = torch.as_tensor(self.low), torch.as_tensor(self.high)
        u = (actions_BD.float().cpu() - low) / (high - low)
        return (u * self.bins).floor().clamp(0, self.bins - 1).long().to(actions_BD.device)

    def loss(self, out_BA: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Mean loss of outputs ``(B, A)`` against true actions ``(B,)`` int or ``(B, D)`` float."""
        out_BA = out_BA.float()
        if not self.is_box:
            return F.cross_entropy(out_BA, actions.long())
        if self.continuous == "regression":
            return F.mse_loss(out_BA, actions.float().view(len(out_BA), -1))
        logits = out_BA.view(len(out_BA), self.dims, self.bins)  # (B, D, K)
        return F.cross_entropy(logits.transpose(1, 2), self.bin_of(actions.view(len(out_BA), -1)))

    def decode(self, out_BA: torch.Tensor, deterministic: bool = False) -> np.ndarray:
        """Actions from outputs ``(B, A)``: ``(B,)`` int64 (Discrete) or ``(B, D)`` float32 within the
        bounds (Box). Sampled from the categorical(s) unless ``deterministic`` (regression is always
        deterministic)."""
        out_BA = out_BA.detach().float()
        if not self.is_box:
            if deterministic:
                return out_BA.argmax(-1).cpu().numpy().astype(np.int64)
            return torch.distributions.Categorical(logits=out_BA).sample().cpu().numpy().astype(np.int64)
        if self.continuous == "regression":
            return np.clip(out_BA.cpu().numpy(), self.low, self.high).astype(np.float32)
        logits = out_BA.view(len(out_BA), self.dims, self.bins)
        idx = logits.argmax(-1) if deterministic else torch.distributions.Categorical(logits=logits).sample()
        width = (self.high - self.low) / self.bins
        return (self.low + (idx.cpu().numpy() + 0.5) * width).astype(np.float32)  # bin centres


@dataclass
class ActionHeadConfig:
    """Architecture and fitting of the action head, and how continuous actions are decoded."""

    latent_dim: int = 8
    """L, input latent dims (taken from the LAM)."""
    hidden: int = 128
    """MLP hidden width (0 = linear head)."""
    steps: int = 500
    """Full-batch AdamW steps when fitting (the frozen k-label budget, :data:`lapo.baselines.K_LABEL_STEPS`)."""
    lr: float = 3e-3
    """AdamW learning rate (constant)."""
    weight_decay: float = 1e-3
    """AdamW weight decay (k is small: regularize)."""
    continuous: str = "bins"
    """``Box`` actions: ``bins`` (RT-1: 256 uniform bins per dimension, cross-entropy, bin centres) or
    ``regression`` (MSE). Ignored for ``Discrete``."""
    bins: int = 256
    """Bins per action dimension for ``continuous=bins``."""

    def __post_init__(self):
        for name in ("latent_dim", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.continuous not in CONTINUOUS:
            raise ValueError(f"continuous {self.continuous!r}: choose one of {', '.join(CONTINUOUS)}")

    def coding(self, space: dict) -> ActionCoding:
        """The :class:`ActionCoding` of ``space`` with this config's continuous mode."""
        return ActionCoding(space, self.continuous, self.bins)


def legacy_head_config(config: dict) -> tuple[dict, dict]:
    """``(head config, action space)`` from a head config written before action spaces existed
    (``n_actions`` + ``discrete`` fields): Discrete(n) or an unbounded Box regressed with MSE."""
    config = dict(config)
    n, discrete = config.pop("n_actions"), config.pop("discrete", True)
    if discrete:
        return config, {"type": "Discrete", "n": n}
    config["continuous"] = "regression"
    return config, {"type": "Box", "low": [-np.inf] * n, "high": [np.inf] * n, "shape": [n]}


class ActionHead(Pretrained, nn.Module):
    """MLP ``(B, L)`` float latent -> ``(B, A)`` outputs that ``coding`` turns into actions.
    Saved as kind ``action_head`` (config: head config + action coding)."""

    kind = "action_head"

    def __init__(self, cfg: ActionHeadConfig, coding: ActionCoding):
        super().__init__()
        self.cfg, self.coding = cfg, coding
        out = coding.out_dim
        if cfg.hidden:
            self.net = nn.Sequential(nn.Linear(cfg.latent_dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, out))
        else:
            self.net = nn.Linear(cfg.latent_dim, out)

    def forward(self, z_BL: torch.Tensor) -> torch.Tensor:
        return self.net(z_BL)

    def to_config(self) -> dict:
        return {"head": self.cfg, "coding": self.coding}

    @classmethod
    def from_config(cls, config: dict) -> "ActionHead":
        if "head" not in config:  # a bare ActionHeadConfig of an older version
            config, space = legacy_head_config(config)
            head_cfg = ActionHeadConfig(**config)
            return cls(head_cfg, head_cfg.coding(space))
        return cls(ActionHeadConfig(**config["head"]), ActionCoding(**config["coding"]))


def fit_action_head(latents_kL: np.ndarray, actions_k: np.ndarray, cfg: ActionHeadConfig, space: dict,
                    seed: int = 0, device: str | torch.device = "cpu") -> ActionHead:
    """Fit an :class:`ActionHead` on k labeled transitions (full batch, the shared trainer).

    Args:
        latents_kL: (k, L) float32 latents of the labeled transitions.
        actions_k: (k,) int64 actions (Discrete) or (k, D) float32 (Box).
        cfg: head config; ``cfg.latent_dim`` must equal L.
        space: the action space (:func:`envs.dataset.space_to_json`).
        seed: seed of the head's initialization (the caller's global RNG state is left untouched).
        device: where the head is fitted and returned.

    Raises:
        ValueError: shapes disagree with each other or with ``cfg``.
    """
    from lapo.training import BatchSampler, TrainConfig, fit

    if latents_kL.ndim != 2 or latents_kL.shape[1] != cfg.latent_dim:
        raise ValueError(f"latents have shape {latents_kL.shape}; expected (k, {cfg.latent_dim})")
    if len(actions_k) != len(latents_kL):
        raise ValueError(f"{len(latents_kL)} latents but {len(actions_k)} actions")
    cfg.coding(space).check_actions(actions_k)
    device = torch.device(device)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        head = ActionHead(cfg, cfg.coding(space)).to(device)
    x = torch.as_tensor(latents_kL, dtype=torch.float32, device=device)
    y = torch.as_tensor(np.asarray(actions_k), device=device)
    train_cfg = TrainConfig(steps=cfg.steps, lr=cfg.lr, weight_decay=cfg.weight_decay, warmup=0,
                            final_lr_fraction=1.0, precision="fp32", seed=seed)
    fit(head, BatchSampler(len(x), None, seed), lambda d: (x, y),
        lambda model, batch: (head.coding.loss(model(batch[0]), batch[1]), {}), train_cfg,
        progress=False, ddp=False, tag="action_head")
    return head.eval()


def balanced_accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean over the classes present in ``true`` of their recall (``(M,)`` int arrays): a reader
    that only ever predicts one class scores 1 / (classes present), whatever their shares."""
    return float(np.mean([(pred[true == c] == c).mean() for c in np.unique(true)]))


@torch.no_grad()
def probe_scores(train_latents: np.ndarray, train_actions: np.ndarray, test_latents: np.ndarray,
                 test_actions: np.ndarray, space) -> dict[str, float]:
    """Diagnostic k-shot probe: fit a head on (train latents, actions), score it on test.

    ``space`` is a gymnasium space or its JSON dict. Discrete: ``{"probe_accuracy",
    "majority_accuracy", "probe_balanced_accuracy"}`` (the baseline predicts the most frequent
    train action; balanced accuracy is the mean over the test set's actions of their recall, so
    a probe that never predicts a rare action scores 1 / (actions present), not its share). Box (regression
    head): ``{"probe_r2", "probe_mse", "mean_mse", "probe_direction_accuracy",
    "majority_direction_accuracy"}`` (the baseline predicts the train mean / most frequent
    direction; a *direction* is the largest-magnitude component of the first ``min(D, 3)`` (the
    end-effector xyz of an RT-1-style action) and its sign, one of 6 classes). Test actions are read
    for evaluation only.
    """
    from envs.dataset import space_to_json

    spec = space if isinstance(space, dict) else space_to_json(space)
    cfg = ActionHeadConfig(latent_dim=train_latents.shape[1], continuous="regression")
    with torch.enable_grad():
        head = fit_action_head(train_latents, train_actions, cfg, spec)
    out = head(torch.as_tensor(test_latents, dtype=torch.float32))
    if spec["type"] == "Discrete":
        pred = out.argmax(-1).numpy()
        majority = np.bincount(train_actions, minlength=spec["n"]).argmax()
        return {"probe_accuracy": float((pred == test_actions).mean()),
                "majority_accuracy": float((test_actions == majority).mean()),
                "probe_balanced_accuracy": balanced_accuracy(pred, test_actions)}
    test = np.asarray(test_actions, np.float32).reshape(len(test_actions), -1)
    mse = float(((out.numpy() - test) ** 2).mean())
    mean_mse = float(((np.asarray(train_actions).reshape(len(train_actions), -1).mean(0) - test) ** 2).mean())
    train = np.asarray(train_actions, np.float32).reshape(len(train_actions), -1)
    true_dir, pred_dir = action_direction(test), action_direction(out.numpy())
    majority = np.bincount(action_direction(train), minlength=6).argmax()
    return {"probe_r2": 1 - mse / max(mean_mse, 1e-12), "probe_mse": mse, "mean_mse": mean_mse,
            "probe_direction_accuracy": float((pred_dir == true_dir).mean()),
            "majority_direction_accuracy": float((true_dir == majority).mean())}


def action_direction(actions: np.ndarray) -> np.ndarray:
    """``(N, D)`` continuous actions -> ``(N,)`` int in [0, 6): ``2 * axis + (component < 0)`` of the
    largest-magnitude component among the first ``min(D, 3)``."""
    xyz = np.asarray(actions).reshape(len(actions), -1)[:, :3]
    axis = np.abs(xyz).argmax(1)
    return 2 * axis + (xyz[np.arange(len(xyz)), axis] < 0)


def head_latents(head_input: str, policy: nn.Module, frames, labels_latents, indices: np.ndarray) -> np.ndarray:
    """The ``(k, L)`` latents a head is fitted on: ``"policy"`` -> ``π(o_t)``; ``"idm"`` -> the
    IDM labels ``labels_latents[indices]``. Raises ``ValueError`` for another ``head_input``."""
    if head_input == "policy":
        return policy_latents(policy, frames, indices)
    if head_input == "idm":
        return np.asarray(labels_latents[indices], np.float32)
    raise ValueError(f"head_input {head_input!r}: choose 'policy' or 'idm'")


@torch.no_grad()
def policy_latents(policy: nn.Module, frames, indices: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """The latent policy's predictions ``π(o_t)`` for frames ``indices``: ``(k, L)`` float32.

    Args:
        policy: a latent policy, ``(B, H, W, C)`` uint8 -> ``(B, L)``.
        frames: ``(N, H, W, C)`` uint8 array-like.
        indices: ``(k,)`` frame indices.
    """
    policy.eval()
    device = next(policy.parameters()).device
    out = [policy(torch.from_numpy(np.asarray(frames[indices[i:i + batch_size]])).to(device)).float().cpu()
           for i in range(0, len(indices), batch_size)]
    return torch.cat(out).numpy()
