"""``lapo train-policy``: latent behaviour cloning, o_t -> latent action, on a labeled dataset.

    lapo train-policy --dataset data/coinrun --out runs/policy        # labels from DATASET/labels
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tyro

from envs.dataset import EpisodeDataset
from lapo.checkpoint import save_checkpoint
from lapo.label import Labels
from lapo.policy import PolicyConfig, PolicyTrainConfig, train_policy
from lapo.training import summary_writer


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
    """Optimization."""


def main(args: Args) -> None:
    ds = EpisodeDataset(args.dataset)
    labels = Labels(args.labels or args.dataset / "labels")
    if len(labels.valid) != len(ds):
        raise ValueError(f"labels at {labels.path} cover {len(labels.valid)} frames but {args.dataset} has "
                         f"{len(ds)}; re-run `lapo label` on this dataset")
    t = np.flatnonzero(labels.valid)
    cfg = dataclasses.replace(args.policy, out_dim=int(labels.meta["latent_dim"]))
    writer = summary_writer(args.out.with_name(args.out.name + "_tb"))
    policy = train_policy(ds.frames, t, np.asarray(labels.latents[t]), cfg, args.train, "mse", writer, "latent_policy")
    writer.close()
    print(f"wrote {save_checkpoint(args.out, 'policy', cfg, policy, lam=labels.meta['lam'])}")


if __name__ == "__main__":
    main(tyro.cli(Args))
