"""Benchmark: which LAM image / FDM size sees the arm's motion? Probe scores per configuration.

    python -m scripts.benchmark_lam_size --dataset data/metaworld --fdm-sizes 32 64 --steps 1000

A Meta-World arm moves at most 1 cm per step, which can be under a pixel at a 32×32 FDM. For each
FDM size this trains the same LAM (frames only, same seed, steps and batch) and reports its
validation scores: the k-shot probe from latents to true actions on held-out episodes (R², and the
accuracy of the action's *direction*, the largest xyz component and its sign, against the
majority direction; :func:`lapo.decoder.probe_scores`), the FDM loss against copying the last
frame, and the training time per step. Prints a table and writes ``OUT/results.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import tyro


@dataclass
class Args:
    dataset: Path = Path("data/metaworld")
    """Dataset with actions (the probe reads them; training does not)."""
    out: Path = Path("runs/benchmark_lam_size")
    """Where the LAMs and results.json go."""
    fdm_sizes: tuple[int, ...] = (32, 64)
    """FDM sizes to compare (each divides the frame size)."""
    steps: int = 1000
    """LAM steps per configuration."""
    batch_size: int = 64
    """Batch of transitions."""
    probe_k: int = 1024
    """Labeled transitions of the probe (training episodes)."""
    seed: int = 0
    """Seed of every run."""
    threads: int = 0
    """torch threads (0 = torch's default)."""


def main(args: Args) -> list[dict]:
    from envs.dataset import EpisodeDataset
    from envs.io import atomic_write_text
    from lapo.lam import LAMConfig, LAMTrainConfig, train_lam
    from lapo.training import set_threads

    set_threads(args.threads)
    size = EpisodeDataset(args.dataset).frame_shape[0]
    rows = []
    for fdm in args.fdm_sizes:
        t0 = time.perf_counter()
        _, metrics = train_lam(args.dataset, args.out / f"lam_fdm{fdm}", LAMConfig(image_size=size, fdm_size=fdm),
                               LAMTrainConfig(steps=args.steps, batch_size=args.batch_size, probe_k=args.probe_k,
                                              seed=args.seed, eval_every=args.steps, resume="never",
                                              checkpoint_every=0))
        rows.append({"image_size": size, "fdm_size": fdm, "seconds_per_step": (time.perf_counter() - t0) / args.steps,
                     **metrics})
        print(json.dumps(rows[-1]))
    keys = ("probe_direction_accuracy", "majority_direction_accuracy", "probe_r2", "fdm_loss", "copy_last_loss",
            "perplexity", "seconds_per_step")
    print("| image | FDM | " + " | ".join(keys) + " |\n|---|---|" + "---|" * len(keys))
    for r in rows:
        print(f"| {r['image_size']} | {r['fdm_size']} | " + " | ".join(f"{r.get(k, float('nan')):.4g}" for k in keys) + " |")
    atomic_write_text(args.out / "results.json", json.dumps({"args": json.loads(json.dumps(vars(args), default=str)),
                                                             "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main(tyro.cli(Args))
