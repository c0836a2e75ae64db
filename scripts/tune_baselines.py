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

- the whole-video BC recipe (``policy.encoder`` and ``policy_train.steps``, shared by oracle BC,
  latent BC and BC on IDM pseudo-labels), by mean return on development levels of **oracle BC**
  (every true action of the video: the ceiling of every latent method), with its cross-entropy on
  training and held-out transitions (overfitting shows as the gap) and held-out accuracy.

``--knobs`` picks which of ``bc``, ``head``, ``idm``, ``policy`` to tune (each writes its own rows;
``policy`` is not per k).

Development levels ``[DEV_START_LEVEL, +100k)`` are disjoint from the training video's and from the
evaluation levels, so tuning never sees an evaluation level. The run directory's shared stages
(dataset, LAM, labels, latent policy of the seed) are reused from a ``lapo benchmark cpu`` run.
Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from envs.io import atomic_write_text

KNOBS = ("bc", "head", "idm", "policy")

DEV_START_LEVEL, DEV_NUM_LEVELS = 2_000_000, 100_000
"""Development levels for tuning: disjoint from training ``[0, 100k)`` and evaluation ``[1M, 1.1M)``."""


def parse_variant(variant: str) -> tuple[str, int]:
    """``"encoder:steps"`` -> ``(encoder, steps)``. Raises ``ValueError`` naming a bad variant."""
    from lapo.nets import ENCODERS

    encoder, _, steps = variant.partition(":")
    if encoder not in ENCODERS or not steps.isdigit() or int(steps) < 1:
        raise ValueError(f"policy variant {variant!r}: write encoder:steps with encoder one of {sorted(ENCODERS)} "
                         "and steps >= 1, e.g. nature:2000")
    return encoder, int(steps)


def cross_entropy(agent, run, t: np.ndarray, actions: np.ndarray) -> float:
    """Mean negative log-likelihood (nats) of the true discrete ``actions`` at frames ``t`` under a BC agent."""
    import torch

    logits = torch.cat([agent.logits(torch.from_numpy(np.asarray(run.ds.frames[i]))) for i in np.array_split(t, 8)])
    return float(torch.nn.functional.cross_entropy(logits, torch.as_tensor(np.asarray(actions))))


def demo_nll(demo, run, t: np.ndarray, actions: np.ndarray) -> float:
    """The same under the demonstrator that recorded them (its policy's entropy, in expectation)."""
    import torch

    with torch.no_grad():
        nll = [-demo.policy.get_distribution(demo.policy.obs_to_tensor(np.asarray(run.ds.frames[i]))[0])
               .log_prob(torch.as_tensor(np.asarray(a))) for i, a in zip(np.array_split(t, 8), np.array_split(actions, 8))]
    return float(torch.cat(nll).mean())


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
    policy_variants: tuple[str, ...] = ("nature:2000", "nature:8000", "impala:2000")
    """Candidate whole-video BC recipes ``encoder:steps`` (IMPALA at scale 1, :data:`lapo.nets.IMPALA_WIDTHS`)."""
    num_frames: int | None = None
    """Video frames of the game (None = the ``cpu`` preset's): the data-size lever of the ``policy``
    knob; another size needs its own ``--run-dir`` (the video is collected there)."""
    knobs: tuple[str, ...] = ("bc", "head", "idm")
    """Which knobs to tune (``policy`` too: it trains oracle BC once per variant)."""
    episodes: int = 100
    """Development-level episodes per candidate."""
    threads: int = 1
    """torch CPU threads."""
    out: Path = Path("docs/tune_baselines.json")


