"""Latent action model = IDM + quantized bottleneck + FDM (LAPO: Schmidt & Jiang, ICLR 2024, §3.1).

The inverse dynamics model (IDM) sees ``(o_{t-1}, o_t, o_{t+1})`` and outputs a continuous latent
action ``z_t``; a quantizer (FSQ by default, see :mod:`lapo.vq`) bottlenecks it to ``z_q``; the
forward dynamics model (FDM) predicts ``o_{t+1}`` from ``(o_{t-1}, o_t)`` and ``z_q``. Trained on
frames alone with the FDM's reconstruction loss (LAPO Eq. 1-2), the only route for information
about ``o_{t+1}`` is the narrow latent, so it learns to encode what the frames cannot predict:
mostly the action.

The IDM is a Nature CNN (or LAPO's IMPALA CNN) over the three full-resolution frames stacked on channels. The FDM is a
small U-Net that predicts the residual ``o_{t+1} - o_t`` (so it starts at the copy-last-frame
baseline, which every log reports beside the FDM loss) at ``fdm_size`` pixels (frames are
average-pooled to it): on a 2-core CPU a 32×32 FDM trains ~5× faster than a 64×64 one, and camera
and agent motion stay visible at that size. The quantized latent enters the FDM only through
per-channel FiLM (scale, shift) at every U-Net level: a latent that could be decoded into a spatial
map learned to encode *where* things end up instead of the action (measured on a synthetic
moving-square task: probe accuracy 0.42 with a spatial map, 1.00 with FiLM only).

Dimension keys: B batch, T=3 window frames, H W C image, L latent dim, G groups.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from envs.pretrained import Pretrained
from lapo.nets import ConvEncoder, build_encoder, to_float, up_block
from lapo.training import TrainConfig, all_reduce_sum
from lapo.vq import build_quantizer, perplexity


@dataclass
class LAMConfig:
    """Architecture of the latent action model (stored in the checkpoint's config.json)."""

    image_size: int = 64
    """H = W of the frames, pixels."""
    idm_encoder: str = "nature"
    """IDM network: ``nature`` (Nature CNN) or ``impala`` (IMPALA CNN, LAPO's)."""
    idm_channels: tuple[int, ...] = (32, 64, 64)
    """IDM conv widths (Nature CNN: three convs; IMPALA: one per stack, (16, 32, 32) × scale)."""
    idm_hidden: int = 256
    """IDM MLP width."""
    fdm_size: int = 32
    """H = W at which the FDM reads past frames and predicts o_{t+1}, pixels."""
    widths: tuple[int, ...] = (32, 64, 128)
    """FDM U-Net channels of each stride-2 level."""
    latent_dim: int = 8
    """L, dims of the latent action."""
    quantizer: str = "fsq"
    """``fsq`` (finite scalar quantization), ``vq`` (EMA codebooks with restarts) or ``none``
    (continuous latent, CLAM; see :class:`lapo.vq.Continuous`)."""
    fsq_levels: int = 5
    """FSQ levels per dim."""
    groups: int = 2
    """G code groups (FSQ) or codebooks (VQ); a transition's code is (G,) ints."""
    codebook_size: int = 64
    """VQ entries per codebook (ignored by FSQ)."""

    def __post_init__(self):
        self.widths, self.idm_channels = tuple(self.widths), tuple(self.idm_channels)
        if self.image_size % self.fdm_size:
            raise ValueError(f"fdm_size {self.fdm_size} must divide image_size {self.image_size}")
        if self.fdm_size % 2 ** len(self.widths):
            raise ValueError(f"fdm_size {self.fdm_size} must be divisible by 2**len(widths) = "
                             f"{2 ** len(self.widths)}")
        if any(w % 8 for w in self.widths):
            raise ValueError(f"widths {self.widths} must be multiples of 8 (GroupNorm with 8 groups)")
        if self.latent_dim % self.groups:
            raise ValueError(f"latent_dim {self.latent_dim} must be divisible by groups {self.groups}")
        if self.quantizer not in ("fsq", "vq", "none"):
            raise ValueError(f"quantizer {self.quantizer!r}: choose 'fsq', 'vq' or 'none'")


class FDM(nn.Module):
    """U-Net: ``(o_{t-1}, o_t)`` float (B, 6, H, W) + ``z_q`` (B, L) -> predicted ``o_{t+1}`` (B, 3, H, W)."""

    def __init__(self, cfg: LAMConfig):
        super().__init__()
        w = cfg.widths
        self.encoder = ConvEncoder(6, w)
        # The latent enters only as a per-channel scale and shift (FiLM) at every level, the same at
        # every pixel: it can say "what moved how" but not "draw this at (x, y)", which keeps it
        # from encoding the next frame's layout instead of the action.
        self.film = nn.ModuleList(nn.Linear(cfg.latent_dim, 2 * c) for c in w)
        ups, c_in = [], w[-1]
        for c_skip, c_out in zip(reversed(w[:-1]), reversed(w[:-1])):
            ups.append(up_block(c_in, c_out))
            c_in = c_out + c_skip
        self.ups = nn.ModuleList(ups)
        self.out = nn.ConvTranspose2d(c_in, 3, 4, 2, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, past_B6HW: torch.Tensor, z_BL: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(past_B6HW)  # level i: (B, w_i, H/2^(i+1), W/2^(i+1))
        films = [f(z_BL)[:, :, None, None].chunk(2, 1) for f in self.film]  # (B, w_i, 1, 1) × 2
        feats = [x * (1 + scale) + shift for x, (scale, shift) in zip(feats, films)]
        x = feats[-1]
        for up, skip in zip(self.ups, reversed(feats[:-1])):
            x = torch.cat([up(x), skip], 1)
        return past_B6HW[:, 3:] + self.out(x)  # residual on o_t


class LatentActions(NamedTuple):
    """IDM + quantizer output for B transitions."""

    z: torch.Tensor
    """(B, L) float: the continuous pre-quantization latent action (what latent BC regresses)."""
    z_q: torch.Tensor
    """(B, L) float: the quantized latent (straight-through gradients)."""
    codes: torch.Tensor
    """(B, G) int64: code index per group."""
    aux_loss: torch.Tensor
    """(): the quantizer's auxiliary loss (VQ commitment; zero for FSQ)."""
    stats: dict
    """Scalars: ``perplexity``."""


class LAMOutput(NamedTuple):
    """:meth:`LatentActionModel.forward` output: the latent actions plus the FDM's prediction."""

    z: torch.Tensor
    """(B, L) float continuous latent."""
    z_q: torch.Tensor
    """(B, L) float quantized latent."""
    codes: torch.Tensor
    """(B, G) int64 codes."""
    pred: torch.Tensor
    """(B, 3, h, w) float: predicted o_{t+1} at ``fdm_size``, [0, 1] units."""
    target: torch.Tensor
    """(B, 3, h, w) float: the true o_{t+1} at ``fdm_size``."""
    stats: dict
    """Scalars: perplexity, fdm_loss, copy_last_loss."""


class BatchStandardize(nn.BatchNorm1d):
    """``BatchNorm1d(affine=False)`` whose batch statistics are summed over torchrun ranks, so N
    processes normalize exactly as one process with the global batch (``SyncBatchNorm`` needs CUDA).
    Same buffers as ``nn.BatchNorm1d``: checkpoints are unchanged. ``(B, L)`` float in and out."""

    def __init__(self, num_features: int):
        super().__init__(num_features, affine=False)

    def forward(self, x_BL: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x_BL)
        x = x_BL.float()
        n = all_reduce_sum(x.new_tensor([x.shape[0]]))
        mean = all_reduce_sum(x.sum(0)) / n  # (L,)
        var = all_reduce_sum(((x - mean) ** 2).sum(0)) / n  # (L,) biased, used to normalize
        with torch.no_grad():
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * n / (n - 1).clamp_min(1), self.momentum)
            self.num_batches_tracked += 1
        return (x - mean) / torch.sqrt(var + self.eps)


class LatentActionModel(Pretrained, nn.Module):
    """IDM + quantizer + FDM.

    ``forward(window_B3HWC)`` takes uint8 windows ``(B, 3, H, W, C)`` = ``(o_{t-1}, o_t, o_{t+1})``
    and returns ``(LAMOutput, loss)``; ``loss`` is the FDM MSE plus the quantizer's auxiliary loss.
    ``encode`` runs the IDM + quantizer only (:class:`LatentActions`). Saved and loaded with
    ``save_pretrained`` / ``from_pretrained`` (kind ``lam``).

    ``action_decoder`` (optional): an :class:`lapo.decoder.ActionHead` from the latent ``z_q`` to
    true actions, trained jointly on labeled transitions (CLAM, Liang et al. 2025, §3: the action
    loss also shapes the IDM); saved with the LAM. None = LAPO (frames only).
    """

    kind = "lam"
    config_class = LAMConfig

    def __init__(self, cfg: LAMConfig, action_decoder: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        self.action_decoder = action_decoder
        self.idm = build_encoder(cfg.idm_encoder, 9, cfg.image_size, cfg.idm_channels, cfg.idm_hidden,
                                 cfg.latent_dim)
        # standardize each latent dim over the batch before the quantizer's bound: otherwise the
        # small initial IDM outputs all round to FSQ's zero level and the latent starts unused
        self.idm_norm = BatchStandardize(cfg.latent_dim)
        self.quantizer = build_quantizer(cfg.quantizer, cfg.latent_dim, cfg.fsq_levels, cfg.groups,
                                         cfg.codebook_size)
        self.fdm = FDM(cfg)

    def to_config(self):
        if self.action_decoder is None:
            return self.cfg
        return {**dataclasses.asdict(self.cfg), "action_decoder": self.action_decoder.to_config()}

    @classmethod
    def from_config(cls, config: dict) -> "LatentActionModel":
        from lapo.decoder import ActionHead

        config = dict(config)
        decoder = config.pop("action_decoder", None)
        return cls(LAMConfig(**config), ActionHead.from_config(decoder) if decoder is not None else None)

    def encode(self, window_B3HWC: torch.Tensor) -> LatentActions:
        """IDM + quantizer for uint8 windows ``(B, 3, H, W, C)``."""
        return self._encode(to_float(window_B3HWC, channels_last=True))

    def _encode(self, x_B9HW: torch.Tensor) -> LatentActions:
        """IDM + quantizer for float windows ``(B, 9, H, W)`` in [0, 1] (NHWC in memory: faster)."""
        z = self.quantizer.bound(self.idm_norm(self.idm(x_B9HW)))  # (B, L)
        z_q, codes, aux, stats = self.quantizer(z.float())
        return LatentActions(z, z_q, codes, aux, stats)

    def forward(self, window_B3HWC: torch.Tensor, labeled_window_M3HWC: torch.Tensor | None = None,
                actions_M: torch.Tensor | None = None, action_weight: float = 1.0) -> tuple[LAMOutput, torch.Tensor]:
        """Loss of a batch; with labeled windows ``(M, 3, H, W, C)`` uint8 and their true actions
        ``(M,)`` int / ``(M, D)`` float, plus ``action_weight ×`` the action decoder's loss on them
        (``stats["action_loss"]``). One call, so DDP sees every parameter used."""
        x = to_float(window_B3HWC, channels_last=True)  # (B, 9, H, W), NHWC in memory
        enc = self._encode(x)
        x = F.avg_pool2d(x, self.cfg.image_size // self.cfg.fdm_size)  # (B, 9, h, w) at fdm_size
        pred = self.fdm(x[:, :6], enc.z_q)
        target = x[:, 6:]
        fdm_loss = F.mse_loss(pred.float(), target)
        stats = {**enc.stats, "fdm_loss": fdm_loss.detach(),
                 "copy_last_loss": F.mse_loss(x[:, 3:6], target).detach()}
        loss = fdm_loss + enc.aux_loss
        if labeled_window_M3HWC is not None:
            if self.action_decoder is None:
                raise ValueError("labeled windows given to a LAM without an action decoder")
            z_q = self.encode(labeled_window_M3HWC).z_q
            action_loss = self.action_decoder.coding.loss(self.action_decoder(z_q), actions_M)
            stats["action_loss"] = action_loss.detach()
            loss = loss + action_weight * action_loss
        return LAMOutput(enc.z, enc.z_q, enc.codes, pred, target, stats), loss


def build_lam(cfg, action_decoder: nn.Module | None = None) -> nn.Module:
    """The LAM a config describes: :class:`LatentActionModel` for a :class:`LAMConfig`; any other
    config builds its own model with ``cfg.build()`` (e.g. ``worldmodel.lam.STLAMConfig``, Genie's
    pixel ST-transformer LAM, with this class's interface), frames only.

    Raises:
        ValueError: an action decoder for such a model; TypeError: a config without ``build``.
    """
    if isinstance(cfg, LAMConfig):
        return LatentActionModel(cfg, action_decoder)
    if not callable(getattr(cfg, "build", None)):
        raise TypeError(f"a LAM config is a LAMConfig or has a build() method, got {type(cfg).__name__}")
    if action_decoder is not None:
        raise ValueError(f"{type(cfg).__name__} has no jointly trained action decoder: train it on frames only")
    return cfg.build()


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------


@dataclass
class LAMTrainConfig(TrainConfig):
    """Training of the latent action model (``lapo train-lam``); the optimization fields are
    :class:`lapo.training.TrainConfig`'s."""

    batch_size: int = 64
    """Global batch of transitions per step."""
    lr: float = 1e-3
    """Peak AdamW learning rate."""
    val_fraction: float = 0.05
    """Fraction of episodes held out for validation and the probe's test set."""
    probe_k: int = 256
    """Labeled transitions for the diagnostic probe (0 = no probe). The probe never touches the
    LAM's training; it reports how well latents predict true actions on held-out episodes."""
    eval_every: int = 500
    """Steps between validation passes."""
    action_weight: float = 0.01
    """Weight of the joint action loss when :func:`train_lam` gets labeled transitions (CLAM). On
    the moving-square test video with 8 labeled episodes, 1.0 and 0.1 let the IDM memorize the
    labeled windows (held-out R² of the decoder −0.2) and 0.01 did not (0.39 at 250 steps, 0.64 at 400)."""
    action_batch: int = 32
    """Labeled transitions per step for the joint action loss (at most k)."""

    def __post_init__(self):
        super().__post_init__()
        if self.action_weight < 0 or self.action_batch < 1:
            raise ValueError(f"need action_weight >= 0 and action_batch >= 1, got {self.action_weight}, "
                             f"{self.action_batch}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.probe_k < 0 or self.eval_every < 0:
            raise ValueError(f"probe_k and eval_every must be >= 0, got {self.probe_k}, {self.eval_every}")


def windows_tensor(ds, t: np.ndarray, device: torch.device) -> torch.Tensor:
    """IDM windows ``(B, 3, H, W, C)`` uint8 on ``device`` for transitions ``t`` of a dataset."""
    return torch.from_numpy(ds.idm_window(t)).to(device)


@torch.no_grad()
def encode_transitions(lam: LatentActionModel, ds, t, batch_size: int = 256):
    """IDM latents for transitions ``t``: ``(z (M, L) float32, codes (M, G) int64)`` as numpy."""
    device = next(lam.parameters()).device
    zs, codes = [], []
    for i in range(0, len(t), batch_size):
        enc = lam.encode(windows_tensor(ds, t[i:i + batch_size], device))
        zs.append(enc.z.float().cpu().numpy())
        codes.append(enc.codes.cpu().numpy())
    return np.concatenate(zs), np.concatenate(codes)


@torch.no_grad()
def validate_lam(lam: LatentActionModel, ds, val_t, probe_subset=None, batch_size: int = 256,
                 max_transitions: int = 2048) -> dict[str, float]:
    """Validation metrics on held-out transitions: FDM loss, copy-last-frame loss, perplexity and,
    when ``probe_subset`` (labeled transitions from training episodes) is given, the k-shot probe
    (see :func:`lapo.decoder.probe_scores`) of true actions against its trivial baseline."""
    from lapo.decoder import probe_scores

    lam.eval()
    device = next(lam.parameters()).device
    val_t = val_t[np.linspace(0, len(val_t) - 1, min(len(val_t), max_transitions)).astype(int)]
    totals = {"fdm_loss": 0.0, "copy_last_loss": 0.0}
    zs, codes = [], []
    for i in range(0, len(val_t), batch_size):
        out, _ = lam(windows_tensor(ds, val_t[i:i + batch_size], device))
        for key in totals:
            totals[key] += float(out.stats[key]) * len(out.z)
        zs.append(out.z.float().cpu().numpy())
        codes.append(out.codes.cpu())
    metrics = {k: v / len(val_t) for k, v in totals.items()}
    metrics["perplexity"] = float(perplexity(torch.cat(codes), lam.quantizer.num_codes))
    if probe_subset is not None and ds.has_actions:
        train_z, _ = encode_transitions(lam, ds, probe_subset.indices, batch_size)
        test_actions = np.asarray(ds.oracle_actions()[val_t])  # evaluation only
        metrics.update(probe_scores(train_z, probe_subset.actions, np.concatenate(zs), test_actions,
                                    ds.action_space))
    return metrics


def probe_subset(ds, k: int, seed: int, val_t: np.ndarray):
    """The diagnostic probe's labeled transitions: a seeded subset of ``k`` transitions, less those
    in held-out episodes (``val_t``). None when ``k`` is 0 or the dataset has no actions."""
    if not k or not ds.has_actions or ds.action_space is None:
        return None
    subset = ds.labeled_subset(min(k, len(ds.transition_indices)), seed)
    keep = ~np.isin(subset.indices, val_t)  # probe fits on training episodes only
    return type(subset)(subset.indices[keep], subset.actions[keep], subset.seed)


def lam_record(ds, model_cfg: LAMConfig, train_cfg: LAMTrainConfig, labeled=None, head_cfg=None) -> dict:
    """What determines a trained LAM (architecture, optimization, dataset and, for a jointly trained
    action decoder, its labeled transitions and head config): stored in its training state and
    checkpoint, compared on resume and by the stage graph's reuse rule. ``head_cfg`` (default
    :class:`lapo.decoder.ActionHeadConfig`) gets the LAM's latent size."""
    from lapo.training import run_record

    if labeled is None:  # frames only: the joint-action fields do not matter (older records stay valid)
        record = run_record(model_cfg, train_cfg, dataset=ds.fingerprint())
        for name in ("action_weight", "action_batch"):
            record["train"].pop(name)
        return record
    import hashlib

    from lapo.decoder import ActionHeadConfig

    head_cfg = dataclasses.replace(head_cfg or ActionHeadConfig(), latent_dim=model_cfg.latent_dim)
    return run_record(model_cfg, train_cfg, dataset=ds.fingerprint(), action_head=head_cfg,
                      labeled=hashlib.sha256(np.ascontiguousarray(labeled.indices, np.int64).tobytes()).hexdigest()[:16])


def train_lam(dataset_dir, out_dir, model_cfg: LAMConfig | None = None,
              train_cfg: LAMTrainConfig | None = None, log_dir=None, labeled=None, head_cfg=None):
    """Train a :class:`LatentActionModel` (or the model another config builds: :func:`build_lam`)
    on the frames of a dataset and save it to ``out_dir``.

    Reads frames only (plus, when ``probe_k > 0`` and the dataset has actions, a seeded labeled
    subset of ``probe_k`` transitions for the diagnostic probe, which does not affect training).
    With ``labeled`` (a :class:`envs.dataset.LabeledSubset`) an action decoder
    (:class:`lapo.decoder.ActionHead` of ``head_cfg``, default config) is trained jointly: each step
    adds ``action_weight ×`` its action loss on ``action_batch`` labeled transitions (the first
    positions of the step's draw modulo k, so resuming replays the same batches) — CLAM (Liang et
    al. 2025); use it with ``quantizer="none"`` for CLAM's continuous latents.
    Resumable: a training state in ``out_dir`` from an interrupted run with the same settings is
    continued (``train_cfg.resume``). Runs under torchrun (DDP; rank 0 writes).

    Returns:
        (model, final validation metrics dict).

    Raises:
        FileNotFoundError / ValueError: from :class:`envs.dataset.EpisodeDataset` for a bad dataset;
        ValueError: frames whose size differs from ``model_cfg.image_size``; a training state in
        ``out_dir`` made with other settings.
    """
    from envs.dataset import EpisodeDataset
    from lapo.training import BatchSampler, build_device, fit, is_main_process, summary_writer

    model_cfg, train_cfg = model_cfg or LAMConfig(), train_cfg or LAMTrainConfig()
    # --- build ---
    ds = EpisodeDataset(dataset_dir)
    if ds.frame_shape != (model_cfg.image_size, model_cfg.image_size, 3):
        raise ValueError(f"{dataset_dir} has frames of shape {ds.frame_shape}; the LAM expects "
                         f"({model_cfg.image_size}, {model_cfg.image_size}, 3): set image_size or "
                         "re-import the video at that size")
    device = build_device(train_cfg)
    train_t, val_t = ds.episode_split(train_cfg.val_fraction, train_cfg.seed)
    if len(val_t) == 0:
        val_t = train_t[-max(1, len(train_t) // 20):]
    probe = probe_subset(ds, train_cfg.probe_k, train_cfg.seed, val_t)
    decoder = None
    if labeled is not None:
        from envs.dataset import space_to_json
        from lapo.decoder import ActionHead, ActionHeadConfig

        if ds.action_space is None or len(labeled.indices) == 0:
            raise ValueError(f"a jointly trained action decoder needs labeled transitions of a dataset with an "
                             f"action space; got {len(labeled.indices)} of {dataset_dir}")
        head_cfg = dataclasses.replace(head_cfg or ActionHeadConfig(), latent_dim=model_cfg.latent_dim)
        torch.manual_seed(train_cfg.seed)
        decoder = ActionHead(head_cfg, head_cfg.coding(space_to_json(ds.action_space)))
        labeled_actions = torch.as_tensor(np.asarray(labeled.actions), device=device)
    lam = build_lam(model_cfg, decoder).to(device)
    sampler = BatchSampler(len(train_t), train_cfg.batch_size, train_cfg.seed)
    writer = summary_writer(log_dir)
    record = lam_record(ds, model_cfg, train_cfg, labeled, head_cfg)
    last = {}

    def make_batch(d):
        batch = windows_tensor(ds, train_t[d.positions], device)
        if decoder is None:
            return batch
        pick = d.positions[:train_cfg.action_batch] % len(labeled.indices)
        return batch, windows_tensor(ds, labeled.indices[pick], device), labeled_actions[pick]

    def loss_fn(model, batch):
        if decoder is None:
            out, loss = model(batch)
        else:
            out, loss = model(batch[0], batch[1], batch[2], train_cfg.action_weight)
        last["out"] = out
        return loss, out.stats

    # --- loop ---
    result = fit(lam, sampler, make_batch, loss_fn, train_cfg,
                 out_dir=out_dir, record=record, writer=writer, tag="lam",
                 evaluate=lambda m: validate_lam(m, ds, val_t, probe), eval_every=train_cfg.eval_every)
    if writer:
        if "out" in last:  # top row: FDM predictions of o_{t+1}; bottom row: targets (at fdm_size)
            out = last["out"]
            writer.add_images("train/fdm_prediction_vs_target",
                              torch.cat([out.pred[:8].detach().float().clamp(0, 1), out.target[:8]]), train_cfg.steps)
        writer.close()
    # --- save ---
    if is_main_process():
        lam.save_pretrained(out_dir, train_config=train_cfg, val_metrics=result.metrics, dataset=str(dataset_dir),
                            precision=result.precision, record=record)
    return lam, result.metrics
