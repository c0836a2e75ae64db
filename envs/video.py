"""Video files in: decode with PyAV, convert to the model's frame size and rate, import as episodes.

Conversion rule (``VideoConfig``), applied to every decoded frame in this order:

1. **Frame rate**: with ``fps`` set, keep the first frame and then each frame whose timestamp
   reaches the next multiple of ``1 / fps`` seconds (works for variable-frame-rate files); then keep
   every ``stride``-th of those.
2. **Colour**: every pixel format (grayscale, alpha, YUV, palette) is converted to RGB by FFmpeg;
   alpha is dropped.
3. **Geometry** to ``size × size``: ``crop`` (default) takes the centred square and resizes it;
   ``letterbox`` pads the short side with black to a square, then resizes; ``resize`` stretches.
   Resampling (``resampler``): ``swscale`` (default) converts colour and size in one FFmpeg call per
   frame with its bilinear filter, which widens with the shrink factor (antialiased, area-like), then
   cuts out or pads the centred square (so in ``crop`` mode the outermost columns blend in a little
   of what lies beyond the cut); ``pillow`` takes FFmpeg's RGB at the source size, crops or pads,
   and resizes with Pillow's antialiased bilinear filter (the rule before 2026-11-26). The two
   differ by a few levels per pixel (tested).

Speed (``scripts/profile_stages.py``; this 2-core AVX2 CPU): PyAV >= 17 gives every conversion a
thread pool unless told ``threads=1``, which made a 64×64 frame's RGB conversion cost ~200 µs
instead of ~15 µs, so every conversion here passes ``threads=1``. Decoder threads
(``decode_threads``) gained nothing measurable on 2 cores while labeling (the IDM uses the other).

Each kept frame comes with its source frame index and timestamp in seconds. Decoding streams:
memory does not grow with video length.

**Damaged streams.** Decoding goes packet by packet: a packet that fails to decode is counted as a
decode error and skipped, and decoding goes on with the next one (a read error in the container
itself ends the file there). ``VideoDecodeReport`` tells afterwards what was lost: frames decoded,
the frame count the container declares (mp4, mov, avi, gif do; mkv and webm do not), decode
errors, and frames lost (declared - decoded, at least one per decode error; without a declared
count only the decode errors are counted, so a frame the demuxer skips silently goes unseen). After
a loss, frame indices count decoded frames only; timestamps still place each frame in the source.

``import_videos`` turns files into an action-free episode dataset, one episode per file. A file that
cannot be read (not a video, truncated before 2 frames, no video stream) is reported by name with
the reason and skipped; the others are imported. A damaged file (decode errors or lost frames) is
reported with its numbers and skipped too, unless ``allow_partial`` keeps the frames that decoded.

Dimension keys: T frames, H W C image, pixels uint8 in [0, 255].
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".gif", ".mov")
MODES = ("crop", "letterbox", "resize")
RESAMPLERS = ("swscale", "pillow")


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
    resampler: str = "swscale"
    """``swscale`` (FFmpeg converts colour and size in one call) or ``pillow`` (FFmpeg RGB at the source
    size, then Pillow's antialiased bilinear resize: the earlier, slower rule)."""
    decode_threads: int = 1
    """FFmpeg decoder threads: 1 = none (fastest for small frames), 0 = FFmpeg's choice (frame and
    slice threads), N > 1 = N frame threads."""

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.resampler not in RESAMPLERS:
            raise ValueError(f"resampler {self.resampler!r}: choose one of {', '.join(RESAMPLERS)}")
        if self.decode_threads < 0:
            raise ValueError(f"decode_threads must be >= 0 (0 = FFmpeg's choice), got {self.decode_threads}")
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


def frame_to_rgb(frame, cfg: VideoConfig) -> np.ndarray:
    """One decoded ``av.VideoFrame`` (any pixel format) -> ``(size, size, 3)`` uint8 by the rule of
    ``cfg`` (``resampler``, ``mode``); one FFmpeg conversion call with ``threads=1``."""
    if cfg.resampler == "pillow":
        return convert_frame(frame.to_ndarray(format="rgb24", threads=1), cfg)
    w, h, size = frame.width, frame.height, cfg.size
    if cfg.mode == "resize" or w == h:
        tw = th = size
    else:  # scale the short (crop) or long (letterbox) side to size, keep the aspect ratio
        scale = size / (min(w, h) if cfg.mode == "crop" else max(w, h))
        tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    rgb = frame.to_ndarray(width=tw, height=th, format="rgb24", interpolation="BILINEAR", threads=1)
    if (th, tw) == (size, size):
        return rgb
    if cfg.mode == "crop":
        top, left = (th - size) // 2, (tw - size) // 2
        return np.ascontiguousarray(rgb[top:top + size, left:left + size])
    canvas = np.zeros((size, size, 3), np.uint8)  # letterbox
    top, left = (size - th) // 2, (size - tw) // 2
    canvas[top:top + th, left:left + tw] = rgb
    return canvas


def write_video(frames_THWC, path: str | os.PathLike, fps: int = 15, scale: int = 1) -> Path:
    """Write uint8 ``(T, H, W, 3)`` frames as an H.264 MP4 (PyAV, ``yuv420p``), each frame upscaled
    ``scale``× (nearest; H.264 needs even sizes, so odd sizes are padded). Written via a temporary
    name, so ``path`` is the old file or the complete new one.

    Raises:
        ValueError: no frames, or frames that are not ``(H, W, 3)`` uint8.
    """
    import av

    frames = [np.asarray(f) for f in frames_THWC]
    if not frames or frames[0].ndim != 3 or frames[0].shape[2] != 3 or frames[0].dtype != np.uint8:
        raise ValueError("write_video needs one or more (H, W, 3) uint8 frames")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    h, w = frames[0].shape[0] * scale, frames[0].shape[1] * scale
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w + w % 2, h + h % 2, "yuv420p"
        for f in frames:
            f = np.repeat(np.repeat(f, scale, 0), scale, 1)
            f = np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)))
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path


