"""``lapo evaluate``: returns of an agent (or random / a demonstrator) on unseen Procgen levels.

    lapo evaluate --agent runs/agent --episodes 200
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import tyro

from envs.demonstrator import Demonstrator
from lapo.agent import Agent
from lapo.evaluate import evaluate, random_act


@dataclass
class Args:
    agent: str
    """Agent directory, a demonstrator directory, or ``random``."""
    env_name: str = "coinrun"
    """Procgen game."""
    episodes: int = 200
    """Episodes (one per parallel env, on the evaluation level range)."""
    seed: int = 0
    """Level-draw seed: the same seed gives every agent the same levels."""
    deterministic: bool = False
    """Greedy actions instead of sampling."""


def main(args: Args) -> dict:
    if args.agent == "random":
        from envs.procgen import N_ACTIONS

        act = random_act({"type": "Discrete", "n": N_ACTIONS}, seed=args.seed)
    else:
        kind = read_config_kind(args.agent)
        model = (Demonstrator if kind == "demonstrator" else Agent).from_pretrained(args.agent)
        act = lambda obs: model.act(obs, args.deterministic)  # noqa: E731
    res = evaluate(act, args.env_name, args.episodes, seed=args.seed)
    print(json.dumps(res.summary(), indent=2))
    return res.summary()


def read_config_kind(path: str) -> str:
    """The ``kind`` in a checkpoint's config.json. Raises ``FileNotFoundError`` naming the path."""
    config = Path(path) / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config} not found: --agent must be an agent or demonstrator directory, or 'random'")
    return json.loads(config.read_text()).get("kind", "")


if __name__ == "__main__":
    main(tyro.cli(Args))
