"""Benchmark: end-to-end labeling throughput from mp4 files and peak memory vs video length.

    python -m scripts.benchmark_label --checkpoint runs/quickstart/lam --frames-from runs/quickstart/dataset

Builds mp4 test videos (MPEG-4 Part 2, 30 fps) from real frames of a dataset, at 64×64 and
256×256, of 1 and 30 minutes, then for each runs in a fresh process (so peak RSS is its own):
decode + convert only, and decode + convert + label (the whole ``lapo label`` path). Prints a table
and writes JSON. Throughput = source frames per second of wall time.
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
    minutes: tuple[float, ...] = (1.0, 30.0)
    """Video lengths for the memory comparison (at 64×64)."""
    threads: int = 2
    """torch threads in each labeling process."""


def make_video(frames: np.ndarray, path: Path, n: int, size: int, fps: int = 30) -> Path:
    """Encode ``n`` frames (cycling through ``frames``, upscaled to ``size``) as an mp4."""
    import av
    from PIL import Image

    if path.exists():
        return path
    tmp = path.with_name(path.stem + ".tmp.mp4")
    with av.open(str(tmp), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        s.bit_rate = 2_000_000 if size > 64 else 400_000
        for i in range(n):
            f = frames[i % len(frames)]
            if size != f.shape[0]:
                f = np.asarray(Image.fromarray(f).resize((size, size), Image.NEAREST))
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    tmp.rename(path)
    return path


def run_one(video: Path, checkpoint: Path, out: Path, decode_only: bool, threads: int) -> dict:
    """Time one decode(+label) pass in a fresh process; returns its JSON line."""
    code = f"""
import json, resource, shutil, sys, time, torch
torch.set_num_threads({threads})
from envs.video import VideoConfig, iter_video
from lapo.label import label_video
from lapo.lam import LatentActionModel
video, out = {str(video)!r}, {str(out)!r}
cfg = VideoConfig(size=64, mode="resize")
t0 = time.perf_counter()
if {decode_only}:
    n = sum(1 for _ in iter_video(video, cfg))
else:
    lam = LatentActionModel.from_pretrained({str(checkpoint)!r})
    t0 = time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)
    n = int(json.load(open(label_video(lam, video, out, cfg, 512) / "meta.json"))["num_frames"])
dt = time.perf_counter() - t0
print(json.dumps({{"frames": n, "seconds": dt, "fps": n / dt,
                   "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(args: Args) -> dict:
    from envs.dataset import EpisodeDataset

    args.work_dir.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(EpisodeDataset(args.frames_from).frames[:3000])
    cases = [(64, m) for m in args.minutes] + [(256, args.minutes[0])]
    rows = []
    for size, minutes in cases:
        n = int(minutes * 60 * 30)
        video = make_video(frames, args.work_dir / f"video_{size}px_{minutes:g}min.mp4", n, size)
        decode = run_one(video, args.checkpoint, args.work_dir / "labels", True, args.threads)
        full = run_one(video, args.checkpoint, args.work_dir / "labels", False, args.threads)
        rows.append({"source": f"{size}×{size}", "minutes": minutes, "frames": full["frames"],
                     "decode_fps": decode["fps"], "label_fps": full["fps"],
                     "decode_share": decode["seconds"] / full["seconds"],
                     "peak_rss_mb": full["peak_rss_mb"], "decode_only_rss_mb": decode["peak_rss_mb"]})
    print("| source | minutes | frames | decode+convert fps | end-to-end label fps | decode share of time | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['source']} | {r['minutes']:g} | {r['frames']} | {r['decode_fps']:.0f} | {r['label_fps']:.0f} | "
              f"{r['decode_share']:.0%} | {r['peak_rss_mb']:.0f} |")
    result = {"rows": rows, "checkpoint": str(args.checkpoint), "threads": args.threads,
              "time": time.strftime("%Y-%m-%d %H:%M")}
    (args.work_dir / "results.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
