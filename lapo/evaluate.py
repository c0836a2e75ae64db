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
from typing import Callable, Sequence

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
            desc: str = "evaluate", episodes: int | Sequence[int] = 1) -> EvalResult:
    """Play the first ``episodes[i]`` episodes of env ``i`` of a vectorized ``env``; return their results.

    Each env plays a fixed quota whatever its episodes' lengths, so short (e.g. successful) episodes
    are not over-counted as they would be by stopping at the first N finished episodes.

    Args:
        act: policy, ``(n, ...)`` observations -> ``(n,)`` or ``(n, D)`` actions; called on
            unfinished envs only (finished envs are stepped with a zero action, results ignored).
        env: an SB3 ``VecEnv`` (``step -> obs, rewards, dones, infos``; resets itself after an
            episode) or, with ``episodes=1``, a gymnasium vector env (``step -> obs, rewards,
            terminated, truncated, info``); it is not closed.
        record: keep env 0's frames of its first episode (for a GIF).
        success_key: info key of a per-step success flag (None: no success rate).
        episodes: episodes per env (one int for all).

    Results are ordered env by env, each env's episodes in the order played. Level seeds:
    ``info["layout"]`` at an episode's last step where the env reports it, else
    ``env.level_seeds()`` at the start (first episodes only), else -1.

    Raises:
        ValueError: a quota below 1, or several episodes per env of a gymnasium vector env.
    """
    gymnasium_api = hasattr(env, "single_action_space")
    n = env.num_envs
    quota = np.broadcast_to(np.asarray(episodes, np.int64), (n,)).copy()
    if (quota < 1).any():
        raise ValueError(f"episodes per env must be >= 1, got {episodes}")
    if gymnasium_api and (quota > 1).any():
        raise ValueError("several episodes per env need an SB3 VecEnv (gymnasium vector envs reset on the next step)")
    space = env.single_action_space if gymnasium_api else env.action_space
    start_seeds = np.asarray(env.level_seeds()) if hasattr(env, "level_seeds") else np.full(n, -1)
    returns, lengths, seeds, success, order = [], [], [], [], []
    ep_return, ep_length = np.zeros(n), np.zeros(n, np.int64)
    ep_success = np.zeros(n, bool)
    played = np.zeros(n, np.int64)
    frames = []
    obs = env.reset()[0] if gymnasium_api else env.reset()
    with tqdm(total=int(quota.sum()), desc=desc, unit="episode") as bar:
        while (played < quota).any():
            active = played < quota
            if record and played[0] == 0:
                frames.append(np.asarray(obs[0]).copy())
            actions = np.zeros((n,) + space.shape, space.dtype)
            actions[active] = act(obs[active])
            if gymnasium_api:
                obs, rew, term, trunc, info = env.step(actions)
                done = np.asarray(term) | np.asarray(trunc)
                infos = [{k: v[i] for k, v in info.items() if isinstance(v, np.ndarray) and not k.startswith("_")
                          and (f"_{k}" not in info or info[f"_{k}"][i])} for i in range(n)]
            else:
                obs, rew, done, infos = env.step(actions)
            if success_key:
                ep_success |= np.array([bool(i.get(success_key, False)) for i in infos])
            ep_return += np.asarray(rew)
            ep_length += 1
            for i in np.flatnonzero(active & np.asarray(done, bool)):
                returns.append(ep_return[i])
                lengths.append(ep_length[i])
                success.append(ep_success[i])
                seeds.append(int(infos[i].get("layout", start_seeds[i] if played[i] == 0 else -1)))
                order.append((i, played[i]))
                played[i] += 1
                ep_return[i], ep_length[i], ep_success[i] = 0.0, 0, False
                bar.update(1)
    idx = sorted(range(len(order)), key=order.__getitem__)  # env by env, episodes in order
    return EvalResult(np.asarray(returns)[idx], np.asarray(lengths, np.int64)[idx], np.asarray(seeds, np.int64)[idx],
                      np.asarray(success, bool)[idx] if success_key else None, frames)


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


def evaluate_metaworld(act: ActFn, tasks: Sequence[str], episodes: int = 50, num_envs: int = 2,
                       layout_start: int | None = None, record: bool = False, desc: str = "evaluate",
                       **env_kwargs) -> dict[str, EvalResult]:
    """Meta-World success rates: per task, ``episodes`` layouts from the evaluation range
    (default :data:`envs.metaworld.EVAL_LAYOUT_START`, never in training video), each played once,
    ``num_envs`` worker processes. Every agent evaluated with the same arguments plays the same
    layouts. ``env_kwargs`` (camera, size, max_steps, success_hold) go to
    :class:`envs.metaworld.MetaWorldEnv`; they must match the training video's.

    Returns:
        task -> :class:`EvalResult` with ``successes`` and ``level_seeds`` = layout ids.

    Raises:
        ValueError: an unknown task or camera, ``episodes < 1``.
    """
    from envs.metaworld import EVAL_LAYOUT_START, layout_quotas, make_vec_env

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    start = EVAL_LAYOUT_START if layout_start is None else layout_start
    layouts = list(range(start, start + episodes))
    out = {}
    for i, task in enumerate(tasks):
        n = min(num_envs, episodes)
        env = make_vec_env(task, layouts, n, **env_kwargs)
        try:
            out[task] = rollout(act, env, record=record and i == 0, success_key="success", desc=f"{desc} {task}",
                                episodes=layout_quotas(episodes, n))
        finally:
            env.close()
    return out


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