@dataclass
class VideoDecodeReport:
    """What decoding one file lost; :func:`iter_video` fills it in while it streams.

    Read it once the iteration has finished (``decoded`` counts up as frames come out).
    """

    path: str = ""
    """The file."""
    decoded: int = 0
    """Frames the decoder produced (source frames, before the ``fps``/``stride`` rule)."""
    declared: int = 0
    """Frame count the container declares (0 = none declared, as in mkv and webm)."""
    errors: int = 0
    """Packets that failed to decode and were skipped, plus a container read error that ended the file."""

    @property
    def lost(self) -> int:
        """Source frames lost: ``declared - decoded`` and at least one per decode error."""
        return max(self.declared - self.decoded, self.errors, 0)

    @property
    def damaged(self) -> bool:
        """True when a decode error happened or frames were lost."""
        return self.errors > 0 or self.lost > 0

    def describe(self) -> str:
        """The damage in words, e.g. ``2 decode errors, 31 of 200 frames lost``."""
        errors = f"{self.errors} decode error{'' if self.errors == 1 else 's'}"
        if self.declared > 0:
            return f"{errors}, {self.lost} of {self.declared} frames lost"
        return (f"{errors}, at least {self.lost} frame{'' if self.lost == 1 else 's'} lost "
                f"({self.decoded} decoded; the file declares no frame count)")

    def summary(self) -> str:
        """One line naming the file, e.g. ``clip.mp4: 2 decode errors, 31 of 200 frames lost``."""
        return f"{self.path}: {self.describe()}"

    @classmethod
    def from_meta(cls, path: str | os.PathLike, meta: dict) -> VideoDecodeReport:
        """Rebuild a report from the numbers :meth:`to_meta` wrote (missing numbers read as 0)."""
        return cls(str(path), meta.get("frames_decoded", 0), meta.get("frames_declared", 0),
                   meta.get("decode_errors", 0))

    def to_meta(self) -> dict:
        """The numbers for a ``meta.json``."""
        return {"frames_decoded": self.decoded, "frames_declared": self.declared,
                "decode_errors": self.errors, "frames_lost": self.lost}


def iter_video(path: str | os.PathLike, cfg: VideoConfig, report: VideoDecodeReport | None = None,
               convert: bool = True) -> Iterator[tuple[np.ndarray, int, float]]:
    """Stream ``(frame (size, size, 3) uint8, source frame index, timestamp s)`` from a video file.

    With ``convert=False`` the frame is the decoded ``av.VideoFrame`` (after the frame-rate rule),
    for a caller that converts it elsewhere with :func:`frame_to_rgb` (``lapo label`` does so in its
    IDM threads).

    A packet that fails to decode is skipped and counted (see the module docstring); the stream goes
    on. Pass ``report`` to learn afterwards how many errors and lost frames there were: a file is
    intact when ``report.damaged`` is False after the last frame.

    Args:
        path: the video file.
        cfg: frame-rate and geometry rule.
        report: filled in during the iteration (``path``, ``declared``, ``decoded``, ``errors``).

    Raises:
        VideoError: the file is missing, is not a video, or has no video stream (nothing yielded).
    """
    import av

    path = Path(path)
    if report is None:
        report = VideoDecodeReport()
    report.path = str(path)
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
        stream.thread_type = {1: "NONE", 0: "AUTO"}.get(cfg.decode_threads, "FRAME")
        if cfg.decode_threads > 1:
            stream.thread_count = cfg.decode_threads
        report.declared = max(int(stream.frames or 0), 0)
        next_t, kept = 0.0, 0
        for frame in decode_frames(container, stream, report):
            index = report.decoded - 1
            t = float(frame.time) if frame.time is not None else index / float(stream.average_rate or 1)
            if cfg.fps is not None:
                if t + 1e-6 < next_t:
                    continue
                next_t = (np.floor(t * cfg.fps + 1e-6) + 1) / cfg.fps
            kept += 1
            if (kept - 1) % cfg.stride:
                continue
            yield (frame_to_rgb(frame, cfg) if convert else frame), index, t


