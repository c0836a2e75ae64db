"""Meta-World (Yu et al. 2019; ``metaworld`` 3.x, MuJoCo 3) as camera video with RT-1-style actions.

One :class:`MetaWorldEnv` is one Sawyer arm task rendered headless from a fixed camera:
observations are ``(size, size, 3)`` uint8 frames, actions ``Box(-1, 1, (4,))`` float32 = xyz
end-effector delta (×1 cm per step) + gripper effort. :func:`make_vec_env` runs one env per worker
process (stable-baselines3 ``SubprocVecEnv``).

**Layouts.** A layout id seeds the task's random reset vector (object and goal positions) through
the env's own seeded sampler, so layout ``i`` of a task is the same scene on every machine and
worker. Training video uses ids ``[TRAIN_LAYOUT_START, EVAL_LAYOUT_START)``, evaluation ids from
``EVAL_LAYOUT_START`` on; the two sets never meet. (Meta-World's own MT1 pre-samples only 50 layouts
per seed and ignores ``reset(seed=)``; we bypass it.)

**Episodes** end ``success_hold`` steps after the first ``info["success"]`` (terminated) or at
``max_steps`` (truncated). The scripted experts succeed in 50–90 steps, so ``max_steps=150`` keeps
evaluation short where Meta-World's own limit is 500.

**Rendering**: ``MUJOCO_GL`` defaults to ``egl`` (set before MuJoCo is imported; ``osmesa`` also
works); shadows, reflections and multisampling are off, and the Sawyer's 68k-triangle meshes are
drawn simplified to ~13k triangles (:func:`simplify_meshes`; software GL spends its time on
triangles: 83 → 225 frames/s at 64×64 on one core here); the ``corner*``
cameras render upside down and are rotated 180°. A frame that is all black (a broken GL context)
raises ``RuntimeError`` instead of being recorded.

Dimension keys: N envs, H W C image, pixels uint8.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import gymnasium as gym
import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")
TRAIN_LAYOUT_START, EVAL_LAYOUT_START = 0, 1_000_000
ACTION_DIM = 4
ACTION_NAMES = ("dx", "dy", "dz", "gripper")
DEFAULT_CAMERA = "corner"
"""Chosen by ``scripts/benchmark_metaworld_camera.py``: at 64×64 it shows the most object and goal
pixels of the fixed cameras but ``topview`` (whose goal is larger and object smaller); ``corner2``,
Meta-World's usual choice, shows the least."""
DEFAULT_TASKS = ("button-press-topdown-v3", "drawer-open-v3", "door-open-v3", "window-open-v3", "pick-place-v3")
"""Five tasks with five different scenes (so the image alone tells the policy which task it is in),
from a pressed button to a pick-and-place whose goal is a 3-pixel marker."""


