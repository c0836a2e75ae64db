"""``lapo benchmark {cpu,cpu-impala,paper}``: every method × k × seed on each game; table, JSON and plot.

    lapo benchmark cpu                                   # CoinRun, k in {16,64,256,1024}, 3 seeds
    lapo benchmark cpu --games coinrun starpilot --seeds 0 1 2 --run-dir runs/benchmark
    lapo benchmark cpu-impala --games fruitbot           # IMPALA CNNs, 64x64 FDM, 8k BC steps
    lapo benchmark paper                                 # LAPO sizes, 3 games, for a GPU
    lapo benchmark --domain metaworld                    # 5 Meta-World tasks, k = 5 episodes/task

Finished cells are kept in ``RUN_DIR/cells``: rerunning the same command resumes, and adding a
game, method, k or seed runs only the new cells (see :mod:`lapo.benchmark`).
"""

from __future__ import annotations

import tyro

from lapo.benchmark import PRESETS, BenchmarkConfig, run_benchmark


def main(cfg: BenchmarkConfig) -> dict:
    return run_benchmark(cfg)


def main_metaworld(cfg) -> dict:
    from lapo.benchmark_metaworld import record_agent_gif, run_metaworld_benchmark

    results = run_metaworld_benchmark(cfg)
    if not results["missing_cells"] and not cfg.report_only:
        print(f"wrote {record_agent_gif(cfg, cfg.run_dir / 'agent.gif')}")
    return results


if __name__ == "__main__":
    main(tyro.extras.overridable_config_cli(PRESETS))
