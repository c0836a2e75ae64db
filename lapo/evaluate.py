"""Roll out agents in vectorized environments; returns, success rates and 95% CIs.

:func:`rollout` takes any stable-baselines3 ``VecEnv`` or gymnasium vector env: ``num_envs``
environments run in parallel and each plays exactly its *first* episode; an optional success
signal (``info[success_key]``, e.g. Meta-World's ``"success"``) counts an episode as a success if
any of its steps reported it. :func:`evaluate` is the Procgen protocol on top: levels drawn from
``[start_level, start_level + num_levels)`` (default: the evaluation range of :mod:`envs.procgen`,
disjoint from the training video's) with a fixed ``rand_seed``. The first level of each env depends
only on that seed, so every agent evaluated with the same arguments plays the same levels:
random, demonstrator and learned agents are compared level for level.

CIs and normalized returns come from :mod:`lapo.stats` (stratified bootstrap).

Dimension keys: N episodes/envs, H W C image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from lapo.stats import bootstrap_ci

ActFn = Callable[[np.ndarray], np.ndarray]  # (n, H, W, 3) uint8 -> (n,) int or (n, D) float actions


@dataclass
class EvalResult:
    """Per-episode results of one agent. ``successes`` is None without a success signal;
    ``frames`` holds env 0's episode when recorded."""

    returns: np.ndarray
    lengths: np.ndarray
    level_seeds: np.ndarray
    successes: np.ndarray | None = None
    frames: list = field(default_factory=list, repr=False)

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def ci95(self) -> tuple[float, float]:
        """95% bootstrap CI of the mean return (:func:`lapo.stats.bootstrap_ci`)."""
        return bootstrap_ci([self.returns])

    def summary(self) -> dict:
        out = {"mean_return": self.mean, "ci95": list(self.ci95), "episodes": len(self.returns),
               "mean_length": float(np.mean(self.lengths))}
        if self.successes is not None:
            out["success_rate"] = float(np.mean(self.successes))
        return out


def rollout(act: ActFn, env, record: bool = False, success_key: str | None = None,
            desc: str = "evaluate") -> EvalResult:
    """Play the first episode of every env of a vectorized ``env`` and collect its results.

    Args:
        act: policy, ``(n, ...)`` observations -> ``(n,)`` or ``(n, D)`` actions; called on
            unfinished envs only (finished envs are stepped with a zero action, results ignored).
        env: an SB3 ``VecEnv`` (``step -> obs, rewards, dones, infos``) or a gymnasium vector env
            (``step -> obs, rewards, terminated, truncated, info``); it is not closed.
        record: keep env 0's frames (for a GIF).
        success_key: info key of a per-step success flag (None: no success rate).

    Level seeds are read from ``env.level_seeds()`` where the env has it (else -1).
    """
    gymnasium_api = hasattr(env, "single_action_space")
    n = env.num_envs
    space = env.single_action_space if gymnasium_api else env.action_space
    level_seeds = np.asarray(env.level_seeds()) if hasattr(env, "level_seeds") else np.full(n, -1)
    returns, lengths = np.zeros(n), np.zeros(n, np.int64)
    successes = np.zeros(n, bool) if success_key else None
    active = np.ones(n, bool)
    frames = []
    obs = env.reset()[0] if gymnasium_api else env.reset()
    with tqdm(total=n, desc=desc, unit="episode") as bar:
        while active.any():
            if record and active[0]:
                frames.append(np.asarray(obs[0]).copy())
            actions = np.zeros((n,) + space.shape, space.dtype)
            actions[active] = act(obs[active])
            if gymnasium_api:
                obs, rew, term, trunc, info = env.step(actions)
                done = np.asarray(term) | np.asarray(trunc)
                if success_key and success_key in info:
                    flag = np.asarray(info[success_key], bool) & np.asarray(info.get("_" + success_key, True), bool)
                    successes |= active & flag
            else:
                obs, rew, done, infos = env.step(actions)
                if success_key:
                    successes |= active & np.array([bool(i.get(success_key, False)) for i in infos])
            returns[active] += np.asarray(rew)[active]
            lengths[active] += 1
            finished = active & np.asarray(done, bool)
            active &= ~finished
            bar.update(int(finished.sum()))
    return EvalResult(returns, lengths, level_seeds, successes, frames)


def evaluate(act: ActFn, env_name: str = "coinrun", num_episodes: int = 100,
             distribution_mode: str = "easy", start_level: int | None = None,
             num_levels: int | None = None, seed: int = 0, record: bool = False,
             desc: str = "evaluate") -> EvalResult:
    """Procgen: one episode in each of ``num_episodes`` parallel envs on unseen levels.

    Args:
        act: policy, ``(n, 64, 64, 3)`` uint8 -> ``(n,)`` int actions.
        start_level, num_levels: level range (default: :data:`envs.procgen.EVAL_START_LEVEL`, ...).
        seed: level-draw seed; the same seed gives every agent the same levels.
        record: keep env 0's frames (for a GIF).

    Raises:
        ValueError: ``num_episodes < 1`` or an unknown game.
    """
    from envs.procgen import EVAL_NUM_LEVELS, EVAL_START_LEVEL, ProcgenVecEnv

    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    env = ProcgenVecEnv(env_name, num_episodes, distribution_mode,
                        EVAL_START_LEVEL if start_level is None else start_level,
                        EVAL_NUM_LEVELS if num_levels is None else num_levels, rand_seed=seed)
    try:
        return rollout(act, env, record=record, desc=desc)
    finally:
        env.close()


def random_act(space, seed: int = 0) -> ActFn:
    """Uniform random policy over a gymnasium space (or its JSON dict)."""
    from envs.dataset import space_from_json

    space = space_from_json(space) if isinstance(space, dict) else space
    rng = np.random.default_rng(seed)
    if hasattr(space, "n"):
        return lambda obs: rng.integers(0, space.n, len(obs))
    return lambda obs: rng.uniform(space.low, space.high, (len(obs),) + space.shape).astype(np.float32)


def save_gif(frames: list[np.ndarray], path: str | Path, fps: int = 15, scale: int = 3,
             captions: list[str] | None = None) -> Path:
    """Write ``(H, W, 3)`` uint8 frames as an animated GIF, upscaled ``scale``× (nearest), each with
    its caption (if given) drawn in the top-left corner. Written via a temporary name."""
    from PIL import Image, ImageDraw

    if len(frames) == 0:
        raise ValueError("no frames to write")
    images = []
    for i, f in enumerate(frames):
        img = Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST)
        if captions is not None:
            draw = ImageDraw.Draw(img)
            draw.rectangle((0, 0, 8 * len(captions[i]) + 4, 14), fill=(0, 0, 0))
            draw.text((2, 1), captions[i], fill=(255, 255, 0))
        images.append(img)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.gif")
    images[0].save(tmp, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    tmp.replace(path)
    return path
