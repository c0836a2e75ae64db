"""``lapo finetune``: PPO (stable-baselines3) from a saved agent beside PPO from scratch, same
settings, evaluated on the same unseen levels; resumable; curve.png + finetune.json in the run dir.

    lapo finetune --agent runs/quickstart/agent --total-timesteps 1000000 --run-dir runs/finetune

Two processes can train the two runs side by side (``--runs agent --threads 1`` and
``--runs scratch --threads 1``); re-running the full command then only draws the curve.
"""

from __future__ import annotations

import tyro

from lapo.finetune import FinetuneConfig, finetune


def main(cfg: FinetuneConfig) -> dict:
    out = finetune(cfg)
    print("\n| run | env frames | mean return | normalized (Procgen) | normalized (demonstrator) |")
    print("|---|---|---|---|---|")
    for name, points in out["curves"].items():
        for p in points:
            print(f"| {name} | {p['frames']:,} | {p['mean_return']:.2f} | {p['normalized_procgen']:.2f} "
                  f"| {p['normalized_demonstrator']:.2f} |")
    print(f"curve: {out['plot']}")
    return out


if __name__ == "__main__":
    main(tyro.cli(FinetuneConfig))
