"""``lapo quickstart`` (= ``make quickstart``): the whole pipeline on CoinRun, printing the table.

    lapo quickstart                      # ~10 min on 2 CPU cores
    lapo quickstart --run-dir runs/qs2 --k 64
    lapo quickstart --domain metaworld   # 5 Meta-World tasks, <= 20 min on 2 CPU cores
"""

from __future__ import annotations

import tyro

from lapo.pipeline import QuickstartConfig, run_quickstart


def main(cfg: QuickstartConfig) -> dict:
    return run_quickstart(cfg)


def main_metaworld(cfg) -> dict:
    from scripts.benchmark import main_metaworld as run

    return run(cfg)


if __name__ == "__main__":
    main(tyro.cli(QuickstartConfig))
