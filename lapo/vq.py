"""Quantized bottlenecks for latent actions: FSQ (default) and a VQ-VAE codebook with EMA updates.

- FSQ: Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple" (arXiv 2309.15505),
  Eq. 1-3: bound each dim with ``tanh``, round to one of ``levels`` values, straight-through
  gradient. No codebook to collapse, no auxiliary loss. Dims are split into ``groups``; each group's
  code index is the mixed-radix number of its rounded dims.
- VQ: van den Oord et al. 2017 (arXiv 1711.00937), Eq. 3, with EMA codebook updates (App. A.1)
  and dead-code restarts; ``groups`` codebooks of ``codebook_size`` entries, as in LAPO (2 × 64).
  A first run here collapsed a VQ to one code on CoinRun at small budgets, which is why FSQ is the
  default. Under torchrun the EMA statistics are summed over ranks and dead codes restart from the
  gathered global batch, so every rank keeps the same codebook as one process would.

Both return ``(z_q, codes, aux_loss, stats)``; ``stats["perplexity"]`` is the mean over groups of
``exp(H(code usage in the batch))`` (1 = collapsed, = codes per group at uniform use).

Dimension keys: B batch, L latent dim, G groups, K codes per group.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def perplexity(codes_BG: torch.Tensor, num_codes: int) -> torch.Tensor:
    """Mean over groups of exp(entropy) of the empirical code distribution. (B, G) int64 -> ()."""
    counts = F.one_hot(codes_BG, num_codes).float().sum(0)  # (G, K)
    p = counts / counts.sum(-1, keepdim=True)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-10))).sum(-1)).mean()


class FSQ(nn.Module):
    """Finite scalar quantizer over ``L = groups * dims_per_group`` dims.

    Args:
        latent_dim: L, the number of scalar dims.
        levels: quantization levels per dim (odd values keep 0 representable).
        groups: G; each group has K = levels ** (L / G) codes.

    Raises:
        ValueError: ``levels < 2`` or ``latent_dim`` not divisible by ``groups``.
    """

    def __init__(self, latent_dim: int, levels: int = 5, groups: int = 2):
        super().__init__()
        if levels < 2:
            raise ValueError(f"FSQ levels must be >= 2, got {levels}")
        if latent_dim % groups:
            raise ValueError(f"latent_dim {latent_dim} is not divisible by groups {groups}")
        self.latent_dim, self.levels, self.groups = latent_dim, levels, groups
        self.dims_per_group = latent_dim // groups
        self.num_codes = levels ** self.dims_per_group
        self.register_buffer("radix", levels ** torch.arange(self.dims_per_group), persistent=False)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Map unbounded encoder output to the continuous pre-quantization latent in [-1, 1]."""
        return torch.tanh(z)

    def forward(self, z_BL: torch.Tensor):
        """Quantize. ``z_BL`` is the *bounded* latent (see :meth:`bound`), float (B, L).

        Returns:
            z_q (B, L) float in [-1, 1] with straight-through gradients, codes (B, G) int64,
            aux_loss () (zero for FSQ), stats dict with ``perplexity``.
        """
        half = (self.levels - 1) / 2
        q = torch.round(z_BL * half)  # (B, L) integers in [-half, half]
        z_q = z_BL + (q / half - z_BL).detach()
        digits = (q + half).long().view(-1, self.groups, self.dims_per_group)  # (B, G, L/G)
        codes = (digits * self.radix).sum(-1)  # (B, G)
        stats = {"perplexity": perplexity(codes, self.num_codes).detach()}
        return z_q, codes, z_BL.new_zeros(()), stats

    def code_weights(self, z_BL: torch.Tensor) -> torch.Tensor:
        """Straight-through one-hot codes ``(B, G, K)``: the forward value is ``one_hot(codes)``; the
        gradient is that of the multilinear interpolation of the code grid at the bounded latent
        ``z_BL`` (each dim's weight split between the two levels around it). Lets a loss on a
        code-indexed embedding (``weights @ table``) reach the encoder, as when the world model's
        dynamics is co-trained with the LAM (Genie, arXiv 2402.15391, §2)."""
        half = (self.levels - 1) / 2
        u = ((z_BL.float() + 1) * half).view(-1, self.groups, self.dims_per_group)  # (B, G, d) in [0, levels-1]
        lo = u.detach().floor().clamp(0, self.levels - 2)
        frac = u - lo  # (B, G, d)
        per_dim = (F.one_hot(lo.long(), self.levels) * (1 - frac)[..., None]
                   + F.one_hot(lo.long() + 1, self.levels) * frac[..., None])  # (B, G, d, levels)
        soft = per_dim[:, :, 0]
        for i in range(1, self.dims_per_group):  # outer product; dim i has radix levels**i
            soft = (per_dim[:, :, i, :, None] * soft[:, :, None, :]).flatten(2)
        hard = F.one_hot(self(z_BL)[1], self.num_codes).to(soft.dtype)  # (B, G, K)
        return hard + soft - soft.detach()


