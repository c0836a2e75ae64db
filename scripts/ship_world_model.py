"""Package a trained world model for shipping with fp16 weights (``worldmodel/pretrained/NAME``).

    python -m scripts.ship_world_model --world-model runs/worldmodel --benchmark docs/benchmark_worldmodel.json

Copies the tokenizer and the dynamics model (fp16 storage, loaded back into fp32), a held-out
prompt frame and a meta.json holding the training command, the run's held-out metrics and the
benchmark's figures, so the numbers stay beside the weights they describe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Args:
    world_model: Path = Path("runs/worldmodel")
    """The ``lapo wm train`` run directory."""
    out: Path = Path("worldmodel/pretrained/coinrun")
    """Where the shipped copy goes (replaced atomically)."""
    benchmark: Path | None = None
    """``scripts.benchmark_worldmodel`` JSON to record beside the weights."""
    command: str = "lapo wm train cpu --run-dir runs/worldmodel"
    """The command that trained it (recorded)."""
    prompt_index: int = -1
    """Frame of the held-out episodes used as the shipped prompt (-1 = the middle one)."""
    max_mb: float = 15.0
    """Refuse to ship more than this many megabytes."""


def main(args: Args) -> Path:
    from envs.dataset import EpisodeDataset
    from worldmodel.model import WorldModel, export_world_model
    from worldmodel.tokenizer import frame_split

    wm = WorldModel.load(args.world_model)
    mb = sum(p.numel() for m in (wm.tokenizer, wm.dynamics) for p in m.parameters()) * 2 / 2 ** 20  # fp16
    if mb > args.max_mb:
        raise ValueError(f"{args.world_model} has {mb:.1f} MB of fp16 weights, over the {args.max_mb} MB limit: "
                         "ship a smaller preset")
    run_meta = json.loads((args.world_model / "meta.json").read_text())
    ds = EpisodeDataset(run_meta["dataset"])
    tok_cfg = json.loads((args.world_model / "tokenizer" / "config.json").read_text())["train_config"]
    _, val_f = frame_split(ds, tok_cfg["val_fraction"], tok_cfg["seed"])
    prompt = np.asarray(ds.frames[val_f[len(val_f) // 2 if args.prompt_index < 0 else args.prompt_index]])
    bench = json.loads(args.benchmark.read_text()) if args.benchmark else None
    out = export_world_model(args.world_model, args.out, prompt, command=args.command,
                             run_metrics={k: run_meta[k] for k in ("tokenizer_val", "lam_val", "dynamics_val", "timings_s")},
                             benchmark=bench)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2 ** 20
    print(f"wrote {out} ({size:.1f} MB)")
    return out


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
