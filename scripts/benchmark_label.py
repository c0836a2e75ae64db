"""Benchmark: end-to-end labeling throughput from H.264 mp4 files, before/after each speed change, and peak
memory vs video length.

    python -m scripts.benchmark_label --checkpoint runs/quickstart/lam --frames-from runs/quickstart/dataset

Builds H.264 mp4 test videos (libx264, 30 fps, ``envs.video.write_video``) from real frames of a
dataset: 64×64 of ``--minutes`` (5 by default) and 256×256 (nearest-upscaled) of the same length,
and 64×64 of 1 and 30 minutes for the memory comparison. Each row runs in a fresh process (so peak
RSS is its own) and labels the whole file with the ``lapo label`` path (:func:`lapo.label.label_video`)
in one of four variants, so before and after come from the same run:

- ``before``: Pillow resize (``VideoConfig.resampler="pillow"``), IDM in the decoding thread, batch 512;
- ``+swscale``: FFmpeg converts colour and size in one call, still in turn with the IDM;
- ``now, fp32``: swscale, the IDM in 2 worker threads while the main thread decodes, batch 128, fp32;
- ``now`` (the defaults): the same with ``precision="auto"`` (bf16 autocast where the CPU has it
  natively and a measured batch is faster; the table's precision column shows the choice).

All variants convert frames with ``threads=1`` (without it PyAV ran a thread pool per frame, ~20×
slower per 64×64 frame: ``scripts/profile_stages.py`` shows that alone). Decode+convert throughput
is measured in the same fresh processes. Prints the CPU model and flags, a table, and writes JSON.
Throughput = source frames per second of wall time.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro


@dataclass
class Args:
    checkpoint: Path = Path("runs/quickstart/lam")
    """LAM checkpoint to label with."""
    frames_from: Path = Path("runs/quickstart/dataset")
    """Dataset whose frames make the test videos."""
    work_dir: Path = Path("runs/benchmark_label")
    """Where test videos, labels and the JSON go."""
    minutes: float = 5.0
    """Length of the throughput videos (64×64 and 256×256)."""
    memory_minutes: tuple[float, float] = (1.0, 30.0)
    """Short and long 64×64 videos for the peak-memory comparison (labeled with the defaults)."""
    threads: int = 2
    """torch threads in each labeling process."""


VARIANTS = {"before": {"resampler": "pillow", "workers": 0, "batch_size": 512, "precision": "fp32"},
            "+swscale": {"resampler": "swscale", "workers": 0, "batch_size": 512, "precision": "fp32"},
            "now, fp32": {"resampler": "swscale", "workers": 2, "batch_size": 128, "precision": "fp32"},
            "now": {"resampler": "swscale", "workers": 2, "batch_size": 128, "precision": "auto"}}
"""The configurations compared; ``now`` is the default of ``lapo label``."""


def make_video(frames: np.ndarray, path: Path, n: int, size: int, fps: int = 30) -> Path:
    """Encode ``n`` frames (cycling through ``frames``, upscaled nearest to ``size``) as an H.264 mp4."""
    from envs.video import write_video

    if not path.exists():
        write_video((frames[i % len(frames)] for i in range(n)), path, fps=fps, scale=size // frames.shape[1])
    return path


def run_one(video: Path, checkpoint: Path, out: Path, variant: str, threads: int) -> dict:
    """Time decode+convert, then labeling, of one file in a fresh process; returns its JSON line."""
    v = VARIANTS[variant]
    code = f"""
import json, resource, shutil, time, torch
torch.set_num_threads({threads})
from envs.video import VideoConfig, iter_video
from lapo.label import label_video
from lapo.lam import LatentActionModel
video, out = {str(video)!r}, {str(out)!r}
cfg = VideoConfig(size=64, mode="resize", resampler={v['resampler']!r})
lam = LatentActionModel.from_pretrained({str(checkpoint)!r})
t0 = time.perf_counter()
n_decoded = sum(1 for _ in iter_video(video, cfg))
decode_s = time.perf_counter() - t0
shutil.rmtree(out, ignore_errors=True)
t0 = time.perf_counter()
n = int(json.load(open(label_video(lam, video, out, cfg, {v['batch_size']}, workers={v['workers']},
                                precision={v['precision']!r}) / "meta.json"))["num_frames"])
dt = time.perf_counter() - t0
print(json.dumps({{"frames": n, "seconds": dt, "fps": n / dt, "decode_fps": n_decoded / decode_s,
                   "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = proc.stdout.strip().splitlines()
    chosen = [line.split()[2] for line in lines if line.startswith("label: precision ")]
    return {**json.loads(lines[-1]), "precision": chosen[0] if chosen else v["precision"]}


def main(args: Args) -> dict:
    from envs.dataset import EpisodeDataset
    from scripts.profile_stages import cpu_info

    args.work_dir.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(EpisodeDataset(args.frames_from).frames[:3000])
    rows = []

    def video(size: int, minutes: float) -> Path:
        return make_video(frames, args.work_dir / f"h264_{size}px_{minutes:g}min.mp4", int(minutes * 60 * 30), size)

    for size in (64, 256):
        for variant in VARIANTS:
            r = run_one(video(size, args.minutes), args.checkpoint, args.work_dir / "labels", variant, args.threads)
            rows.append({"source": f"{size}×{size}", "minutes": args.minutes, "variant": variant, **r})
    for minutes in args.memory_minutes:
        r = run_one(video(64, minutes), args.checkpoint, args.work_dir / "labels", "now", args.threads)
        rows.append({"source": "64×64", "minutes": minutes, "variant": "now", **r})
    cpu = cpu_info()
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores, flags: {' '.join(cpu['flags'])}; torch threads {args.threads}")
    print("| source | minutes | variant | precision | frames | decode+convert fps | end-to-end label fps | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['source']} | {r['minutes']:g} | {r['variant']} | {r['precision']} | {r['frames']} | {r['decode_fps']:,.0f} "
              f"| {r['fps']:,.0f} | {r['peak_rss_mb']:.0f} |")
    result = {"rows": rows, "cpu": cpu, "checkpoint": str(args.checkpoint), "threads": args.threads,
              "variants": VARIANTS, "time": time.strftime("%Y-%m-%d %H:%M")}
    (args.work_dir / "results.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
