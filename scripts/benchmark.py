"""``lapo benchmark {cpu,paper}``: every method × k × seed on each game; table, JSON and plot.

    lapo benchmark cpu                                   # CoinRun, k in {16,64,256,1024}, 3 seeds
    lapo benchmark cpu --games coinrun starpilot --seeds 0 1 2 --run-dir runs/benchmark
    lapo benchmark paper                                 # LAPO sizes, 4 games, for a GPU

Finished cells are kept in ``RUN_DIR/cells``: rerunning the same command resumes, and adding a
game, method, k or seed runs only the new cells (see :mod:`lapo.benchmark`).
"""

from __future__ import annotations

import tyro

from lapo.benchmark import PRESETS, BenchmarkConfig, run_benchmark


def main(cfg: BenchmarkConfig) -> dict:
    return run_benchmark(cfg)


if __name__ == "__main__":
    main(tyro.extras.overridable_config_cli(PRESETS))
