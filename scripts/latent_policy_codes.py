"""Diagnostic: does latent BC lose the action by averaging the demonstrator's modes?

    python -m scripts.latent_policy_codes --run-dir runs/bench_fb_lamimpala --game fruitbot \
        --preset cpu-impala --ks 64 256 --out docs/latent_policy_codes_fruitbot.json

LAPO's latent policy regresses the IDM's continuous latent with MSE, i.e. the *mean* latent of a
frame. When the demonstrator is stochastic (left or right from the same frame) that mean may be
neither action's latent. This script trains, on a finished benchmark run's video, LAM labels and
training pool (reused, nothing retrained but the new policy), a latent policy that *classifies*
each FSQ dimension's level instead (cross-entropy over the ``fsq_levels`` levels per dimension:
the RT-1 bins coding of :class:`lapo.decoder.ActionCoding` on the quantized latent, trained by the
shared :func:`lapo.policy.fit_network`, same network and steps as the run's latent policy). For
each k the k-shot head is fitted on the IDM's quantized latents of the k labels and the agent plays
``head(level)`` with the most likely level per dimension (``argmax``) or one drawn level per
dimension (``sampled``), on the run's evaluation levels; the run's own ``ours`` (MSE latent
policy, head on its outputs) is evaluated in the same run as the baseline. Prints a table and
writes ``--out`` (JSON). FSQ LAMs only.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro


@dataclass
class Args:
    run_dir: Path
    """A ``lapo benchmark`` run directory whose ``GAME/seedS`` LAM, labels and latent policy exist."""
    game: str = "fruitbot"
    preset: str = "cpu-impala"
    """The preset whose settings that run used (``cpu``, ``cpu-impala``; see ``lapo benchmark``)."""
    ks: tuple[int, ...] = (64, 256)
    seed: int = 0
    threads: int = 2
    """torch threads."""
    out: Path | None = None
    """JSON output (none: print only)."""


def main(args: Args, cfg=None) -> dict:
    """Run the diagnostic; ``cfg`` (a :class:`lapo.benchmark.BenchmarkConfig`) replaces the preset."""
    import torch

    from lapo.benchmark import METHODS, PRESETS, GameRun, action_agreement
    from lapo.decoder import ActionCoding, fit_action_head
    from lapo.policy import Policy, fit_network

    torch.set_num_threads(args.threads)
    cfg = dataclasses.replace(cfg or PRESETS[args.preset][1], run_dir=args.run_dir)
    if cfg.lam.quantizer != "fsq":
        raise ValueError(f"the run's LAM quantizer is {cfg.lam.quantizer!r}; this diagnostic classifies FSQ levels")
    run = GameRun(cfg, args.game)
    labels = run.lam_labels(args.seed)
    half = (cfg.lam.fsq_levels - 1) / 2
    z_q = np.round(np.asarray(labels.latents, np.float32) * half) / half  # FSQ's quantization (lapo.vq.FSQ)
    L = z_q.shape[1]
    levels = ActionCoding({"type": "Box", "shape": [L], "low": [-1.0] * L, "high": [1.0] * L}, "bins",
                          cfg.lam.fsq_levels)  # bin i of [-1, 1] holds level i
    train_cfg = dataclasses.replace(cfg.policy_train, seed=args.seed)
    policy = fit_network(Policy(dataclasses.replace(cfg.policy, out_dim=levels.out_dim)),
                         lambda i: np.asarray(run.ds.frames[i]), run.train_t, z_q[run.train_t], train_cfg, levels,
                         out_dir=args.run_dir / args.game / f"seed{args.seed}" / "latent_policy_codes",
                         record={"z_q": "fsq levels", "pool": len(run.train_t)})

    @torch.no_grad()
    def level_latents(obs, deterministic):
        bins = levels.decode(policy(torch.from_numpy(np.asarray(obs).copy())), deterministic)  # bin centres
        return torch.from_numpy(np.round(bins * half) / half)  # -> the FSQ levels

    rows = []
    for k in args.ks:
        subset = run.subset(k, args.seed)
        head = fit_action_head(z_q[subset.indices], subset.actions, dataclasses.replace(cfg.head, latent_dim=L),
                               run.coding.space, args.seed)
        ours, _ = METHODS["ours"](run, k, args.seed)
        agents = {"ours (MSE latent policy)": ours.act}
        for mode, deterministic in (("argmax", True), ("sampled", False)):
            def act(obs, deterministic=deterministic):
                with torch.no_grad():
                    return head.coding.decode(head(level_latents(obs, deterministic)), False)
            agents[f"level classifier, {mode} levels"] = act
        with torch.no_grad():
            pred = np.concatenate([head.coding.decode(head(level_latents(run.ds.frames[i], True)), True)
                                   for i in np.array_split(run.test_t, 8)])
        for name, act in agents.items():
            torch.manual_seed(args.seed)
            res = run.evaluate(act, args.seed, f"{args.game} {name} k={k}")
            rows.append({"k": k, "agent": name, "mean_return": res["mean_return"], "returns": res["returns"],
                         "action_accuracy": action_agreement(pred, run.test_actions(), run.coding.space)
                         if "argmax" in name else None})
    ref = {m: json.loads((args.run_dir / "cells" / args.game / m / "all" / f"seed{args.seed}.json").read_text())["mean_return"]
           for m in ("random", "demonstrator")}
    print(f"{args.game}, seed {args.seed}, {cfg.eval_episodes} unseen levels; random {ref['random']:.2f}, "
          f"demonstrator {ref['demonstrator']:.2f}")
    for r in rows:
        r["normalized_return"] = (r["mean_return"] - ref["random"]) / (ref["demonstrator"] - ref["random"])
        acc = "" if r["action_accuracy"] is None else f"  held-out action accuracy {r['action_accuracy']:.3f}"
        print(f"k={r['k']:5d}  {r['agent']:36s} return {r['mean_return']:6.2f}  normalized {r['normalized_return']:.2f}{acc}")
    result = {"args": {k: str(v) for k, v in dataclasses.asdict(args).items()}, "references": ref, "rows": rows}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
