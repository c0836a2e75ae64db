"""Procgen (Cobbe et al. 2020) as a stable-baselines3 ``VecEnv`` with gymnasium spaces.

The ``procgen`` wheel has no Python 3.11 build; ``procgen-mirror`` (same code, 0.10.7) ships the
gym3 interface ``ProcgenGym3Env``, which this module adapts.

Episode boundaries follow gym3: after ``act``, ``observe`` returns ``first[i] = True`` when env
``i``'s episode just ended; the reward is the last reward of the ended episode and the observation
already belongs to the *next* episode (Procgen never renders a terminal frame). The adapter reports
that step as ``done[i] = True`` with ``info["episode"] = {"r", "l", "level_seed"}`` for the ended
episode (SB3's Monitor keys, so ``ep_rew_mean`` is logged), and it does not fabricate a
``terminal_observation``.

Level splits (one place, used by every stage): the demonstrator and the training video use levels
``[0, 100_000)``; evaluation uses ``[EVAL_START_LEVEL, EVAL_START_LEVEL + 100_000)``, which no
training video contains.

Dimension keys: N envs, H W C image (64, 64, 3), pixels uint8 in [0, 255].
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Sequence

import gymnasium as gym
import numpy as np

with contextlib.redirect_stderr(io.StringIO()):  # gym 0.26 (procgen's, imported by both) prints a banner
    from procgen import ProcgenGym3Env
    from stable_baselines3.common.vec_env.base_vec_env import VecEnv

GAMES = (
    "bigfish", "bossfight", "caveflyer", "chaser", "climber", "coinrun", "dodgeball", "fruitbot",
    "heist", "jumper", "leaper", "maze", "miner", "ninja", "plunder", "starpilot",
)
DISTRIBUTION_MODES = ("easy", "hard")
TRAIN_START_LEVEL, TRAIN_NUM_LEVELS = 0, 100_000
EVAL_START_LEVEL, EVAL_NUM_LEVELS = 1_000_000, 100_000
N_ACTIONS = 15
ACTION_NAMES = ["left-down", "left", "left-up", "down", "noop", "up", "right-down", "right", "right-up",
                "D", "A", "W", "S", "Q", "E"]  # procgen's combos, in action order
# Procgen-paper normalization constants, easy mode: (R_min, R_max) (Cobbe et al. 2020, App. C).
EASY_RETURN_RANGE = {
    "bigfish": (1, 40), "bossfight": (0.5, 13), "caveflyer": (3.5, 12), "chaser": (0.5, 13),
    "climber": (2, 12.6), "coinrun": (5, 10), "dodgeball": (1.5, 19), "fruitbot": (-1.5, 32.4),
    "heist": (3.5, 10), "jumper": (3, 10), "leaper": (3, 10), "maze": (5, 10), "miner": (1.5, 13),
    "ninja": (3.5, 10), "plunder": (4.5, 30), "starpilot": (2.5, 64),
}


def procgen_normalized(mean_return: float, env_name: str) -> float:
    """``(R - R_min) / (R_max - R_min)`` with Procgen's easy-mode constants (Cobbe et al. 2020, App. C)."""
    lo, hi = EASY_RETURN_RANGE[env_name]
    return (mean_return - lo) / (hi - lo)


def check_game(env_name: str, distribution_mode: str = "easy") -> None:
    """Raise ``ValueError`` naming the bad game or mode and the valid choices."""
    if env_name not in GAMES:
        raise ValueError(f"unknown Procgen game {env_name!r}; choose one of {', '.join(GAMES)}")
    if distribution_mode not in DISTRIBUTION_MODES:
        raise ValueError(f"unknown distribution_mode {distribution_mode!r}; choose 'easy' or 'hard'")


class ProcgenVecEnv(VecEnv):
    """``num_envs`` Procgen games stepped in one C++ process, as an SB3 ``VecEnv``.

    Args:
        env_name: one of ``GAMES``.
        num_envs: parallel environments N.
        distribution_mode: ``"easy"`` or ``"hard"``.
        start_level, num_levels: level seeds are drawn from ``[start_level, start_level + num_levels)``.
        rand_seed: seeds the level draws, so two envs built with the same arguments play the same
            level sequence per env index.

    Observations are ``(N, 64, 64, 3)`` uint8; actions are ints in ``[0, 15)``.

    Raises:
        ValueError: unknown game or mode, ``num_envs < 1`` or ``num_levels < 1``.
    """

    def __init__(
        self,
        env_name: str = "coinrun",
        num_envs: int = 64,
        distribution_mode: str = "easy",
        start_level: int = TRAIN_START_LEVEL,
        num_levels: int = TRAIN_NUM_LEVELS,
        rand_seed: int = 0,
    ):
        check_game(env_name, distribution_mode)
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {num_levels} (0 would mean 'any level', "
                             "which breaks the train/eval level split)")
        self.env_name = env_name
        self._env = ProcgenGym3Env(
            num=num_envs, env_name=env_name, distribution_mode=distribution_mode,
            start_level=start_level, num_levels=num_levels, rand_seed=rand_seed,
        )
        self.render_mode = None
        observation_space = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
        super().__init__(num_envs, observation_space, gym.spaces.Discrete(N_ACTIONS))
        self._actions = np.zeros(num_envs, np.int32)
        self._returns = np.zeros(num_envs, np.float64)
        self._lengths = np.zeros(num_envs, np.int64)
        self._level_seeds = self.level_seeds()

    def level_seeds(self) -> np.ndarray:
        """(N,) int64: the level seed each env is playing now."""
        return np.array([info["level_seed"] for info in self._env.get_info()], np.int64)

    def reset(self) -> np.ndarray:
        """Current observations ``(N, 64, 64, 3)`` uint8. Procgen cannot restart an episode, so this
        returns the current frames; a fresh env starts at the beginning of its first level."""
        _, obs, _ = self._env.observe()
        return obs["rgb"].copy()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, np.int32).reshape(self.num_envs)

    def step_wait(self):
        self._env.act(self._actions)
        reward, obs, first = self._env.observe()
        reward = reward.astype(np.float32)
        self._returns += reward
        self._lengths += 1
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        done_idx = np.flatnonzero(first)
        for i in done_idx:
            infos[i]["episode"] = {"r": float(self._returns[i]), "l": int(self._lengths[i]),
                                   "level_seed": int(self._level_seeds[i])}
        if len(done_idx):
            self._returns[done_idx] = 0.0
            self._lengths[done_idx] = 0
            self._level_seeds = self.level_seeds()
        return obs["rgb"].copy(), reward, first.astype(bool), infos

    def close(self) -> None:
        self._env = None

    # --- VecEnv plumbing: there are no per-env Python objects to reach into ---
    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *args, indices=None, **kwargs) -> list[Any]:
        return [getattr(self, method_name)(*args, **kwargs)] * len(self._get_indices(indices))

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._get_indices(indices))

    def get_images(self) -> Sequence[np.ndarray]:
        return list(self.reset())
