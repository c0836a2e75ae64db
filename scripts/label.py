"""``lapo label``: latent actions for video files and toolkit datasets.

    lapo label --checkpoint runs/lam --input videos/ clip.mp4 --out labels/   # one folder per video
    lapo label --checkpoint runs/lam --input data/coinrun                     # -> data/coinrun/labels

Video files (mp4, webm, mkv, avi, gif, mov; directories are searched recursively) are decoded with
PyAV and converted by ``--video.*`` (see :mod:`envs.video`; the size is the LAM's). Each video's
labels go to ``OUT/<name>/`` (format in :func:`lapo.label.label_video`); a dataset's go to
``DATASET/labels`` (or ``OUT/<name>`` with ``--out``). Existing outputs are kept unless
``--overwrite``.

Output names, computed over all inputs, datasets and videos together (so every torchrun rank
agrees): an input's name is its file (or dataset directory) stem when no other input has the same stem; videos whose stems collide are named ``stem_ext``
(``clip.gif`` and ``clip.mkv`` -> ``clip_gif``, ``clip_mkv``); names that still collide (the same file
name in different folders) are prefixed with parent folder names, nearest first, until they differ
(``a/clip.mp4`` and ``b/clip.mp4`` -> ``a_clip_mp4``, ``b_clip_mp4``). The same file given twice is
labeled once.

Exit status: the number of inputs that failed (capped at 255). A file that cannot be labeled (not a
video, fewer than 2 frames, existing output) is reported with the reason and the others continue. A
damaged video (packets that fail to decode, frames lost) is labeled from the frames that decoded, its
``meta.json`` records ``decode_errors`` and ``frames_lost``, and one line reports it::

    failed: videos/clip.mp4: 2 decode errors, 31 of 200 frames lost; ...

It counts as failed unless ``--allow-partial``, which turns that line into a warning.

Large corpora shard across processes with torchrun: each rank labels every WORLD_SIZE-th input
(from the ``RANK``/``WORLD_SIZE`` variables torchrun sets; outputs never collide), e.g.

    torchrun --nproc_per_node 4 -m scripts.cli label --checkpoint runs/lam --input videos/ --out labels/
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import tyro
from tqdm import tqdm

from envs.video import VideoConfig, VideoDecodeReport, VideoError, find_videos
from lapo.label import label_dataset, label_precision, label_video
from lapo.lam import LatentActionModel


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
    batch_size: int = 128
    """Transitions per IDM batch."""
    workers: int = 2
    """Threads running the IDM on batches at once while the main thread decodes (0 = decode and
    label in turn in one thread; see :func:`lapo.label.encode_batches`)."""
    precision: str = "auto"
    """``auto`` (bf16 only where the CPU/GPU runs it natively and a measurement says faster; printed),
    ``fp32`` or ``bf16``."""
    overwrite: bool = False
    """Replace existing outputs."""
    allow_partial: bool = False
    """Accept damaged videos (decode errors, lost frames): a warning, not a failure in the exit status.
    Their labels (of the frames that decoded) are written either way."""
    device: str = "auto"
    """``auto`` (CUDA if present; ``cuda:LOCAL_RANK`` under torchrun), ``cpu`` or ``cuda[:N]``."""


def main(args: Args) -> int:
    """Label every input; returns 0 or raises ``SystemExit(number of failed inputs)``.

    Raises:
        FileNotFoundError / ValueError: bad checkpoint, or an input path that does not exist.
    """
    lam = LatentActionModel.from_pretrained(args.checkpoint, args.device)
    precision = label_precision(lam, args.precision, args.batch_size)  # once for every input
    video_cfg = dataclasses.replace(args.video, size=lam.cfg.image_size)
    out_root = args.out or Path("labels")
    failures: list[str] = []
    warnings: list[str] = []
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    datasets = [p for p in args.input if (Path(p) / "meta.json").is_file()]
    videos = find_videos([p for p in args.input if p not in datasets])
    names = unique_names([Path(d) for d in datasets] + videos)  # over all inputs, so every rank agrees
    ds_names, names = names[:len(datasets)], names[len(datasets):]
    datasets, ds_names = datasets[rank::world], ds_names[rank::world]
    videos, names = videos[rank::world], names[rank::world]
    for ds, ds_name in zip(datasets, ds_names):
        try:
            target = out_root / ds_name if args.out else None
            out = label_dataset(args.checkpoint, ds, target, args.batch_size, args.overwrite, args.device,
                                workers=args.workers, precision=precision)
            print(f"wrote {out}")
        except (ValueError, FileExistsError) as e:
            failures.append(f"{ds}: {e}")
    with tqdm(desc=f"label videos (rank {rank}/{world})", unit="transition", disable=rank != 0) as bar:
        for video, name in zip(videos, names):
            try:
                out = label_video(lam, video, out_root / name, video_cfg, args.batch_size, args.overwrite, bar,
                                  args.workers, precision)
            except (VideoError, FileExistsError) as e:
                failures.append(str(e) if str(video) in str(e) else f"{video}: {e}")
                continue
            report = VideoDecodeReport.from_meta(video, json.loads((out / "meta.json").read_text()))
            if report.damaged and args.allow_partial:
                warnings.append(report.summary())
            elif report.damaged:
                failures.append(f"{report.summary()}; labels of the decoded frames are in {out}, "
                                "pass --allow-partial to accept damaged videos")
    for message in warnings:
        print(f"warning: {message}", file=sys.stderr)
    for message in failures:
        print(f"failed: {message}", file=sys.stderr)
    print(f"labeled {len(datasets) + len(videos) - len(failures)} of {len(datasets) + len(videos)} inputs")
    if world > 1:  # every rank finishes its shard before any exits (torchrun stops all on a failure)
        from lapo.training import barrier

        barrier()
    if failures:
        raise SystemExit(min(len(failures), 255))
    return 0


def unique_names(videos: list[Path]) -> list[str]:
    """Output folder name per video, by the rule in the module docstring.

    Each video starts at its stem; while a name is shared, every video sharing it moves one step up
    ``stem`` -> ``stem_ext`` -> ``parent_stem_ext`` -> ``grandparent_parent_stem_ext`` ... (folders of
    the absolute path). Videos whose names still collide once their whole path is used (the same path
    twice) get ``_2``, ``_3``, ... in input order.

    Args:
        videos: video file paths, in input order.

    Returns:
        One name per video, all distinct, in the same order.
    """
    paths = [Path(v) for v in videos]
    parents = [[p.name for p in v.absolute().parents if p.name] for v in paths]  # nearest first

    def name(i: int, level: int) -> str:
        if level == 0:
            return paths[i].stem
        parts = [*reversed(parents[i][:level - 1]), paths[i].stem, paths[i].suffix.lstrip(".")]
        return "_".join(p for p in parts if p)

    levels = [0] * len(paths)
    while True:
        names = [name(i, level) for i, level in enumerate(levels)]
        counts = Counter(names)
        clashing = [i for i, n in enumerate(names) if counts[n] > 1 and levels[i] <= len(parents[i])]
        if not clashing:
            break
        for i in clashing:
            levels[i] += 1
    used: set[str] = set()
    for i, n in enumerate(names):
        k, unique = 1, n
        while unique in used:
            k += 1
            unique = f"{n}_{k}"
        used.add(unique)
        names[i] = unique
    return names


if __name__ == "__main__":
    main(tyro.cli(Args))
