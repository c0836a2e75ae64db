"""``lapo label``: latent actions for every transition of a dataset, saved beside it.

    lapo label --lam runs/lam --dataset data/coinrun          # -> data/coinrun/labels
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tyro

from lapo.label import label_dataset


@dataclass
class Args:
    lam: Path
    """LAM checkpoint directory."""
    dataset: Path
    """Dataset directory."""
    out: Path | None = None
    """Labels directory (default: DATASET/labels)."""
    batch_size: int = 512
    """Transitions per IDM batch."""
    overwrite: bool = False
    """Replace existing labels."""
    device: str = "cpu"
    """``cpu`` or ``cuda``."""


def main(args: Args) -> None:
    print(f"wrote {label_dataset(args.lam, args.dataset, args.out, args.batch_size, args.overwrite, args.device)}")


if __name__ == "__main__":
    main(tyro.cli(Args))
