"""Label transitions with latent actions from a trained LAM (LAPO §3.2): datasets
(:func:`label_dataset`) and video files (:func:`label_video`, streamed).

Dataset output directory (default ``DATASET/labels``), written atomically::

    meta.json     lam checkpoint, dataset, latent_dim, groups
    latents.npy   (N, L) float32  continuous pre-quantization IDM latent z_t of transition t
    codes.npy     (N, G) int64    quantized code indices of z_t
    valid.npy     (N,) bool       False at each episode's last frame (no o_{t+1}; zeros there)

Row ``t`` labels transition ``o_t -> o_{t+1}``, so the arrays align with the dataset's frames.
Labels are computed in batches and streamed to memory-mapped files (bounded RAM).

Dimension keys: N frames, L latent dim, G groups.
"""

from __future__ import annotations

import json
import os
from array import array
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from envs.dataset import EpisodeDataset
from envs.io import atomic_dir


def label_dataset(lam_dir: str | os.PathLike, dataset_dir: str | os.PathLike,
                  out: str | os.PathLike | None = None, batch_size: int = 128,
                  overwrite: bool = False, device: str = "auto", record: dict | None = None,
                  workers: int = 2, precision: str = "auto") -> Path:
    """Write latent-action labels for every transition of ``dataset_dir`` (``record``: what made
    them, stored in meta.json for the stage graph's reuse rule; ``batch_size``, ``workers``: see
    :func:`encode_batches`; ``precision``: :func:`label_precision`).

    Returns:
        The labels directory.

    Raises:
        FileNotFoundError / ValueError: bad LAM checkpoint or dataset, or frames of another size;
        FileExistsError: ``out`` exists and ``overwrite`` is False.
    """
    from lapo.lam import LatentActionModel

    lam = for_inference(LatentActionModel.from_pretrained(lam_dir, device))
    precision = label_precision(lam, precision, batch_size)
    ds = EpisodeDataset(dataset_dir)
    size = lam.cfg.image_size
    if ds.frame_shape != (size, size, 3):
        raise ValueError(f"{dataset_dir} frames are {ds.frame_shape} but the LAM at {lam_dir} expects "
                         f"({size}, {size}, 3)")
    out = Path(out) if out is not None else Path(dataset_dir) / "labels"
    n, L, G = len(ds), lam.cfg.latent_dim, lam.cfg.groups
    with atomic_dir(out, overwrite=overwrite) as tmp:
        latents = np.lib.format.open_memmap(tmp / "latents.npy", "w+", np.float32, (n, L))
        codes = np.lib.format.open_memmap(tmp / "codes.npy", "w+", np.int64, (n, G))
        valid = np.zeros(n, bool)
        t_all = ds.transition_indices
        chunks = [t_all[i:i + batch_size] for i in range(0, len(t_all), batch_size)]
        with tqdm(total=len(t_all), desc="label", unit="transition") as bar:
            for t, (z, c) in zip(chunks, encode_batches(lam, (ds.idm_window(t) for t in chunks), workers,
                                                                precision)):
                latents[t], codes[t], valid[t] = z, c, True
                bar.update(len(t))
        latents.flush()
        codes.flush()
        del latents, codes
        np.save(tmp / "valid.npy", valid)
        (tmp / "meta.json").write_text(json.dumps(
            {"lam": str(lam_dir), "dataset": str(dataset_dir), "latent_dim": L, "groups": G,
             "num_transitions": int(valid.sum()), "record": record}, indent=2))
    return out


