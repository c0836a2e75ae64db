"""Dreaming: a latent policy acts inside the world model (``lapo wm dream``; Genie 2's use case).

The policy sees each generated frame and outputs its latent action; that action conditions the
next generated frame. The policy's latents (of the main job's LAM, or of any LAM) are mapped to the
world model's latent actions by an :class:`lapo.agent.Agent` head — the same k-shot head machinery,
here fitted on ``map_transitions`` transitions of the world model's training video, with the world
model's LAM codes as targets (they are free: the LAM labels any video). A latent policy trained
on the world model's own labels (``lapo train-policy --labels RUN/labels``) goes through the same
mapping.

Measured (:func:`worldmodel.evaluate.action_recovery`): how often the world model's LAM, run on the
generated transitions, recovers the action that conditioned them, for the policy and two baselines
from the same prompt and token seeds: random actions drawn by code frequency in the video, and
random actions drawn by the agent's own action frequencies (so a gap is not only *which* actions the
agent favours but *when* it takes them); the agent's paired differences to both with bootstrap CIs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch


def load_latent_policy(path):
    """The latent policy of an agent (``fit-head`` output) or a policy (``train-policy`` output).

    Raises:
        FileNotFoundError / ValueError: ``path`` is neither.
    """
    from lapo.agent import Agent
    from lapo.policy import Policy

    meta = json.loads((Path(path) / "config.json").read_text()) if (Path(path) / "config.json").is_file() else {}
    if meta.get("kind") == "agent":
        agent = Agent.from_pretrained(path)
        if agent.head is None:
            raise ValueError(f"{path} is a BC agent (no latent policy); pass a latent policy or a latent agent")
        return agent.policy
    if meta.get("kind") == "policy":
        return Policy.from_pretrained(path)
    raise FileNotFoundError(f"{path} is not a latent policy or agent checkpoint (config.json kind 'policy' or "
                            "'agent'); train one with `lapo train-policy` or `lapo quickstart`")


def fit_action_mapping(policy, wm, ds, transitions: int, seed: int = 0):
    """``Agent(policy, head)`` whose actions are the world model's latent actions: the head maps the
    policy's latents of ``o_t`` to the LAM's code of ``o_t → o_{t+1}`` on ``transitions`` seeded
    transitions of ``ds``. Returns ``(agent, code frequencies (A,))``."""
    from lapo.agent import Agent
    from lapo.decoder import ActionHeadConfig, fit_action_head
    from worldmodel.model import flatten_codes

    rng = np.random.default_rng(seed)
    t = np.sort(rng.choice(ds.transition_indices, min(transitions, len(ds.transition_indices)), replace=False))
    latents, codes = [], []
    with torch.no_grad():
        for i in range(0, len(t), 512):
            windows = torch.from_numpy(ds.idm_window(t[i:i + 512])).to(wm.device)
            codes.append(flatten_codes(wm.lam.encode(windows).codes, wm.lam.quantizer.num_codes).cpu().numpy())
            latents.append(policy(windows[:, 1]).float().cpu().numpy())
    latents, codes = np.concatenate(latents), np.concatenate(codes)
    space = {"type": "Discrete", "n": wm.num_actions}
    head = fit_action_head(latents, codes, dataclasses.replace(ActionHeadConfig(), latent_dim=latents.shape[1]),
                           space, seed)
    return Agent(policy, head), np.bincount(codes, minlength=wm.num_actions) / len(codes)


def run_dream(args) -> dict:
    """``lapo wm dream`` (args: :class:`scripts.wm.DreamArgs`). Writes ``out/results.json``,
    ``out/dream.gif`` and ``out/dream.mp4`` (first episode); returns the results.

    Raises:
        ValueError: the world model has no LAM, or no training video is known for the mapping.
    """
    from envs.dataset import EpisodeDataset
    from envs.io import atomic_write_text
    from lapo.stats import bootstrap_ci
    from worldmodel.evaluate import action_recovery
    from worldmodel.model import load_prompt, resolve_world_model, shipped_world_model, write_clip

    wm = resolve_world_model(args.world_model)
    if wm.lam is None:
        raise ValueError("this world model has no lam/ checkpoint; dreaming measures action recovery with it: "
                         "use a `lapo wm train` run directory")
    video = args.dataset or wm.meta.get("dataset")
    if video is None:
        raise ValueError("no training video for the latent-action mapping: pass --dataset (the world model's video)")
    ds = EpisodeDataset(video)
    policy = load_latent_policy(args.agent).to(wm.device)
    agent, probs = fit_action_mapping(policy, wm, ds, args.map_transitions, args.sample.seed)
    prompt = load_prompt(args.prompt or Path(args.world_model or shipped_world_model()) / "prompt.png",
                         wm.image_size, args.mode)
    s = args.sample
    wm.choose_precision(s.precision, s.steps)
    A = wm.num_actions
    rng = np.random.default_rng(s.seed)

    def play(choose) -> list[dict]:  # episode e starts from the prompt with token seed s.seed + e in every run
        return [action_recovery(wm, prompt, choose, args.length, s.steps, s.temperature, s.cfg_scale, s.seed + e)
                for e in range(args.episodes)]

    runs = {"agent": play(lambda f: int(agent.act(f[None], args.deterministic)[0]))}
    agent_probs = np.bincount(np.concatenate([r["actions"] for r in runs["agent"]]), minlength=A).astype(float)
    agent_probs /= agent_probs.sum()
    runs["random"] = play(lambda f: int(rng.choice(A, p=probs)))
    runs["random_agent_frequencies"] = play(lambda f: int(rng.choice(A, p=agent_probs)))
    accs = {name: np.array([r["accuracy"] for r in eps]) for name, eps in runs.items()}
    summary, versus = {}, {}
    for name, acc in accs.items():
        summary[name] = {"action_recovery": float(acc.mean()), "ci95": list(bootstrap_ci([acc])), "episodes": len(acc)}
        if name != "agent":  # paired by episode: same prompt and token seed
            diff = accs["agent"] - acc
            versus[name] = {"difference": float(diff.mean()), "ci95": list(bootstrap_ci([diff]))}
    taken = np.concatenate([r["actions"] for r in runs["random"]])
    recovered = np.concatenate([r["recovered"] for r in runs["random"]])
    per_action = [float(np.mean(recovered[taken == a] == a)) if (taken == a).any() else None for a in range(A)]
    out = Path(args.out)
    gif = write_clip(runs["agent"][0]["frames"], out / "dream", 10, 4)
    result = {"action_recovery": summary, "agent_minus": versus, "chance": float((probs ** 2).sum()),
              "recovery_per_action_random": per_action, "video_action_frequencies": probs.tolist(),
              "agent_action_frequencies": agent_probs.tolist(), "length": args.length,
              "sample": {**dataclasses.asdict(s), "precision": wm.precision}, "agent": str(args.agent),
              "mapping_transitions": args.map_transitions, "deterministic": args.deterministic,
              "per_episode": {name: acc.tolist() for name, acc in accs.items()}, "files": [str(p) for p in gif]}
    atomic_write_text(out / "results.json", json.dumps(result, indent=2))
    return result
