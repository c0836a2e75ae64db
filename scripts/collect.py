"""``lapo collect``: record demonstrator video into an episode dataset.

    lapo collect --out data/coinrun --num-frames 100000
    lapo collect --domain metaworld --out data/metaworld --tasks reach-v3 push-v3 --episodes-per-task 50
"""

from __future__ import annotations

import tyro

from envs.collect import CollectConfig, collect


def main(cfg: CollectConfig) -> None:
    print(f"wrote {collect(cfg)}")


def main_metaworld(cfg) -> None:
    from envs.dataset import EpisodeDataset
    from envs.metaworld import collect as collect_metaworld

    path = collect_metaworld(cfg)
    ds = EpisodeDataset(path)
    print(f"wrote {path}: {len(ds)} frames, {ds.num_episodes} episodes; expert success per task "
          f"{ds.meta['success_rate_per_task']}")


if __name__ == "__main__":
    main(tyro.cli(CollectConfig))
