"""``lapo collect``: record demonstrator video into an episode dataset.

    lapo collect --out data/coinrun --num-frames 100000
"""

from __future__ import annotations

import tyro

from envs.collect import CollectConfig, collect


def main(cfg: CollectConfig) -> None:
    print(f"wrote {collect(cfg)}")


if __name__ == "__main__":
    main(tyro.cli(CollectConfig))