def task_names() -> tuple[str, ...]:
    """Every Meta-World v3 task name (imports ``metaworld``)."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return tuple(ALL_V3_ENVIRONMENTS)


def check_task(task: str) -> None:
    """Raise ``ValueError`` naming an unknown task and the valid choices."""
    names = task_names()
    if task not in names:
        hint = f" (did you mean {task}-v3?)" if f"{task}-v3" in names else ""
        raise ValueError(f"unknown Meta-World task {task!r}{hint}; choose one of {', '.join(names)}")


def check_camera(camera: str) -> None:
    """Raise ``ValueError`` naming an unknown camera and the valid choices."""
    if camera not in CAMERAS:
        raise ValueError(f"unknown Meta-World camera {camera!r}; choose one of {', '.join(CAMERAS)}")


MESH_CELL = 0.01
"""Vertex-clustering cell (metres) of :func:`simplify_meshes` for fast rendering: 1 cm, under a
pixel at 64×64 (the table is ~1.5 m wide)."""


def simplify_meshes(model, cell: float) -> tuple[int, int]:
    """Simplify every mesh of a MuJoCo ``model`` *for drawing*, in place, by vertex clustering
    (Rossignac & Borrel 1993): vertices in one ``cell``-metre grid cell merge into one of them, and
    triangles that collapse or repeat are dropped. Call it before the first render (the GL context
    uploads the meshes once). Physics is unchanged: MuJoCo collides meshes through their convex
    hulls and inertias were computed at compile time; only drawing (and ``mj_ray``) read the faces.

    Returns:
        (triangles before, triangles after).
    """
    before = after = 0
    for mid in range(model.nmesh):
        v0, nv = model.mesh_vertadr[mid], model.mesh_vertnum[mid]
        f0, nf = model.mesh_faceadr[mid], model.mesh_facenum[mid]
        cells = np.floor(model.mesh_vert[v0:v0 + nv] / cell).astype(np.int64)
        _, first, inverse = np.unique(cells, axis=0, return_index=True, return_inverse=True)
        faces = first[inverse.reshape(-1)][model.mesh_face[f0:f0 + nf]]
        keep = np.flatnonzero((faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2]))
        _, unique = np.unique(np.sort(faces[keep], 1), axis=0, return_index=True)
        keep = keep[np.sort(unique)]
        n = len(keep)
        model.mesh_face[f0:f0 + n] = faces[keep]
        model.mesh_facenormal[f0:f0 + n] = model.mesh_facenormal[f0 + keep].copy()
        if model.mesh_facetexcoord.size:
            model.mesh_facetexcoord[f0:f0 + n] = model.mesh_facetexcoord[f0 + keep].copy()
        model.mesh_facenum[mid] = n
        before, after = before + int(nf), after + n
    return before, after


class MetaWorldEnv(gym.Env):
    """One Meta-World task seen through a camera.

    Args:
        task: a v3 task name, e.g. ``"pick-place-v3"`` (:func:`task_names`).
        camera: one of :data:`CAMERAS`.
        size: frame height = width in pixels.
        max_steps: step limit of an episode (truncation).
        success_hold: steps an episode goes on after the first success (then terminated).
        layouts: layout ids that successive resets play in order (cycled); ``reset(options=
            {"layout": i})`` plays ``i`` instead. Default: ``range(EVAL_LAYOUT_START, +1000)``.
        fast_render: shadows, reflections and multisampling off, and meshes simplified for drawing
            with ``mesh_cell`` (:func:`simplify_meshes`; 0 = not simplified).

    ``info`` of every step: ``success`` (bool, this step), ``layout`` (int), ``task`` (str).
    :attr:`state` is Meta-World's 39-d state vector (goal included) for the scripted expert.

    Raises:
        ValueError: unknown task or camera, ``size < 8``, ``max_steps < 1`` or ``success_hold < 0``.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, task: str = "reach-v3", camera: str = DEFAULT_CAMERA, size: int = 64, max_steps: int = 150,
                 success_hold: int = 5, layouts: Sequence[int] | None = None, fast_render: bool = True,
                 mesh_cell: float = MESH_CELL):
        check_task(task)
        check_camera(camera)
        if size < 8 or max_steps < 1 or success_hold < 0:
            raise ValueError(f"need size >= 8, max_steps >= 1, success_hold >= 0; got {size}, {max_steps}, "
                             f"{success_hold}")
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        env = ALL_V3_ENVIRONMENTS[task](render_mode="rgb_array", camera_name=camera, width=size, height=size)
        env._partially_observable = False  # the goal is part of the state (the expert needs it)
        del env.sawyer_observation_space  # cached property: recomputed for the observable goal
        env._set_task_called = True
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env.max_path_length = max_steps + 1  # our limit ends the episode first
        if fast_render:
            env.model.light_castshadow[:] = 0
            env.model.mat_reflectance[:] = 0
            env.model.vis.quality.offsamples = 0
            if mesh_cell > 0:
                simplify_meshes(env.model, mesh_cell)
        self._env = env
        self.task, self.camera, self.size = task, camera, size
        self.max_steps, self.success_hold = max_steps, success_hold
        self._flip = camera.startswith("corner")
        self._layouts = list(range(EVAL_LAYOUT_START, EVAL_LAYOUT_START + 1000)) if layouts is None else list(layouts)
        if not self._layouts:
            raise ValueError("layouts is empty; give at least one layout id")
        self._next = 0
        self.layout = -1
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        self.state = np.zeros(39)
        self._t = 0
        self._since_success = -1

    def _frame(self) -> np.ndarray:
        frame = self._env.render()
        frame = frame[::-1, ::-1] if self._flip else frame
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if frame.max() == 0:
            raise RuntimeError(f"Meta-World rendered an all-black frame ({self.task}, camera {self.camera}, "
                               f"MUJOCO_GL={os.environ.get('MUJOCO_GL')}): the GL context is broken; close old "
                               "envs before making new ones, or try MUJOCO_GL=osmesa")
        return frame

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """Start layout ``options["layout"]``, else the next of ``layouts``. ``seed`` is accepted for
        the gymnasium API and ignored (the layout id is the seed)."""
        if options and "layout" in options:
            self.layout = int(options["layout"])
        else:
            self.layout = self._layouts[self._next % len(self._layouts)]
            self._next += 1
        self._env.seed(self.layout)
        self.state, _ = self._env.reset()
        self._t, self._since_success = 0, -1
        return self._frame(), {"layout": self.layout, "task": self.task}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.clip(np.asarray(action, np.float32).reshape(ACTION_DIM), -1.0, 1.0)
        self.state, reward, _, _, info = self._env.step(action)
        self._t += 1
        success = bool(info["success"])
        if success and self._since_success < 0:
            self._since_success = 0
        elif self._since_success >= 0:
            self._since_success += 1
        terminated = self._since_success >= self.success_hold
        truncated = not terminated and self._t >= self.max_steps
        out = {"success": success, "layout": self.layout, "task": self.task}
        return self._frame(), float(reward), terminated, truncated, out

    def render(self) -> np.ndarray:
        return self._frame()

    def close(self) -> None:
        self._env.close()


