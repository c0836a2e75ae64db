"""The episode dataset: flat time-first arrays + ``episode_ends`` + ``meta.json``.

Layout of a dataset directory (format version 1)::

    meta.json         format_version, source (env / video), shapes, fps, level seeds, collector
    frames.npy        (N, H, W, C) uint8, all episodes back to back, memory-mapped on read
    episode_ends.npy  (E,) int64, exclusive end index of each episode in ``frames`` (cumsum of lengths)
    level_seeds.npy   (E,) int64, level / layout id of each episode (Procgen level seed; -1 unknown)
    task_ids.npy      (E,) int64, optional: task id of each episode (multi-task data; -1 unknown)
    actions.npy       optional: a_t taken at frame t (leads to frame t+1); (N,) int64 for a
                      ``Discrete`` action space, (N, D) float32 for a ``Box``
    rewards.npy       (N,) float32, optional: reward received after a_t

``meta.json["action_space"]`` is the gymnasium space of the actions (:func:`space_to_json`:
``{"type": "Discrete", "n": 15}`` or ``{"type": "Box", "low": [...], "high": [...], "shape": [D]}``);
datasets written before it existed record ``n_actions`` and read as ``Discrete(n_actions)``.

As in Diffusion Policy's ``ReplayBuffer``, episodes are contiguous slices; transition ``t``
(``o_t -> o_{t+1}``) exists for every frame but the last of its episode. Windows never cross an
episode boundary: the IDM window ``(o_{t-1}, o_t, o_{t+1})`` repeats ``o_t`` for ``o_{t-1}`` at an
episode's first frame (edge padding).

**Action-free means action-free.** ``EpisodeDataset`` exposes frames freely; true actions come
only from :meth:`EpisodeDataset.labeled_subset` (k transitions drawn by a seeded rule) or from
:meth:`EpisodeDataset.oracle_actions`, which is for evaluation and the oracle baseline only.

Writes are atomic: :class:`EpisodeWriter` streams frames into a temporary directory (bounded RAM)
and renames it into place on :meth:`EpisodeWriter.close`.

Dimension keys: N frames, E episodes, H W C image, pixels uint8 in [0, 255].
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
_NPY_HEADER_BYTES = 128  # reserved so the frame count can be written once the stream ends


def space_to_json(space) -> dict:
    """A gymnasium ``Discrete`` or ``Box`` space as a JSON-ready dict.

    Raises:
        ValueError: another kind of space.
    """
    import gymnasium as gym

    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n)}
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "low": np.asarray(space.low, float).reshape(-1).tolist(),
                "high": np.asarray(space.high, float).reshape(-1).tolist(), "shape": list(space.shape)}
    raise ValueError(f"action space {space} is not supported: use gymnasium Discrete or Box")


def space_from_json(spec: dict):
    """Inverse of :func:`space_to_json` (``Box`` actions are float32).

    Raises:
        ValueError: an unknown ``type``.
    """
    import gymnasium as gym

    if spec["type"] == "Discrete":
        return gym.spaces.Discrete(int(spec["n"]))
    if spec["type"] == "Box":
        shape = tuple(spec["shape"])
        return gym.spaces.Box(np.asarray(spec["low"], np.float32).reshape(shape),
                              np.asarray(spec["high"], np.float32).reshape(shape), shape, np.float32)
    raise ValueError(f"action space type {spec['type']!r} is not supported: use Discrete or Box")


@dataclass(frozen=True)
class LabeledSubset:
    """The k transitions whose true actions a method may read.

    Attributes:
        indices: (k,) int64 frame indices t of transitions ``o_t -> o_{t+1}``, sorted.
        actions: (k,) int64 (``Discrete``) or (k, D) float32 (``Box``) true actions a_t.
        seed: the seed of the draw.
    """

    indices: np.ndarray
    actions: np.ndarray
    seed: int


class EpisodeDataset:
    """Read-only, memory-mapped view of a dataset directory.

    Args:
        path: dataset directory (see module docstring).

    Raises:
        FileNotFoundError: ``path`` or one of its required files is missing.
        ValueError: unknown format version, frames not 4-D uint8, empty dataset, or
            ``episode_ends`` inconsistent with the frame count.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        for name in ("meta.json", "frames.npy", "episode_ends.npy"):
            if not (self.path / name).is_file():
                raise FileNotFoundError(f"{self.path / name} not found: {self.path} is not a dataset "
                                        "directory (make one with `lapo collect`)")
        self.meta = json.loads((self.path / "meta.json").read_text())
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{self.path}: format_version {self.meta.get('format_version')!r} is not "
                             f"supported (expected {FORMAT_VERSION}); re-collect the dataset")
        self.frames = np.load(self.path / "frames.npy", mmap_mode="r")  # (N, H, W, C) uint8
        if self.frames.ndim != 4 or self.frames.dtype != np.uint8:
            raise ValueError(f"{self.path}/frames.npy has shape {self.frames.shape} dtype "
                             f"{self.frames.dtype}; expected (N, H, W, C) uint8")
        self.episode_ends = np.load(self.path / "episode_ends.npy").astype(np.int64)
        if len(self.frames) == 0 or len(self.episode_ends) == 0:
            raise ValueError(f"{self.path} is empty (0 frames); collect some video first")
        if (self.episode_ends[-1] != len(self.frames) or np.any(np.diff(self.episode_ends) <= 0)
                or self.episode_ends[0] <= 0):
            raise ValueError(f"{self.path}/episode_ends.npy does not partition {len(self.frames)} frames")
        self.episode_starts = np.concatenate([[0], self.episode_ends[:-1]])
        seeds, tasks = self.path / "level_seeds.npy", self.path / "task_ids.npy"
        self.level_seeds = np.load(seeds) if seeds.is_file() else np.full(len(self.episode_ends), -1)
        self.task_ids = np.load(tasks) if tasks.is_file() else np.full(len(self.episode_ends), -1)
        # frame t -> episode index, and the transitions o_t -> o_{t+1} inside episodes
        self.episode_index = np.repeat(np.arange(len(self.episode_ends)), self.episode_lengths)
        is_last = np.zeros(len(self.frames), bool)
        is_last[self.episode_ends - 1] = True
        self.transition_indices = np.flatnonzero(~is_last)  # (M,) int64

    # --- sizes ---
    def __len__(self) -> int:
        return len(self.frames)

    @property
    def num_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(np.concatenate([[0], self.episode_ends]))

    @property
    def has_actions(self) -> bool:
        return (self.path / "actions.npy").is_file()

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return tuple(self.frames.shape[1:])

    @property
    def action_space(self):
        """The gymnasium space of the actions (``Discrete`` or ``Box``), or None if unrecorded."""
        if "action_space" in self.meta:
            return space_from_json(self.meta["action_space"])
        if "n_actions" in self.meta:  # datasets written before action_space was recorded
            return space_from_json({"type": "Discrete", "n": self.meta["n_actions"]})
        return None

    def fingerprint(self) -> str:
        """A short hash that identifies the dataset's content for the stages' reuse rules, without
        reading the frames: ``meta.json`` less its provenance fields (:data:`PROVENANCE`: the
        ``dataset_id`` drawn anew at each write, who collected it and how), whose ``content_sha256``
        (written by :class:`EpisodeWriter`) covers every array. So a byte-identical re-collection,
        or the same video collected by ``lapo collect`` and by the benchmark, keeps every stage
        trained on it. A dataset written before ``content_sha256`` existed is identified by its
        ``meta.json`` and ``episode_ends.npy`` bytes, as it was then (each write a new dataset)."""
        if "content_sha256" in self.meta:
            kept = {k: v for k, v in self.meta.items() if k not in PROVENANCE}
            return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]
        h = hashlib.sha256((self.path / "meta.json").read_bytes())
        h.update((self.path / "episode_ends.npy").read_bytes())
        return h.hexdigest()[:16]

    # --- windows ---
    def idm_window(self, t: np.ndarray) -> np.ndarray:
        """Frames ``(o_{t-1}, o_t, o_{t+1})`` for transitions ``t``.

        Args:
            t: (B,) int frame indices, each a transition (not the last frame of its episode).

        Returns:
            (B, 3, H, W, C) uint8. At an episode's first frame ``o_{t-1}`` is ``o_t`` (edge pad).

        Raises:
            ValueError: some ``t`` is the last frame of its episode or out of range.
        """
        t = np.asarray(t, np.int64)
        if np.any(t < 0) or np.any(t >= len(self.frames) - 1) or np.any(
                np.isin(t, self.episode_ends - 1)):
            raise ValueError("idm_window: every t must be a transition index (see transition_indices)")
        prev = np.maximum(t - 1, self.episode_starts[self.episode_index[t]])
        order = np.argsort(t)  # sorted reads are far faster on a memory map
        out = np.empty((len(t), 3) + self.frame_shape, np.uint8)
        for j, idx in enumerate((prev, t, t + 1)):
            out[order, j] = self.frames[idx[order]]
        return out

    # --- labels: the only doors to true actions ---
    def labeled_subset(self, k: int, seed: int = 0, pool: np.ndarray | None = None,
                       unit: str = "transition", per_task: bool = False) -> LabeledSubset:
        """Draw ``k`` labeled transitions (``unit="transition"``) or every transition of ``k``
        labeled episodes (``unit="episode"``, as teleoperated demonstrations come) uniformly without
        replacement (``np.random.default_rng(seed)``) from ``pool`` (default: every transition), and
        read their actions. ``per_task``: ``k`` units from each task (``task_ids``) of the pool.

        Raises:
            ValueError: the dataset has no actions, ``pool`` holds a non-transition index, ``unit``
                is unknown, or ``k`` is < 1 or larger than the pool (in transitions or episodes).
        """
        if not self.has_actions:
            raise ValueError(f"{self.path} has no actions.npy: it is action-free, so no labeled subset "
                             "exists; collect with a demonstrator or label a few transitions")
        pool = self.transition_indices if pool is None else np.asarray(pool, np.int64)
        if not np.isin(pool, self.transition_indices).all():
            raise ValueError("labeled_subset: pool must hold transition indices only (see transition_indices)")
        if unit not in ("transition", "episode"):
            raise ValueError(f"unit {unit!r}: choose 'transition' or 'episode'")
        units = pool if unit == "transition" else np.unique(self.episode_index[pool])
        task_of = self.task_ids[self.episode_index[units]] if unit == "transition" else self.task_ids[units]
        groups = [units[task_of == task] for task in np.unique(task_of)] if per_task else [units]
        rng = np.random.default_rng(seed)
        for group in groups:
            m = len(group)
            if not 1 <= k <= m:
                raise ValueError(f"k={k} labeled {unit}s requested {'per task ' if per_task else ''}but {self.path} "
                                 f"has {m} to draw from; choose 1 <= k <= {m}")
        drawn = np.concatenate([rng.choice(group, size=k, replace=False) for group in groups])
        idx = np.sort(drawn if unit == "transition" else pool[np.isin(self.episode_index[pool], drawn)])
        actions = np.asarray(np.load(self.path / "actions.npy", mmap_mode="r")[idx])
        space = self.action_space
        if space is None or hasattr(space, "n"):
            return LabeledSubset(idx, actions.astype(np.int64), seed)
        return LabeledSubset(idx, actions.astype(np.float32).reshape(len(idx), -1), seed)

    def oracle_actions(self) -> np.ndarray:
        """All true actions, ``(N,)`` int64 or ``(N, D)`` float32. For evaluation/diagnostics and the oracle baseline only:
        a method that claims to be action-free must not call this.

        Raises:
            ValueError: the dataset has no actions.
        """
        if not self.has_actions:
            raise ValueError(f"{self.path} has no actions.npy (action-free dataset)")
        return np.load(self.path / "actions.npy", mmap_mode="r")

    def episode_split(self, val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Split transition indices by episode: ``(train_t, val_t)``; at least one episode each when
        there are two or more episodes."""
        rng = np.random.default_rng(seed)
        n_val = int(round(self.num_episodes * val_fraction))
        n_val = min(max(n_val, 1 if self.num_episodes > 1 else 0), self.num_episodes - 1)
        val_eps = rng.choice(self.num_episodes, size=n_val, replace=False)
        is_val = np.isin(self.episode_index[self.transition_indices], val_eps)
        return self.transition_indices[~is_val], self.transition_indices[is_val]


PROVENANCE = ("dataset_id", "collector", "collect_config")
"""``meta.json`` fields that say where a dataset came from, not what it holds: left out of
:meth:`EpisodeDataset.fingerprint`."""


def content_hash(path: Path) -> str:
    """SHA-256 (hex, 32 digits) of a dataset directory's arrays: every ``*.npy`` file's name and
    bytes, in name order, the frames read in 64 MiB chunks (about 1 s per GB here)."""
    h = hashlib.sha256()
    for file in sorted(Path(path).glob("*.npy")):
        h.update(file.name.encode())
        with open(file, "rb") as f:
            while chunk := f.read(64 << 20):
                h.update(chunk)
    return h.hexdigest()[:32]


class EpisodeWriter:
    """Stream whole episodes into a new dataset directory, atomically.

    Frames go straight to disk (bounded RAM); the directory appears under ``path`` only when
    :meth:`close` succeeds. Use as a context manager: an exception discards the partial dataset.

    Args:
        path: dataset directory to create.
        meta: extra fields for ``meta.json`` (source env, fps, collector, ...).
        overwrite: replace an existing ``path`` (only after the new one is complete).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """

    def __init__(self, path: str | os.PathLike, meta: dict | None = None, overwrite: bool = False):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} already exists; pass --overwrite to replace it or choose "
                                  "another --out")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent))
        self.meta = dict(meta or {})
        self._frames = open(self.tmp / "frames.npy", "wb")
        self._frames.write(b"\0" * _NPY_HEADER_BYTES)
        self._frame_shape: tuple[int, ...] | None = None
        self._ends: list[int] = []
        self._seeds: list[int] = []
        self._tasks: list[int] = []
        self._actions: list[np.ndarray] = []
        self._rewards: list[np.ndarray] = []
        self._episode_frames = 0  # frames of the episode being streamed
        self.num_frames = 0  # frames of finished episodes

    def add_episode(self, frames: np.ndarray, actions: np.ndarray | None = None,
                    rewards: np.ndarray | None = None, level_seed: int = -1, task_id: int = -1) -> None:
        """Append one whole episode (:meth:`append_frames` + :meth:`end_episode`).

        Args:
            frames: (T, H, W, C) uint8, T >= 2 (one transition at least).
            actions: (T,) ints (discrete), (T, D) floats (continuous) or None; every episode must
                agree on having actions and on their shape.
            rewards: (T,) floats or None.
            level_seed: level / layout id (Procgen level seed), -1 if unknown.
            task_id: task id, -1 if unknown.

        Raises:
            ValueError: wrong dtype/shape, T < 2, a frame shape different from earlier episodes, or
                actions/rewards of the wrong length; nothing of the episode is kept.
        """
        frames = np.asarray(frames)
        if frames.ndim == 4 and len(frames) < 2:
            raise ValueError(f"an episode needs at least 2 frames (one transition), got {len(frames)}")
        self.append_frames(frames)
        self.end_episode(actions, rewards, level_seed, task_id)

    def append_frames(self, frames: np.ndarray) -> None:
        """Stream frames ``(t, H, W, C)`` uint8 of the current episode to disk (bounded RAM).

        Raises:
            ValueError: wrong dtype/shape or a frame shape different from earlier frames.
        """
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.dtype != np.uint8:
            raise ValueError(f"episode frames must be (T, H, W, C) uint8, got {frames.shape} {frames.dtype}")
        if self._frame_shape is None:
            self._frame_shape = frames.shape[1:]
        elif frames.shape[1:] != self._frame_shape:
            raise ValueError(f"episode frame shape {frames.shape[1:]} differs from {self._frame_shape}")
        self._frames.write(np.ascontiguousarray(frames).tobytes())
        self._episode_frames += len(frames)

    def end_episode(self, actions: np.ndarray | None = None, rewards: np.ndarray | None = None,
                    level_seed: int = -1, task_id: int = -1) -> None:
        """Close the current episode (frames given by :meth:`append_frames`).

        Raises:
            ValueError: fewer than 2 frames, or actions/rewards that disagree with the frames or with
                earlier episodes; the episode's frames are discarded.
        """
        T = self._episode_frames
        try:
            if T < 2:
                raise ValueError(f"an episode needs at least 2 frames (one transition), got {T}")
            for name, arr, store in (("actions", actions, self._actions), ("rewards", rewards, self._rewards)):
                if self._ends and (arr is None) != (not store):
                    raise ValueError(f"every episode must agree on having {name}: episode "
                                     f"{len(self._ends)} {'lacks' if arr is None else 'adds'} them")
                if arr is not None and len(arr) != T:
                    raise ValueError(f"{name} has length {len(arr)} but the episode has {T} frames")
            if actions is not None and self._actions and np.shape(actions)[1:] != self._actions[0].shape[1:]:
                raise ValueError(f"actions of shape {np.shape(actions)[1:]} per step differ from earlier episodes' "
                                 f"{self._actions[0].shape[1:]}")
        except ValueError:
            self.discard_episode()
            raise
        if actions is not None:
            self._actions.append(np.asarray(actions))
        if rewards is not None:
            self._rewards.append(np.asarray(rewards))
        self.num_frames += T
        self._episode_frames = 0
        self._ends.append(self.num_frames)
        self._seeds.append(int(level_seed))
        self._tasks.append(int(task_id))

    def discard_episode(self) -> None:
        """Drop the frames of the current, unfinished episode."""
        frame_bytes = int(np.prod(self._frame_shape)) if self._frame_shape else 0
        self._frames.seek(_NPY_HEADER_BYTES + self.num_frames * frame_bytes)
        self._frames.truncate()
        self._episode_frames = 0
        if not self._ends:
            self._frame_shape = None

    def close(self) -> Path:
        """Finish the files and move the dataset into place. Returns the dataset path.

        Raises:
            ValueError: no episode was added (an empty dataset is never written).
        """
        if self._episode_frames:
            self.discard_episode()  # an unfinished streamed episode is not part of the dataset
        if not self._ends:
            self.abort()
            raise ValueError(f"no episodes were added; {self.path} was not written")
        shape = (self.num_frames,) + tuple(self._frame_shape)
        header = "{'descr': '|u1', 'fortran_order': False, 'shape': %s, }" % (shape,)
        header = header.ljust(_NPY_HEADER_BYTES - 10 - 1) + "\n"
        self._frames.seek(0)
        self._frames.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode())
        self._frames.close()
        np.save(self.tmp / "episode_ends.npy", np.asarray(self._ends, np.int64))
        np.save(self.tmp / "level_seeds.npy", np.asarray(self._seeds, np.int64))
        if any(t != -1 for t in self._tasks):
            np.save(self.tmp / "task_ids.npy", np.asarray(self._tasks, np.int64))
        if self._actions:
            actions = np.concatenate(self._actions)
            discrete = actions.ndim == 1 and np.issubdtype(actions.dtype, np.integer)
            if not discrete and actions.ndim == 1:  # (N,) floats: a one-dimensional Box
                actions = actions[:, None]
            np.save(self.tmp / "actions.npy", actions.astype(np.int64 if discrete else np.float32))
        if self._rewards:
            np.save(self.tmp / "rewards.npy", np.concatenate(self._rewards).astype(np.float32))
        meta = {"format_version": FORMAT_VERSION, "dataset_id": uuid.uuid4().hex, "num_frames": self.num_frames,
                "num_episodes": len(self._ends), "frame_shape": list(self._frame_shape),
                "has_actions": bool(self._actions), "content_sha256": content_hash(self.tmp), **self.meta}
        (self.tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        old = None
        if self.path.exists():
            old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}")
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.path

    def abort(self) -> None:
        """Discard everything written so far."""
        if not self._frames.closed:
            self._frames.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "EpisodeWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()
