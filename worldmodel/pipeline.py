"""World-model training as stages (``lapo wm train``): video → tokenizer → small-codebook LAM →
tokens + latent-action labels → MaskGIT dynamics. The run directory *is* the world-model directory
that :class:`worldmodel.model.WorldModel` loads.

Stages and their reuse rule (as in :mod:`lapo.stages`: an output made with the same settings and
inputs is loaded, an interrupted training resumes, ``overwrite`` recomputes)::

    collect     lapo.stages.collect            RUN/dataset   (or --dataset: any episode dataset)
    tokenizer   worldmodel.tokenizer            RUN/tokenizer
    lam         lapo.stages.train_lam           RUN/lam       the main job's LAM with a small codebook
    label       lapo.stages.label               RUN/labels    latent action per transition
    tokens      encode every frame              RUN/tokens    (frames, N) int16 + meta.json
    dynamics    worldmodel.dynamics             RUN/dynamics

**Latent actions.** The world model's actions are the codes of the toolkit's own LAM
(:mod:`lapo.lam`), re-trained with a small FSQ codebook (``latent_dim=2, fsq_levels=3``: 9 codes; Genie
uses 8) so a person can play it with keys 1..9. It is trained before, not with, the dynamics model
(Genie co-trains them); see ``docs/worldmodel_history.md`` for what was measured.

Presets (:data:`PRESETS`): ``cpu`` (trains on the quickstart's CoinRun video on 2 cores) and
``genie-coinrun`` (Genie's CoinRun case-study sizes, for a GPU).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from envs.collect import CollectConfig
from lapo.lam import LAMConfig, LAMTrainConfig
from worldmodel.dynamics import DynamicsConfig, DynamicsTrainConfig
from worldmodel.tokenizer import TokenizerConfig, TokenizerTrainConfig

WM_LAM = LAMConfig(latent_dim=2, fsq_levels=3, groups=1)
"""The world model's LAM: the default architecture with a 9-code FSQ bottleneck (3 levels × 2 dims)."""