class ScriptedExpert:
    """Meta-World's scripted policy for ``task`` (``metaworld.policies``) plus optional Gaussian
    action noise of std ``noise`` (then clipped to [-1, 1]). ``__call__(state) -> (4,) float32``."""

    def __init__(self, task: str, noise: float = 0.0, seed: int = 0):
        from metaworld.policies import ENV_POLICY_MAP

        check_task(task)
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.policy = ENV_POLICY_MAP[task]()
        self.noise = noise
        self.rng = np.random.default_rng(seed)

    def __call__(self, state: np.ndarray) -> np.ndarray:
        action = np.asarray(self.policy.get_action(state), np.float32)
        if self.noise:
            action = action + self.rng.normal(0.0, self.noise, action.shape).astype(np.float32)
        return np.clip(action, -1.0, 1.0)


def make_vec_env(task: str, layouts: Sequence[int], num_envs: int = 2, **env_kwargs):
    """``num_envs`` :class:`MetaWorldEnv` of ``task``, one per worker process (SB3 ``SubprocVecEnv``,
    started by a forkserver: a worker has no GL state or threads of the caller's, makes its own GL
    context, and inherits :mod:`envs.sb3`'s quiet imports). Env ``i`` plays ``layouts[i::num_envs]`` in order, so
    :func:`lapo.evaluate.rollout` with ``episodes=layout_quotas(len(layouts), num_envs)`` plays every
    layout exactly once. ``env_kwargs`` go to :class:`MetaWorldEnv`.

    Raises:
        ValueError: unknown task/camera, or fewer layouts than envs.
    """
    import multiprocessing

    from envs.sb3 import SubprocVecEnv

    check_task(task)
    check_camera(env_kwargs.get("camera", DEFAULT_CAMERA))
    layouts = list(layouts)
    if num_envs < 1 or len(layouts) < num_envs:
        raise ValueError(f"need 1 <= num_envs <= len(layouts); got num_envs={num_envs}, {len(layouts)} layouts")
    fns = [_EnvFactory(task, layouts[i::num_envs], env_kwargs) for i in range(num_envs)]
    multiprocessing.set_forkserver_preload(["envs.sb3"])  # takes effect when the forkserver first starts
    return SubprocVecEnv(fns, start_method="forkserver")