def main(cfg: TuneConfig) -> dict:
    import torch

    from lapo import stages
    from lapo.baselines import pseudo_label, train_supervised_idm
    from lapo.benchmark import GameRun, action_agreement, check_run_dir, cpu_preset, ours_method
    from lapo.evaluate import evaluate
    from lapo.nets import IMPALA_WIDTHS
    from lapo.policy import PolicyConfig
    from lapo.training import set_threads

    bad = [k for k in cfg.knobs if k not in KNOBS]
    if bad:
        raise ValueError(f"unknown knobs {bad}: choose from {KNOBS}")
    variants = [parse_variant(v) for v in cfg.policy_variants] if "policy" in cfg.knobs else []
    set_threads(cfg.threads)
    bench = dataclasses.replace(cpu_preset(), run_dir=cfg.run_dir, games=(cfg.game,), seeds=(cfg.seed,))
    if cfg.num_frames is not None:
        bench = dataclasses.replace(bench, num_frames=cfg.num_frames)
    check_run_dir(bench)  # the same settings as the run whose stages are reused
    run = GameRun(bench, cfg.game)
    every = max(1, len(run.train_t) // len(run.test_t))  # NLL on as many training transitions as held-out ones

    def dev_return(act) -> float:
        torch.manual_seed(cfg.seed)
        return evaluate(act, cfg.game, cfg.episodes, bench.distribution_mode, start_level=DEV_START_LEVEL,
                        num_levels=DEV_NUM_LEVELS, seed=cfg.seed, desc="dev levels").mean

    rows, floor = [], {}
    if "policy" in cfg.knobs:  # the demonstrator's own NLL of the actions it recorded: the floor for BC
        from envs.demonstrator import Demonstrator

        demo = Demonstrator.from_pretrained(run.demonstrator_dir)
        floor = {"train_nll": demo_nll(demo, run, run.train_t[::every], run.oracle_actions()[::every]),
                 "heldout_nll": demo_nll(demo, run, run.test_t, run.test_actions())}
    for variant, (encoder, steps) in zip(cfg.policy_variants, variants):
        channels = bench.policy.channels if encoder == "nature" else IMPALA_WIDTHS
        policy_cfg = dataclasses.replace(bench.policy, encoder=encoder, channels=channels)
        train_cfg = dataclasses.replace(bench.policy_train, steps=steps, seed=cfg.seed)
        t0 = time.perf_counter()
        agent = stages.behaviour_cloning(run.ds, run.train_t, run.oracle_actions(), run.coding, policy_cfg,
                                         train_cfg, tag="oracle_bc")
        train_seconds = round(time.perf_counter() - t0, 1)
        rows.append({"knob": "policy.encoder:policy_train.steps", "k": "all", "value": variant,
                     "train_nll": cross_entropy(agent, run, run.train_t[::every], run.oracle_actions()[::every]),
                     "heldout_nll": cross_entropy(agent, run, run.test_t, run.test_actions()),
                     "heldout_accuracy": action_agreement(agent.act(np.asarray(run.ds.frames[run.test_t]), True),
                                                          run.test_actions(), run.coding.space),
                     "train_seconds": train_seconds, "dev_return": dev_return(agent.act)})
        atomic_write_text(cfg.out, json.dumps({"rows": rows}, indent=2))
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
    for knob in dict.fromkeys(r["knob"] for r in rows):
        knob_rows = [r for r in rows if r["knob"] == knob]
        ks = list(dict.fromkeys(r["k"] for r in knob_rows))
        extra = [f for f in ("train_nll", "heldout_nll", "heldout_accuracy", "train_seconds") if f in knob_rows[0]]
        print(f"\n| {knob} | " + " | ".join(f"dev return k={k}" for k in ks) + " | mean | "
              + " | ".join(extra) + " |" * bool(extra))
        print("|---|" + "---|" * (len(ks) + 1 + len(extra)))
        scores = {}
        for value in dict.fromkeys(r["value"] for r in knob_rows):
            mine = [r for r in knob_rows if r["value"] == value]
            scores[value] = float(np.mean([r["dev_return"] for r in mine]))
            print(f"| {value} | " + " | ".join(f"{r['dev_return']:.3f}" for r in mine) + f" | {scores[value]:.3f} | "
                  + " | ".join(f"{mine[0][f]:.3f}" for f in extra) + " |" * bool(extra))
        chosen[knob] = max(scores, key=scores.get)
    if floor:
        print(f"demonstrator NLL of its own recorded actions (the floor): train {floor['train_nll']:.3f}, "
              f"held-out {floor['heldout_nll']:.3f}")
    print(f"chosen: {chosen}")
    out = {"rows": rows, "chosen": chosen, "demonstrator_nll": floor, "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)),
           "dev_levels": [DEV_START_LEVEL, DEV_START_LEVEL + DEV_NUM_LEVELS]}
    atomic_write_text(cfg.out, json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main(tyro.cli(TuneConfig))