@dataclass
class WorldModelConfig:
    """``lapo wm train``: every stage of the world model (``cpu`` preset values by default)."""

    run_dir: Path = Path("runs/worldmodel")
    """The world-model directory: tokenizer/, lam/, dynamics/ (what ``lapo wm play`` loads), plus the
    dataset, tokens, labels, tensorboard logs (tb/) and meta.json."""
    dataset: Path | None = None
    """An existing episode dataset to train on (frames only); None = collect ``collect`` into run_dir."""
    collect: CollectConfig = field(default_factory=lambda: CollectConfig(out=Path("dataset"), num_frames=100_000))
    """Video collection when ``dataset`` is None (``out`` is relative to run_dir): the quickstart's video."""
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    tokenizer_train: TokenizerTrainConfig = field(default_factory=TokenizerTrainConfig)
    lam: LAMConfig = field(default_factory=lambda: WM_LAM)
    lam_train: LAMTrainConfig = field(default_factory=LAMTrainConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    """Dynamics architecture (num_codes, tokens and num_actions are taken from the tokenizer and LAM)."""
    dynamics_train: DynamicsTrainConfig = field(default_factory=DynamicsTrainConfig)
    cotrain_lam: bool = False
    """Train the LAM together with the dynamics (Genie's recipe; :class:`worldmodel.dynamics.CoTrained`,
    ``lam_train`` unused) instead of before it (the default; both measured in
    ``docs/worldmodel_history.md``)."""
    overwrite: bool = False
    """Recompute every stage (by default finished stages are reused and interrupted ones resume)."""
    threads: int = 0
    """torch CPU threads for every stage (0 = torch's default)."""


def genie_coinrun() -> WorldModelConfig:
    """Genie's CoinRun case study sizes (App. F: dynamics 12 layers d=512, 16-frame clips, patch 4,
    1024 codes, 6 latent actions in its case study, 8 in the main model) — for a GPU. Deviations: the
    tokenizer is our conv FSQ tokenizer at patch 4 with 11³ = 1331 codes (FSQ needs odd levels)
    instead of an 8+8-layer ST-ViViT; 9 latent actions."""
    return WorldModelConfig(
        run_dir=Path("runs/worldmodel_genie"),
        tokenizer=TokenizerConfig(widths=(256, 512), res_blocks=4, code_dims=3, levels=11),
        tokenizer_train=TokenizerTrainConfig(steps=300_000, batch_size=128, lr=3e-4),
        lam_train=LAMTrainConfig(steps=200_000, batch_size=256),
        dynamics=DynamicsConfig(context=15, dim=512, depth=12, heads=8),
        dynamics_train=DynamicsTrainConfig(steps=200_000, batch_size=128, lr=3e-4),
    )


PRESETS = {
    "cpu": ("trains on the quickstart's CoinRun video on 2 CPU cores (resumable)", WorldModelConfig()),
    "genie-coinrun": ("Genie's CoinRun case-study sizes, for a GPU", genie_coinrun()),
}


def encode_dataset(tokenizer, dataset, out: Path, record: dict, batch_size: int = 512) -> np.ndarray:
    """Tokens of every frame, ``(frames, N)`` int16, written atomically to ``out/tokens.npy`` with
    ``out/meta.json`` (``record``); reused when the stored record matches."""
    import torch
    from tqdm import tqdm

    from envs.io import atomic_dir

    meta = out / "meta.json"
    if meta.is_file() and json.loads(meta.read_text()).get("record") == record:
        return np.load(out / "tokens.npy", mmap_mode="r")
    device = next(tokenizer.parameters()).device
    n, N = len(dataset), tokenizer.cfg.grid ** 2
    with atomic_dir(out) as tmp:
        tokens = np.lib.format.open_memmap(tmp / "tokens.npy", "w+", np.int16, (n, N))
        for i in tqdm(range(0, n, batch_size), desc="tokenize", unit="batch"):
            frames = torch.from_numpy(np.array(dataset.frames[i:i + batch_size])).to(device)
            tokens[i:i + batch_size] = tokenizer.encode(frames).flatten(1).cpu().numpy()
        tokens.flush()
        del tokens
        (tmp / "meta.json").write_text(json.dumps({"record": record, "frames": n, "tokens_per_frame": N}, indent=2))
    return np.load(out / "tokens.npy", mmap_mode="r")


def train_world_model(cfg: WorldModelConfig) -> dict:
    """Run every stage; returns (and writes to ``run_dir/meta.json``) the stages' held-out metrics
    and timings. An interrupted run resumes where it stopped when rerun with the same settings."""
    import torch

    from envs.dataset import EpisodeDataset
    from envs.io import atomic_write_text
    from lapo import stages
    from lapo.training import run_record, set_threads
    from worldmodel.dynamics import train_dynamics
    from worldmodel.tokenizer import Tokenizer, train_tokenizer

    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    set_threads(cfg.threads)
    reuse = not cfg.overwrite
    timings, t0 = {}, time.perf_counter()

    def lap(name):
        nonlocal t0
        timings[name] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()

    def train_cfg(c):  # every stage uses the run's threads; overwrite starts training states over
        return dataclasses.replace(c, threads=cfg.threads or c.threads, **({} if reuse else {"resume": "never"}))

    # --- video ---
    if cfg.dataset is not None:
        ds = EpisodeDataset(cfg.dataset)
    else:
        from envs.demonstrator import shipped_demonstrator

        demo = cfg.collect.demonstrator or shipped_demonstrator(cfg.collect.env_name)
        ds = stages.collect(dataclasses.replace(cfg.collect, out=run / cfg.collect.out, demonstrator=demo), reuse)
    lap("collect")
    # --- tokenizer ---
    tok_dir = run / "tokenizer"
    tok_train = train_cfg(cfg.tokenizer_train)
    tok_record = run_record(cfg.tokenizer, tok_train, dataset=ds.fingerprint())
    if reuse and stages.stored_record(tok_dir, "config.json") == tok_record:
        tok = Tokenizer.from_pretrained(tok_dir, tok_train.device)
        tok_metrics = tok.pretrained_meta.get("val_metrics", {})
    else:
        tok, tok_metrics = train_tokenizer(ds.path, tok_dir, cfg.tokenizer, tok_train, run / "tb" / "tokenizer")
    lap("tokenizer")
    # --- latent actions (frames only) ---
    from lapo.lam import build_lam
    from worldmodel.dynamics import Dynamics
    from worldmodel.model import label_actions

    if cfg.cotrain_lam:  # trained in the dynamics stage
        torch.manual_seed(cfg.dynamics_train.seed)
        lam = build_lam(cfg.lam)
    else:
        lam, lam_metrics = stages.train_lam(ds, run / "lam", cfg.lam, train_cfg(cfg.lam_train), run / "tb" / "lam",
                                            reuse)
        labels = stages.label(run / "lam", ds, run / "labels", reuse, cfg.lam_train.device)
    lap("lam")
    # --- tokens ---
    tokens = encode_dataset(tok, ds, run / "tokens", {"tokenizer": stages.fingerprint(tok_dir),
                                                       "dataset": ds.fingerprint()})
    lap("tokens")
    # --- dynamics (with the LAM when co-trained) ---
    dyn_cfg = dataclasses.replace(cfg.dynamics, num_codes=cfg.tokenizer.num_codes, tokens=cfg.tokenizer.grid ** 2,
                                  num_actions=lam.quantizer.num_codes ** cfg.lam.groups)
    dyn_train = train_cfg(cfg.dynamics_train)
    inputs = ({"cotrained_lam": dataclasses.asdict(cfg.lam)} if cfg.cotrain_lam
              else {"labels": stages.fingerprint(run / "labels")})
    dyn_record = run_record(dyn_cfg, dyn_train, dataset=ds.fingerprint(), tokenizer=stages.fingerprint(tok_dir),
                            **inputs)
    if reuse and stages.stored_record(run / "dynamics", "config.json") == dyn_record:
        dyn_metrics = Dynamics.from_pretrained(run / "dynamics").pretrained_meta.get("val_metrics", {})
    elif cfg.cotrain_lam:
        _, dyn_metrics = train_dynamics(ds.path, tokens, None, run / "dynamics", dyn_cfg, dyn_train,
                                        run / "tb" / "dynamics", dyn_record, cotrain_lam=lam, lam_dir=run / "lam")
    else:
        _, dyn_metrics = train_dynamics(ds.path, tokens, label_actions(labels, lam), run / "dynamics", dyn_cfg,
                                        dyn_train, run / "tb" / "dynamics", dyn_record)
    if cfg.cotrain_lam:  # the co-trained LAM labels the video (for the key table and the dreaming policy)
        stages.label(run / "lam", ds, run / "labels", reuse, cfg.lam_train.device)
        lam_metrics = {k[4:]: v for k, v in dyn_metrics.items() if k.startswith("lam_")}
    lap("dynamics")
    out = {"dataset": str(ds.path), "tokenizer_val": tok_metrics, "lam_val": lam_metrics, "dynamics_val": dyn_metrics,
           "timings_s": timings, "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str))}
    atomic_write_text(run / "meta.json", json.dumps(out, indent=2))
    return out
