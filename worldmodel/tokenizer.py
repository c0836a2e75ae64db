"""Video tokenizer: a per-frame convolutional autoencoder with an FSQ bottleneck per token.

Genie (arXiv 2402.15391, §2.1) tokenizes video with an ST-ViViT VQ-VAE (patch 4, 1024 codes). On a
2-core CPU we use the cheaper per-frame variant the issue allows: a conv encoder downsamples a
64×64 frame by ``2 ** len(widths)`` to a ``grid × grid`` map, each cell is bounded and quantized
with FSQ (Mentzer et al. 2023, arXiv 2309.15505; :class:`lapo.vq.FSQ`, ``levels ** code_dims``
codes, no codebook to collapse), and a mirrored conv decoder reconstructs the frame. A feasibility
probe on this machine reached 35.5 dB held-out PSNR on CoinRun in 8 minutes with an 8×8 grid and
1,000 codes. Genie's ST-ViViT (:class:`STViViTTokenizer`) was trained against it for the same CPU
budget and lost on PSNR, codebook use and decode speed (``docs/worldmodel_history.md``,
``docs/tokenizer_st_vivit.md``).

Loss: pixel MSE in [0, 1] (what PSNR measures). Metrics (:func:`reconstruction_metrics`): PSNR,
SSIM (Wang et al. 2004, 11×11 Gaussian window σ=1.5), code perplexity and dead codes over the
held-out frames — codebook collapse is the most reported failure in Genie reimplementations.

Dimension keys: B frames, H W C image, h w token grid, N = h·w tokens, E code dims, K codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from envs.pretrained import Pretrained
from lapo.nets import to_float
from lapo.training import TrainConfig
from lapo.vq import FSQ


@dataclass
class TokenizerConfig:
    """Architecture of the video tokenizer (stored in its config.json)."""

    image_size: int = 64
    """H = W of the frames, pixels."""
    widths: tuple[int, ...] = (32, 96, 192)
    """Channels after each stride-2 level; the token grid is ``image_size / 2**len(widths)``."""
    res_blocks: int = 1
    """Residual blocks per level (encoder and decoder)."""
    code_dims: int = 4
    """E, FSQ dims per token."""
    levels: int = 5
    """FSQ levels per dim (odd); K = levels ** code_dims codes."""

    def __post_init__(self):
        self.widths = tuple(self.widths)
        if self.image_size % 2 ** len(self.widths):
            raise ValueError(f"image_size {self.image_size} must be divisible by 2**len(widths) = "
                             f"{2 ** len(self.widths)}")
        if any(w % 8 for w in self.widths):
            raise ValueError(f"widths {self.widths} must be multiples of 8 (GroupNorm with 8 groups)")
        if self.levels < 3 or self.levels % 2 == 0:
            raise ValueError(f"levels {self.levels} must be odd and >= 3 (FSQ rounds symmetric around 0)")

    @property
    def grid(self) -> int:
        """h = w, tokens per side."""
        return self.image_size // 2 ** len(self.widths)

    @property
    def num_codes(self) -> int:
        """K, the vocabulary size."""
        return self.levels ** self.code_dims


def code_vectors(levels: int, code_dims: int) -> torch.Tensor:
    """Each FSQ code id's quantized vector, ``(levels ** code_dims, code_dims)`` float in [-1, 1]
    (for decoding from token ids)."""
    half = (levels - 1) / 2
    digits = (torch.arange(levels ** code_dims)[:, None] // levels ** torch.arange(code_dims)) % levels
    return (digits.float() - half) / half


class ResBlock(nn.Module):
    """GroupNorm → SiLU → 3×3 conv, twice, plus the input."""

    def __init__(self, c: int):
        super().__init__()
        self.net = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, c, 3, 1, 1),
                                 nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, c, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class Tokenizer(Pretrained, nn.Module):
    """Frames ↔ token grids. ``encode(frames)`` uint8 ``(B, H, W, C)`` → codes ``(B, h, w)`` int64;
    ``decode(codes)`` → float ``(B, C, H, W)`` in [0, 1]; ``forward(frames)`` → ``(recon, loss, stats)``.
    Saved as kind ``wm_tokenizer``."""

    kind = "wm_tokenizer"
    config_class = TokenizerConfig

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.widths
        # full resolution is touched only by the first and last (cheap) convs: residual blocks run
        # at H/2 and below (a 64-channel block at 64×64 made a training step ~4× slower here)
        enc = [nn.Conv2d(3, w[0], 4, 2, 1)]  # (B, w0, H/2, W/2)
        for i, c in enumerate(w):
            enc += [ResBlock(c) for _ in range(cfg.res_blocks)]
            if i + 1 < len(w):
                enc.append(nn.Conv2d(c, w[i + 1], 4, 2, 1))
        enc += [nn.GroupNorm(8, w[-1]), nn.SiLU(), nn.Conv2d(w[-1], cfg.code_dims, 1)]  # (B, E, h, w)
        self.encoder = nn.Sequential(*enc)
        dec = [nn.Conv2d(cfg.code_dims, w[-1], 1)]
        for i in reversed(range(len(w))):
            dec += [ResBlock(w[i]) for _ in range(cfg.res_blocks)]
            if i > 0:
                dec.append(nn.ConvTranspose2d(w[i], w[i - 1], 4, 2, 1))
        dec += [nn.ConvTranspose2d(w[0], 32, 4, 2, 1), nn.GroupNorm(8, 32), nn.SiLU(), nn.Conv2d(32, 3, 3, 1, 1)]
        self.decoder = nn.Sequential(*dec)
        self.fsq = FSQ(cfg.code_dims, cfg.levels, groups=1)
        self.register_buffer("code_vectors", code_vectors(cfg.levels, cfg.code_dims), persistent=False)

    def quantize(self, frames_BHWC: torch.Tensor):
        """uint8 frames → (z_q (B, E, h, w) float, codes (B, h, w) int64, perplexity)."""
        x = to_float(frames_BHWC[:, None])  # (B, 3, H, W)
        z = self.fsq.bound(self.encoder(x))  # (B, E, h, w)
        B, E, h, w = z.shape
        z_q, codes, _, stats = self.fsq(z.permute(0, 2, 3, 1).reshape(-1, E).float())  # (B*h*w, E), (B*h*w, 1)
        return z_q.view(B, h, w, E).permute(0, 3, 1, 2), codes.view(B, h, w), stats["perplexity"]

    @torch.no_grad()
    def encode(self, frames_BHWC: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, H, W, C)`` → codes ``(B, h, w)`` int64 in ``[0, K)``.

        Raises:
            ValueError: frames of another size than ``image_size``.
        """
        if tuple(frames_BHWC.shape[1:]) != (self.cfg.image_size, self.cfg.image_size, 3):
            raise ValueError(f"the tokenizer takes (B, {self.cfg.image_size}, {self.cfg.image_size}, 3) uint8 "
                             f"frames, got {tuple(frames_BHWC.shape)}")
        return self.quantize(frames_BHWC)[1]

    def decode(self, codes_Bhw: torch.Tensor) -> torch.Tensor:
        """codes ``(B, h, w)`` int64 → frames float ``(B, 3, H, W)``, clamped to [0, 1]."""
        z = self.code_vectors[codes_Bhw].permute(0, 3, 1, 2)  # (B, E, h, w)
        return self.decoder(z).clamp(0, 1)

    def forward(self, frames_BHWC: torch.Tensor):
        """Reconstruction loss of a batch: ``(recon (B, 3, H, W), loss (), stats)``."""
        z_q, codes, ppl = self.quantize(frames_BHWC)
        recon = self.decoder(z_q)
        target = to_float(frames_BHWC[:, None])
        loss = F.mse_loss(recon.float(), target)
        return recon, loss, {"perplexity": ppl, "psnr": psnr(recon.detach().float().clamp(0, 1), target).mean()}


