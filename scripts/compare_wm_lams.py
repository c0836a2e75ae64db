"""Which LAM should the world model use: ours re-trained with 9 codes, or Genie's pixel ST-transformer LAM?

    python -m scripts.compare_wm_lams --dataset runs/worldmodel/dataset --budget-s 900 --threads 1 --out runs/wm_lams

Issue 10 asks to decide this by measurement. Both variants get the world model's bottleneck (FSQ,
3 levels × 2 dims = 9 latent actions), the same windows, FDM target, optimizer settings
(:class:`lapo.lam.LAMTrainConfig` defaults) and episode split, and the same wall-clock budget on
this machine: each variant's step count is what fits ``budget_s`` at the rate measured on its first
steps. Both are trained by :func:`lapo.lam.train_lam` (resumable) and scored on held-out episodes:

- ``fdm_loss`` vs ``copy_last_loss``: how much of the next frame the latent action explains;
- ``perplexity`` of the 9 codes (codebook use);
- ``probe_accuracy`` vs ``majority_accuracy``: the k-shot probe of true actions from the latent;
- ``mutual_information_bits``: I(code; true action) on the held-out transitions, from their
  contingency table (what a player's key choice tells about the button pressed), with H(action).

Prints a markdown table and writes ``OUT/compare.{json,md}``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VARIANTS = ("conv", "st")


@dataclass
class Args:
    dataset: Path
    """The world model's video (an episode dataset of 64×64 frames with true actions for scoring)."""
    out: Path = Path("runs/wm_lams")
    variants: tuple[str, ...] = VARIANTS
    """``conv`` (the ``lapo`` LAM, the world model's today) and/or ``st`` (Genie's pixel ST-transformer LAM)."""
    budget_s: float = 900.0
    """Training seconds per variant (steps = this × the measured steps/s, rounded to eval_every)."""
    eval_every: int = 500
    threads: int = 0
    """torch threads (0 = torch's default)."""
    seed: int = 0


def model_config(name: str):
    from worldmodel.lam import STLAMConfig
    from worldmodel.pipeline import WM_LAM

    if name not in VARIANTS:
        raise ValueError(f"variant {name!r}: choose from {VARIANTS}")
    return WM_LAM if name == "conv" else STLAMConfig()


def seconds_per_step(model_cfg, train_cfg, ds, n: int = 20, warmup: int = 3) -> float:
    """Wall seconds of one training step (forward, backward, AdamW) on random training windows."""
    import torch

    from lapo.lam import build_lam, windows_tensor

    torch.manual_seed(0)
    lam = build_lam(model_cfg)
    opt = torch.optim.AdamW(lam.parameters(), lr=train_cfg.lr)
    rng = np.random.default_rng(0)
    t0 = 0.0
    for i in range(warmup + n):
        if i == warmup:
            t0 = time.perf_counter()
        t = np.sort(rng.choice(ds.transition_indices, train_cfg.batch_size, replace=False))
        _, loss = lam(windows_tensor(ds, t, torch.device("cpu")))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / n


def mutual_information_bits(codes: np.ndarray, actions: np.ndarray) -> tuple[float, float]:
    """``(I(code; action), H(action))`` in bits from the empirical joint distribution."""
    joint = np.zeros((codes.max() + 1, actions.max() + 1))
    np.add.at(joint, (codes, actions), 1)
    joint /= joint.sum()
    pc, pa = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    mi = float((joint[nz] * np.log2(joint[nz] / (pc @ pa)[nz])).sum())
    h = float(-(pa[pa > 0] * np.log2(pa[pa > 0])).sum())
    return mi, h


def main(args: Args) -> list[dict]:
    from envs.dataset import EpisodeDataset
    from envs.io import atomic_write_text
    from lapo.lam import LAMTrainConfig, encode_transitions, train_lam
    from lapo.training import set_threads

    set_threads(args.threads)
    ds = EpisodeDataset(args.dataset)
    if not ds.has_actions:
        raise ValueError(f"{args.dataset} has no true actions: the comparison scores latents against them")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.variants:
        cfg = model_config(name)
        train = LAMTrainConfig(eval_every=args.eval_every, threads=args.threads, seed=args.seed)
        rate = 1 / seconds_per_step(cfg, train, ds)
        steps = max(args.eval_every, int(args.budget_s * rate) // args.eval_every * args.eval_every)
        train = dataclasses.replace(train, steps=steps)
        print(f"{name}: {steps} steps ({rate:.2f} steps/s measured)", flush=True)
        t0 = time.perf_counter()
        lam, metrics = train_lam(ds.path, args.out / name, cfg, train, args.out / "tb" / name)
        train_s = time.perf_counter() - t0
        _, val_t = ds.episode_split(train.val_fraction, train.seed)
        _, codes = encode_transitions(lam.eval(), ds, val_t)  # no_grad inside
        mi, h = mutual_information_bits(codes[:, 0], np.asarray(ds.oracle_actions()[val_t]))
        rows.append({"variant": name, "model": dataclasses.asdict(cfg), "steps": steps, "steps_per_s": rate,
                     "train_s": train_s, "params": sum(p.numel() for p in lam.parameters()), **metrics,
                     "mutual_information_bits": mi, "action_entropy_bits": h, "heldout_transitions": len(val_t)})
        atomic_write_text(args.out / "compare.json", json.dumps(rows, indent=2))
    table = format_table(rows, args.budget_s)
    print(table)
    atomic_write_text(args.out / "compare.md", table + "\n")
    return rows


def format_table(rows: list[dict], budget_s: float) -> str:
    lines = [f"Held-out episodes; budget {budget_s / 60:.0f} min of training each (at least eval_every steps)",
             "| LAM | params | steps | s/step measured | train min | FDM loss | copy-last loss | ratio | perplexity "
             "(of 9) | probe accuracy (majority) | I(code; action) bits (H(action)) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['params'] / 1e6:.2f}M | {r['steps']} | {1 / r['steps_per_s']:.2f} | "
                     f"{r['train_s'] / 60:.1f} | {r['fdm_loss']:.5f} | "
                     f"{r['copy_last_loss']:.5f} | {r['copy_last_loss'] / r['fdm_loss']:.1f}× | {r['perplexity']:.2f} | "
                     f"{r.get('probe_accuracy', float('nan')):.3f} ({r.get('majority_accuracy', float('nan')):.3f}) | "
                     f"{r['mutual_information_bits']:.3f} ({r['action_entropy_bits']:.2f}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
