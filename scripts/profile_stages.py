"""Profile of the hot paths of labeling and training, piece by piece, with the before/after of each change.

    python -m scripts.profile_stages --lam runs/quickstart/lam --dataset runs/quickstart/dataset

Labeling, per frame of a 64×64 and a 256×256 H.264 mp4 made from the dataset's frames: decoding
alone; RGB conversion with PyAV's default (a thread pool per call) vs ``threads=1``; the resize to
64×64 by Pillow vs by swscale in the same call; building the IDM windows; the IDM's uint8 -> float
input (one strided interleaving copy, as before, vs concat-then-convert); the IDM at batch 128 and
512, in the calling thread vs in 2 worker threads (:func:`lapo.label.encode_batches`).

Training, per step, for the LAM (batch 64) and latent BC (batch 128), as :func:`lapo.training.fit`
runs them: data (``make_batch``: memory-mapped reads, random shift), forward, backward, optimizer;
random shift as before (float gather) and now; samples/s and the fraction of the step spent waiting
for data without and with prefetching; the LAM with default (NCHW) vs channels-last weights (no
gain measured in training, so the LAM trains with the default). Where the CPU has native bf16
(:func:`lapo.training.bf16_is_native`), the IDM, the LAM and latent BC are also timed under bf16
autocast, the two candidates of the precision rule.

Each number is the median of ``--repeats`` timed runs after a warm-up. Prints the CPU model and
flags, a table, and writes JSON (``--out``). Pause other jobs while it runs.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import tyro


@dataclass
class Args:
    lam: Path = Path("runs/quickstart/lam")
    """LAM checkpoint (its config sets the model; labeling uses its weights)."""
    dataset: Path = Path("runs/quickstart/dataset")
    """Dataset whose frames make the test videos and the training batches."""
    work_dir: Path = Path("runs/profile_stages")
    """Where the test videos go."""
    out: Path = Path("runs/profile_stages/profile.json")
    """JSON written here."""
    threads: int = 2
    """torch threads (the machine's cores)."""
    repeats: int = 5
    """Timed runs per measurement (the median is reported)."""
    train_steps: int = 20
    """Training steps per timed run."""


def cpu_info() -> dict:
    """CPU model, core count and the SIMD flags that decide precision (``/proc/cpuinfo``)."""
    model, flags = platform.processor(), []
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), model)
        flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    except OSError:
        pass
    keep = sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))
    return {"model": model, "cores": os.cpu_count(), "flags": keep}


def median_time(fn, repeats: int) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def old_to_float(frames_BTHWC: torch.Tensor) -> torch.Tensor:
    """The IDM input conversion before 2026-11-26: one strided uint8 -> float copy into NHWC."""
    B, T, H, W, C = frames_BTHWC.shape
    x = torch.empty((B, H, W, T, C), dtype=torch.float32)
    x.copy_(frames_BTHWC.permute(0, 2, 3, 1, 4)).div_(255.0)
    return x.view(B, H, W, T * C).permute(0, 3, 1, 2)


def old_random_shift(obs: torch.Tensor, shift: int, offsets: np.ndarray) -> torch.Tensor:
    """Random shift before 2026-11-26: float replicate-pad and a per-pixel gather ((B, H, W, C) only)."""
    B, H, W, C = obs.shape
    padded = F.pad(obs.permute(0, 3, 1, 2).float(), (shift,) * 4, mode="replicate")
    dy, dx = torch.as_tensor(np.asarray(offsets)).T
    rows = dy[:, None] + torch.arange(H)[None]
    cols = dx[:, None] + torch.arange(W)[None]
    return padded[torch.arange(B)[:, None, None], :, rows[:, :, None], cols[:, None, :]].to(torch.uint8)


