"""The main job, end to end: action-free video -> LAM -> labels -> latent policy -> k-shot head.

``run_quickstart`` composes the stages of :mod:`lapo.stages` (collect → train LAM → label → latent
BC → k-shot head → evaluate) and
evaluates four agents on the same unseen levels: random, the demonstrator, BC on the same k labeled
transitions, and latent policy + k-shot head. It writes ``results.json`` (table, checkpoints, stage
timings, LAM validation metrics), tensorboard logs and a GIF of the decoded agent.

Only two things read true actions: the k-transition labeled subset (for the head and the BC
baseline) and the LAM's diagnostic probe, which does not influence training.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from envs.collect import CollectConfig
from lapo.baselines import K_LABEL_STEPS
from lapo.decoder import ActionHeadConfig
from lapo.lam import LAMConfig, LAMTrainConfig
from lapo.policy import PolicyConfig, PolicyTrainConfig


@dataclass
class QuickstartConfig:
    """``lapo quickstart``: the whole pipeline on CoinRun with the shipped demonstrator."""

    run_dir: Path = Path("runs/quickstart")
    """Everything goes here: dataset, checkpoints, tensorboard logs, results.json, agent.gif."""
    k: int = 256
    """Labeled transitions (the only true actions used by the learned agents)."""
    eval_episodes: int = 200
    """Episodes per agent on unseen levels (each agent plays the same levels)."""
    seed: int = 0
    """Seeds the labeled-subset draw, evaluation levels, and LAM/policy training (it overrides the
    ``seed`` of ``lam_train``, ``policy_train`` and ``bc_train``; the video has ``collect.seed``)."""
    collect: CollectConfig = field(default_factory=lambda: CollectConfig(out=Path("dataset"), num_frames=100_000))
    """Video collection (``out`` is relative to run_dir)."""
    lam: LAMConfig = field(default_factory=LAMConfig)
    """Latent action model architecture."""
    lam_train: LAMTrainConfig = field(default_factory=LAMTrainConfig)
    """Latent action model training."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """Policy network (latent policy and BC baseline share it; out_dim is set per use)."""
    policy_train: PolicyTrainConfig = field(default_factory=PolicyTrainConfig)
    """Latent behaviour cloning."""
    bc_train: PolicyTrainConfig = field(default_factory=lambda: PolicyTrainConfig(steps=K_LABEL_STEPS["bc"]))
    """BC on the k labeled transitions (baseline; the frozen budget of :data:`lapo.baselines.K_LABEL_STEPS`,
    the benchmark's too)."""
    head: ActionHeadConfig = field(default_factory=ActionHeadConfig)
    """k-shot action head (latent_dim is taken from the LAM)."""
    compare_idm_head: bool = True
    """Also evaluate a head fitted on IDM latents (LAPO's decoder input) as an extra table row."""
    compare_tuned: bool = False
    """Also evaluate the agent fine-tuned end to end on the same k labels with BC on k's recipe
    (``bc_train``; :func:`lapo.stages.tune_agent`, the benchmark's ``ours_tuned``) as an extra row."""
    overwrite: bool = False
    """Reuse nothing: re-collect and retrain from scratch even if run_dir holds outputs made with
    the same settings (by default each stage reuses those, and interrupted training resumes)."""
    threads: int = 0
    """torch CPU threads for every stage (0 = torch's default, all cores)."""

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.eval_episodes < 2:
            raise ValueError(f"eval_episodes must be >= 2 for a confidence interval, got {self.eval_episodes}")


def run_quickstart(cfg: QuickstartConfig) -> dict:
    """Run the pipeline; returns the results dict also written to ``run_dir/results.json``.

    Composes the stages of :mod:`lapo.stages`; each reuses its output in ``run_dir`` when that was
    made with the same settings and inputs (``overwrite`` recomputes everything), and an
    interrupted LAM or latent-BC training resumes where it stopped.
    """
    import dataclasses

    import torch

    from envs.demonstrator import Demonstrator, shipped_demonstrator
    from envs.io import atomic_write_text
    from lapo import stages
    from lapo.evaluate import random_act, save_gif
    from lapo.stats import normalized_return
    from lapo.training import set_threads, summary_writer

    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    reuse = not cfg.overwrite
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def lap(name: str):
        nonlocal t0
        now = time.perf_counter()
        timings[name] = round(now - t0, 1)
        t0 = now

    set_threads(cfg.threads)
    env_name = cfg.collect.env_name
    demo_dir = cfg.collect.demonstrator or shipped_demonstrator(env_name)
    # --- collect ---
    ds = stages.collect(dataclasses.replace(cfg.collect, out=run / cfg.collect.out, demonstrator=demo_dir), reuse)
    lap("collect")
    # --- train LAM (frames only) ---
    lam_dir = run / "lam"
    _, lam_metrics = stages.train_lam(ds, lam_dir, cfg.lam, dataclasses.replace(cfg.lam_train, seed=cfg.seed),
                                      run / "tb" / "lam", reuse)
    lap("train_lam")
    # --- label ---
    labels = stages.label(lam_dir, ds, run / "labels", reuse, cfg.lam_train.device)
    lap("label")
    # --- latent behaviour cloning ---
    writer = summary_writer(run / "tb" / "policy")
    policy = stages.latent_bc(ds, labels, run / "policy", cfg.policy, dataclasses.replace(cfg.policy_train, seed=cfg.seed),
                              writer=writer, reuse=reuse)
    lap("latent_bc")
    # --- k-shot head: the only true actions the learned agents see ---
    subset = ds.labeled_subset(cfg.k, cfg.seed)
    agent = stages.fit_head(policy, ds, labels, subset, cfg.head, "policy", cfg.seed, out=run / "agent")
    idm_agent = stages.fit_head(policy, ds, labels, subset, cfg.head, "idm", cfg.seed)
    lap("fit_head")
    # --- baseline: BC on the same k labeled transitions ---
    bc = stages.behaviour_cloning(ds, subset.indices, subset.actions, agent.coding, cfg.policy,
                                  dataclasses.replace(cfg.bc_train, seed=cfg.seed), run / "bc_k", writer, "bc_k",
                                  reuse)
    lap("bc_k")
    tuned = None
    if cfg.compare_tuned:  # seconds: BC on k's steps, from the latent agent instead of from scratch
        tuned = stages.tune_agent(agent, ds, subset, dataclasses.replace(cfg.bc_train, seed=cfg.seed), writer, "tuned")
        lap("tune")
    if writer:
        writer.close()
    # --- evaluate on unseen levels, every agent on the same levels ---
    demo = Demonstrator.from_pretrained(demo_dir)
    ev = dict(env_name=env_name, episodes=cfg.eval_episodes, distribution_mode=cfg.collect.distribution_mode,
              seed=cfg.seed)

    def evaluate(act, **kw):
        torch.manual_seed(cfg.seed)  # each agent's action sampling starts from the same seed, so no
        return stages.evaluate(act, **ev, **kw)  # row's number depends on the rows evaluated before it
    ours = f"latent policy + k-shot head (k={cfg.k})"
    results = {
        "random": evaluate(random_act(agent.coding.space, cfg.seed), desc="eval random"),
        "demonstrator": evaluate(demo.act, desc="eval demonstrator"),
        f"BC on k={cfg.k} labels": evaluate(bc.act, desc="eval bc"),
        ours: evaluate(agent.act, record=True, desc="eval ours"),
    }
    if cfg.compare_idm_head:
        results[f"latent policy + k-shot head on IDM latents (k={cfg.k})"] = evaluate(
            idm_agent.act, desc="eval ours (IDM-latent head)")
    if tuned is not None:
        results[f"ours, then the whole agent BC-tuned on the k={cfg.k} labels"] = evaluate(tuned.act, desc="eval ours tuned")
    lap("evaluate")
    r_rand, r_demo = results["random"].mean, results["demonstrator"].mean
    table = [{"method": name, **res.summary(), "normalized_return": normalized_return(res.mean, r_rand, r_demo)}
             for name, res in results.items()]
    writer = summary_writer(run / "tb" / "eval")
    for row in table:
        slug = "".join(c if c.isalnum() else "_" for c in row["method"]).strip("_")
        writer.add_scalar(f"eval/{slug}/mean_return", row["mean_return"], 0)
        writer.add_scalar(f"eval/{slug}/normalized_return", row["normalized_return"], 0)
    writer.close()
    gif = save_gif(results[ours].frames, run / "agent.gif")
    out = {
        "env_name": env_name, "k": cfg.k, "table": table,
        "checkpoints": {"lam": str(lam_dir), "policy": str(run / "policy"), "agent": str(run / "agent"),
                        "bc_k": str(run / "bc_k"), "demonstrator": str(demo_dir)},
        "dataset": {"path": str(ds.path), "frames": len(ds), "episodes": ds.num_episodes},
        "lam_val": lam_metrics, "timings_s": {**timings, "total": round(sum(timings.values()), 1)},
        "eval_levels": {"level_seeds": results["random"].level_seeds.tolist(),
                        "same_levels_for_every_agent": all(
                            np.array_equal(r.level_seeds, results["random"].level_seeds) for r in results.values())},
        "gif": str(gif), "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)),
    }
    atomic_write_text(run / "results.json", json.dumps(out, indent=2))
    print(format_table(table))
    return out


def format_table(table: list[dict]) -> str:
    """Markdown table of evaluation rows (95% CI: stratified bootstrap, :mod:`lapo.stats`)."""
    lines = ["| method | mean return | 95% CI | normalized return | episodes |", "|---|---|---|---|---|"]
    for row in table:
        lo, hi = row["ci95"]
        lines.append(f"| {row['method']} | {row['mean_return']:.2f} | [{lo:.2f}, {hi:.2f}] | "
                     f"{row['normalized_return']:.2f} | {row['episodes']} |")
    return "\n".join(lines)