class VectorQuantizerEMA(nn.Module):
    """``groups`` codebooks of ``codebook_size`` vectors, EMA updates, dead-code restarts.

    Args:
        latent_dim: L; each group quantizes ``L / groups`` dims.
        codebook_size: K entries per group.
        groups: G codebooks.
        decay: EMA decay of code statistics.
        commitment: β of the commitment loss ``β ||z - sg(e)||²``.
        restart_below: a code whose EMA usage falls below this is re-initialized to a random
            encoder output of the batch.

    Raises:
        ValueError: ``latent_dim`` not divisible by ``groups``.
    """

    def __init__(self, latent_dim: int, codebook_size: int = 64, groups: int = 2, decay: float = 0.99,
                 commitment: float = 0.25, restart_below: float = 1e-3):
        super().__init__()
        if latent_dim % groups:
            raise ValueError(f"latent_dim {latent_dim} is not divisible by groups {groups}")
        self.groups, self.num_codes, self.decay = groups, codebook_size, decay
        self.commitment, self.restart_below = commitment, restart_below
        d = latent_dim // groups
        self.register_buffer("codebook", torch.randn(groups, codebook_size, d) * 0.1)
        self.register_buffer("ema_count", torch.ones(groups, codebook_size))
        self.register_buffer("ema_sum", self.codebook.clone())

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """VQ uses the encoder output as is."""
        return z

    def forward(self, z_BL: torch.Tensor):
        """Quantize ``z_BL`` float (B, L); returns ``(z_q, codes (B, G), commitment loss, stats)``."""
        B = z_BL.shape[0]
        z = z_BL.float().view(B, self.groups, -1).transpose(0, 1)  # (G, B, d)
        dist = torch.cdist(z, self.codebook)  # (G, B, K)
        codes = dist.argmin(-1)  # (G, B)
        e = torch.gather(self.codebook, 1, codes.unsqueeze(-1).expand(-1, -1, z.shape[-1]))  # (G, B, d)
        if self.training:
            from lapo.training import all_gather_cat, all_reduce_sum

            with torch.no_grad():
                onehot = F.one_hot(codes, self.num_codes).float()  # (G, B, K)
                self.ema_count.mul_(self.decay).add_(all_reduce_sum(onehot.sum(1)), alpha=1 - self.decay)
                self.ema_sum.mul_(self.decay).add_(all_reduce_sum(onehot.transpose(1, 2) @ z), alpha=1 - self.decay)
                n = self.ema_count.sum(-1, keepdim=True)
                count = (self.ema_count + 1e-5) / (n + self.num_codes * 1e-5) * n
                self.codebook.copy_(self.ema_sum / count.unsqueeze(-1))
                dead = self.ema_count < self.restart_below * n / self.num_codes
                if dead.any():
                    z_all = all_gather_cat(z.contiguous(), dim=1)  # (G, B_global, d), rank order = batch order
                    pick = torch.randint(0, z_all.shape[1], dead.shape, device=z.device)
                    fresh = torch.gather(z_all, 1, pick.unsqueeze(-1).expand(-1, -1, z.shape[-1]))
                    self.codebook[dead] = fresh[dead]
                    self.ema_sum[dead] = fresh[dead]
                    self.ema_count[dead] = 1.0
        loss = self.commitment * F.mse_loss(z, e.detach())
        z_q = z + (e - z).detach()
        z_q = z_q.transpose(0, 1).reshape(B, -1).to(z_BL.dtype)
        codes = codes.t().contiguous()  # (B, G)
        stats = {"perplexity": perplexity(codes, self.num_codes).detach()}
        return z_q, codes, loss, stats


class Continuous(FSQ):
    """No bottleneck: the bounded latent passes unchanged (continuous latent actions, as in CLAM,
    Liang et al. 2025). ``codes`` are FSQ's bins of the latent, for diagnostics only (perplexity,
    code-vs-action tables); nothing is rounded."""

    def forward(self, z_BL: torch.Tensor):
        _, codes, aux, stats = super().forward(z_BL.detach())
        return z_BL, codes, aux, stats


def build_quantizer(kind: str, latent_dim: int, levels: int, groups: int, codebook_size: int) -> nn.Module:
    """``"fsq"``, ``"vq"`` or ``"none"`` (:class:`Continuous`). Raises ``ValueError`` for any other kind."""
    if kind == "fsq":
        return FSQ(latent_dim, levels, groups)
    if kind == "none":
        return Continuous(latent_dim, levels, groups)
    if kind == "vq":
        return VectorQuantizerEMA(latent_dim, codebook_size, groups)
    raise ValueError(f"unknown quantizer {kind!r}; choose 'fsq', 'vq' or 'none'")