def profile_labeling(args: Args, frames: np.ndarray, lam) -> list[dict]:
    import av

    from envs.video import VideoConfig, frame_to_rgb, write_video
    from lapo.label import encode_batches, for_inference
    from lapo.nets import to_float
    from lapo.training import bf16_is_native

    rows = []

    def row(stage: str, variant: str, seconds: float, n: int, unit: str = "frame"):
        rows.append({"part": "labeling", "stage": stage, "variant": variant, "us_per_item": seconds / n * 1e6,
                     "items_per_s": n / seconds, "unit": unit})

    for size in (64, 256):
        video = args.work_dir / f"profile_{size}px.mp4"
        if not video.exists():
            write_video(frames[:3000], video, fps=30, scale=size // 64)
        with av.open(str(video)) as c:
            s = c.streams.video[0]
            s.thread_type = "NONE"
            decoded = [f for _, f in zip(range(1000), c.decode(s))]

        def decode():
            with av.open(str(video)) as c:
                s = c.streams.video[0]
                s.thread_type = "NONE"
                return sum(1 for _ in c.decode(s))

        n = decode()
        row(f"decode {size}×{size} H.264", "1 decoder thread", median_time(decode, args.repeats), n)
        sub = decoded[:300]
        row(f"RGB conversion {size}×{size}", "PyAV default (thread pool per call; before)",
            median_time(lambda: [f.to_ndarray(format="rgb24") for f in sub], args.repeats), len(sub))
        row(f"RGB conversion {size}×{size}", "threads=1 (now)",
            median_time(lambda: [f.to_ndarray(format="rgb24", threads=1) for f in decoded], args.repeats), len(decoded))
        for resampler in ("pillow", "swscale"):
            cfg = VideoConfig(size=64, mode="crop", resampler=resampler)
            row(f"RGB + resize {size}→64", resampler + (" (now)" if resampler == "swscale" else " (before)"),
                median_time(lambda: [frame_to_rgb(f, cfg) for f in decoded], args.repeats), len(decoded))

    B = 128
    buf = list(frames[:B + 2])

    def windows():
        t = np.arange(1, B + 1)
        stacked = np.stack(buf)
        return stacked[np.stack([t - 1, t, t + 1], 1)]

    row("IDM windows from decoded frames", f"batch {B}", median_time(windows, args.repeats), B, "window")
    w = torch.from_numpy(windows())
    row("IDM input uint8 -> float", "one strided interleaving copy (before)",
        median_time(lambda: old_to_float(w), args.repeats), B, "window")
    row("IDM input uint8 -> float", "concat uint8, then convert (now)",
        median_time(lambda: to_float(w, channels_last=True), args.repeats), B, "window")
    lam = for_inference(lam)
    for batch in (128, 512):
        batches = [np.asarray(frames[np.stack([t - 1, t, t + 1], 1)])
                   for t in (np.arange(1 + i * batch, 1 + (i + 1) * batch) for i in range(max(1, 4096 // batch)))]
        n = sum(len(b) for b in batches)
        for workers in (0, 2):
            sec = median_time(lambda: list(encode_batches(lam, batches, workers)), args.repeats)
            row("IDM (encode)", f"batch {batch}, {workers or 'no'} worker threads", sec, n, "window")
        if batch == 128 and bf16_is_native(torch.device("cpu")):
            sec = median_time(lambda: list(encode_batches(lam, batches, 2, "bf16")), args.repeats)
            row("IDM (encode)", "batch 128, 2 worker threads, bf16", sec, n, "window")
    return rows


def profile_training(args: Args, ds, lam_cfg) -> list[dict]:
    from lapo.lam import LatentActionModel, windows_tensor
    from lapo.policy import Policy, PolicyConfig, random_shift
    from lapo.training import BatchSampler, Prefetcher, autocast, bf16_is_native

    rows = []
    train_t = ds.transition_indices
    frames = ds.frames
    cpu = torch.device("cpu")

    def lam_batch(d):
        return windows_tensor(ds, train_t[d.positions], cpu)

    def bc_batch(d, shift_fn=random_shift):
        order = np.argsort(train_t[d.positions])
        j = d.positions[order]
        obs = shift_fn(torch.from_numpy(np.asarray(frames[np.sort(train_t[j])])), 4, d.shifts[order])
        return obs, torch.randn(len(j), lam_cfg.latent_dim)

    def lam_model(channels_last: bool):
        torch.manual_seed(0)
        m = LatentActionModel(lam_cfg)
        return m.to(memory_format=torch.channels_last) if channels_last else m

    def bc_model():
        torch.manual_seed(0)
        return Policy(PolicyConfig(out_dim=lam_cfg.latent_dim))

    def lam_loss(m, b):
        return m(b)[1]

    def bc_loss(m, b):
        return F.mse_loss(m(b[0]), b[1])

    cases = [("LAM", 64, 0, lam_batch, lam_loss, lambda: lam_model(False), "default (NCHW) weights", "fp32"),
             ("LAM", 64, 0, lam_batch, lam_loss, lambda: lam_model(True), "channels-last weights", "fp32"),
             ("latent BC", 128, 4, lambda d: bc_batch(d, old_random_shift), bc_loss, bc_model,
              "random shift by float gather (before)", "fp32"),
             ("latent BC", 128, 4, bc_batch, bc_loss, bc_model, "random shift by uint8 crops (now)", "fp32")]
    if bf16_is_native(cpu):  # the precision rule's two candidates, side by side
        cases += [case[:6] + (case[6] + ", bf16", "bf16") for case in (cases[0], cases[3])]
    for name, batch_size, shift, make_batch, loss_fn, build, variant, precision in cases:
        model = build().train()
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        sampler = BatchSampler(len(train_t), batch_size, 0, shift, rank_world=(0, 1))
        for prefetch in (False, True):
            parts = {"data": [], "forward": [], "backward": [], "optimizer": []}
            walls = []
            for rep in range(args.repeats + 1):
                loader = Prefetcher(sampler, make_batch, prefetch)
                t_run, split = time.perf_counter(), {k: 0.0 for k in parts}
                for step in range(args.train_steps):
                    t0 = time.perf_counter()
                    batch = loader.next(prefetch_another=step + 1 < args.train_steps)
                    t1 = time.perf_counter()
                    with autocast(cpu, precision):
                        loss = loss_fn(model, batch)
                    t2 = time.perf_counter()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    t3 = time.perf_counter()
                    opt.step()
                    t4 = time.perf_counter()
                    for k, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                        split[k] += dt
                loader.close()
                if rep:  # the first run warms up
                    walls.append(time.perf_counter() - t_run)
                    for k in parts:
                        parts[k].append(split[k])
            wall = float(np.median(walls))
            ms = {k: float(np.median(v)) / args.train_steps * 1e3 for k, v in parts.items()}
            rows.append({"part": "training", "stage": name, "variant": variant + (", prefetch" if prefetch else ""),
                         "batch": batch_size, "ms_per_step": wall / args.train_steps * 1e3,
                         "samples_per_s": batch_size * args.train_steps / wall,
                         "data_wait_fraction": ms["data"] / (wall / args.train_steps * 1e3),
                         **{f"{k}_ms": v for k, v in ms.items()}})
    return rows


def main(args: Args) -> dict:
    from envs.dataset import EpisodeDataset
    from lapo.lam import LatentActionModel

    torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    ds = EpisodeDataset(args.dataset)
    lam = LatentActionModel.from_pretrained(args.lam)
    frames = np.asarray(ds.frames[:5000])
    rows = profile_labeling(args, frames, lam) + profile_training(args, ds, lam.cfg)
    cpu = cpu_info()
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores, flags: {' '.join(cpu['flags'])}; torch threads {args.threads}")
    print("\n| labeling stage | variant | µs per item | items/s |")
    print("|---|---|---|---|")
    for r in rows:
        if r["part"] == "labeling":
            print(f"| {r['stage']} | {r['variant']} | {r['us_per_item']:.0f} per {r['unit']} | {r['items_per_s']:,.0f} |")
    print("\n| training | variant | ms/step | samples/s | data | forward | backward | optimizer | waiting for data |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["part"] == "training":
            print(f"| {r['stage']} (batch {r['batch']}) | {r['variant']} | {r['ms_per_step']:.1f} | {r['samples_per_s']:.0f} "
                  f"| {r['data_ms']:.1f} | {r['forward_ms']:.1f} | {r['backward_ms']:.1f} | {r['optimizer_ms']:.1f} "
                  f"| {r['data_wait_fraction']:.0%} |")
    result = {"cpu": cpu, "threads": args.threads, "torch": torch.__version__, "rows": rows,
              "time": time.strftime("%Y-%m-%d %H:%M")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