class Labels:
    """Read-only view of a labels directory (memory-mapped).

    Raises:
        FileNotFoundError: missing files (run ``lapo label`` first).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        for name in ("meta.json", "latents.npy", "codes.npy", "valid.npy"):
            if not (self.path / name).is_file():
                raise FileNotFoundError(f"{self.path / name} not found; label the dataset first with "
                                        "`lapo label --checkpoint LAM_DIR --input DATASET_DIR`")
        self.meta = json.loads((self.path / "meta.json").read_text())
        self.latents = np.load(self.path / "latents.npy", mmap_mode="r")  # (N, L) float32
        self.codes = np.load(self.path / "codes.npy", mmap_mode="r")  # (N, G) int64
        self.valid = np.load(self.path / "valid.npy")  # (N,) bool


def for_inference(lam):
    """Eval mode and channels-last IDM weights (labeling ~1.8× faster on CPU)."""
    lam.eval()
    lam.idm.to(memory_format=torch.channels_last)
    return lam


def label_precision(lam, requested: str = "auto", batch_size: int = 128) -> str:
    """fp32 or bf16 autocast for labeling with ``lam``, by the rule of
    :func:`lapo.training.choose_precision` (bf16 only where native and measured faster on a batch of
    ``batch_size`` windows); an ``auto`` choice is printed with its reason.

    Raises:
        ValueError: ``bf16`` requested where it is not native.
    """
    from lapo.training import choose_precision

    lam = for_inference(lam)
    device = next(lam.parameters()).device
    size = lam.cfg.image_size
    example = lambda: torch.randint(0, 256, (batch_size, 3, size, size, 3), dtype=torch.uint8, device=device)  # noqa: E731

    @torch.inference_mode()  # as encode_batches runs it
    def encode(m, b):
        return m.encode(b)

    precision, why = choose_precision(requested, device, lam, example, encode, train=False,
                                      flag="--precision")
    if requested == "auto":
        print(f"label: precision {precision} ({why})")
    return precision


def encode_batches(lam, windows, workers: int = 2, precision: str = "fp32"):
    """Yield ``(z (B, L) float32, codes (B, G) int64)`` numpy for each uint8 window batch
    ``(B, 3, H, W, C)`` of the iterable ``windows``, in order, under ``precision`` autocast
    (``fp32`` or ``bf16``; see :func:`label_precision`). An item may also be a function returning
    the batch; it is called in the worker (so building the batch runs there too).

    With ``workers`` > 0 the IDM encodes up to ``2 * workers`` batches at once in that many threads
    (torch releases the GIL) while the calling thread reads or decodes the next ones; 0 encodes in the
    calling thread. On a 2-core CPU the IDM alone ran 1.14–1.39× faster in 2 threads (small convs
    parallelize poorly inside one op), and labeling a video ~1.4× faster, since decoding overlaps
    (``scripts/profile_stages.py``, ``scripts/benchmark_label.py``).
    """
    from lapo.training import autocast

    device = next(lam.parameters()).device

    def encode(batch):
        if callable(batch):
            batch = batch()
        with torch.inference_mode(), autocast(device, precision):
            enc = lam.encode(torch.from_numpy(batch).to(device))
        return enc.z.float().cpu().numpy(), enc.codes.cpu().numpy()

    if workers == 0:
        yield from map(encode, windows)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers, thread_name_prefix="idm") as pool:
        pending: deque = deque()
        for batch in windows:
            pending.append(pool.submit(encode, batch))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class RowBlocks:
    """Rows ``(n, ...)`` appended batch by batch into blocks of ``block_rows`` preallocated rows.

    Keeping each batch's small result array instead (one small allocation per batch, living until
    the end) fragmented glibc's heap between the large short-lived allocations of the next batches:
    labeling a 30-minute video grew the RSS by ~40 KB per frame (2 GB at 54k frames, a one-off trace);
    with blocks it stays flat (``scripts/benchmark_label.py`` compares 1 and 30 minutes).
    """

    def __init__(self, block_rows: int = 16384):
        self.block_rows, self.blocks, self.fill = block_rows, [], 0

    def append(self, rows: np.ndarray) -> None:
        i = 0
        while i < len(rows):
            if not self.blocks or self.fill == self.block_rows:
                self.blocks.append(np.empty((self.block_rows,) + rows.shape[1:], rows.dtype))
                self.fill = 0
            k = min(len(rows) - i, self.block_rows - self.fill)
            self.blocks[-1][self.fill:self.fill + k] = rows[i:i + k]
            self.fill, i = self.fill + k, i + k

    def array(self) -> np.ndarray:
        """All rows appended so far, in order, as one array."""
        return np.concatenate(self.blocks[:-1] + [self.blocks[-1][:self.fill]])


def label_video(lam, path: str | os.PathLike, out: str | os.PathLike, video_cfg, batch_size: int = 128,
                overwrite: bool = False, bar=None, workers: int = 2, precision: str = "auto") -> Path:
    """Label one video file, streaming: latent actions for every transition between kept frames.

    Output directory (written atomically)::

        meta.json          source file, LAM checkpoint, conversion rule, counts, and what decoding
                           lost: decode_errors, frames_lost, frames_decoded, frames_declared
        latents.npy        (M, L) float32  continuous IDM latent of transition o_t -> o_{t+1}
        codes.npy          (M, G) int64    its quantized codes
        frame_indices.npy  (M,) int64      source frame index of o_t (in the decoded stream)
        timestamps.npy     (M,) float64    timestamp of o_t, seconds

    M = kept frames - 1. As for datasets, the IDM window edge-pads ``o_{t-1}`` at t = 0. The calling
    thread decodes while ``workers`` threads convert large frames and run the IDM
    (:func:`encode_batches`) in ``precision``
    (:func:`label_precision`; pass the resolved value when labeling many files); memory holds about
    ``(2 * workers + 1) * batch_size`` frames' windows plus the (small) latents, whatever the length.

    A damaged file (packets that fail to decode, frames lost; see :mod:`envs.video`) is labeled from
    the frames that decoded, and ``meta.json`` records the damage; the caller decides whether that is
    acceptable (``lapo label`` counts it as failed unless ``--allow-partial``). Across a lost stretch
    the transition o_t -> o_{t+1} spans the gap; ``timestamps.npy`` shows where.

    Raises:
        envs.video.VideoError: the file cannot be opened or has fewer than 2 kept frames (nothing is
            written); FileExistsError: ``out`` exists and ``overwrite`` is False; ValueError:
            ``video_cfg.size`` is not the LAM's image size.
    """
    from functools import partial

    from envs.video import VideoDecodeReport, VideoError, frame_to_rgb, iter_video
    from envs.io import jsonable

    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    if video_cfg.size != lam.cfg.image_size:
        raise ValueError(f"video size {video_cfg.size} differs from the LAM's image_size {lam.cfg.image_size}; "
                         f"set VideoConfig(size={lam.cfg.image_size})")
    lam = for_inference(lam)
    precision = label_precision(lam, precision, batch_size)
    report = VideoDecodeReport()
    indices, times = array("q"), array("d")  # 8 bytes per frame, no Python object each

    def convert_here(frame) -> bool:
        """Convert in the decoding thread, or leave it to the IDM threads? Large frames (a resize to
        the LAM's size) go to the threads: at 256×256 that took labeling from 1,616–1,757 to 1,876
        frames/s; small ones are cheap to convert and stay (at 64×64 moving them cost a quarter of
        the speed and 70 MB more RSS on a 30-minute video; ``scripts/benchmark_label.py``)."""
        return workers == 0 or frame.width * frame.height <= 4 * video_cfg.size ** 2

    def windows_of(frames: list, index: np.ndarray) -> np.ndarray:
        """(B, 3, H, W, C) uint8 windows ``frames[index]`` of converted or still decoded frames."""
        rgb = np.stack([f if isinstance(f, np.ndarray) else frame_to_rgb(f, video_cfg) for f in frames])
        return rgb[index]

    def window_batches():  # windows of consecutive transitions, streamed (functions that build them)
        buf: list = []  # frames at stream positions base, base + 1, ...
        base = next_t = 0

        def take(final: bool):
            nonlocal base, next_t
            last_t = base + len(buf) - 2  # the last transition whose o_{t+1} is buffered
            while next_t <= last_t and (final or last_t - next_t + 1 >= batch_size):
                t = np.arange(next_t, min(next_t + batch_size, last_t + 1))  # stream positions of o_t
                prev = np.maximum(t - 1, 0)  # edge pad at the first frame
                for j in (t[-1] - base, t[-1] + 1 - base):  # shared with the next batch: convert here, once
                    if not isinstance(buf[j], np.ndarray):  # (two threads converting one av frame crash)
                        buf[j] = frame_to_rgb(buf[j], video_cfg)
                frames = buf[prev[0] - base:t[-1] + 2 - base]  # the frames these windows need
                yield partial(windows_of, frames, np.stack([prev, t, t + 1], 1) - prev[0])
                next_t = int(t[-1]) + 1
            drop = max(0, next_t - 1 - base)
            del buf[:drop]
            base += drop

        for frame, index, seconds in iter_video(path, video_cfg, report, convert=False):
            buf.append(frame_to_rgb(frame, video_cfg) if convert_here(frame) else frame)
            indices.append(index)
            times.append(seconds)
            yield from take(final=False)
        yield from take(final=True)

    zs, codes = RowBlocks(), RowBlocks()
    for z, c in encode_batches(lam, window_batches(), workers, precision):
        zs.append(z)
        codes.append(c)
        if bar is not None:
            bar.update(len(z))
    if len(indices) < 2:
        damage = f" ({report.describe()})" if report.damaged else ""
        raise VideoError(f"{path}: {len(indices)} frame(s) after conversion; at least 2 are needed{damage}")
    with atomic_dir(out, overwrite=overwrite) as tmp:
        np.save(tmp / "latents.npy", zs.array())
        np.save(tmp / "codes.npy", codes.array())
        np.save(tmp / "frame_indices.npy", np.asarray(indices[:-1], np.int64))
        np.save(tmp / "timestamps.npy", np.asarray(times[:-1], np.float64))
        (tmp / "meta.json").write_text(json.dumps(
            {"source": str(path), "lam": str(getattr(lam, "checkpoint_path", "")),
             "video": jsonable(video_cfg),
             "num_frames": len(indices), "num_transitions": len(indices) - 1, **report.to_meta(),
             "latent_dim": lam.cfg.latent_dim, "groups": lam.cfg.groups}, indent=2))
    return out