def layout_quotas(num_layouts: int, num_envs: int) -> list[int]:
    """Episodes per env when env ``i`` plays ``layouts[i::num_envs]``."""
    return [len(range(i, num_layouts, num_envs)) for i in range(num_envs)]


class _EnvFactory:
    """Picklable env constructor for worker processes."""

    def __init__(self, task: str, layouts: list[int], env_kwargs: dict):
        self.task, self.layouts, self.env_kwargs = task, layouts, env_kwargs

    def __call__(self) -> MetaWorldEnv:
        os.environ.setdefault("LP_NUM_THREADS", "1")  # Mesa's llvmpipe: one thread per worker process
        return MetaWorldEnv(self.task, layouts=self.layouts, **self.env_kwargs)


@dataclass
class MetaWorldCollectConfig:
    """``lapo collect --domain metaworld``: scripted-expert video of one or more Meta-World tasks."""

    out: Path = Path("data/metaworld")
    """Dataset directory to create."""
    tasks: tuple[str, ...] = DEFAULT_TASKS
    """Tasks of the mixture (task id = position in this list)."""
    episodes_per_task: int = 100
    """Episodes per task; task ``j`` plays layouts ``[layout_start, layout_start + episodes_per_task)``."""
    noise: float = 0.1
    """Std of Gaussian noise added to the expert's actions (the recorded action is the executed one)."""
    camera: str = DEFAULT_CAMERA
    """Camera (:data:`CAMERAS`)."""
    size: int = 64
    """Frame height = width."""
    max_steps: int = 150
    """Step limit of an episode."""
    success_hold: int = 5
    """Steps recorded after the first success."""
    layout_start: int = TRAIN_LAYOUT_START
    """First layout id (training layouts are below :data:`EVAL_LAYOUT_START`)."""
    workers: int = 2
    """Worker processes (one env each)."""
    seed: int = 0
    """Seed of the action noise."""
    overwrite: bool = False
    """Replace an existing dataset at ``out`` (only once the new one is complete)."""

    def env_kwargs(self) -> dict:
        """Camera, frame size and episode rules of this video, for :class:`MetaWorldEnv` (evaluation
        envs must match the training video's)."""
        return dict(camera=self.camera, size=self.size, max_steps=self.max_steps, success_hold=self.success_hold)

    def __post_init__(self):
        if not self.tasks:
            raise ValueError("tasks is empty; give at least one Meta-World task, e.g. --tasks reach-v3")
        for task in self.tasks:
            check_task(task)
        check_camera(self.camera)
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks {self.tasks} repeat a task")
        if self.episodes_per_task < 1 or self.workers < 1:
            raise ValueError(f"episodes_per_task and workers must be >= 1, got {self.episodes_per_task}, {self.workers}")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")
        if self.layout_start + self.episodes_per_task > EVAL_LAYOUT_START and self.layout_start < EVAL_LAYOUT_START:
            raise ValueError(f"layouts [{self.layout_start}, {self.layout_start + self.episodes_per_task}) reach the "
                             f"evaluation layouts (>= {EVAL_LAYOUT_START}); lower --layout-start or --episodes-per-task")


_CHUNK = 5  # episodes per worker job


