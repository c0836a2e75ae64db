"""Roll out agents on Procgen levels that no training video contained; returns with 95% CIs.

Protocol: ``num_episodes`` environments run in parallel, each playing exactly its *first* episode,
on levels drawn from ``[start_level, start_level + num_levels)`` (default: the evaluation range of
:mod:`envs.procgen`, disjoint from the training video's) with a fixed ``rand_seed``. The first
level of each env depends only on that seed, so every agent evaluated with the same arguments plays
the same levels: random, demonstrator and learned agents are compared level for level.

The 95% confidence interval is the normal approximation ``1.96 · s / √n`` over episodes.
Normalized return: ``(R - R_random) / (R_demonstrator - R_random)`` (random → 0, demonstrator → 1),
both references measured in the same run on the same levels.

Dimension keys: N episodes/envs, H W C image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from envs.procgen import EVAL_NUM_LEVELS, EVAL_START_LEVEL, ProcgenVecEnv

ActFn = Callable[[np.ndarray], np.ndarray]  # (n, 64, 64, 3) uint8 -> (n,) int actions


@dataclass
class EvalResult:
    """Per-episode results of one agent. ``frames`` holds env 0's episode when recorded."""

    returns: np.ndarray
    lengths: np.ndarray
    level_seeds: np.ndarray
    frames: list = field(default_factory=list, repr=False)

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def ci95(self) -> float:
        n = len(self.returns)
        return float(1.96 * np.std(self.returns, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")

    def summary(self) -> dict:
        return {"mean_return": self.mean, "ci95": self.ci95, "episodes": len(self.returns),
                "mean_length": float(np.mean(self.lengths))}


def evaluate(act: ActFn, env_name: str = "coinrun", num_episodes: int = 100,
             distribution_mode: str = "easy", start_level: int = EVAL_START_LEVEL,
             num_levels: int = EVAL_NUM_LEVELS, seed: int = 0, record: bool = False,
             desc: str = "evaluate") -> EvalResult:
    """Play one episode in each of ``num_episodes`` parallel envs and collect returns.

    Args:
        act: policy, ``(n, 64, 64, 3)`` uint8 -> ``(n,)`` int actions; called on unfinished envs only.
        record: keep env 0's frames (for a GIF).

    Raises:
        ValueError: ``num_episodes < 1`` or an unknown game.
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    env = ProcgenVecEnv(env_name, num_episodes, distribution_mode, start_level, num_levels, rand_seed=seed)
    level_seeds = env.level_seeds()
    returns = np.zeros(num_episodes)
    lengths = np.zeros(num_episodes, np.int64)
    active = np.ones(num_episodes, bool)
    frames = []
    obs = env.reset()
    with tqdm(total=num_episodes, desc=desc, unit="episode") as bar:
        while active.any():
            if record and active[0]:
                frames.append(obs[0].copy())
            actions = np.zeros(num_episodes, np.int64)
            actions[active] = act(obs[active])
            obs, rew, done, _ = env.step(actions)
            returns[active] += rew[active]
            lengths[active] += 1
            finished = active & done
            active &= ~done
            bar.update(int(finished.sum()))
    env.close()
    return EvalResult(returns, lengths, level_seeds, frames)


def random_act(n_actions: int = 15, seed: int = 0) -> ActFn:
    """Uniform random policy."""
    rng = np.random.default_rng(seed)
    return lambda obs: rng.integers(0, n_actions, len(obs))


def normalized_return(mean: float, random_mean: float, demonstrator_mean: float) -> float:
    """``(R - R_random) / (R_demonstrator - R_random)``; NaN when the two references coincide."""
    gap = demonstrator_mean - random_mean
    return float((mean - random_mean) / gap) if gap != 0 else float("nan")


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
