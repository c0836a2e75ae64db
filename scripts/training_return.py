"""A PPO run's training return over a stretch of env steps, from its tensorboard logs:

    python -m scripts.training_return --tb runs/expert_bossfight/tb --from-step 9460000

Reads SB3's ``rollout/ep_rew_mean`` (mean return of the last 100 training episodes, logged once per
rollout) from every event file under ``--tb`` and prints the number of logged rollouts in
[from_step, to_step], their first and last step, and the mean, min and max of the logged values:
the "training return flat / rising" figures of ``envs/demonstrators/README.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

TAG = "rollout/ep_rew_mean"


@dataclass
class Args:
    tb: Path
    """Tensorboard directory of a ``lapo train-expert`` run (``RUN_DIR/tb``)."""
    from_step: int = 0
    to_step: int | None = None


def main(args: Args) -> dict:
    """Raises ValueError when no ``rollout/ep_rew_mean`` point lies in the range."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points = []
    for f in sorted(args.tb.rglob("events.out.tfevents*")):
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        if TAG in acc.Tags()["scalars"]:
            points += [(e.step, e.value) for e in acc.Scalars(TAG)
                       if e.step >= args.from_step and (args.to_step is None or e.step <= args.to_step)]
    if not points:
        raise ValueError(f"no {TAG} in {args.tb} between steps {args.from_step} and {args.to_step}")
    steps, values = np.array(sorted(points)).T
    out = {"rollouts": len(values), "first_step": int(steps[0]), "last_step": int(steps[-1]),
           "mean": float(values.mean()), "min": float(values.min()), "max": float(values.max())}
    print(f"{out['rollouts']} rollouts, steps {out['first_step']:,}-{out['last_step']:,}: training return "
          f"mean {out['mean']:.2f} ({out['min']:.2f}-{out['max']:.2f})")
    return out


if __name__ == "__main__":
    main(tyro.cli(Args))
