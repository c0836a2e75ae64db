"""Policies that read one frame: the latent policy (LAPO §3.2) and behaviour cloning on actions.

The latent policy ``π(z | o_t)`` regresses the IDM's continuous pre-quantization latent action of
each transition (LAPO stage 2) with MSE. The same network with outputs coded for the true action
space (:class:`lapo.decoder.ActionCoding`: logits for discrete actions, RT-1 bins or regression for
continuous ones) is behaviour cloning (BC): on all actions it is the oracle baseline, on k labeled transitions it is
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

from envs.pretrained import Pretrained
from lapo.nets import build_encoder, to_float
from lapo.training import TrainConfig, build_device


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
    """Latent dim L (latent policy) or the action coding's outputs A (BC; set from the data)."""

    def __post_init__(self):
        self.channels = tuple(self.channels)
        if self.out_dim < 1:
            raise ValueError(f"out_dim must be >= 1, got {self.out_dim}")


class Policy(Pretrained, nn.Module):
    """``(B, H, W, C)`` uint8 frames -> ``(B, out_dim)`` (latent action or action outputs).
    Saved as kind ``policy``."""

    kind = "policy"
    config_class = PolicyConfig

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.cfg = cfg
        self.net = build_encoder(cfg.encoder, 3, cfg.image_size, cfg.channels, cfg.hidden, cfg.out_dim)

    def forward(self, obs_BHWC: torch.Tensor) -> torch.Tensor:
        return self.net(to_float(obs_BHWC[:, None]))  # (B, 3, H, W) float


@dataclass
class PolicyTrainConfig(TrainConfig):
    """Training of a policy (latent BC or action BC); the optimization fields are
    :class:`lapo.training.TrainConfig`'s."""

    batch_size: int = 128
    """Global batch of frames per step."""
    lr: float = 5e-4
    """Peak AdamW learning rate."""
    log_every: int = 100
    """Steps between tensorboard scalars."""
    shift: int = 4
    """Random-shift augmentation in pixels (0 = off)."""

    def __post_init__(self):
        super().__post_init__()
        if self.shift < 0:
            raise ValueError(f"shift must be >= 0, got {self.shift}")


def random_shift(obs: torch.Tensor, shift: int, offsets: np.ndarray | None) -> torch.Tensor:
    """Pad by ``shift`` (edge) and crop back at a per-sample offset (DrQ, Kostrikov et al. 2020).

    Args:
        obs: uint8 ``(B, H, W, C)`` or windows ``(B, T, H, W, C)`` (one offset for all T frames), on
            the CPU.
        shift: pad width in pixels (0 returns ``obs`` unchanged).
        offsets: ``(B, 2)`` ints in ``[0, 2 * shift]``: (dy, dx) crop corner per sample, drawn by
            :class:`lapo.training.BatchSampler`.

    Pads in uint8 and copies one crop per sample: ~3–4× faster than a float gather of every pixel
    (``scripts/profile_stages.py``), with the same result.
    """
    if shift == 0:
        return obs
    H, W = obs.shape[-3:-1]
    pad = [(0, 0)] * (obs.ndim - 3) + [(shift, shift), (shift, shift), (0, 0)]
    padded = torch.from_numpy(np.pad(obs.numpy(), pad, mode="edge"))
    out = torch.empty_like(obs)
    for b, (dy, dx) in enumerate(np.asarray(offsets).tolist()):
        out[b] = padded[b, ..., dy:dy + H, dx:dx + W, :]
    return out


def train_policy(frames, indices: np.ndarray, targets: np.ndarray, model_cfg: PolicyConfig,
                 train_cfg: PolicyTrainConfig, loss, writer=None, tag: str = "policy",
                 out_dir=None, record: dict | None = None) -> Policy:
    """Fit a :class:`Policy` to ``targets`` at frame ``indices``.

    Args:
        frames: (N, H, W, C) uint8 array-like (a dataset's memory-mapped frames).
        indices: (M,) int64 frame indices used for training.
        targets: (M, L) float32 latents (``loss="mse"``) or true actions (``loss`` an
            :class:`lapo.decoder.ActionCoding`: (M,) int64 or (M, D) float32).
        model_cfg, train_cfg: network and optimization.
        loss: ``"mse"`` (latent policy) or an ``ActionCoding`` (behaviour cloning on actions).
        writer: optional tensorboard writer; scalars go to ``train/{tag}_loss``.
        out_dir, record: resumable training state location and what determines the run.

    Raises:
        ValueError: ``loss`` unknown, or indices/targets lengths differ, or no indices.
    """
    device = build_device(train_cfg)
    return fit_network(Policy(model_cfg).to(device), lambda i: np.asarray(frames[i]), indices, targets,
                       train_cfg, loss, writer, tag, out_dir, record)


def fit_network(model: nn.Module, fetch, indices: np.ndarray, targets: np.ndarray,
                train_cfg: PolicyTrainConfig, loss, writer=None, tag: str = "policy", out_dir=None,
                record: dict | None = None) -> nn.Module:
    """Supervised learning of a frame (or window) network with the shared trainer
    (:func:`lapo.training.fit`): minibatches drawn with replacement, random-shift augmentation.
    Used by policies and the supervised IDM baseline.

    Args:
        model: on its device; maps a uint8 batch ``fetch(i)`` to ``(B, out)``; returned in eval mode.
        fetch: ``(b,)`` sorted int indices -> uint8 numpy array ``(b, H, W, C)`` or ``(b, T, H, W, C)``.
        indices, targets, train_cfg, loss, writer, tag, out_dir, record: as in :func:`train_policy`.
    """
    from lapo.decoder import ActionCoding
    from lapo.training import BatchSampler, fit

    if not (loss == "mse" or isinstance(loss, ActionCoding)):
        raise ValueError(f"loss {loss!r}: choose 'mse' or an ActionCoding")
    if isinstance(loss, ActionCoding):
        loss.check_actions(targets)
    if len(indices) != len(targets) or len(indices) == 0:
        raise ValueError(f"need matching, non-empty indices and targets, got {len(indices)} and {len(targets)}")
    device = next(model.parameters()).device
    indices = np.asarray(indices)
    targets_t = torch.as_tensor(np.asarray(targets))
    criterion = (lambda out, y: F.mse_loss(out.float(), y.float())) if loss == "mse" else loss.loss

    def make_batch(draw):
        order = np.argsort(indices[draw.positions])  # sorted reads from the memory map
        j = draw.positions[order]
        shifts = None if draw.shifts is None else draw.shifts[order]
        obs = random_shift(torch.from_numpy(fetch(indices[j])), train_cfg.shift, shifts).to(device)
        return obs, targets_t[j].to(device)

    sampler = BatchSampler(len(indices), train_cfg.batch_size, train_cfg.seed, train_cfg.shift)
    fit(model, sampler, make_batch, lambda net, batch: (criterion(net(batch[0]), batch[1]), {}), train_cfg,
        out_dir=out_dir, record=record, writer=writer, tag=tag)
    return model.eval()
