"""``lapo train-policy``: latent behaviour cloning, o_t -> latent action, on a labeled dataset.

    lapo train-policy --dataset data/coinrun --out runs/policy        # labels from DATASET/labels
    torchrun --nproc_per_node 2 -m scripts.cli train-policy --dataset data/coinrun --train.threads 1

Resumable like ``lapo train-lam`` (``OUT/training_state.pt``, ``--train.resume auto|never``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import tyro

from envs.dataset import EpisodeDataset
from lapo import stages
from lapo.label import Labels
from lapo.policy import PolicyConfig, PolicyTrainConfig
from lapo.training import is_main_process, summary_writer


@dataclass
class Args:
    dataset: Path
    """Dataset directory."""
    labels: Path | None = None
    """Labels directory (default: DATASET/labels)."""
    out: Path = Path("runs/policy")
    """Policy checkpoint directory."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """Network (out_dim is set from the labels' latent dim)."""
    train: PolicyTrainConfig = field(default_factory=PolicyTrainConfig)
    """Optimization, checkpointing and resume."""


def main(args: Args) -> None:
    ds = EpisodeDataset(args.dataset)
    labels = Labels(args.labels or args.dataset / "labels")
    if len(labels.valid) != len(ds):
        raise ValueError(f"labels at {labels.path} cover {len(labels.valid)} frames but {args.dataset} has "
                         f"{len(ds)}; re-run `lapo label` on this dataset")
    writer = summary_writer(args.out.with_name(args.out.name + "_tb"))
    stages.latent_bc(ds, labels, args.out, args.policy, args.train, writer=writer)
    if writer:
        writer.close()
    if is_main_process():
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main(tyro.cli(Args))
