"""Diagnostic: how much of the true action do a LAM's latents carry, against a supervised IDM?

    python -m scripts.probe_lam_actions --dataset runs/bench_fruitbot/fruitbot/dataset \
        --lams runs/lamexp/fb_fdm32 runs/lamexp/fb_impala64 --supervised nature impala

The episodes are split once (10% held out, seeded). For each trained LAM (``lapo train-lam``
output) a k-shot probe (:func:`lapo.decoder.probe_scores`, the LAM validation's) is fitted from
the IDM's latents of k labeled training transitions to their true actions and scored on the
held-out transitions, for every k in ``--ks``. For each encoder in ``--supervised`` a supervised
IDM of that network (:class:`lapo.baselines.SupervisedIDM`, the IDM baseline's model) is trained
on *every* labeled training transition: what that network can read from the same frames at all.

Three class maps for Procgen's discrete actions: ``action`` (the 15 action indices; many are
aliases in a given game, so even a perfect reader stays far below 1), ``horizontal`` (left-*,
right-*, or neither, from :data:`envs.procgen.ACTION_NAMES`; the agent's own motion in fruitbot,
jumper, CoinRun) and ``D`` (the D key, the game's first special action: fruitbot's key throw,
starpilot's and bossfight's fire, against every other action). Each is scored by accuracy against
predicting the training transitions' most frequent class, and by balanced accuracy (mean recall
over the classes: 1 / classes for a reader that only ever predicts one, so a rare action the
latents do not carry shows as chance). Prints two tables and writes ``--out`` (JSON).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro


@dataclass
class Args:
    dataset: Path
    """Dataset with actions (read for the probes and the supervised IDMs only)."""
    lams: tuple[Path, ...] = ()
    """Trained LAM checkpoints (``lapo train-lam --out``) to probe."""
    supervised: tuple[str, ...] = ()
    """Encoders (``nature``, ``impala``) of supervised IDMs to train as references."""
    supervised_steps: int = 2000
    """Training steps of each supervised IDM (batch 64, the shared trainer's defaults otherwise)."""
    ks: tuple[int, ...] = (256, 4096)
    """Labeled training transitions of the probe."""
    val_fraction: float = 0.1
    """Fraction of episodes held out (scored on at most 2,048 evenly spaced transitions)."""
    seed: int = 0
    """Split, probe subset and network seed."""
    threads: int = 1
    """torch threads."""
    out: Path | None = None
    """JSON output (none: print only)."""


def action_classes(ds) -> dict[str, np.ndarray]:
    """Class maps ``{name: (n,) int array}`` from action index to class: ``action`` (identity) and,
    for Procgen's 15 actions, ``horizontal`` (0 left-*, 1 neither, 2 right-*) and ``D`` (1 the D
    key, 0 any other action).

    Raises:
        ValueError: a dataset without discrete actions.
    """
    from envs.procgen import ACTION_NAMES

    space = ds.action_space
    if not ds.has_actions or space is None or not hasattr(space, "n"):
        raise ValueError(f"{ds.path}: needs discrete actions (actions.npy and a Discrete action space)")
    maps = {"action": np.arange(space.n)}
    if ds.meta.get("source", {}).get("kind") == "procgen" and space.n == len(ACTION_NAMES):
        maps.update(procgen_classes())
    return maps


def procgen_classes() -> dict[str, np.ndarray]:
    """Procgen's 15 actions -> ``horizontal`` (0 left-*, 1 neither, 2 right-*) and ``D`` (1 the D
    key, 0 any other action), from :data:`envs.procgen.ACTION_NAMES`."""
    from envs.procgen import ACTION_NAMES

    return {"horizontal": np.array([0 if n.startswith("left") else 2 if n.startswith("right") else 1
                                    for n in ACTION_NAMES]),
            "D": np.array([int(n == "D") for n in ACTION_NAMES])}


def main(args: Args) -> dict:
    from envs.dataset import EpisodeDataset
    from envs.io import atomic_write_text
    from lapo.baselines import pseudo_label, train_supervised_idm
    from lapo.decoder import ActionCoding, balanced_accuracy, probe_scores
    from lapo.lam import LatentActionModel, encode_transitions
    from lapo.nets import IMPALA_WIDTHS
    from lapo.policy import PolicyConfig, PolicyTrainConfig
    from lapo.training import set_threads

    set_threads(args.threads)
    ds = EpisodeDataset(args.dataset)
    maps = action_classes(ds)
    actions = np.asarray(ds.oracle_actions())
    train_t, val_t = ds.episode_split(args.val_fraction, args.seed)
    test_t = val_t[np.linspace(0, len(val_t) - 1, min(len(val_t), 2048)).astype(int)]
    probe_t = np.sort(np.random.default_rng(args.seed).choice(train_t, min(max(args.ks), len(train_t)), replace=False))
    majority = {name: float((m[actions[test_t]] == np.bincount(m[actions[train_t]]).argmax()).mean())
                for name, m in maps.items()}
    rows = []
    for lam_dir in args.lams:
        lam = LatentActionModel.from_pretrained(lam_dir).eval()
        z_train, _ = encode_transitions(lam, ds, probe_t)
        z_test, _ = encode_transitions(lam, ds, test_t)
        row = {"source": str(lam_dir), "idm_encoder": lam.cfg.idm_encoder, "fdm_size": lam.cfg.fdm_size}
        for k in args.ks:
            for name, m in maps.items():  # the LAM validation's probe (seed 0 head init)
                scores = probe_scores(z_train[:k], m[actions[probe_t[:k]]], z_test, m[actions[test_t]],
                                      {"type": "Discrete", "n": int(m.max()) + 1})
                row[f"{name}_k{k}"] = scores["probe_accuracy"]
                row[f"{name}_k{k}_balanced"] = scores["probe_balanced_accuracy"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    for encoder in args.supervised:
        row = {"source": f"supervised IDM ({encoder}), {len(train_t)} labels", "idm_encoder": encoder}
        for name, m in maps.items():
            n = int(m.max()) + 1
            cfg = PolicyConfig(encoder=encoder, channels=IMPALA_WIDTHS if encoder == "impala" else PolicyConfig().channels,
                               out_dim=n)
            coding = ActionCoding({"type": "Discrete", "n": n})
            idm = train_supervised_idm(ds, train_t, m[actions[train_t]], cfg,
                                       PolicyTrainConfig(steps=args.supervised_steps, batch_size=64, seed=args.seed,
                                                         threads=args.threads), coding)
            pred, true = pseudo_label(idm, ds, test_t, coding, "argmax"), m[actions[test_t]]
            row[f"{name}_all"] = float((pred == true).mean())
            row[f"{name}_all_balanced"] = balanced_accuracy(pred, true)
        rows.append(row)
        print(json.dumps(row), flush=True)
    cols = [f"{name}_k{k}" for name in maps for k in args.ks] + [f"{name}_all" for name in maps]
    for suffix, chance in (("", lambda c: majority[c.rsplit("_", 1)[0]]),
                           ("_balanced", lambda c: 1 / (int(maps[c.rsplit("_", 1)[0]].max()) + 1))):
        print(("accuracy" if not suffix else "balanced accuracy") + "\n| source | " + " | ".join(cols) + " |\n|---|"
              + "---|" * len(cols))
        for r in rows:
            print(f"| {r['source']} | " + " | ".join(f"{r[c + suffix]:.3f}" if c + suffix in r else "" for c in cols) + " |")
        print(f"| {'majority class' if not suffix else 'chance'} | " + " | ".join(f"{chance(c):.3f}" for c in cols) + " |")
    result = {"args": json.loads(json.dumps(vars(args), default=str)), "majority": majority, "rows": rows,
              "train_transitions": len(train_t), "test_transitions": len(test_t)}
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