def collect(cfg: MetaWorldCollectConfig) -> Path:
    """Record ``cfg`` into an episode dataset and return its path: frames ``(T, size, size, 3)``
    uint8, actions ``(T, 4)`` float32 (the executed, noisy expert action at each frame), rewards,
    ``level_seeds.npy`` = layout ids, ``task_ids.npy`` = index into ``meta["tasks"]``;
    ``meta["episode_success"]`` per episode. The episode's frame after its last action is not stored
    (as in Procgen video). Episodes are written in task order, whatever the worker count.

    Raises:
        FileExistsError: ``cfg.out`` exists and ``overwrite`` is False (checked first).
        RuntimeError: a worker rendered an all-black frame.
    """
    import multiprocessing

    from tqdm import tqdm

    from envs.dataset import EpisodeWriter, space_to_json

    if Path(cfg.out).exists() and not cfg.overwrite:
        raise FileExistsError(f"{cfg.out} already exists; pass --overwrite to replace it or choose another --out")
    jobs = []
    for j, task in enumerate(cfg.tasks):
        for c, start in enumerate(range(0, cfg.episodes_per_task, _CHUNK)):
            layouts = list(range(cfg.layout_start + start,
                                 cfg.layout_start + min(start + _CHUNK, cfg.episodes_per_task)))
            jobs.append((j, task, layouts, cfg.noise, [cfg.seed, j, c], cfg.env_kwargs()))
    meta = {"source": {"kind": "metaworld", **cfg.env_kwargs()},
            "tasks": list(cfg.tasks), "fps": 15, "collector": {"policy": "scripted", "noise": cfg.noise},
            "action_space": space_to_json(gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)),
            "action_names": list(ACTION_NAMES), "collect_config": collect_record(cfg)}
    success = []
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(cfg.workers, maxtasksperchild=None) as pool, \
            EpisodeWriter(cfg.out, meta, overwrite=cfg.overwrite) as writer, \
            tqdm(total=len(cfg.tasks) * cfg.episodes_per_task, desc="collect", unit="episode") as bar:
        for episodes in pool.imap(_run_job, jobs):
            for ep in episodes:
                writer.add_episode(ep["frames"], ep["actions"], ep["rewards"], ep["layout"], ep["task_id"])
                success.append(ep["success"])
                bar.update(1)
        writer.meta["episode_success"] = success
        writer.meta["success_rate_per_task"] = {
            task: float(np.mean(success[j * cfg.episodes_per_task:(j + 1) * cfg.episodes_per_task]))
            for j, task in enumerate(cfg.tasks)}
    return Path(cfg.out)


def collect_record(cfg: MetaWorldCollectConfig) -> dict:
    """The fields of ``cfg`` that determine the video (not where it is written or how many workers)."""
    from envs.io import jsonable

    return {k: v for k, v in jsonable(cfg).items() if k not in ("out", "overwrite", "workers")}


_WORKER_ENV: MetaWorldEnv | None = None


def _run_job(job) -> list[dict]:
    """Worker: play the scripted expert on ``layouts`` of one task (one env per process, replaced
    (closed first) when the task changes)."""
    global _WORKER_ENV
    os.environ.setdefault("LP_NUM_THREADS", "1")  # Mesa's llvmpipe: one thread per worker process
    task_id, task, layouts, noise, seed, env_kwargs = job
    if _WORKER_ENV is None or _WORKER_ENV.task != task:
        if _WORKER_ENV is not None:
            _WORKER_ENV.close()
            _WORKER_ENV = None
        _WORKER_ENV = MetaWorldEnv(task, layouts=layouts, **env_kwargs)
    env = _WORKER_ENV
    expert = ScriptedExpert(task, noise, np.random.SeedSequence(seed))
    episodes = []
    for layout in layouts:
        obs, _ = env.reset(options={"layout": layout})
        frames, actions, rewards, success = [], [], [], False
        done = False
        while not done:
            action = expert(env.state)
            frames.append(obs)
            actions.append(action)
            obs, reward, terminated, truncated, info = env.step(action)
            rewards.append(reward)
            success |= info["success"]
            done = terminated or truncated
        episodes.append({"frames": np.stack(frames), "actions": np.stack(actions), "rewards": np.asarray(rewards),
                         "success": bool(success), "layout": layout, "task_id": task_id})
    return episodes
