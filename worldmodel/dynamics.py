"""MaskGIT dynamics over video tokens, conditioned on latent actions (Genie, arXiv 2402.15391, §2.1-2.2).

The dynamics model is an :class:`worldmodel.st.STTransformer` over ``C + 1`` frames of tokens:
``C`` past frames (fully known) and the frame to predict. Each frame carries the latent action that
led *into* it (the action of step t conditions frame t+1; the first frame of an episode gets the
learned null action), either **added** to every token embedding of that frame or **prepended** as
one extra token per frame (``action_mode``; both measured in ``scripts/benchmark_worldmodel.py``).

Training (MaskGIT, Chang et al. 2022, arXiv 2202.04200, §3.1, with Genie's schedule): per sample a
mask rate ``r ~ U[0.5, 1]``, ``ceil(r · N)`` tokens of the predicted frame replaced by the mask id
(``K``, never a real token), cross-entropy on the masked tokens only. With probability
``action_dropout`` the predicted frame's action is replaced by the null action, so the same model
also predicts unconditionally (classifier-free guidance, Ho & Salimans 2022).

Sampling (:meth:`Dynamics.sample`, MaskGIT §3.2): start fully masked; at each of ``steps``
iterations predict every masked token, sample with ``temperature`` (0 = argmax), keep the most
confident and re-mask ``floor(N · cos(π/2 · s/steps))`` of the rest; sampled tokens are fed back.
Guidance ``cfg_scale ≠ 1`` mixes logits ``l_null + w · (l_action − l_null)`` (two passes per step).

Dimension keys: B batch, T = C + 1 frames, N tokens per frame, K codes, A latent actions, D width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from envs.pretrained import Pretrained
from lapo.training import TrainConfig
from worldmodel.st import STTransformer

ACTION_MODES = ("add", "prepend")


@dataclass
class DynamicsConfig:
    """Architecture of the MaskGIT dynamics model (stored in its config.json)."""

    num_codes: int = 625
    """K, the tokenizer's vocabulary (id K is the mask token)."""
    tokens: int = 64
    """N, tokens per frame (the tokenizer's grid²)."""
    num_actions: int = 9
    """A, latent actions (the world model LAM's codes; id A is the null action)."""
    context: int = 2
    """C, past frames the model sees (fewer at an episode's start are edge-padded with the first)."""
    dim: int = 256
    """D, transformer width."""
    depth: int = 4
    """ST blocks."""
    heads: int = 4
    """Attention heads."""
    action_mode: str = "add"
    """How the latent action enters a frame: ``add`` (to every token embedding) or ``prepend`` (one
    extra token per frame)."""
    action_dropout: float = 0.1
    """Training probability of the null action for the predicted frame (enables guidance)."""

    def __post_init__(self):
        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode {self.action_mode!r}: choose one of {', '.join(ACTION_MODES)}")
        if min(self.num_codes, self.tokens, self.num_actions, self.context, self.depth) < 1:
            raise ValueError("num_codes, tokens, num_actions, context and depth must be >= 1")
        if not 0 <= self.action_dropout < 1:
            raise ValueError(f"action_dropout must be in [0, 1), got {self.action_dropout}")


