"""Benchmark: LAM training samples/s with 1 process vs N torchrun processes at the same total threads.

    python -m scripts.benchmark_ddp --dataset runs/quickstart/dataset --processes 1 2 --total-threads 2

Each configuration runs ``lapo train-lam`` (the quickstart's LAM, same global batch and steps) in a
fresh process group: 1 process with ``total_threads`` torch threads, or N processes under
``torchrun --nproc_per_node N`` (DDP, gloo on CPU) with ``total_threads / N`` each. Samples/s is the
mean of the trainer's ``charts/lam_SPS`` scalars after the first logging interval (start-up and
the first steps excluded). Prints a table and writes ``OUT/results.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tyro


@dataclass
class Args:
    dataset: Path = Path("runs/quickstart/dataset")
    """Dataset to train on (any 64×64 episode dataset)."""
    out: Path = Path("runs/benchmark_ddp")
    """Where the runs and results.json go."""
    processes: tuple[int, ...] = (1, 2)
    """Process counts to compare."""
    total_threads: int = 2
    """torch threads summed over the processes of a run."""
    steps: int = 300
    """LAM steps per run."""
    batch_size: int = 64
    """Global batch (the quickstart's)."""
    log_every: int = 50
    """Steps per SPS measurement."""


def run_one(args: Args, n: int) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, tb = args.out / f"lam_{n}proc", args.out / f"tb_{n}proc"
    threads = args.total_threads // n
    cmd = ["-m", "scripts.cli", "train-lam", "--dataset", str(args.dataset), "--out", str(out), "--log-dir", str(tb),
           "--train.steps", str(args.steps), "--train.batch-size", str(args.batch_size), "--train.probe-k", "0",
           "--train.eval-every", str(args.steps), "--train.log-every", str(args.log_every), "--train.threads",
           str(threads), "--train.resume", "never", "--train.checkpoint-every", "0"]
    launcher = [sys.executable] if n == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                 "--nproc_per_node", str(n)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    subprocess.run(launcher + cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    acc = EventAccumulator(str(tb))
    acc.Reload()
    sps = [e.value for e in acc.Scalars("charts/lam_SPS") if e.step > args.log_every]
    return {"processes": n, "threads_per_process": threads, "samples_per_s": sum(sps) / len(sps),
            "wall_s_incl_startup": wall, "steps": args.steps, "global_batch": args.batch_size}


def main(args: Args) -> dict:
    import platform

    args.out.mkdir(parents=True, exist_ok=True)
    rows = [run_one(args, n) for n in args.processes]
    base = rows[0]["samples_per_s"]
    print(f"| processes × threads | LAM samples/s | vs {rows[0]['processes']} process | wall s (incl. start-up) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['processes']} × {r['threads_per_process']} | {r['samples_per_s']:.0f} | "
              f"{r['samples_per_s'] / base:.2f}× | {r['wall_s_incl_startup']:.0f} |")
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    result = {"rows": rows, "cpu": cpu, "cores": os.cpu_count(), "dataset": str(args.dataset),
              "time": time.strftime("%Y-%m-%d %H:%M")}
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
