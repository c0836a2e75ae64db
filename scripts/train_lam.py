"""``lapo train-lam``: train the latent action model (IDM + FSQ/VQ + FDM) on frames only.

    lapo train-lam --dataset data/coinrun --out runs/lam
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import tyro

from lapo.lam import LAMConfig, LAMTrainConfig, train_lam


@dataclass
class Args:
    dataset: Path
    """Dataset directory (frames are all that is read, besides the diagnostic probe's subset)."""
    out: Path = Path("runs/lam")
    """Checkpoint directory (config.json + model.safetensors)."""
    model: LAMConfig = field(default_factory=LAMConfig)
    """Architecture."""
    train: LAMTrainConfig = field(default_factory=LAMTrainConfig)
    """Optimization."""
    log_dir: Path | None = None
    """Tensorboard directory (default: OUT_tb beside the checkpoint)."""


def main(args: Args) -> None:
    _, metrics = train_lam(args.dataset, args.out, args.model, args.train, 
                            args.log_dir or args.out.with_name(args.out.name + "_tb"))
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main(tyro.cli(Args))