@dataclass
class STViViTConfig:
    """Genie's video tokenizer (arXiv 2402.15391, §2.1 and App. C.1: ST-ViViT): frames cut into
    patches, an ST-transformer encoder (spatial attention within a frame, causal temporal attention
    across the clip's frames), FSQ per token, and an ST-transformer decoder back to patches. Built
    to decide the issue's "ST-ViViT or per-frame conv tokenizer on a CPU" by measurement
    (``scripts/tokenizer_sweep --variants st-vivit``, ``docs/worldmodel_history.md``); the world model
    uses the conv :class:`Tokenizer`."""

    image_size: int = 64
    """H = W of the frames, pixels."""
    patch: int = 8
    """Patch side, pixels (Genie: 4); the token grid is ``image_size / patch``."""
    dim: int = 128
    """Transformer width."""
    depth: int = 4
    """ST blocks of the encoder, and of the decoder."""
    heads: int = 4
    clip_frames: int = 4
    """T, frames per training clip (causal: a frame's tokens depend on it and the earlier frames)."""
    code_dims: int = 4
    """E, FSQ dims per token."""
    levels: int = 5
    """FSQ levels per dim (odd); K = levels ** code_dims codes."""

    def __post_init__(self):
        if self.image_size % self.patch:
            raise ValueError(f"image_size {self.image_size} must be divisible by patch {self.patch}")
        if self.levels < 3 or self.levels % 2 == 0:
            raise ValueError(f"levels {self.levels} must be odd and >= 3 (FSQ rounds symmetric around 0)")
        if self.clip_frames < 1:
            raise ValueError(f"clip_frames must be >= 1, got {self.clip_frames}")

    @property
    def grid(self) -> int:
        """h = w, tokens per side."""
        return self.image_size // self.patch

    @property
    def num_codes(self) -> int:
        """K, the vocabulary size."""
        return self.levels ** self.code_dims


