"""Which world-model tokenizer reaches the issue's 36 dB soonest on a CPU? PSNR curves per variant.

    python -m scripts.tokenizer_sweep --dataset D --variants base l7 --steps 6000 --out runs/tok_sweep
    python -m scripts.tokenizer_sweep --dataset D --time-only --threads 2 --out runs/tok_sweep   # CPU s/step
    python -m scripts.tokenizer_sweep --dataset D --report runs/tok_sweep_gpu --cpu-times runs/tok_sweep/time_2threads.json

Each variant is the ``cpu`` preset's tokenizer (:class:`worldmodel.tokenizer.TokenizerConfig`,
:class:`TokenizerTrainConfig`) as it was when the sweep was run (lr 1e-3, no gradient clipping, ``--steps``
steps) with a few fields changed (:data:`VARIANTS`); ``long-lr5e-4`` on a 15k-step schedule with a gradient
clip became the preset on 2026-11-28. ``train`` mode trains
the named variants one after another with :func:`worldmodel.tokenizer.train_tokenizer` (the shipped
trainer, same episode split and held-out frames) and writes ``OUT/<variant>.json``: held-out PSNR,
SSIM and codebook usage every ``eval_every`` steps. With ``--budget-s`` the step count is cut to
what fits that many seconds at the rate measured on the first steps (for a lent GPU machine; the
curve is then that of a shorter cosine schedule, recorded as ``steps``). ``--time-only`` measures
seconds per training step of every variant on this machine (after warm-up; once per architecture
and batch size) and its encode / decode frames per second (:func:`inference_fps`), so that a curve measured
on a GPU converts to CPU training time: ``OUT/time_<threads>threads.json``. ``--report DIR`` prints a table
of the runs in DIR (PSNR at 3,000 steps, the ``cpu`` preset's count, and at the end; CPU minutes
for those steps at the ``--cpu-times`` rate) and writes it to ``OUT/report.{json,md}``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import tyro

VARIANTS: dict[str, tuple[dict, dict]] = {
    # name: (TokenizerConfig changes, TokenizerTrainConfig changes)
    "base": ({}, {}),
    "long": ({}, {"steps": 24_000}),  # the preset with a 24k-step schedule (hours on a CPU; resumable)
    # ... which diverged at step ~2,950 on a CPU (loss 0.0006 -> 0.014): the same with half the peak lr
    "long-lr5e-4": ({}, {"steps": 24_000, "lr": 5e-4}),
    "levels7": ({"levels": 7}, {}),  # 7^4 = 2401 codes (11.2 bits per token instead of 9.3)
    "dims5": ({"code_dims": 5}, {}),  # 5^5 = 3125 codes
    "wide": ({"widths": (64, 128, 256)}, {}),
    "res2": ({"res_blocks": 2}, {}),
    "grid16": ({"widths": (32, 96)}, {}),  # 16×16 tokens (Genie's patch 4)
    "lr3e-3": ({}, {"lr": 3e-3}),
    "batch128": ({}, {"batch_size": 128, "lr": 2e-3}),
    # Genie's ST-ViViT instead of the conv tokenizer (STViViTConfig defaults: patch 8 -> the same 8×8
    # grid and 625 codes, width 128, 4 + 4 ST blocks, 4-frame causal clips; 32 frames per step = 8 clips)
    "st-vivit": ({"arch": "st-vivit"}, {}),
}


@dataclass
class Args:
    dataset: Path
    """The world model's video (an episode dataset of 64×64 frames)."""
    out: Path = Path("runs/tokenizer_sweep")
    """Where the tokenizers and the JSON files go."""
    variants: tuple[str, ...] = tuple(VARIANTS)
    """Variants to train (names in VARIANTS)."""
    steps: int = 6000
    """Training steps of every variant except ``long`` and ``long-lr5e-4`` (their own count)."""
    eval_every: int = 500
    budget_s: float = 0.0
    """If > 0: cut each variant's steps to what fits this many seconds of training."""
    device: str = "auto"
    threads: int = 0
    """torch threads (0 = torch's default)."""
    precision: str = "fp32"
    """Training precision (``fp32``, ``bf16`` or ``auto``: the trainer's rule, bf16 only where native
    and measured faster). fp32 for every curve measured before 2026-11-28."""
    time_only: bool = False
    """Only measure seconds per training step of every variant."""
    time_steps: int = 10
    """Timed steps per variant in --time-only (after 3 warm-up steps)."""
    report: Path | None = None
    """Only report: a folder of ``<variant>.json`` runs (e.g. copied from a GPU machine)."""
    cpu_times: Path | None = None
    """A ``--time-only`` JSON to convert steps into CPU minutes in the report."""


