"""The main job, end to end: action-free video -> LAM -> labels -> latent policy -> k-shot head.

``run_quickstart`` chains collect → train LAM → label → latent BC → k-shot head → evaluate, and
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
from envs.procgen import EVAL_NUM_LEVELS, EVAL_START_LEVEL
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
    bc_train: PolicyTrainConfig = field(default_factory=lambda: PolicyTrainConfig(steps=1500))
    """BC on the k labeled transitions (baseline)."""
    head: ActionHeadConfig = field(default_factory=ActionHeadConfig)
    """k-shot action head (latent_dim is taken from the LAM)."""
    compare_idm_head: bool = True
    """Also evaluate a head fitted on IDM latents (LAPO's decoder input) as an extra table row."""
    overwrite: bool = False
    """Reuse nothing: re-collect and retrain even if run_dir holds earlier outputs."""
    threads: int = 0
    """torch CPU threads for every stage (0 = torch's default, all cores)."""

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.eval_episodes < 2:
            raise ValueError(f"eval_episodes must be >= 2 for a confidence interval, got {self.eval_episodes}")


def run_quickstart(cfg: QuickstartConfig) -> dict:
    """Run the pipeline; returns the results dict also written to ``run_dir/results.json``.

    An existing dataset in ``run_dir`` is reused when it was collected with the same collect
    config (and ``overwrite`` is off); every other stage always reruns.
    """
    import dataclasses

    import torch

    from envs.collect import collect
    from envs.dataset import EpisodeDataset
    from envs.demonstrator import Demonstrator, shipped_demonstrator
    from lapo.agent import Agent
    from lapo.checkpoint import save_checkpoint
    from lapo.decoder import fit_action_head, head_latents
    from lapo.evaluate import evaluate, normalized_return, random_act, save_gif
    from lapo.io import atomic_write_text
    from lapo.label import Labels, label_dataset
    from lapo.lam import train_lam
    from lapo.policy import train_policy
    from lapo.training import set_threads, summary_writer

    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def lap(name: str):
        nonlocal t0
        now = time.perf_counter()
        timings[name] = round(now - t0, 1)
        t0 = now

    set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    env_name = cfg.collect.env_name
    demo_dir = cfg.collect.demonstrator or shipped_demonstrator(env_name)
    # --- collect ---
    data_dir = run / cfg.collect.out
    collect_cfg = dataclasses.replace(cfg.collect, out=data_dir, demonstrator=demo_dir, overwrite=True)
    if cfg.overwrite or not same_collection(data_dir, collect_cfg):
        collect(collect_cfg)
    ds = EpisodeDataset(data_dir)
    lap("collect")
    # --- train LAM (frames only) ---
    lam_dir = run / "lam"
    _, lam_metrics = train_lam(data_dir, lam_dir, cfg.lam, dataclasses.replace(cfg.lam_train, seed=cfg.seed),
                               log_dir=run / "tb" / "lam")
    lap("train_lam")
    # --- label ---
    labels = Labels(label_dataset(lam_dir, data_dir, run / "labels", overwrite=True))
    lap("label")
    # --- latent behaviour cloning ---
    writer = summary_writer(run / "tb" / "policy")
    t_all = np.flatnonzero(labels.valid)
    latent_cfg = dataclasses.replace(cfg.policy, out_dim=cfg.lam.latent_dim)
    policy = train_policy(ds.frames, t_all, np.asarray(labels.latents[t_all]), latent_cfg,
                          dataclasses.replace(cfg.policy_train, seed=cfg.seed), loss="mse", writer=writer,
                          tag="latent_policy")
    policy_dir = save_checkpoint(run / "policy", "policy", latent_cfg, policy, lam=str(lam_dir))
    lap("latent_bc")
    # --- k-shot head: the only true actions the learned agents see ---
    subset = ds.labeled_subset(cfg.k, cfg.seed)
    n_actions = int(ds.meta.get("n_actions", 15))
    head_cfg = dataclasses.replace(cfg.head, latent_dim=cfg.lam.latent_dim, n_actions=n_actions)
    agent = Agent(policy, fit_action_head(head_latents("policy", policy, ds.frames, labels.latents, subset.indices),
                                          subset.actions, head_cfg, cfg.seed))
    agent_dir = agent.save_pretrained(run / "agent", k=cfg.k, labeled_indices_seed=cfg.seed, lam=str(lam_dir),
                                      head_input="policy")
    idm_agent = Agent(policy, fit_action_head(head_latents("idm", policy, ds.frames, labels.latents, subset.indices),
                                              subset.actions, head_cfg, cfg.seed))
    lap("fit_head")
    # --- baseline: BC on the same k labeled transitions ---
    bc_cfg = dataclasses.replace(cfg.policy, out_dim=n_actions)
    bc = Agent(train_policy(ds.frames, subset.indices, subset.actions, bc_cfg,
                            dataclasses.replace(cfg.bc_train, seed=cfg.seed), loss="ce",
                            writer=writer, tag="bc_k"))
    bc_dir = bc.save_pretrained(run / "bc_k", k=cfg.k)
    writer.close()
    lap("bc_k")
    # --- evaluate on unseen levels, every agent on the same levels ---
    demo = Demonstrator.from_pretrained(demo_dir)
    ev = dict(env_name=env_name, num_episodes=cfg.eval_episodes,
              distribution_mode=cfg.collect.distribution_mode, seed=cfg.seed)
    results = {
        "random": evaluate(random_act(n_actions, cfg.seed), desc="eval random", **ev),
        "demonstrator": evaluate(demo.act, desc="eval demonstrator", **ev),
        f"BC on k={cfg.k} labels": evaluate(bc.act, desc="eval bc", **ev),
        f"latent policy + k-shot head (k={cfg.k})": evaluate(agent.act, record=True, desc="eval ours", **ev),
    }
    if cfg.compare_idm_head:
        results[f"latent policy + k-shot head on IDM latents (k={cfg.k})"] = evaluate(
            idm_agent.act, desc="eval ours (IDM-latent head)", **ev)
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
    gif = save_gif(results[f"latent policy + k-shot head (k={cfg.k})"].frames, run / "agent.gif")
    out = {
        "env_name": env_name, "k": cfg.k, "table": table,
        "checkpoints": {"lam": str(lam_dir), "policy": str(policy_dir), "agent": str(agent_dir),
                        "bc_k": str(bc_dir), "demonstrator": str(demo_dir)},
        "dataset": {"path": str(data_dir), "frames": len(ds), "episodes": ds.num_episodes},
        "lam_val": lam_metrics, "timings_s": {**timings, "total": round(sum(timings.values()), 1)},
        "eval_levels": {"range": [EVAL_START_LEVEL, EVAL_START_LEVEL + EVAL_NUM_LEVELS],
                        "level_seeds": results["random"].level_seeds.tolist(),
                        "same_levels_for_every_agent": all(
                            np.array_equal(r.level_seeds, results["random"].level_seeds) for r in results.values())},
        "gif": str(gif), "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)),
    }
    atomic_write_text(run / "results.json", json.dumps(out, indent=2))
    print(format_table(table))
    return out


def same_collection(data_dir: Path, cfg: CollectConfig) -> bool:
    """True if ``data_dir`` holds a dataset collected with ``cfg`` (its meta.json records the config)."""
    from envs.collect import collect_record

    meta = data_dir / "meta.json"
    return meta.is_file() and json.loads(meta.read_text()).get("collect_config") == collect_record(cfg)


def format_table(table: list[dict]) -> str:
    """Markdown table of evaluation rows."""
    lines = ["| method | mean return | 95% CI | normalized return | episodes |", "|---|---|---|---|---|"]
    for row in table:
        lines.append(f"| {row['method']} | {row['mean_return']:.2f} | ± {row['ci95']:.2f} | "
                     f"{row['normalized_return']:.2f} | {row['episodes']} |")
    return "\n".join(lines)
