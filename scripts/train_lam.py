"""``lapo train-lam``: train the latent action model (IDM + FSQ/VQ + FDM) on frames only.

    lapo train-lam --dataset data/coinrun --out runs/lam
    torchrun --nproc_per_node 2 -m scripts.cli train-lam --dataset data/coinrun --out runs/lam --train.threads 1

Resumable: rerunning the same command after an interruption continues from ``OUT/training_state.pt``
(written every ``--train.checkpoint-every`` steps); ``--train.resume never`` starts over. An ``OUT``
that already holds a LAM trained with the same settings on the same dataset is kept as it is.
Under torchrun each process trains on its share of every global batch (DDP); rank 0 writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import tyro

from envs.dataset import EpisodeDataset
from lapo import stages
from lapo.lam import LAMConfig, LAMTrainConfig
from lapo.training import is_main_process


@dataclass
class Args:
    dataset: Path
    """Dataset directory (frames are all that is read, besides the diagnostic probe's subset)."""
    out: Path = Path("runs/lam")
    """Checkpoint directory (config.json + model.safetensors; training_state.pt while training)."""
    model: LAMConfig = field(default_factory=LAMConfig)
    """Architecture."""
    train: LAMTrainConfig = field(default_factory=LAMTrainConfig)
    """Optimization, checkpointing and resume."""
    log_dir: Path | None = None
    """Tensorboard directory (default: OUT_tb beside the checkpoint)."""


def main(args: Args) -> dict:
    _, metrics = stages.train_lam(EpisodeDataset(args.dataset), args.out, args.model, args.train,
                                  args.log_dir or args.out.with_name(args.out.name + "_tb"))
    if is_main_process():
        print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    main(tyro.cli(Args))
