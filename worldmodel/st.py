"""Spatiotemporal (ST) transformer (Genie: Bruce et al. 2024, arXiv 2402.15391, §2.1, Fig. 4).

Each block attends **spatially** among the N tokens of one frame, then **temporally** among the T
tokens at the same spatial position across frames, with a causal mask (frame t sees frames ≤ t),
then applies **one** feed-forward layer (Genie: "after both the spatial and temporal components").
Pre-norm residual layout as in nanoGPT. Cost is O(T·N² + N·T²) per layer instead of O((T·N)²).

Causality is exact: outputs at frames ≤ t do not depend on frames > t (``tests/test_worldmodel.py``
changes frame t+1 and checks that). That is what lets :meth:`STTransformer.forward` generate one
new frame at a time while earlier frames stay fixed.

Dimension keys: B batch, T frames, N tokens per frame, D model width.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def patchify(x_BTHWC: torch.Tensor, patch: int) -> torch.Tensor:
    """Frames ``(B, T, H, W, C)`` → patch vectors ``(B, T, N, patch·patch·C)``, N = (H/patch)·(W/patch)
    in row-major order; H and W must be multiples of ``patch``."""
    B, T, H, W, C = x_BTHWC.shape
    x = x_BTHWC.reshape(B, T, H // patch, patch, W // patch, patch, C).permute(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(B, T, (H // patch) * (W // patch), patch * patch * C)


def unpatchify(y_BTNP: torch.Tensor, patch: int) -> torch.Tensor:
    """Inverse of :func:`patchify` for a square grid, channels first: ``(B, T, C, H, W)``."""
    B, T, N, P = y_BTNP.shape
    g, C = math.isqrt(N), P // (patch * patch)
    y = y_BTNP.reshape(B, T, g, g, patch, patch, C).permute(0, 1, 6, 2, 4, 3, 5)
    return y.reshape(B, T, C, g * patch, g * patch)


class Attention(nn.Module):
    """Multi-head self-attention over the second-to-last axis (``F.scaled_dot_product_attention``)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"model width {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x_BSD: torch.Tensor, causal: bool = False, past_kv=None):
        """Returns ``(out (B, S, D), (k, v))``; ``past_kv`` (keys and values of earlier positions,
        each ``(B, h, P, d)``) is prepended, and the S new positions attend to all of it."""
        B, S, D = x_BSD.shape
        q, k, v = self.qkv(x_BSD).view(B, S, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # (B, h, S, d)
        if past_kv is not None:
            k, v = torch.cat([past_kv[0], k], 2), torch.cat([past_kv[1], v], 2)  # (B, h, P + S, d)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, h, S, d)
        return self.proj(y.transpose(1, 2).reshape(B, S, D)), (k, v)


class STBlock(nn.Module):
    """Spatial attention (within a frame) → causal temporal attention (across frames) → one MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm_s, self.spatial = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm_t, self.temporal = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm_m = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x_BTND: torch.Tensor, past_kv=None):
        """``(B, T, N, D)`` → ``(out, temporal (k, v))``. With ``past_kv`` (the temporal keys and
        values of earlier frames), ``x`` holds only new frames, which attend to all earlier ones."""
        B, T, N, D = x_BTND.shape
        x = x_BTND + self.spatial(self.norm_s(x_BTND).reshape(B * T, N, D))[0].view(B, T, N, D)
        xt = self.norm_t(x).transpose(1, 2).reshape(B * N, T, D)  # (B*N, T, D): one sequence per position
        y, kv = self.temporal(xt, causal=past_kv is None or T > 1, past_kv=past_kv)
        x = x + y.view(B, N, T, D).transpose(1, 2)
        return x + self.mlp(self.norm_m(x)), kv


class STTransformer(nn.Module):
    """A stack of :class:`STBlock` with learned spatial and temporal position embeddings and a
    final LayerNorm. ``(B, T, N, D)`` float in and out; ``T <= max_frames``, ``N == tokens``.

    Raises:
        ValueError: (in forward) more frames than ``max_frames`` or a token count other than ``tokens``.
    """

    def __init__(self, dim: int, depth: int, heads: int, tokens: int, max_frames: int):
        super().__init__()
        self.tokens, self.max_frames = tokens, max_frames
        self.pos_space = nn.Parameter(torch.randn(tokens, dim) * 0.02)  # (N, D)
        self.pos_time = nn.Parameter(torch.randn(max_frames, dim) * 0.02)  # (T_max, D)
        self.blocks = nn.ModuleList(STBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x_BTND: torch.Tensor, past: list | None = None, return_past: bool = False):
        """``(B, T, N, D)`` → ``(B, T, N, D)``.

        Incremental use (generation): ``return_past=True`` also returns the per-layer temporal keys
        and values of these frames; passing them as ``past`` with only the *next* frame (T = 1) gives
        exactly that frame's output of a full forward over all frames (tested), without recomputing
        the earlier frames.
        """
        B, T, N, D = x_BTND.shape
        offset = 0 if past is None else past[0][0].shape[2]  # frames already in the cache
        if offset + T > self.max_frames or N != self.tokens:
            raise ValueError(f"ST-transformer got {offset + T} frames of {N} tokens; it was built for at most "
                             f"{self.max_frames} frames of {self.tokens} tokens")
        if past is not None and T != 1:
            raise ValueError(f"with a cache of past frames give one new frame, got {T}")
        x = x_BTND + self.pos_space[None, None] + self.pos_time[None, offset:offset + T, None]
        kvs = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, None if past is None else past[i])
            kvs.append(kv)
        x = self.norm(x)
        return (x, kvs) if return_past else x
