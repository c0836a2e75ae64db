"""Benchmark: Meta-World cameras (what the agent can see at 64×64), render speed, collection speed.

    python -m scripts.benchmark_metaworld_env --out runs/benchmark_metaworld_env

1. **Cameras**: for each fixed camera, the pixels of pick-place's goal marker and object at
   ``size``×``size`` (frame with vs without the marker / object, mean over 10 layouts) and
   renders/s. The default camera (:data:`envs.metaworld.DEFAULT_CAMERA`) was chosen from it.
2. **Rendering**: renders/s of one env (one process, one llvmpipe thread) with MuJoCo's default
   settings, with shadows/reflections/multisampling off, and with the meshes also simplified
   (:func:`envs.metaworld.simplify_meshes`); mean absolute pixel difference to the default image.
3. **Collection**: frames/s of ``lapo collect --domain metaworld`` (scripted experts + render, all
   default tasks, ``workers`` processes), wall time including start-up.

Prints tables and writes ``OUT/results.json``. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro


@dataclass
class Args:
    out: Path = Path("runs/benchmark_metaworld_env")
    """results.json and the collected dataset go here."""
    size: int = 64
    """Frame size."""
    renders: int = 300
    """Renders per speed measurement."""
    episodes_per_task: int = 20
    """Collection benchmark: episodes per default task."""
    workers: int = 2
    """Collection benchmark: worker processes."""


def cameras(args: Args) -> list[dict]:
    import mujoco

    from envs.metaworld import CAMERAS, MetaWorldEnv

    rows = []
    for camera in CAMERAS[:5]:  # the fixed ones; behindGripper / gripperPOV move with the hand
        env = MetaWorldEnv("pick-place-v3", camera, args.size, layouts=range(10))
        model, data = env._env.model, env._env.data
        goal, obj = [], []
        for _ in range(10):
            base, _ = env.reset()
            site = model.site("goal").id
            pos = model.site_pos[site].copy()
            model.site_pos[site] = [0, 0, -5]
            mujoco.mj_forward(model, data)
            goal.append(int((env.render() != base).any(-1).sum()))
            model.site_pos[site] = pos
            geom = model.geom("objGeom").id
            rgba = model.geom_rgba[geom].copy()
            model.geom_rgba[geom][3] = 0
            obj.append(int((env.render() != base).any(-1).sum()))
            model.geom_rgba[geom] = rgba
            mujoco.mj_forward(model, data)
        rows.append({"camera": camera, "goal_pixels": float(np.mean(goal)), "object_pixels": float(np.mean(obj)),
                     "renders_per_s": renders_per_s(env, args.renders)})
        env.close()
    return rows


def renders_per_s(env, n: int) -> float:
    for _ in range(5):
        env.render()
    t0 = time.perf_counter()
    for _ in range(n):
        env.render()
    return n / (time.perf_counter() - t0)


def rendering(args: Args) -> list[dict]:
    from envs.metaworld import MESH_CELL, MetaWorldEnv

    rows, reference = [], None
    for name, kwargs in (("MuJoCo defaults", dict(fast_render=False)),
                         ("shadows, reflections, multisampling off", dict(fast_render=True, mesh_cell=0)),
                         (f"+ meshes simplified ({MESH_CELL * 100:.0f} cm cells)", dict(fast_render=True))):
        env = MetaWorldEnv("drawer-open-v3", size=args.size, layouts=[0], **kwargs)
        frame, _ = env.reset()
        reference = frame.astype(float) if reference is None else reference
        rows.append({"settings": name, "renders_per_s": renders_per_s(env, args.renders),
                     "mean_abs_pixel_difference": float(np.abs(frame - reference).mean())})
        env.close()
    return rows


def collection(args: Args) -> dict:
    from envs.dataset import EpisodeDataset
    from envs.metaworld import MetaWorldCollectConfig, collect

    t0 = time.perf_counter()
    path = collect(MetaWorldCollectConfig(out=args.out / "dataset", episodes_per_task=args.episodes_per_task,
                                          workers=args.workers, overwrite=True))
    wall = time.perf_counter() - t0
    ds = EpisodeDataset(path)
    return {"frames": len(ds), "episodes": ds.num_episodes, "wall_s": wall, "frames_per_s": len(ds) / wall,
            "workers": args.workers, "expert_success_per_task": ds.meta["success_rate_per_task"]}


def main(args: Args) -> dict:
    from envs.io import atomic_write_text
    from lapo.benchmark import hardware

    os.environ.setdefault("LP_NUM_THREADS", "1")
    cams, render = cameras(args), rendering(args)
    print(f"| camera ({args.size}×{args.size}, pick-place, 10 layouts) | goal pixels | object pixels | renders/s |")
    print("|---|---|---|---|")
    for r in cams:
        print(f"| {r['camera']} | {r['goal_pixels']:.1f} | {r['object_pixels']:.1f} | {r['renders_per_s']:.0f} |")
    print(f"\n| rendering (drawer-open, {args.size}×{args.size}, 1 process) | renders/s | mean abs pixel difference |")
    print("|---|---|---|")
    for r in render:
        print(f"| {r['settings']} | {r['renders_per_s']:.0f} | {r['mean_abs_pixel_difference']:.2f} |")
    col = collection(args)
    print(f"\ncollection: {col['frames']} frames ({col['episodes']} episodes) in {col['wall_s']:.1f} s = "
          f"{col['frames_per_s']:.0f} frames/s with {col['workers']} workers; expert success {col['expert_success_per_task']}")
    results = {"cameras": cams, "rendering": render, "collection": col, "hardware": hardware(),
               "args": json.loads(json.dumps(vars(args), default=str))}
    atomic_write_text(Path(args.out) / "results.json", json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(tyro.cli(Args))