def decode_frames(container, stream, report: VideoDecodeReport) -> Iterator:
    """Decode ``stream`` packet by packet, yielding ``av.VideoFrame`` and counting into ``report``.

    A packet whose decoding fails is counted in ``report.errors`` and skipped. A read error in the
    container is counted too and ends the stream (the decoder is flushed first, so frames it holds
    still come out); demuxing cannot resume after one.
    """
    import av

    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.FFmpegError:
            report.errors += 1
            packet = None  # decoding None flushes the decoder
        try:
            frames = stream.decode(packet)
        except av.FFmpegError:
            report.errors += 1
            frames = []
        for frame in frames:
            report.decoded += 1
            yield frame
        if packet is None:
            return


def find_videos(inputs: list[Path]) -> list[Path]:
    """Expand directories (recursively, sorted) to their video files; files are kept as given.

    A file reached twice (listed twice, or listed and inside a listed directory) is kept once, at
    its first place.

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
    seen: set[Path] = set()
    unique = []
    for f in found:
        if f.resolve() not in seen:
            seen.add(f.resolve())
            unique.append(f)
    return unique


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
    allow_partial: bool = False
    """Import a damaged file (decode errors or lost frames) with the frames that decoded, with a warning,
    instead of reporting it as failed and skipping it."""


def import_videos(cfg: ImportVideoConfig) -> tuple[Path | None, list[str]]:
    """Import each video as one episode (frames only).

    A damaged file (see :class:`VideoDecodeReport`) is a failure unless ``cfg.allow_partial``; then
    its decoded frames are imported and a one-line warning (``clip.mp4: 2 decode errors, 31 of 200
    frames lost``) goes to stderr. The dataset's ``meta.json`` lists each imported file with its
    ``frames``, ``decode_errors`` and ``frames_lost``, the failures, and the partial files.

    Returns:
        (dataset path or None if no video could be imported, list of failure messages, one per file).

    Raises:
        FileExistsError: ``out`` exists and ``overwrite`` is False (checked before decoding).
        FileNotFoundError: an input path does not exist.
    """
    from tqdm import tqdm

    from envs.dataset import EpisodeWriter
    from envs.io import jsonable

    if Path(cfg.out).exists() and not cfg.overwrite:
        raise FileExistsError(f"{cfg.out} already exists; pass --overwrite to replace it or choose another --out")
    files = find_videos(cfg.inputs)
    failures: list[str] = []
    partial: list[str] = []
    sources: list[dict] = []
    writer = EpisodeWriter(cfg.out, overwrite=cfg.overwrite)
    try:
        for f in tqdm(files, desc="import-video", unit="file"):
            report = VideoDecodeReport()
            try:
                n = 0
                for frame, _, _ in iter_video(f, cfg.video, report):
                    writer.append_frames(frame[None])
                    n += 1
                if report.damaged and not cfg.allow_partial:
                    raise VideoError(f"{report.summary()}; pass --allow-partial to import the frames that decoded")
                writer.end_episode()
                sources.append({"file": str(f), "frames": n, "decode_errors": report.errors,
                                "frames_lost": report.lost})
                if report.damaged:
                    partial.append(report.summary())
                    tqdm.write(f"warning: {report.summary()}", file=sys.stderr)
            except (VideoError, ValueError) as e:
                writer.discard_episode()
                message = str(e) if str(f) in str(e) else f"{f}: {e}"
                if report.damaged and report.describe() not in message:
                    message += f" ({report.describe()})"
                failures.append(message)
        if not sources:
            writer.abort()
            return None, failures
        writer.meta.update({"source": {"kind": "video", "files": sources, "failed": failures, "partial": partial},
                            "video": jsonable(cfg.video)})
        return writer.close(), failures
    except BaseException:
        writer.abort()
        raise
