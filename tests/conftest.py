"""Shared fixtures: tiny synthetic datasets whose pixels encode (episode, t)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.dataset import EpisodeWriter

torch.set_num_threads(1)


def encoded_episode(episode: int, length: int, size: int = 64) -> np.ndarray:
    """(T, size, size, 3) uint8 frames; pixel [0, 0] holds (episode, t, 7)."""
    frames = np.zeros((length, size, size, 3), np.uint8)
    frames[:, 0, 0, 0] = episode
    frames[:, 0, 0, 1] = np.arange(length)
    frames[:, 0, 0, 2] = 7
    return frames


@pytest.fixture
def encoded_dataset(tmp_path):
    """3 episodes of lengths 5, 2, 7 with actions a_t = 10*episode + t and level seeds 100+e."""
    path = tmp_path / "encoded"
    with EpisodeWriter(path, {"source": {"kind": "synthetic"}, "n_actions": 100}) as w:
        for e, length in enumerate((5, 2, 7)):
            w.add_episode(encoded_episode(e, length), np.arange(length) + 10 * e,
                          np.ones(length, np.float32), level_seed=100 + e)
    return path


def moving_square_episode(rng: np.random.Generator, length: int, size: int = 64):
    """A square moved by action a in {0: left, 1: right, 2: up, 3: down} each step, 4 px per step.
    Returns frames (T, size, size, 3) uint8 and actions (T,) int64."""
    frames = np.zeros((length, size, size, 3), np.uint8)
    actions = rng.integers(0, 4, length)
    y, x = rng.integers(16, size - 16, 2)
    moves = {0: (0, -4), 1: (0, 4), 2: (-4, 0), 3: (4, 0)}
    for t in range(length):
        frames[t, :, :] = 30
        frames[t, y:y + 8, x:x + 8] = (250, 200, 50)
        dy, dx = moves[int(actions[t])]
        y, x = int(np.clip(y + dy, 0, size - 8)), int(np.clip(x + dx, 0, size - 8))
    return frames, actions


@pytest.fixture
def square_dataset(tmp_path):
    """40 episodes × 25 frames of a square that moves with the action (4 actions)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "square"
    with EpisodeWriter(path, {"source": {"kind": "synthetic"}, "n_actions": 4}) as w:
        for _ in range(40):
            f, a = moving_square_episode(rng, 25)
            w.add_episode(f, a)
    return path
