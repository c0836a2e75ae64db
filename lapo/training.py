"""Shared trainer plumbing: device, seeding, LR schedule, tensorboard run, batch sampling.

Kept small on purpose: each trainer (LAM, policy) is still one readable loop of its own.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from envs.dataset import EpisodeDataset


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU. Raises ``ValueError`` for an unavailable device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return torch.device(device)


def autocast(device: torch.device, precision: str):
    """Mixed precision as a flag: ``fp32`` (default; on AVX2-only CPUs bf16 is ~20× *slower*,
    measured) or ``bf16`` (fast on CUDA and on CPUs with AMX)."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision {precision!r}: choose 'fp32' or 'bf16'")
    return torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16")


def cosine_lr(step: int, total: int, warmup: int, base: float, final_frac: float = 0.1) -> float:
    """Linear warmup to ``base`` then cosine decay to ``final_frac * base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def set_threads(threads: int) -> None:
    """Set torch CPU threads (0 = leave torch's default)."""
    if threads > 0:
        torch.set_num_threads(threads)


@dataclass
class Throughput:
    """Samples/s over the last logging interval (``charts/SPS``)."""

    t0: float = 0.0
    n: int = 0

    def __post_init__(self):
        self.t0 = time.perf_counter()

    def tick(self, n: int) -> float:
        now = time.perf_counter()
        sps = (self.n + n) / max(now - self.t0, 1e-9)
        self.t0, self.n = now, 0
        return sps


def summary_writer(log_dir: str | os.PathLike | None):
    """A tensorboard ``SummaryWriter`` at ``log_dir``, or None when logging is off."""
    if log_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    Path(log_dir).mkdir(parents=True, exist_ok=True)
    return SummaryWriter(str(log_dir))


def sample_indices(rng: np.random.Generator, pool: np.ndarray, batch_size: int) -> np.ndarray:
    """``batch_size`` indices drawn uniformly with replacement from ``pool``."""
    return pool[rng.integers(0, len(pool), batch_size)]


def windows_tensor(ds: EpisodeDataset, t: np.ndarray, device: torch.device) -> torch.Tensor:
    """IDM windows ``(B, 3, H, W, C)`` uint8 on ``device`` for transitions ``t``."""
    return torch.from_numpy(ds.idm_window(t)).to(device)
