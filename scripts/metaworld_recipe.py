"""Choose the Meta-World BC recipe on a development task, before the benchmark's tasks are run.

Every BC-type policy of ``lapo benchmark --domain metaworld`` (oracle BC, BC on k, IDM -> BC, the
latent policy) shares one network and one action decoding. This script compares recipe variants of
**oracle BC** (all labels: the ceiling every other row lives under) and of BC on k labeled
episodes per task (its own budget, so the baseline is tuned as well as ours) on development tasks that are
not among the benchmark's tasks, evaluated on development layouts (ids from
:data:`DEV_LAYOUT_START`, used by neither training video nor benchmark evaluation), and prints a
table + writes JSON. The benchmark's tasks and evaluation layouts are never touched.

    python -m scripts.metaworld_recipe --run-dir runs/mw_recipe --threads 2

Variants: action decoding (RT-1 bins sampled / argmax, regression), training steps, random shift.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import tyro

DEV_LAYOUT_START = 3_000_000
"""Development layouts: above every benchmark evaluation block (1,000,000 + seed * 100,000, seed < 20)."""

DEV_TASKS = ("faucet-open-v3", "lever-pull-v3", "plate-slide-v3")


@dataclass(frozen=True)
class Variant:
    name: str
    continuous: str = "bins"
    deterministic: bool = False
    steps: int = 1500
    shift: int = 4
    k: int | None = None
    """Labeled episodes per task (None: all, i.e. oracle BC)."""


VARIANTS = {v.name: v for v in (
    Variant("bins_sampled_1500"),
    Variant("bins_argmax_1500", deterministic=True),
    Variant("regression_1500", continuous="regression"),
    Variant("regression_6000", continuous="regression", steps=6000),
    Variant("bins_argmax_6000", deterministic=True, steps=6000),
    Variant("regression_1500_noshift", continuous="regression", shift=0),
    Variant("k5_regression_1500", continuous="regression", k=5),
    Variant("k5_regression_6000", continuous="regression", steps=6000, k=5),
)}


@dataclass
class Args:
    run_dir: Path = Path("runs/mw_recipe")
    tasks: tuple[str, ...] = DEV_TASKS
    """Development tasks (none of the benchmark's)."""
    episodes_per_task: int = 100
    eval_episodes: int = 50
    variants: tuple[str, ...] = tuple(VARIANTS)
    threads: int = 2
    seed: int = 0
    num_envs: int = 2
    out: Path = field(default_factory=lambda: Path("docs/metaworld_recipe.json"))
    """Results by variant name; a variant already in it is not rerun, so give another ``--out`` for
    other tasks, episode counts or seeds."""


def main(args: Args) -> None:
    from envs.dataset import space_to_json
    from envs.io import atomic_write_text
    from envs.metaworld import DEFAULT_TASKS, MetaWorldCollectConfig
    from lapo import stages
    from lapo.decoder import ActionHeadConfig
    from lapo.evaluate import evaluate_metaworld
    from lapo.policy import PolicyConfig, PolicyTrainConfig

    if set(args.tasks) & set(DEFAULT_TASKS):
        raise ValueError(f"development tasks {sorted(set(args.tasks) & set(DEFAULT_TASKS))} are benchmark tasks; "
                         f"choose others")
    torch.set_num_threads(args.threads)
    video = MetaWorldCollectConfig(out=args.run_dir / "dataset", tasks=args.tasks,
                                   episodes_per_task=args.episodes_per_task, workers=args.num_envs)
    ds = stages.collect(video)
    print("expert success per episode:", float(np.mean(ds.meta["episode_success"])))
    actions = np.asarray(ds.oracle_actions())
    train_t = np.arange(len(actions))
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for name in args.variants:
        v = VARIANTS[name]
        if name in results:
            print(f"{name}: done before ({results[name]['success']:.2f})")
            continue
        coding = ActionHeadConfig(continuous=v.continuous).coding(space_to_json(ds.action_space))
        t0 = time.time()
        if v.k is None:
            idx, acts = train_t, actions
        else:
            sub = ds.labeled_subset(v.k, args.seed, unit="episode", per_task=True)
            idx, acts = sub.indices, sub.actions
        agent = stages.behaviour_cloning(ds, idx, acts, coding, PolicyConfig(),
                                         PolicyTrainConfig(steps=v.steps, shift=v.shift, seed=args.seed,
                                                           threads=args.threads),
                                         out=args.run_dir / name, tag=name)
        train_s = time.time() - t0
        res = evaluate_metaworld(lambda obs: agent.act(obs, v.deterministic), args.tasks, args.eval_episodes,
                                 args.num_envs, DEV_LAYOUT_START, desc=name, **video.env_kwargs())
        per_task = {t: float(r.successes.mean()) for t, r in res.items()}
        results[name] = {"variant": dataclasses.asdict(v), "success": float(np.mean(list(per_task.values()))),
                         "per_task": per_task, "train_seconds": train_s}
        print(f"{name}: {results[name]['success']:.2f} {per_task} train {train_s:.0f}s")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(results, indent=1))
    tasks = list(args.tasks)
    print("| variant | " + " | ".join(tasks) + " | average | train s |\n|---|" + "---|" * (len(tasks) + 2))
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(f"{r['per_task'].get(t, float('nan')):.2f}" for t in tasks)
              + f" | {r['success']:.2f} | {r['train_seconds']:.0f} |")


if __name__ == "__main__":
    main(tyro.cli(Args))