class Dynamics(Pretrained, nn.Module):
    """MaskGIT dynamics. ``forward(tokens (B, T, N) int64, actions (B, T) int64)`` → ``(loss, stats)``
    for the last frame; :meth:`logits` and :meth:`sample` for inference. Kind ``wm_dynamics``."""

    kind = "wm_dynamics"
    config_class = DynamicsConfig

    def __init__(self, cfg: DynamicsConfig):
        super().__init__()
        self.cfg = cfg
        self.mask_id, self.null_action = cfg.num_codes, cfg.num_actions
        self.token_emb = nn.Embedding(cfg.num_codes + 1, cfg.dim)
        self.action_emb = nn.Embedding(cfg.num_actions + 1, cfg.dim)
        extra = 1 if cfg.action_mode == "prepend" else 0
        self.st = STTransformer(cfg.dim, cfg.depth, cfg.heads, cfg.tokens + extra, cfg.context + 1)
        self.head = nn.Linear(cfg.dim, cfg.num_codes)

    def embed(self, tokens_BTN: torch.Tensor, actions_BT: torch.Tensor) -> torch.Tensor:
        """Token embeddings plus each frame's action (added, or prepended as one token): ``(B, T, N[+1], D)``.
        ``actions``: ids ``(B, T)`` int64, or weights over the ``A + 1`` action ids ``(B, T, A + 1)``
        float (straight-through one-hots from a co-trained LAM: :meth:`lapo.vq.FSQ.code_weights`)."""
        x = self.token_emb(tokens_BTN)  # (B, T, N, D)
        if actions_BT.is_floating_point():
            a = (actions_BT.to(x.dtype) @ self.action_emb.weight)[:, :, None]  # (B, T, 1, D)
        else:
            a = self.action_emb(actions_BT)[:, :, None]  # (B, T, 1, D)
        return x + a if self.cfg.action_mode == "add" else torch.cat([a, x], 2)

    def logits(self, tokens_BTN: torch.Tensor, actions_BT: torch.Tensor, past: list | None = None) -> torch.Tensor:
        """Logits ``(B, N, K)`` of the last frame's tokens, given ``tokens`` (mask id allowed) and the
        action into each frame (null id allowed). With ``past`` (:meth:`context`), ``tokens`` and
        ``actions`` hold the new frame only (T = 1)."""
        h = self.st(self.embed(tokens_BTN, actions_BT), past)[:, -1]  # (B, N[+1], D); causal: the last frame sees all
        if self.cfg.action_mode == "prepend":
            h = h[:, 1:]
        return self.head(h)

    def context(self, past_BCN: torch.Tensor, actions_BC: torch.Tensor) -> list:
        """Per-layer temporal keys/values of the ``C`` context frames (computed once per generated frame)."""
        return self.st(self.embed(past_BCN, actions_BC), return_past=True)[1]

    def forward(self, tokens_BTN: torch.Tensor, actions_BT: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """MaskGIT loss on the last frame of each clip (mask rate U[0.5, 1]) and stats:
        ``masked_accuracy`` and ``copy_accuracy`` (the previous frame's token at the same place).
        ``actions`` as in :meth:`embed`."""
        B, T, N = tokens_BTN.shape
        target = tokens_BTN[:, -1]
        rate = torch.rand(B, 1, device=target.device) * 0.5 + 0.5  # U[0.5, 1]
        n_mask = torch.ceil(rate * N)  # (B, 1) at least one token
        rank = torch.rand(B, N, device=target.device).argsort(1).argsort(1)  # random rank of each position
        masked = rank < n_mask  # (B, N) exactly n_mask positions
        tokens = tokens_BTN.clone()
        tokens[:, -1] = torch.where(masked, self.mask_id, target)
        actions = actions_BT.clone()
        if self.training and self.cfg.action_dropout > 0:
            drop = torch.rand(B, device=target.device) < self.cfg.action_dropout
            if actions.is_floating_point():
                null = F.one_hot(torch.tensor(self.null_action, device=target.device), self.null_action + 1)
                actions[:, -1] = torch.where(drop[:, None], null.to(actions.dtype), actions[:, -1])
            else:
                actions[:, -1] = torch.where(drop, self.null_action, actions[:, -1])
        logits = self.logits(tokens, actions)  # (B, N, K)
        loss = F.cross_entropy(logits[masked].float(), target[masked])
        with torch.no_grad():
            acc = (logits[masked].argmax(-1) == target[masked]).float().mean()
            copy = (tokens_BTN[:, -2][masked] == target[masked]).float().mean()
        return loss, {"masked_accuracy": acc, "copy_accuracy": copy}

    @torch.no_grad()
    def sample(self, past_BCN: torch.Tensor, actions_BT: torch.Tensor, steps: int = 8, temperature: float = 1.0,
               cfg_scale: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample the next frame's tokens ``(B, N)`` int64 with MaskGIT.

        Args:
            past_BCN: the ``C`` past frames' tokens (int64; pad a shorter history with its first frame).
            actions_BT: ``(B, C + 1)`` the action into each past frame and, last, the action that
                conditions the new frame (int64 in ``[0, A]``, ``A`` = null).
            steps: MaskGIT iterations (Genie: 25).
            temperature: softmax temperature of the token draws (0 = argmax).
            cfg_scale: classifier-free guidance weight on the action (1 = off).
            generator: torch RNG for the draws.

        Raises:
            ValueError: ``steps < 1``, a negative temperature, or ``C`` past frames other than the config's.
        """
        if steps < 1 or temperature < 0:
            raise ValueError(f"need steps >= 1 and temperature >= 0, got {steps}, {temperature}")
        B, C, N = past_BCN.shape
        if C != self.cfg.context:
            raise ValueError(f"the dynamics model takes {self.cfg.context} past frames, got {C}")
        past = self.context(past_BCN, actions_BT[:, :C])  # the context is fixed while the new frame is sampled
        tokens = past_BCN.new_full((B, 1, N), self.mask_id)  # (B, 1, N): the new frame
        action = actions_BT[:, C:]  # (B, 1)
        for s in range(steps):
            masked = tokens[:, -1] == self.mask_id  # (B, N)
            logits = self.logits(tokens, action, past).float()
            if cfg_scale != 1.0:
                uncond = self.logits(tokens, torch.full_like(action, self.null_action), past).float()
                logits = uncond + cfg_scale * (logits - uncond)
            if temperature == 0:
                draw = logits.argmax(-1)
                conf = logits.softmax(-1).gather(-1, draw[..., None])[..., 0]
            else:
                probs = (logits / temperature).softmax(-1)  # (B, N, K)
                draw = torch.multinomial(probs.view(-1, probs.shape[-1]), 1, generator=generator).view(B, N)
                conf = probs.gather(-1, draw[..., None])[..., 0]
            draw = torch.where(masked, draw, tokens[:, -1])
            conf = torch.where(masked, conf, torch.full_like(conf, math.inf))  # fixed tokens stay
            n_keep_masked = int(N * math.cos(math.pi / 2 * (s + 1) / steps))
            if n_keep_masked > 0:
                lowest = conf.argsort(1)[:, :n_keep_masked]  # least confident positions
                draw = draw.scatter(1, lowest, self.mask_id)
            tokens[:, -1] = draw
        return tokens[:, -1]


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------


@dataclass
class DynamicsTrainConfig(TrainConfig):
    """Training of the dynamics model (``lapo wm train``, stage ``dynamics``)."""

    steps: int = 1500
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    checkpoint_every: int = 250
    val_fraction: float = 0.05
    """Fraction of episodes held out (the LAM's and tokenizer's split with the same seed)."""
    eval_every: int = 1000
    """Steps between validation passes (masked-token accuracy on held-out clips)."""


def clip_indices(ds, frames: np.ndarray, context: int) -> np.ndarray:
    """``(M, C + 1)`` frame indices of the clips ending at each of ``frames`` (every frame but an
    episode's first), edge-padded with the episode's first frame."""
    start = ds.episode_starts[ds.episode_index[frames]]
    frames = frames[frames > start]
    start = ds.episode_starts[ds.episode_index[frames]]
    offsets = np.arange(-context, 1)
    return np.maximum(frames[:, None] + offsets[None], start[:, None])


def clip_actions(codes_N: np.ndarray, clips_MT: np.ndarray, episode_starts_N: np.ndarray, null: int) -> np.ndarray:
    """The action into each frame of each clip: ``codes[f - 1]`` for frame ``f``, the null action at
    an episode's first frame (and for edge-padded repeats of it). ``(M, T)`` int64."""
    prev = clips_MT - 1
    first = clips_MT == episode_starts_N[clips_MT]
    return np.where(first, null, codes_N[np.maximum(prev, 0)]).astype(np.int64)


@torch.no_grad()
def validate_dynamics(dyn: Dynamics, tokens_FN: np.ndarray, clips_MT: np.ndarray, actions_MT: np.ndarray,
                      batch_size: int = 256, seed: int = 0) -> dict[str, float]:
    """Held-out MaskGIT loss and masked-token accuracy (fixed mask draws: ``seed``) beside the
    copy-last-frame accuracy on the same masked tokens."""
    dyn.eval()
    device = next(dyn.parameters()).device
    totals = {"loss": 0.0, "masked_accuracy": 0.0, "copy_accuracy": 0.0}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(0, len(clips_MT), batch_size):
            tokens = torch.from_numpy(np.asarray(tokens_FN[clips_MT[i:i + batch_size]], np.int64)).to(device)
            loss, stats = dyn(tokens, torch.from_numpy(actions_MT[i:i + batch_size]).to(device))
            n = len(tokens)
            totals["loss"] += float(loss) * n
            for key in ("masked_accuracy", "copy_accuracy"):
                totals[key] += float(stats[key]) * n
    return {k: v / len(clips_MT) for k, v in totals.items()}


class CoTrained(nn.Module):
    """The LAM and the dynamics trained together (Genie, arXiv 2402.15391, §2: "we co-train the latent
    action model (directly from pixels) and the dynamics model (on video tokens)"). The loss is the
    dynamics' MaskGIT loss plus the LAM's own (FDM) loss; the dynamics sees the LAM's codes as
    straight-through one-hots (:meth:`lapo.vq.FSQ.code_weights`), so its loss also trains the IDM (as
    Jasmine's ``lam_co_train`` does, which drops the LAM's decoder instead).

    ``forward(tokens (B, T, N) int64, windows (B, T, 3, H, W, C) uint8, null (B, T) bool)``: the IDM
    window of the transition into each clip frame and where that frame gets the null action; returns
    ``(loss, stats)``: the dynamics' stats plus ``maskgit_loss`` and the LAM's ``lam_fdm_loss``,
    ``lam_copy_last_loss``, ``lam_perplexity``.
    """

    def __init__(self, lam: nn.Module, dynamics: Dynamics):
        super().__init__()
        if not hasattr(lam.quantizer, "code_weights") or lam.cfg.groups != 1:
            raise ValueError("co-training needs a LAM with an FSQ quantizer and groups=1 (its code is the action id)")
        self.lam, self.dynamics = lam, dynamics

    def forward(self, tokens_BTN: torch.Tensor, windows_BT3HWC: torch.Tensor, null_BT: torch.Tensor):
        B, T = null_BT.shape
        out, lam_loss = self.lam(windows_BT3HWC.flatten(0, 1))
        w = self.lam.quantizer.code_weights(out.z)[:, 0].view(B, T, -1)  # (B, T, A)
        w = torch.cat([w, torch.zeros_like(w[..., :1])], -1)  # (B, T, A + 1): id A is the null action
        null = F.one_hot(torch.full_like(null_BT, self.dynamics.null_action, dtype=torch.long), w.shape[-1])
        w = torch.where(null_BT[..., None], null.to(w.dtype), w)
        dyn_loss, stats = self.dynamics(tokens_BTN, w)
        keep = ("perplexity", "fdm_loss", "copy_last_loss")
        return dyn_loss + lam_loss, {**stats, "maskgit_loss": dyn_loss.detach(),
                                     **{f"lam_{k}": v for k, v in out.stats.items() if k in keep}}


def transitions_into(clips_MT: np.ndarray, episode_starts_N: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The transition ``f - 1 → f`` into each clip frame ``f`` and whether ``f`` is its episode's
    first frame (null action; the clip's last transition stands in so every index is valid).
    ``(M, T)`` int64 and bool."""
    first = clips_MT == episode_starts_N[clips_MT]
    return np.where(first, clips_MT[:, -1:] - 1, clips_MT - 1), first


def train_dynamics(dataset_dir, tokens_FN: np.ndarray, codes_F: np.ndarray | None, out_dir, model_cfg: DynamicsConfig,
                   train_cfg: DynamicsTrainConfig | None = None, log_dir=None, record: dict | None = None,
                   val_clips: int = 2048, cotrain_lam: nn.Module | None = None,
                   lam_dir=None) -> tuple[Dynamics, dict]:
    """Train :class:`Dynamics` on a dataset's frame tokens and latent-action codes; save to ``out_dir``.

    Args:
        dataset_dir: the episode dataset (its episode boundaries and split).
        tokens_FN: ``(frames, N)`` int tokens of every frame (tokenizer output).
        codes_F: ``(frames,)`` int latent action of transition ``f → f + 1`` (any value at an
            episode's last frame; it is never read). None with ``cotrain_lam``.
        record: what determines the result (inputs' fingerprints), compared on resume.
        cotrain_lam: a LAM (FSQ, one group) to train together with the dynamics
            (:class:`CoTrained`); its codes are the actions, and it is saved to ``lam_dir``.

    Returns:
        (model, held-out metrics of :func:`validate_dynamics`; with ``cotrain_lam`` also its
        :func:`lapo.lam.validate_lam` metrics prefixed ``lam_``).

    Raises:
        ValueError: token or code arrays whose length is not the dataset's, codes outside
            ``[0, num_actions)``, tokens outside ``[0, num_codes)``, a co-trained LAM whose codes
            are not ``num_actions``, or a training state in ``out_dir`` made with other settings.
    """
    from envs.dataset import EpisodeDataset
    from lapo.training import BatchSampler, build_device, fit, is_main_process, summary_writer

    train_cfg = train_cfg or DynamicsTrainConfig()
    # --- build ---
    ds = EpisodeDataset(dataset_dir)
    if cotrain_lam is not None:
        if cotrain_lam.quantizer.num_codes != model_cfg.num_actions:
            raise ValueError(f"the co-trained LAM has {cotrain_lam.quantizer.num_codes} codes, the dynamics "
                             f"{model_cfg.num_actions} actions: set num_actions to the LAM's codebook size")
        codes_F = np.zeros(len(ds), np.int64)  # re-labelled by the LAM at each evaluation
    if len(tokens_FN) != len(ds) or len(codes_F) != len(ds):
        raise ValueError(f"{len(tokens_FN)} token frames and {len(codes_F)} action codes for a dataset of "
                         f"{len(ds)} frames: tokenize and label this dataset")
    codes_F = np.asarray(codes_F, np.int64)
    tokens_FN = np.asarray(tokens_FN)  # (frames, N) int16: 12.8 MB for 100k frames of 64 tokens
    valid = codes_F[ds.transition_indices]
    if valid.min() < 0 or valid.max() >= model_cfg.num_actions:
        raise ValueError(f"latent action codes span [{valid.min()}, {valid.max()}], outside [0, {model_cfg.num_actions}): "
                         "set num_actions to the LAM's codebook size")
    if tokens_FN.shape[1] != model_cfg.tokens:
        raise ValueError(f"tokens have {tokens_FN.shape[1]} per frame, the config says {model_cfg.tokens}")
    device = build_device(train_cfg)
    from worldmodel.tokenizer import frame_split

    train_f, val_f = frame_split(ds, train_cfg.val_fraction, train_cfg.seed)
    starts = ds.episode_starts[ds.episode_index]  # (frames,) first frame of each frame's episode
    train_c = clip_indices(ds, train_f, model_cfg.context)
    val_c = clip_indices(ds, val_f, model_cfg.context)
    val_c = val_c[np.linspace(0, len(val_c) - 1, min(len(val_c), val_clips)).astype(int)]
    train_a = clip_actions(codes_F, train_c, starts, model_cfg.num_actions)
    val_a = clip_actions(codes_F, val_c, starts, model_cfg.num_actions)
    torch.manual_seed(train_cfg.seed)
    dyn = Dynamics(model_cfg).to(device)
    writer = summary_writer(log_dir)
    model, evaluate = dyn, lambda m: validate_dynamics(m, tokens_FN, val_c, val_a)

    def make_batch(d):
        tokens = torch.from_numpy(np.asarray(tokens_FN[train_c[d.positions]], np.int64)).to(device)
        if cotrain_lam is None:
            return tokens, torch.from_numpy(train_a[d.positions]).to(device)
        t, null = transitions_into(train_c[d.positions], starts)
        windows = torch.from_numpy(ds.idm_window(t.ravel())).to(device)
        return tokens, windows.view(*t.shape, *windows.shape[1:]), torch.from_numpy(null).to(device)

    if cotrain_lam is not None:
        from lapo.lam import LAMTrainConfig, encode_transitions, probe_subset, validate_lam

        model = CoTrained(cotrain_lam.to(device), dyn)
        lam_val_t = ds.episode_split(train_cfg.val_fraction, train_cfg.seed)[1]  # the LAM stage's split
        probe = probe_subset(ds, LAMTrainConfig.probe_k, train_cfg.seed, lam_val_t)

        def evaluate_cotrained(m):  # held-out dynamics metrics under the LAM's current codes, and the LAM's own
            codes = codes_F.copy()
            t, _ = transitions_into(val_c, starts)
            codes[t.ravel()] = encode_transitions(m.lam, ds, t.ravel())[1][:, 0]
            metrics = validate_dynamics(m.dynamics, tokens_FN, val_c, clip_actions(codes, val_c, starts,
                                                                                  model_cfg.num_actions))
            return {**metrics, **{f"lam_{k}": v for k, v in validate_lam(m.lam, ds, lam_val_t, probe).items()}}

        evaluate = evaluate_cotrained

    # --- loop ---
    result = fit(model, BatchSampler(len(train_c), train_cfg.batch_size, train_cfg.seed), make_batch,
                 lambda m, batch: m(*batch), train_cfg, out_dir=out_dir, record=record, writer=writer,
                 tag="dynamics", evaluate=evaluate, eval_every=train_cfg.eval_every)
    if writer:
        writer.close()
    # --- save ---
    if is_main_process():
        dyn.save_pretrained(out_dir, train_config=train_cfg, val_metrics=result.metrics, dataset=str(dataset_dir),
                            record=record)
        if cotrain_lam is not None:
            lam_metrics = {k[4:]: v for k, v in result.metrics.items() if k.startswith("lam_")}
            cotrain_lam.save_pretrained(lam_dir, train_config=train_cfg, val_metrics=lam_metrics,
                                        dataset=str(dataset_dir), record={**(record or {}), "cotrained_with": "dynamics"})
    return dyn, result.metrics
