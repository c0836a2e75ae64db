"""Diagnostic: which true actions do the pseudo-labels of ``ours_relabel`` (and of the other rows
that label the video: ``idm``, ``ours_relabel_tuned``) get wrong, and into what?

    python -m scripts.relabel_confusion --run-dir runs/fbdiag --game fruitbot --preset cpu-impala \
        --ks 256 --labelers ours_relabel ours_relabel_tuned idm --out docs/relabel_confusion_fruitbot.json

On a finished benchmark run's video (its seed's LAM and labels reused; nothing trained but each
row's k-label model: the head in seconds, an IDM and its labeling in minutes), the pseudo-labels of the
training transitions exactly as each row makes them (:data:`lapo.benchmark.LABELERS`: the same
labeled draw, model, budget and labeling mode) are compared with the true actions, grouped into Procgen's
``left`` (left-*), ``right`` (right-*), ``D`` (the D key: fruitbot's key throw, starpilot's and
bossfight's fire) and ``other`` (every other action). Prints, per labeler and k, the row-normalized
confusion matrix P(pseudo group | true group) and writes ``--out`` (JSON). True actions are read for
scoring only. Procgen (15 actions) only.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np
import tyro

from scripts.latent_policy_codes import Args as RunArgs  # run_dir, game, preset, ks, seed, threads, out

GROUPS = ("left", "right", "D", "other")


@dataclass
class Args(RunArgs):
    labelers: tuple[str, ...] = ("ours_relabel",)
    """Rows whose pseudo-labels are scored (keys of :data:`lapo.benchmark.LABELERS`)."""


def action_groups() -> np.ndarray:
    """``(15,)`` int: Procgen action index -> index into :data:`GROUPS` (the probe's ``horizontal``
    and ``D`` classes, :func:`scripts.probe_lam_actions.procgen_classes`, combined)."""
    from scripts.probe_lam_actions import procgen_classes

    classes = procgen_classes()
    return np.where(classes["D"] == 1, 2, np.array([0, 3, 1])[classes["horizontal"]])


def main(args: Args, cfg=None) -> dict:
    """Run the diagnostic; ``cfg`` (a :class:`lapo.benchmark.BenchmarkConfig`) replaces the preset.

    Raises:
        ValueError: the game's action space is not Procgen's 15 discrete actions, or a labeler is
            not a key of :data:`lapo.benchmark.LABELERS`.
    """
    from envs.io import atomic_write_text
    from lapo.benchmark import LABELERS, PRESETS, GameRun
    from lapo.training import set_threads

    bad = [name for name in args.labelers if name not in LABELERS]
    if bad:
        raise ValueError(f"labelers {bad}: choose from {sorted(LABELERS)}")
    set_threads(args.threads)
    cfg = dataclasses.replace(cfg or PRESETS[args.preset][1], run_dir=args.run_dir)
    run = GameRun(cfg, args.game)
    group = action_groups()
    if run.coding.space != {"type": "Discrete", "n": len(group)}:
        raise ValueError(f"{args.game}: action space {run.coding.space}; this diagnostic groups Procgen's 15 actions")
    true = group[run.oracle_actions()]
    result = {"args": json.loads(json.dumps(vars(args), default=str)), "groups": GROUPS,
              "true_share": (np.bincount(true, minlength=4) / len(true)).tolist(), "labelers": {}}
    for name in args.labelers:
        for k in args.ks:
            pseudo, held_out = LABELERS[name](run, k, args.seed)
            pseudo = group[pseudo]
            counts = np.zeros((4, 4))
            np.add.at(counts, (true, pseudo), 1)
            confusion = counts / counts.sum(1, keepdims=True).clip(min=1)
            result["labelers"].setdefault(name, {})[str(k)] = {
                "confusion": confusion.tolist(), "agreement": float((pseudo == true).mean()),
                "held_out_action_agreement": held_out}
            print(f"{name}, k={k}: P(pseudo group | true group), group agreement {(pseudo == true).mean():.3f}\n"
                  "| true \\ pseudo | " + " | ".join(GROUPS) + " | share of video |\n|---|" + "---|" * 5)
            for g, row in enumerate(confusion):
                print(f"| {GROUPS[g]} | " + " | ".join(f"{v:.3f}" for v in row) + f" | {result['true_share'][g]:.3f} |")
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
