"""Video files in: decode with PyAV, convert to the model's frame size and rate, import as episodes.

Conversion rule (``VideoConfig``), applied to every decoded frame in this order:

1. **Frame rate**: with ``fps`` set, keep the first frame and then each frame whose timestamp
   reaches the next multiple of ``1 / fps`` seconds (works for variable-frame-rate files); then keep
   every ``stride``-th of those.
2. **Colour**: every pixel format (grayscale, alpha, YUV, palette) is converted to RGB by FFmpeg;
   alpha is dropped.
3. **Geometry** to ``size × size``: ``crop`` (default) takes the centred square and resizes it;
   ``letterbox`` pads the short side with black to a square, then resizes; ``resize`` stretches.
   Resampling is Pillow's bilinear filter with antialiasing (area-like when shrinking).

Each kept frame comes with its source frame index and timestamp in seconds. Decoding streams:
memory does not grow with video length.

``import_videos`` turns files into an action-free episode dataset, one episode per file. A file that
cannot be read (not a video, corrupt, truncated before 2 frames, no video stream) is reported by
name with the reason and skipped; the others are imported.

Dimension keys: T frames, H W C image, pixels uint8 in [0, 255].
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".gif", ".mov")
MODES = ("crop", "letterbox", "resize")


class VideoError(ValueError):
    """A file that cannot be used as video; the message names the file and the reason."""


@dataclass
class VideoConfig:
    """How decoded frames become model frames."""

    size: int = 64
    """Output H = W in pixels."""
    mode: str = "crop"
    """``crop`` (centre square), ``letterbox`` (pad to square with black) or ``resize`` (stretch)."""
    fps: float | None = None
    """Resample to this many frames per second by timestamp (None = keep the source rate)."""
    stride: int = 1
    """Keep every stride-th frame after frame-rate resampling."""

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.size < 1 or self.stride < 1:
            raise ValueError(f"size and stride must be >= 1, got {self.size} and {self.stride}")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"fps must be > 0 or None, got {self.fps}")


def convert_frame(rgb_HWC: np.ndarray, cfg: VideoConfig) -> np.ndarray:
    """Apply the geometry rule to one ``(H, W, 3)`` uint8 frame -> ``(size, size, 3)`` uint8."""
    from PIL import Image

    h, w = rgb_HWC.shape[:2]
    if h == w == cfg.size:
        return rgb_HWC
    if cfg.mode == "crop":
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        rgb_HWC = rgb_HWC[top:top + s, left:left + s]
    elif cfg.mode == "letterbox" and h != w:
        s = max(h, w)
        canvas = np.zeros((s, s, 3), np.uint8)
        top, left = (s - h) // 2, (s - w) // 2
        canvas[top:top + h, left:left + w] = rgb_HWC
        rgb_HWC = canvas
    image = Image.fromarray(np.ascontiguousarray(rgb_HWC))
    if image.size != (cfg.size, cfg.size):
        image = image.resize((cfg.size, cfg.size), Image.BILINEAR, reducing_gap=None)
    return np.asarray(image, np.uint8)


def iter_video(path: str | os.PathLike, cfg: VideoConfig) -> Iterator[tuple[np.ndarray, int, float]]:
    """Stream ``(frame (size, size, 3) uint8, source frame index, timestamp s)`` from a video file.

    Raises:
        VideoError: the file is missing, is not a video, has no video stream, or breaks while
            decoding (the frames before the break have already been yielded).
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise VideoError(f"{path}: not a readable video ({e})") from e
    with container:
        if not container.streams.video:
            raise VideoError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        next_t, kept = 0.0, 0
        try:
            for index, frame in enumerate(container.decode(stream)):
                t = float(frame.time) if frame.time is not None else index / float(stream.average_rate or 1)
                if cfg.fps is not None:
                    if t + 1e-6 < next_t:
                        continue
                    next_t = (np.floor(t * cfg.fps + 1e-6) + 1) / cfg.fps
                kept += 1
                if (kept - 1) % cfg.stride:
                    continue
                yield convert_frame(frame.to_ndarray(format="rgb24"), cfg), index, t
        except av.FFmpegError as e:
            raise VideoError(f"{path}: decoding failed after {kept} frames ({e})") from e


def find_videos(inputs: list[Path]) -> list[Path]:
    """Expand directories (recursively, sorted) to their video files; files are kept as given.

    Raises:
        FileNotFoundError: an input does not exist.
    """
    found: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix.lower() in VIDEO_EXTENSIONS and f.is_file())
        elif p.exists():
            found.append(p)
        else:
            raise FileNotFoundError(f"input {p} does not exist")
    return found


@dataclass
class ImportVideoConfig:
    """``lapo import-video``: a folder of action-free videos -> an episode dataset."""

    inputs: list[Path]
    """Video files and/or directories (searched recursively for .mp4 .webm .mkv .avi .gif .mov)."""
    out: Path = Path("data/videos")
    """Dataset directory to create."""
    video: VideoConfig = field(default_factory=VideoConfig)
    """Frame conversion rule."""
    overwrite: bool = False
    """Replace an existing dataset at ``out`` (only once the new one is complete)."""


def import_videos(cfg: ImportVideoConfig) -> tuple[Path | None, list[str]]:
    """Import each video as one episode (frames only).

    Returns:
        (dataset path or None if no video could be imported, list of failure messages).

    Raises:
        FileExistsError: ``out`` exists and ``overwrite`` is False (checked before decoding).
        FileNotFoundError: an input path does not exist.
    """
    from tqdm import tqdm

    from envs.dataset import EpisodeWriter
    from lapo.checkpoint import jsonable

    if Path(cfg.out).exists() and not cfg.overwrite:
        raise FileExistsError(f"{cfg.out} already exists; pass --overwrite to replace it or choose another --out")
    files = find_videos(cfg.inputs)
    failures: list[str] = []
    sources: list[dict] = []
    writer = EpisodeWriter(cfg.out, overwrite=cfg.overwrite)
    try:
        for f in tqdm(files, desc="import-video", unit="file"):
            try:
                n = 0
                for frame, _, _ in iter_video(f, cfg.video):
                    writer.append_frames(frame[None])
                    n += 1
                writer.end_episode()
                sources.append({"file": str(f), "frames": n})
            except (VideoError, ValueError) as e:
                writer.discard_episode()
                failures.append(str(e) if str(f) in str(e) else f"{f}: {e}")
        if not sources:
            writer.abort()
            return None, failures
        writer.meta.update({"source": {"kind": "video", "files": sources, "failed": failures},
                            "video": jsonable(cfg.video)})
        return writer.close(), failures
    except BaseException:
        writer.abort()
        raise
