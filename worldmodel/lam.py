"""Genie's latent action model: a pixel ST-transformer IDM and decoder (Bruce et al. 2024,
arXiv 2402.15391, §2.1 "Latent Action Model", Fig. 5).

Built to decide issue 10's "the ``lapo`` LAM re-trained with a small codebook, or a Genie-style
pixel ST-transformer LAM?" by measurement (``scripts/compare_wm_lams.py``,
``docs/worldmodel_history.md``). It is a drop-in for :class:`lapo.lam.LatentActionModel`: the same
windows ``(o_{t-1}, o_t, o_{t+1})``, the same FSQ bottleneck (with the same batch standardization
before it), the same FDM target (``o_{t+1}`` at ``fdm_size``, predicted as a residual on ``o_t``),
the same outputs and losses, so :func:`lapo.lam.train_lam` trains it and :func:`lapo.lam.validate_lam`
scores it unchanged.

- **IDM (Genie's LAM encoder)**: each frame cut into ``patch``×``patch`` patches, an
  :class:`worldmodel.st.STTransformer` over the 3 frames (causal in time), the tokens of the last
  frame (which see ``o_{t-1}``, ``o_t`` and ``o_{t+1}``) averaged and projected to the latent.
- **FDM (Genie's LAM decoder)**: the past frames at ``fdm_size`` cut into patches, the latent
  action's embedding added to every token (Genie's additive action embedding), an ST-transformer
  over the 2 past frames; the last frame's tokens are projected to the pixel residual of ``o_{t+1}``.

Deviations from Genie: FSQ instead of VQ, 3-frame windows instead of 16-frame sequences, and the
residual target at 32×32 (our LAM's measured choices), so that only the networks differ.

Dimension keys: B batch, T frames, N tokens per frame, D width, L latent dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from envs.pretrained import Pretrained


@dataclass
class STLAMConfig:
    """Architecture of :class:`STLatentActionModel` (the bottleneck fields mean what they mean in
    :class:`lapo.lam.LAMConfig`; the defaults give the world model's 9 latent actions)."""

    image_size: int = 64
    """H = W of the frames, pixels."""
    patch: int = 8
    """IDM patch side at ``image_size``, pixels (the FDM's patches cover the same area at ``fdm_size``)."""
    fdm_size: int = 32
    """H = W at which the FDM reads past frames and predicts o_{t+1}, pixels."""
    dim: int = 128
    """Transformer width of the IDM and of the FDM."""
    depth: int = 2
    """ST blocks of the IDM, and of the FDM."""
    heads: int = 4
    latent_dim: int = 2
    """L, dims of the latent action."""
    fsq_levels: int = 3
    """FSQ levels per dim: ``fsq_levels ** (latent_dim / groups)`` codes per group."""
    groups: int = 1
    """G code groups."""

    def __post_init__(self):
        if self.image_size % self.fdm_size or self.image_size % self.patch:
            raise ValueError(f"fdm_size {self.fdm_size} and patch {self.patch} must divide image_size "
                             f"{self.image_size}")
        if self.fdm_patch < 1 or self.fdm_size % self.fdm_patch:
            raise ValueError(f"patch {self.patch} covers {self.patch * self.fdm_size / self.image_size} pixels at "
                             f"fdm_size {self.fdm_size}: choose a patch that gives a whole divisor of fdm_size")
        if self.latent_dim % self.groups:
            raise ValueError(f"latent_dim {self.latent_dim} must be divisible by groups {self.groups}")

    def build(self) -> "STLatentActionModel":
        """The model (what :func:`lapo.lam.build_lam` calls)."""
        return STLatentActionModel(self)

    @property
    def fdm_patch(self) -> int:
        """The FDM's patch side at ``fdm_size``, pixels."""
        return self.patch * self.fdm_size // self.image_size


class STLatentActionModel(Pretrained, nn.Module):
    """Genie-style LAM with :class:`lapo.lam.LatentActionModel`'s interface: ``forward(window_B3HWC)``
    → ``(LAMOutput, loss)``, ``encode(window_B3HWC)`` → :class:`lapo.lam.LatentActions`, and a
    ``quantizer``. Windows are uint8 ``(B, 3, H, W, C)``. Saved as kind ``wm_st_lam``. No jointly
    trained action decoder (``labeled_window_M3HWC`` raises ``ValueError``)."""

    kind = "wm_st_lam"
    config_class = STLAMConfig
    action_decoder = None

    def __init__(self, cfg: STLAMConfig):
        super().__init__()
        from lapo.lam import BatchStandardize
        from lapo.vq import build_quantizer
        from worldmodel.st import STTransformer

        self.cfg = cfg
        p, q = cfg.patch, cfg.fdm_patch
        self.idm_embed = nn.Linear(p * p * 3, cfg.dim)
        self.idm = STTransformer(cfg.dim, cfg.depth, cfg.heads, (cfg.image_size // p) ** 2, 3)
        self.to_latent = nn.Linear(cfg.dim, cfg.latent_dim)
        self.idm_norm = BatchStandardize(cfg.latent_dim)
        self.quantizer = build_quantizer("fsq", cfg.latent_dim, cfg.fsq_levels, cfg.groups, 0)
        self.fdm_embed = nn.Linear(q * q * 3, cfg.dim)
        self.action_embed = nn.Linear(cfg.latent_dim, cfg.dim)
        self.fdm = STTransformer(cfg.dim, cfg.depth, cfg.heads, (cfg.fdm_size // q) ** 2, 2)
        self.to_pixels = nn.Linear(cfg.dim, q * q * 3)
        nn.init.zeros_(self.to_pixels.weight)  # starts at copy-last, like the conv FDM
        nn.init.zeros_(self.to_pixels.bias)

    @staticmethod
    def _frames(x_BKHW: torch.Tensor) -> torch.Tensor:
        """Frames stacked on channels ``(B, 3T, H, W)`` → ``(B, T, H, W, 3)``."""
        B, K, H, W = x_BKHW.shape
        return x_BKHW.reshape(B, K // 3, 3, H, W).permute(0, 1, 3, 4, 2)

    def _encode(self, x_B9HW: torch.Tensor):
        from lapo.lam import LatentActions
        from worldmodel.st import patchify

        tokens = self.idm(self.idm_embed(patchify(self._frames(x_B9HW), self.cfg.patch)))  # (B, 3, N, D)
        z = self.quantizer.bound(self.idm_norm(self.to_latent(tokens[:, -1].mean(1))))  # (B, L)
        z_q, codes, aux, stats = self.quantizer(z.float())
        return LatentActions(z, z_q, codes, aux, stats)

    def encode(self, window_B3HWC: torch.Tensor):
        """IDM + quantizer for uint8 windows ``(B, 3, H, W, C)``: :class:`lapo.lam.LatentActions`."""
        from lapo.nets import to_float

        return self._encode(to_float(window_B3HWC))

    def forward(self, window_B3HWC: torch.Tensor, labeled_window_M3HWC: torch.Tensor | None = None, *_):
        """FDM MSE at ``fdm_size`` plus the quantizer's auxiliary loss: ``(LAMOutput, loss)``.

        Raises:
            ValueError: labeled windows (this LAM trains on frames only).
        """
        from lapo.lam import LAMOutput
        from lapo.nets import to_float
        from worldmodel.st import patchify, unpatchify

        if labeled_window_M3HWC is not None:
            raise ValueError("the ST-transformer LAM has no jointly trained action decoder: train it on frames only")
        x = to_float(window_B3HWC)  # (B, 9, H, W)
        enc = self._encode(x)
        x = F.avg_pool2d(x, self.cfg.image_size // self.cfg.fdm_size)  # (B, 9, h, w)
        past = patchify(self._frames(x[:, :6]), self.cfg.fdm_patch)  # (B, 2, N, q·q·3)
        h = self.fdm(self.fdm_embed(past) + self.action_embed(enc.z_q)[:, None, None])  # (B, 2, N, D)
        pred = x[:, 3:6] + unpatchify(self.to_pixels(h[:, -1:]), self.cfg.fdm_patch)[:, 0]  # residual on o_t
        target = x[:, 6:]
        fdm_loss = F.mse_loss(pred.float(), target)
        stats = {**enc.stats, "fdm_loss": fdm_loss.detach(), "copy_last_loss": F.mse_loss(x[:, 3:6], target).detach()}
        return LAMOutput(enc.z, enc.z_q, enc.codes, pred, target, stats), fdm_loss + enc.aux_loss
