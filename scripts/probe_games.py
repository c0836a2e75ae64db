"""Learnability probe: which Procgen games does our PPO recipe learn on this CPU?

    python -m scripts.probe_games --games maze heist jumper fruitbot --steps 300000
    python -m scripts.probe_games --games ninja --recipe lapo-stage3 --steps 250000 500000 750000

For each game it trains (or resumes) the demonstrator run ``runs/expert_<game>`` with the recipe of
``lapo train-expert`` (same config, reward normalization on) up to each of ``--steps`` env steps in
turn, and evaluates the policy there and a uniform-random one on the same unseen levels. ``--recipe lapo-stage3``
trains with LAPO's stage-3 rollout length, minibatches and entropy instead (``LAPO_STAGE3``; runs in
``runs/expert_<game>_lapo-stage3``), ``lapo-stage3-ent0.01`` with those but the Procgen entropy
bonus. The column that decides is the *margin*: ``(R_policy - R_random) / (R_max - R_min)`` with Procgen's easy-mode constants
(Cobbe et al. 2020); a demonstrator ships at a margin >= 0.4. The probe runs are ordinary resumable
demonstrator runs, so a chosen game continues with ``lapo train-expert --env-name <game>
--total-timesteps N --run-dir runs/expert_<game>``. Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import tyro

from envs.demonstrator import LAPO_STAGE3, Demonstrator, TrainExpertConfig, train_demonstrator
from envs.io import atomic_write_text
from envs.procgen import EASY_RETURN_RANGE, check_game
from lapo.evaluate import evaluate, random_act

RECIPES = {"procgen": {}, "lapo-stage3": LAPO_STAGE3, "lapo-stage3-ent0.01": {**LAPO_STAGE3, "ent_coef": 0.01}}
"""PPO values that depart from the demonstrators' (``envs.demonstrator.PPOConfig``), per ``--recipe``."""

SHIP_MARGIN = 0.4
"""A demonstrator ships when it beats random by this fraction of the game's easy-mode range."""


def margin(policy_return: float, random_return: float, env_name: str) -> float:
    """``(R_policy - R_random) / (R_max - R_min)`` with Procgen's easy-mode constants."""
    lo, hi = EASY_RETURN_RANGE[env_name]
    return (policy_return - random_return) / (hi - lo)


@dataclass
class ProbeConfig:
    games: list[str] = field(default_factory=lambda: ["maze", "heist", "jumper", "fruitbot"])
    """Candidate Procgen games."""
    recipe: Literal["procgen", "lapo-stage3", "lapo-stage3-ent0.01"] = "procgen"
    """PPO values (:data:`RECIPES`): ``procgen`` = the demonstrators' (Procgen paper: 256-step rollouts,
    8 × 2048 minibatches, entropy 0.01); ``lapo-stage3`` = those with ``LAPO_STAGE3`` (64 steps,
    8 × 512, entropy 0.0025), the values of ``lapo finetune``; ``lapo-stage3-ent0.01`` = LAPO's
    rollouts and minibatches with the Procgen entropy bonus 0.01."""
    steps: tuple[int, ...] = (300_000,)
    """Env steps per game at which to evaluate, training up to each in turn (a learning curve); a
    run already past a step count is evaluated once where it stands."""
    runs: Path = Path("runs")
    """Parent of the run directories: ``expert_<game>`` (``procgen`` recipe) or
    ``expert_<game>_<recipe>``."""
    episodes: int = 100
    """Unseen-level episodes per agent (random and policy play the same levels)."""
    threads: int = 1
    """torch CPU threads (1 leaves a core for other work)."""
    out: Path = Path("runs/probe_games.json")
    """JSON written here (rewritten after every game)."""

    def __post_init__(self):
        for g in self.games:
            check_game(g)
        self.steps = tuple(sorted(self.steps))
        if not self.steps or self.steps[0] < 1:
            raise ValueError(f"steps must be one or more step counts >= 1, got {self.steps}")


def probe_run_config(cfg: ProbeConfig, game: str) -> TrainExpertConfig:
    """The demonstrator run that probes ``game``: ``cfg.recipe``'s PPO values, its own run directory."""
    run_dir = cfg.runs / (f"expert_{game}" if cfg.recipe == "procgen" else f"expert_{game}_{cfg.recipe}")
    return replace(TrainExpertConfig(), env_name=game, total_timesteps=cfg.steps[-1], run_dir=run_dir,
                   out=run_dir / "demonstrator", threads=cfg.threads, **RECIPES[cfg.recipe])


def main(cfg: ProbeConfig) -> list[dict]:
    rows = []
    for game in cfg.games:
        tcfg, rnd, evaluated = probe_run_config(cfg, game), None, -1
        for n in cfg.steps:
            model = train_demonstrator(replace(tcfg, total_timesteps=n))
            if model.num_timesteps == evaluated:
                continue  # the run was already past n
            evaluated = model.num_timesteps
            train_returns = [ep["r"] for ep in model.ep_info_buffer]
            pol = evaluate(Demonstrator.from_sb3(model, tcfg).act, game, cfg.episodes, desc=f"{game} policy")
            if rnd is None:  # once per game: the same levels at every step count
                rnd = evaluate(random_act(model.action_space), game, cfg.episodes, desc=f"{game} random")
            m = margin(pol.mean, rnd.mean, game)
            rows.append({"game": game, "recipe": cfg.recipe, "env_steps": int(model.num_timesteps),
                         "policy_return": pol.mean, "policy_ci95": list(pol.ci95), "random_return": rnd.mean,
                         "random_ci95": list(rnd.ci95),
                         "train_return_last100": float(np.mean(train_returns)) if train_returns else None,
                         "margin": m, "ships": bool(m >= SHIP_MARGIN), "easy_range": list(EASY_RETURN_RANGE[game])})
            atomic_write_text(cfg.out, json.dumps(rows, indent=2))
    print(f"\n| game | env steps | policy, unseen | random, same levels | margin (ship >= {SHIP_MARGIN}) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['game']} | {r['env_steps']:,} | {r['policy_return']:.2f} | {r['random_return']:.2f} "
              f"| {r['margin']:.2f} |")
    return rows


if __name__ == "__main__":
    main(tyro.cli(ProbeConfig))
