"""Policies that read one frame: the latent policy (LAPO §3.2) and behaviour cloning on actions.

The latent policy ``π(z | o_t)`` regresses the IDM's continuous pre-quantization latent action of
each transition (LAPO stage 2) with MSE. The same network with a softmax head over true actions is
behaviour cloning (BC): on all actions it is the oracle baseline, on k labeled transitions it is
the "BC on k labels" baseline. Both train with random-shift augmentation (±``shift`` pixels, as in
DrQ), which matters most when k is small.

Dimension keys: B batch, H W C image, L latent dim, A actions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lapo.nets import build_encoder, to_float


@dataclass
class PolicyConfig:
    """Architecture of a one-frame policy network (stored in checkpoints)."""

    image_size: int = 64
    """H = W of observations, pixels."""
    encoder: str = "nature"
    """``nature`` (Nature CNN) or ``impala`` (IMPALA CNN), see :func:`lapo.nets.build_encoder`."""
    channels: tuple[int, ...] = (32, 64, 64)
    """Conv widths: Nature CNN's three convs, or one per IMPALA stack ((16, 32, 32) × scale)."""
    hidden: int = 512
    """MLP hidden width."""
    out_dim: int = 8
    """Latent dim L (latent policy) or number of actions A (BC)."""

    def __post_init__(self):
        self.channels = tuple(self.channels)
        if self.out_dim < 1:
            raise ValueError(f"out_dim must be >= 1, got {self.out_dim}")


class Policy(nn.Module):
    """``(B, H, W, C)`` uint8 frames -> ``(B, out_dim)`` (latent action or action logits)."""

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.cfg = cfg
        self.net = build_encoder(cfg.encoder, 3, cfg.image_size, cfg.channels, cfg.hidden, cfg.out_dim)

    def forward(self, obs_BHWC: torch.Tensor) -> torch.Tensor:
        return self.net(to_float(obs_BHWC[:, None]))  # (B, 3, H, W) float


@dataclass
class PolicyTrainConfig:
    """Training of a policy (latent BC or action BC)."""

    steps: int = 3000
    """Optimizer steps."""
    batch_size: int = 128
    """Frames per step."""
    lr: float = 5e-4
    """Peak AdamW learning rate."""
    warmup: int = 100
    """Warmup steps."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    shift: int = 4
    """Random-shift augmentation in pixels (0 = off)."""
    log_every: int = 100
    """Steps between tensorboard scalars."""
    seed: int = 0
    """Init and batch-draw seed."""
    device: str = "auto"
    """``auto``, ``cpu`` or ``cuda``."""
    precision: str = "fp32"
    """``fp32`` or ``bf16`` autocast."""

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")
        if self.shift < 0:
            raise ValueError(f"shift must be >= 0, got {self.shift}")


def random_shift(obs: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Pad by ``shift`` (edge) and crop back at a random offset per sample (DrQ, Kostrikov et al. 2020).
    uint8 ``(B, H, W, C)`` or windows ``(B, T, H, W, C)`` (one offset for all T frames) in and out."""
    if shift == 0:
        return obs
    if obs.ndim == 5:  # fold the window's frames into channels so they move together
        B, T, H, W, C = obs.shape
        folded = obs.permute(0, 2, 3, 1, 4).reshape(B, H, W, T * C)
        return random_shift(folded, shift, generator).view(B, H, W, T, C).permute(0, 3, 1, 2, 4)
    B, H, W, C = obs.shape
    padded = F.pad(obs.permute(0, 3, 1, 2).float(), (shift,) * 4, mode="replicate")  # (B, C, H+2s, W+2s)
    dx, dy = (torch.randint(0, 2 * shift + 1, (2, B), generator=generator))
    rows = (dy[:, None] + torch.arange(H)[None])  # (B, H)
    cols = (dx[:, None] + torch.arange(W)[None])  # (B, W)
    out = padded[torch.arange(B)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.to(torch.uint8)


def train_policy(frames, indices: np.ndarray, targets: np.ndarray, model_cfg: PolicyConfig,
                 train_cfg: PolicyTrainConfig, loss: str, writer=None, tag: str = "policy") -> Policy:
    """Fit a :class:`Policy` to ``targets`` at frame ``indices``.

    Args:
        frames: (N, H, W, C) uint8 array-like (a dataset's memory-mapped frames).
        indices: (M,) int64 frame indices used for training.
        targets: (M, L) float32 latents (``loss="mse"``) or (M,) int64 actions (``loss="ce"``).
        model_cfg, train_cfg: network and optimization.
        loss: ``"mse"`` (latent policy) or ``"ce"`` (behaviour cloning on actions).
        writer: optional tensorboard writer; scalars go to ``train/{tag}_loss``.

    Raises:
        ValueError: ``loss`` unknown, or indices/targets lengths differ, or no indices.
    """
    torch.manual_seed(train_cfg.seed)
    return fit_network(Policy(model_cfg), lambda i: np.asarray(frames[i]), indices, targets, train_cfg,
                       loss, writer, tag)


def fit_network(model: nn.Module, fetch, indices: np.ndarray, targets: np.ndarray,
                train_cfg: PolicyTrainConfig, loss: str, writer=None, tag: str = "policy") -> nn.Module:
    """The supervised loop shared by policies and the supervised IDM baseline: AdamW, warmup +
    cosine LR, random-shift augmentation, minibatches drawn with replacement.

    Args:
        model: maps a uint8 batch ``fetch(i)`` to ``(B, out)`` outputs; returned in eval mode.
        fetch: ``(B,)`` sorted int indices -> uint8 numpy array ``(B, H, W, C)`` or ``(B, T, H, W, C)``.
        indices, targets, train_cfg, loss, writer, tag: as in :func:`train_policy`.
    """
    from tqdm import tqdm

    from lapo.training import Throughput, autocast, cosine_lr, pick_device

    if loss not in ("mse", "ce"):
        raise ValueError(f"loss {loss!r}: choose 'mse' or 'ce'")
    if len(indices) != len(targets) or len(indices) == 0:
        raise ValueError(f"need matching, non-empty indices and targets, got {len(indices)} and {len(targets)}")
    # --- build ---
    device = pick_device(train_cfg.device)
    gen = torch.Generator().manual_seed(train_cfg.seed)
    rng = np.random.default_rng(train_cfg.seed)
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    targets_t = torch.as_tensor(np.asarray(targets))
    meter = Throughput()
    # --- loop ---
    for step in tqdm(range(train_cfg.steps), desc=f"train-{tag}", unit="step"):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, train_cfg.steps, train_cfg.warmup, train_cfg.lr)
        j = rng.integers(0, len(indices), train_cfg.batch_size)
        order = np.argsort(indices[j])  # sorted reads from the memory map
        j = j[order]
        obs = random_shift(torch.from_numpy(fetch(indices[j])), train_cfg.shift, gen).to(device)
        y = targets_t[j].to(device)
        with autocast(device, train_cfg.precision):
            out = model(obs).float()
        batch_loss = F.mse_loss(out, y.float()) if loss == "mse" else F.cross_entropy(out, y.long())
        opt.zero_grad(set_to_none=True)
        batch_loss.backward()
        opt.step()
        if writer and (step % train_cfg.log_every == 0 or step == train_cfg.steps - 1):
            writer.add_scalar(f"train/{tag}_loss", float(batch_loss), step)
            writer.add_scalar(f"charts/{tag}_SPS", meter.tick(train_cfg.batch_size * train_cfg.log_every), step)
    return model.eval()