class STViViTTokenizer(Pretrained, nn.Module):
    """Clips ↔ token grids with :class:`STViViTConfig`. ``encode`` uint8 ``(B, T, H, W, C)`` → codes
    ``(B, T, h, w)`` int64 (a ``(B, H, W, C)`` batch is read as one-frame clips: ``(B, h, w)``);
    ``decode`` the inverse, float in [0, 1] ``(B, T, 3, H, W)`` (or ``(B, 3, H, W)``);
    ``forward(clips)`` → ``(recon, loss, stats)`` as :class:`Tokenizer`'s. Saved as kind
    ``wm_st_vivit_tokenizer``.

    Raises:
        ValueError: frames of another size than ``image_size``, or clips longer than ``clip_frames``.
    """

    kind = "wm_st_vivit_tokenizer"
    config_class = STViViTConfig

    def __init__(self, cfg: STViViTConfig):
        super().__init__()
        from worldmodel.st import STTransformer

        self.cfg = cfg
        pixels, tokens = cfg.patch * cfg.patch * 3, cfg.grid ** 2
        self.embed, self.to_code = nn.Linear(pixels, cfg.dim), nn.Linear(cfg.dim, cfg.code_dims)
        self.encoder = STTransformer(cfg.dim, cfg.depth, cfg.heads, tokens, cfg.clip_frames)
        self.from_code, self.to_pixels = nn.Linear(cfg.code_dims, cfg.dim), nn.Linear(cfg.dim, pixels)
        self.decoder = STTransformer(cfg.dim, cfg.depth, cfg.heads, tokens, cfg.clip_frames)
        self.fsq = FSQ(cfg.code_dims, cfg.levels, groups=1)
        self.register_buffer("code_vectors", code_vectors(cfg.levels, cfg.code_dims), persistent=False)

    def _clips(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` or ``(B, T, H, W, C)`` uint8 → ``(B, T, H, W, C)``, checked."""
        clips = frames[:, None] if frames.dim() == 4 else frames
        S = self.cfg.image_size
        if clips.dim() != 5 or tuple(clips.shape[2:]) != (S, S, 3) or clips.shape[1] > self.cfg.clip_frames:
            raise ValueError(f"the tokenizer takes (B, T <= {self.cfg.clip_frames}, {S}, {S}, 3) uint8 clips "
                             f"or (B, {S}, {S}, 3) frames, got {tuple(frames.shape)}")
        return clips

    def quantize(self, clips_BTHWC: torch.Tensor):
        """uint8 clips → (z_q (B, T, N, E) float, codes (B, T, h, w) int64, perplexity)."""
        from worldmodel.st import patchify

        B, T = clips_BTHWC.shape[:2]
        g = self.cfg.grid
        x = patchify(clips_BTHWC.float().div(255.0), self.cfg.patch)  # (B, T, N, p·p·C)
        z = self.fsq.bound(self.to_code(self.encoder(self.embed(x))))
        E = z.shape[-1]
        z_q, codes, _, stats = self.fsq(z.reshape(-1, E).float())
        return z_q.view(B, T, g * g, E), codes.view(B, T, g, g), stats["perplexity"]

    def _pixels(self, z_BTNE: torch.Tensor) -> torch.Tensor:
        """Quantized token vectors → frames float ``(B, T, 3, H, W)`` (not clamped)."""
        from worldmodel.st import unpatchify

        return unpatchify(self.to_pixels(self.decoder(self.from_code(z_BTNE))), self.cfg.patch)

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        codes = self.quantize(self._clips(frames))[1]
        return codes[:, 0] if frames.dim() == 4 else codes

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        clips = codes[:, None] if codes.dim() == 3 else codes  # (B, T, h, w)
        B, T = clips.shape[:2]
        out = self._pixels(self.code_vectors[clips].view(B, T, -1, self.cfg.code_dims)).clamp(0, 1)
        return out[:, 0] if codes.dim() == 3 else out

    def forward(self, frames: torch.Tensor):
        """Reconstruction loss of a batch of clips: ``(recon (B, T, 3, H, W), loss (), stats)``."""
        clips = self._clips(frames)
        z_q, _, ppl = self.quantize(clips)
        recon = self._pixels(z_q)
        target = clips.permute(0, 1, 4, 2, 3).float() / 255.0
        loss = F.mse_loss(recon.float(), target)
        return recon, loss, {"perplexity": ppl, "psnr": psnr(recon.detach().flatten(0, 1).clamp(0, 1),
                                                            target.flatten(0, 1)).mean()}


def build_tokenizer(cfg: TokenizerConfig | STViViTConfig) -> nn.Module:
    """The tokenizer a config describes: :class:`Tokenizer` or :class:`STViViTTokenizer`."""
    return STViViTTokenizer(cfg) if isinstance(cfg, STViViTConfig) else Tokenizer(cfg)


def psnr(pred_BCHW: torch.Tensor, target_BCHW: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, dB, for float images in [0, 1]: ``(B,)``."""
    mse = ((pred_BCHW.float() - target_BCHW.float()) ** 2).flatten(1).mean(1)
    return -10 * torch.log10(mse.clamp_min(1e-10))


def ssim(pred_BCHW: torch.Tensor, target_BCHW: torch.Tensor) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004, Eq. 13; 11×11 Gaussian window, σ = 1.5,
    K1 = 0.01, K2 = 0.03, data range 1, 'valid' windows, mean over channels): ``(B,)``."""
    g = torch.exp(-((torch.arange(11, dtype=torch.float32) - 5) ** 2) / (2 * 1.5 ** 2))
    g = (g / g.sum()).to(pred_BCHW.device)
    C = pred_BCHW.shape[1]
    kernel = (g[:, None] * g[None, :]).expand(C, 1, 11, 11)

    def blur(x):
        return F.conv2d(x, kernel, groups=C)

    x, y = pred_BCHW.float(), target_BCHW.float()
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


@torch.no_grad()
def reconstruction_metrics(tok: Tokenizer, frames_NHWC: np.ndarray, batch_size: int = 256,
                           clips_MT: np.ndarray | None = None) -> dict[str, float]:
    """Held-out reconstruction quality and codebook usage of ``frames_NHWC`` (uint8, numpy or memmap):
    mean ``psnr`` (dB), mean ``ssim``, code ``perplexity`` (exp of the entropy of the code histogram
    over all tokens; K at uniform use), ``codes_used`` and ``dead_codes`` (codes never used, of K).
    With ``clips_MT`` (frame indices ``(M, T)``, for :class:`STViViTTokenizer`) each clip is encoded
    and decoded whole and its last frame is scored (M frames, each with its T − 1 predecessors)."""
    tok.eval()
    device = next(tok.parameters()).device
    ps, ss, counts = [], [], torch.zeros(tok.cfg.num_codes, dtype=torch.long)
    n = len(frames_NHWC) if clips_MT is None else len(clips_MT)
    for i in range(0, n, batch_size):
        if clips_MT is None:
            frames = torch.from_numpy(np.asarray(frames_NHWC[i:i + batch_size])).to(device)
            codes = tok.encode(frames)
            recon = tok.decode(codes)
        else:
            clips = torch.from_numpy(np.asarray(frames_NHWC[clips_MT[i:i + batch_size]])).to(device)
            codes = tok.encode(clips)
            recon, codes, frames = tok.decode(codes)[:, -1], codes[:, -1], clips[:, -1]
        target = to_float(frames[:, None])
        ps.append(psnr(recon, target).cpu())
        ss.append(ssim(recon, target).cpu())
        counts += torch.bincount(codes.flatten().cpu(), minlength=tok.cfg.num_codes)
    p = counts.double() / counts.sum()
    ppl = float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))
    used = int((counts > 0).sum())
    return {"psnr": float(torch.cat(ps).mean()), "ssim": float(torch.cat(ss).mean()), "perplexity": ppl,
            "codes_used": used, "dead_codes": tok.cfg.num_codes - used}


@dataclass
class TokenizerTrainConfig(TrainConfig):
    """Training of the tokenizer (``lapo wm train``, stage ``tokenizer``)."""

    steps: int = 15_000
    """The ``cpu`` preset's schedule: held-out PSNR 36.68 dB at its end with this lr and clip
    (``docs/worldmodel_cpu_preset_steps2.json``; 36.01 dB at step 15,000 of an unclipped 24k-step
    run, ``docs/tokenizer_long_avx512.json``); 3,000 steps at lr 1e-3 (the preset before 2026-11-28)
    reach 31 dB."""
    batch_size: int = 32
    lr: float = 5e-4
    """Peak lr; 1e-3 diverged on the 24k-step schedule (``docs/tokenizer_long_diverged.json``)."""
    grad_clip: float = 0.1
    """Gradient-norm clip: a few times the late-training norm (0.01–0.04 logged); without it a
    15k-step run at lr 5e-4 diverged at step ~5,900 (norm 0.14 logged there, loss 0.0006 → 0.016)."""
    val_fraction: float = 0.05
    """Fraction of episodes held out (metrics are on their frames)."""
    val_frames: int = 2048
    """Held-out frames scored at each validation (evenly spaced)."""
    eval_every: int = 500
    """Steps between validation passes."""
    checkpoint_every: int = 250


def frame_split(ds, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices of training and held-out episodes (the LAM's episode split, plus last frames)."""
    train_t, val_t = ds.episode_split(val_fraction, seed)
    val_eps = np.unique(ds.episode_index[val_t])
    is_val = np.isin(ds.episode_index, val_eps)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def train_tokenizer(dataset_dir, out_dir, model_cfg: TokenizerConfig | STViViTConfig | None = None,
                    train_cfg: TokenizerTrainConfig | None = None, log_dir=None) -> tuple[Tokenizer, dict]:
    """Train a :class:`Tokenizer` on a dataset's frames (frames only) and save it to ``out_dir``.
    Resumable like every trainer (:func:`lapo.training.fit`). Returns ``(tokenizer, held-out metrics)``.
    With an :class:`STViViTConfig` it trains an :class:`STViViTTokenizer` on clips of ``clip_frames``
    consecutive frames (``batch_size // clip_frames`` clips per step, the same frames per step) and
    scores the same held-out frames, each encoded after its ``clip_frames − 1`` predecessors.

    Raises:
        FileNotFoundError / ValueError: a bad dataset; frames of another size than ``image_size``;
            a training state in ``out_dir`` made with other settings.
    """
    from envs.dataset import EpisodeDataset
    from lapo.training import BatchSampler, build_device, fit, is_main_process, run_record, summary_writer

    model_cfg, train_cfg = model_cfg or TokenizerConfig(), train_cfg or TokenizerTrainConfig()
    # --- build ---
    ds = EpisodeDataset(dataset_dir)
    if ds.frame_shape != (model_cfg.image_size, model_cfg.image_size, 3):
        raise ValueError(f"{dataset_dir} has frames of shape {ds.frame_shape}; the tokenizer expects "
                         f"({model_cfg.image_size}, {model_cfg.image_size}, 3): set image_size")
    device = build_device(train_cfg)
    train_f, val_f = frame_split(ds, train_cfg.val_fraction, train_cfg.seed)
    val_f = val_f[np.linspace(0, len(val_f) - 1, min(len(val_f), train_cfg.val_frames)).astype(int)]
    tok = build_tokenizer(model_cfg).to(device)
    record = run_record(model_cfg, train_cfg, dataset=ds.fingerprint())
    writer = summary_writer(log_dir)
    T = getattr(model_cfg, "clip_frames", 1)  # an ST-ViViT trains on clips: batch_size // T clips of T frames
    if T > 1:
        from worldmodel.dynamics import clip_indices

        train_f = clip_indices(ds, train_f, T - 1)  # (M, T), edge-padded at an episode's start
        start = ds.episode_starts[ds.episode_index[val_f]]  # the same held-out frames as a conv tokenizer's,
        val_clips = np.maximum(val_f[:, None] + np.arange(1 - T, 1), start[:, None])  # each after its T - 1 frames
    evaluate = ((lambda m: reconstruction_metrics(m, ds.frames[val_f])) if T == 1 else
                (lambda m: reconstruction_metrics(m, ds.frames, clips_MT=val_clips)))

    def make_batch(d):
        if T > 1:
            return torch.from_numpy(np.asarray(ds.frames[train_f[d.positions]])).to(device)
        idx = np.sort(train_f[d.positions])
        return torch.from_numpy(ds.frames[idx]).to(device)

    def loss_fn(model, batch):
        _, loss, stats = model(batch)
        return loss, stats

    # --- loop ---
    result = fit(tok, BatchSampler(len(train_f), max(1, train_cfg.batch_size // T), train_cfg.seed), make_batch,
                 loss_fn, train_cfg, out_dir=out_dir, record=record, writer=writer, tag="tokenizer",
                 evaluate=evaluate, eval_every=train_cfg.eval_every)
    if writer and T == 1:
        frames = torch.from_numpy(np.asarray(ds.frames[val_f[:8]])).to(device)
        with torch.no_grad():  # top row: reconstructions of held-out frames; bottom row: the frames
            writer.add_images("val/tokenizer_reconstruction", torch.cat([tok.decode(tok.encode(frames)),
                                                                         to_float(frames[:, None])]), train_cfg.steps)
        writer.close()
    # --- save ---
    if is_main_process():
        tok.save_pretrained(out_dir, train_config=train_cfg, val_metrics=result.metrics, dataset=str(dataset_dir),
                            record=record)
    return tok, result.metrics