def configs(name: str, steps: int, eval_every: int, device: str, threads: int, precision: str = "fp32"):
    """``(TokenizerConfig, TokenizerTrainConfig)`` of a variant."""
    from worldmodel.tokenizer import STViViTConfig, TokenizerConfig, TokenizerTrainConfig

    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    model_kw, train_kw = dict(VARIANTS[name][0]), VARIANTS[name][1]
    # variants change the preset of before 2026-11-28 (lr 1e-3, no clipping; its 3,000 steps are --steps here)
    train_kw = {"steps": steps, "lr": 1e-3, "grad_clip": 0.0, **train_kw}
    model_class = STViViTConfig if model_kw.pop("arch", "conv") == "st-vivit" else TokenizerConfig
    return (model_class(**model_kw),
            TokenizerTrainConfig(eval_every=eval_every, device=device, threads=threads, precision=precision, **train_kw))


def seconds_per_step(model_cfg, train_cfg, frames, n: int, warmup: int = 3) -> float:
    """Wall seconds of one training step (forward, backward, AdamW) on random dataset frames."""
    import numpy as np
    import torch

    from lapo.training import build_device
    from worldmodel.tokenizer import build_tokenizer

    device = build_device(train_cfg)
    tok = build_tokenizer(model_cfg).to(device)
    T = getattr(model_cfg, "clip_frames", 1)  # clips of T consecutive frames (episode ends ignored: timing only)
    opt = torch.optim.AdamW(tok.parameters(), lr=train_cfg.lr)
    rng = np.random.default_rng(0)
    t0 = 0.0
    for i in range(warmup + n):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        if T > 1:
            idx = rng.choice(len(frames) - T, train_cfg.batch_size // T, replace=False)[:, None] + np.arange(T)
        else:
            idx = np.sort(rng.choice(len(frames), train_cfg.batch_size, replace=False))
        _, loss, _ = tok(torch.from_numpy(np.asarray(frames[idx])).to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n


def inference_fps(model_cfg, frames, n: int = 10) -> dict[str, float]:
    """Frames per second of ``encode`` on batches of 256 frames (tokenizing a video) and of
    ``decode`` at batch 1 (one generated frame; an ST-ViViT decodes its whole T-frame clip for it,
    no cache), on this process's device and threads; random weights (the speed does not depend on
    them)."""
    import numpy as np
    import torch

    from worldmodel.tokenizer import build_tokenizer

    tok = build_tokenizer(model_cfg).eval()
    T = getattr(model_cfg, "clip_frames", 1)
    batch = torch.from_numpy(np.array(frames[:256 // T * T]))  # a copy: memmaps are read-only
    batch = batch.view(-1, T, *batch.shape[1:]) if T > 1 else batch
    out = {}
    with torch.no_grad():
        codes = tok.encode(batch)
        one = codes[:1]
        for name, fn, per_call in (("encode_fps", lambda: tok.encode(batch), len(batch) * T),
                                   ("decode_fps_batch1", lambda: tok.decode(one), 1)):
            fn()
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            out[name] = per_call * n / (time.perf_counter() - t0)
    return out


def val_curve(log_dir: Path) -> list[dict]:
    """Held-out metrics logged by the trainer (tensorboard ``val/*``), one dict per evaluation."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    rows: dict[int, dict] = {}
    for tag in acc.Tags()["scalars"]:
        if tag.startswith("val/"):
            for ev in acc.Scalars(tag):
                rows.setdefault(ev.step + 1, {"step": ev.step + 1})[tag[4:]] = ev.value
    return [rows[s] for s in sorted(rows)]


def report(run_dir: Path, cpu_times: Path | None, out: Path) -> list[dict]:
    """The table of the runs in ``run_dir`` (see the module docstring); writes ``out/report.{json,md}``."""
    from envs.io import atomic_write_text

    sps = json.loads(cpu_times.read_text())["seconds_per_step"] if cpu_times else {}
    rows = []
    for f in sorted(run_dir.glob("*.json")):
        run = json.loads(f.read_text())
        if "curve" not in run:
            continue
        at = {r["step"]: r["psnr"] for r in run["curve"]}
        name, steps = run["variant"], run["train"]["steps"]
        base_name = name.split("_")[0]  # a run copied under another name: "lr3e-3_16k" is variant lr3e-3
        s = sps.get(base_name)
        model_kw, train_kw = VARIANTS.get(base_name, ({}, {}))
        rows.append({"variant": name, "change": {**model_kw, **train_kw},
                     "codes": run["num_codes"], "grid": run["grid"], "steps": steps, "lr": run["train"]["lr"],
                     "batch_size": run["train"]["batch_size"], "psnr_at_3000": at.get(3000),
                     "psnr_end": run["final"]["psnr"], "ssim_end": run["final"]["ssim"],
                     "codes_used_end": run["final"]["codes_used"], "device": run["device"],
                     "cpu_seconds_per_step": s, "cpu_minutes_for_steps": s * steps / 60 if s else None,
                     "curve": [(r["step"], round(r["psnr"], 2)) for r in run["curve"]]})
    lines = ["| variant | codes | grid | steps (lr, batch) | PSNR at 3,000 | PSNR at end / SSIM | CPU s/step | CPU min for the steps |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p3 = f"{r['psnr_at_3000']:.2f}" if r["psnr_at_3000"] else "-"
        cpu = (f"{r['cpu_seconds_per_step']:.2f} | {r['cpu_minutes_for_steps']:.0f}" if r["cpu_seconds_per_step"]
               else "- | -")
        lines.append(f"| {r['variant']} | {r['codes']} | {r['grid']}×{r['grid']} | {r['steps']} ({r['lr']:g}, "
                     f"{r['batch_size']}) | {p3} | {r['psnr_end']:.2f} / {r['ssim_end']:.3f} | {cpu} |")
    table = "\n".join(lines)
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.json", json.dumps({"runs": rows, "cpu_times": str(cpu_times)}, indent=2))
    atomic_write_text(out / "report.md", table + "\n")
    return rows


def main(args: Args) -> None:
    from envs.dataset import EpisodeDataset
    from envs.io import atomic_write_text

    if args.report is not None:
        report(args.report, args.cpu_times, args.out)
        return
    from worldmodel.tokenizer import train_tokenizer

    ds = EpisodeDataset(args.dataset)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.time_only:
        out, measured, speed = {}, {}, {}  # variants that differ only in lr share one measurement
        for name in args.variants:
            m, t = configs(name, args.steps, args.eval_every, args.device, args.threads)
            key = (json.dumps(dataclasses.asdict(m)), t.batch_size)
            if key not in measured:
                measured[key] = seconds_per_step(m, t, ds.frames, args.time_steps)
            out[name] = measured[key]
            speed[name] = inference_fps(m, ds.frames)
            print(f"{name:10s} {out[name]:.3f} s/step (batch {t.batch_size}, {m.num_codes} codes, grid {m.grid}); "
                  f"encode {speed[name]['encode_fps']:.0f} frames/s (batch 256), decode "
                  f"{speed[name]['decode_fps_batch1']:.0f} frames/s (batch 1)")
        path = args.out / f"time_{args.threads}threads.json"
        atomic_write_text(path, json.dumps({"threads": args.threads, "seconds_per_step": out, "inference": speed},
                                           indent=2))
        print(f"wrote {path}")
        return
    for name in args.variants:
        m, t = configs(name, args.steps, args.eval_every, args.device, args.threads, args.precision)
        rate = None
        if args.budget_s > 0:
            rate = 1 / seconds_per_step(m, t, ds.frames, 30)
            fit_steps = int(args.budget_s * rate) // args.eval_every * args.eval_every
            t = dataclasses.replace(t, steps=min(t.steps, max(args.eval_every, fit_steps)))
        print(f"{name}: {t.steps} steps" + (f" ({rate:.1f} steps/s measured)" if rate else ""), flush=True)
        t0 = time.perf_counter()
        _, metrics = train_tokenizer(ds.path, args.out / name, m, t, args.out / "tb" / name)
        row = {"variant": name, "model": dataclasses.asdict(m), "train": dataclasses.asdict(t),
               "num_codes": m.num_codes, "grid": m.grid, "train_seconds": time.perf_counter() - t0,
               "device": t.device, "final": metrics, "curve": val_curve(args.out / "tb" / name)}
        atomic_write_text(args.out / f"{name}.json", json.dumps(row, indent=2, default=str))
        print(f"{name}: final PSNR {metrics['psnr']:.2f} dB after {t.steps} steps", flush=True)


if __name__ == "__main__":
    main(tyro.cli(Args))
