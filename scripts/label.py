"""``lapo label``: latent actions for video files and toolkit datasets.

    lapo label --checkpoint runs/lam --input videos/ clip.mp4 --out labels/   # one folder per video
    lapo label --checkpoint runs/lam --input data/coinrun                     # -> data/coinrun/labels

Video files (mp4, webm, mkv, avi, gif, mov; directories are searched recursively) are decoded with
PyAV and converted by ``--video.*`` (see :mod:`envs.video`; the size is the LAM's). Each video's
labels go to ``OUT/<file stem>/`` (format in :func:`lapo.label.label_video`); a dataset's go to
``DATASET/labels`` (or ``OUT/<dataset name>`` with ``--out``). A file that cannot be labeled is
reported with the reason and the others continue; the exit status is the number that failed.
Existing outputs are kept unless ``--overwrite``.

Large corpora shard across processes with torchrun: each rank labels every WORLD_SIZE-th input
(from the ``RANK``/``WORLD_SIZE`` variables torchrun sets; outputs never collide), e.g.

    torchrun --nproc_per_node 4 -m scripts.cli label --checkpoint runs/lam --input videos/ --out labels/
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tyro
from tqdm import tqdm

from envs.video import VideoConfig, VideoError, find_videos
from lapo.label import label_dataset, label_video
from lapo.lam import load_lam


@dataclass
class Args:
    checkpoint: Path
    """LAM checkpoint directory."""
    input: list[Path]
    """Video files, directories of videos, and/or dataset directories."""
    out: Path | None = None
    """Output directory for video labels (default: labels/); see the module docstring for datasets."""
    video: VideoConfig = field(default_factory=VideoConfig)
    """Frame conversion for video files (size is taken from the LAM)."""
    batch_size: int = 512
    """Transitions per IDM batch."""
    overwrite: bool = False
    """Replace existing outputs."""
    device: str = "cpu"
    """``cpu`` or ``cuda``."""


def main(args: Args) -> int:
    lam = load_lam(args.checkpoint, args.device)
    video_cfg = dataclasses.replace(args.video, size=lam.cfg.image_size)
    out_root = args.out or Path("labels")
    failures: list[str] = []
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    datasets = [p for p in args.input if (Path(p) / "meta.json").is_file()]
    videos = find_videos([p for p in args.input if p not in datasets])
    names = unique_names(videos)  # computed over all inputs, so every rank agrees
    datasets, videos, names = datasets[rank::world], videos[rank::world], names[rank::world]
    for ds in datasets:
        try:
            target = out_root / Path(ds).name if args.out else None
            print(f"wrote {label_dataset(args.checkpoint, ds, target, args.batch_size, args.overwrite, args.device)}")
        except (ValueError, FileExistsError) as e:
            failures.append(f"{ds}: {e}")
    with tqdm(desc=f"label videos (rank {rank}/{world})", unit="transition", disable=rank != 0) as bar:
        for video, name in zip(videos, names):
            try:
                label_video(lam, video, out_root / name, video_cfg, args.batch_size, args.overwrite, bar)
            except (VideoError, FileExistsError) as e:
                failures.append(str(e) if str(video) in str(e) else f"{video}: {e}")
    for message in failures:
        print(f"failed: {message}", file=sys.stderr)
    print(f"labeled {len(datasets) + len(videos) - len(failures)} of {len(datasets) + len(videos)} inputs")
    if failures:
        raise SystemExit(min(len(failures), 255))
    return 0


def unique_names(videos: list[Path]) -> list[str]:
    """Output folder name per video: its stem, with ``_`` appended while it collides."""
    used: set[str] = set()
    names = []
    for video in videos:
        name = video.stem
        while name in used:
            name += "_"
        used.add(name)
        names.append(name)
    return names


if __name__ == "__main__":
    main(tyro.cli(Args))
