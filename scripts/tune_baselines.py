"""Tune the k-label training budgets once, on a development game's *development* levels, then freeze
them: the model-selection rule every k-shot method of the quickstart and the benchmark shares.

    python -m scripts.tune_baselines --run-dir runs/benchmark_sup --game coinrun --ks 64 256

Knobs, each chosen by the best mean over ``ks`` (seed ``seed``):

- BC on k labels: optimizer steps (``bc_train.steps``), by mean return on development levels;
- ours: the k-shot head's steps (``head.steps``), by mean return on development levels;
- IDM on k labels: the supervised IDM's steps and how it labels the video (``argmax`` or
  ``sample``; ``idm_train.steps/idm_pseudo_labels``), by mean return on development levels of the BC
  agent trained on its pseudo-labels (that BC stage has the whole-video budget that oracle BC and
  latent BC share). The IDM's held-out accuracy is recorded too; it was the rule before
  ``docs/tune_idm.json`` and chose an IDM whose argmax labels made BC agents that never finished a
  level on some seeds.

``--knobs`` picks which of ``bc``, ``head``, ``idm`` to tune (each writes its own rows).

Development levels ``[DEV_START_LEVEL, +100k)`` are disjoint from the training video's and from the
evaluation levels, so tuning never sees an evaluation level. The run directory's shared stages
(dataset, LAM, labels, latent policy of the seed) are reused from a ``lapo benchmark cpu`` run.
Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from envs.io import atomic_write_text

KNOBS = ("bc", "head", "idm")

DEV_START_LEVEL, DEV_NUM_LEVELS = 2_000_000, 100_000
"""Development levels for tuning: disjoint from training ``[0, 100k)`` and evaluation ``[1M, 1.1M)``."""


@dataclass
class TuneConfig:
    run_dir: Path = Path("runs/benchmark_sup")
    """A ``lapo benchmark cpu`` run directory (its settings and shared stages are reused)."""
    game: str = "coinrun"
    """The development game."""
    ks: tuple[int, ...] = (64, 256)
    """Labeled-set sizes the choice is averaged over."""
    seed: int = 0
    """Labeled-subset draw, network inits and development levels."""
    bc_steps: tuple[int, ...] = (250, 500, 1500, 3000)
    """Candidate BC-on-k steps."""
    head_steps: tuple[int, ...] = (100, 500, 2000)
    """Candidate k-shot head steps."""
    idm_steps: tuple[int, ...] = (250, 500, 1500)
    """Candidate supervised-IDM steps."""
    idm_modes: tuple[str, ...] = ("argmax", "sample")  # lapo.baselines.PSEUDO_LABEL_MODES
    """Candidate pseudo-label modes (:func:`lapo.baselines.pseudo_label`)."""
    knobs: tuple[str, ...] = KNOBS
    """Which knobs to tune."""
    episodes: int = 100
    """Development-level episodes per candidate."""
    threads: int = 1
    """torch CPU threads."""
    out: Path = Path("docs/tune_baselines.json")


def main(cfg: TuneConfig) -> dict:
    import torch

    from lapo.baselines import pseudo_label, train_supervised_idm
    from lapo.benchmark import GameRun, action_agreement, check_run_dir, cpu_preset, ours_method
    from lapo.evaluate import evaluate
    from lapo.policy import PolicyConfig
    from lapo.training import set_threads

    bad = [k for k in cfg.knobs if k not in KNOBS]
    if bad:
        raise ValueError(f"unknown knobs {bad}: choose from {KNOBS}")
    set_threads(cfg.threads)
    bench = dataclasses.replace(cpu_preset(), run_dir=cfg.run_dir, games=(cfg.game,), seeds=(cfg.seed,))
    check_run_dir(bench)  # the same settings as the run whose stages are reused
    run = GameRun(bench, cfg.game)

    def dev_return(act) -> float:
        torch.manual_seed(cfg.seed)
        return evaluate(act, cfg.game, cfg.episodes, bench.distribution_mode, start_level=DEV_START_LEVEL,
                        num_levels=DEV_NUM_LEVELS, seed=cfg.seed, desc="dev levels").mean

    rows = []
    for k in cfg.ks:
        subset = run.subset(k, cfg.seed)
        for steps in cfg.bc_steps if "bc" in cfg.knobs else ():
            agent = run.bc(subset.indices, subset.actions, dataclasses.replace(bench.bc_train, steps=steps), cfg.seed,
                           "bc_k")
            rows.append({"knob": "bc_train.steps", "k": k, "value": steps, "dev_return": dev_return(agent.act)})
        for steps in cfg.head_steps if "head" in cfg.knobs else ():
            agent, _ = ours_method(run, k, cfg.seed, dataclasses.replace(bench.head, steps=steps))
            rows.append({"knob": "head.steps", "k": k, "value": steps, "dev_return": dev_return(agent.act)})
        lam = bench.lam
        idm_cfg = PolicyConfig(image_size=lam.image_size, encoder=lam.idm_encoder, channels=lam.idm_channels,
                               hidden=lam.idm_hidden, out_dim=run.coding.out_dim)
        for steps in cfg.idm_steps if "idm" in cfg.knobs else ():
            idm = train_supervised_idm(run.ds, subset.indices, subset.actions, idm_cfg,
                                       dataclasses.replace(bench.idm_train, steps=steps, seed=cfg.seed), run.coding)
            acc = action_agreement(pseudo_label(idm, run.ds, run.test_t, run.coding), run.test_actions(),
                                   run.coding.space)
            for mode in cfg.idm_modes:
                pseudo = pseudo_label(idm, run.ds, run.train_t, run.coding, mode, cfg.seed)
                agent = run.bc(run.train_t, pseudo, bench.policy_train, cfg.seed, "idm_bc")
                rows.append({"knob": "idm_train.steps/idm_pseudo_labels", "k": k, "value": f"{steps}/{mode}",
                             "heldout_accuracy": acc, "dev_return": dev_return(agent.act)})
        atomic_write_text(cfg.out, json.dumps({"rows": rows}, indent=2))
    chosen = {}
    print("\n| knob | value | " + " | ".join(f"k={k}" for k in cfg.ks) + " | mean |")
    print("|---|---|" + "---|" * (len(cfg.ks) + 1))
    for knob in dict.fromkeys(r["knob"] for r in rows):
        scores = {}
        for value in dict.fromkeys(r["value"] for r in rows if r["knob"] == knob):
            per_k = [r["dev_return"] for k in cfg.ks for r in rows if r["knob"] == knob and r["k"] == k
                     and r["value"] == value]
            scores[value] = float(np.mean(per_k))
            print(f"| {knob} (dev return) | {value} | " + " | ".join(f"{x:.3f}" for x in per_k)
                  + f" | {scores[value]:.3f} |")
        chosen[knob] = max(scores, key=scores.get)
    print(f"chosen: {chosen}")
    out = {"rows": rows, "chosen": chosen, "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)),
           "dev_levels": [DEV_START_LEVEL, DEV_START_LEVEL + DEV_NUM_LEVELS]}
    atomic_write_text(cfg.out, json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main(tyro.cli(TuneConfig))
