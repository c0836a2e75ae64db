"""``lapo evaluate``: returns of an agent (or random / a demonstrator) on unseen Procgen levels, or
success rates on unseen Meta-World layouts.

    lapo evaluate --agent runs/agent --episodes 200
    lapo evaluate --agent runs/mw_agent --env-name drawer-open-v3 --episodes 50   # Meta-World task
"""

from __future__ import annotations

import json

import numpy as np
from dataclasses import dataclass
from pathlib import Path

import tyro

from envs.demonstrator import Demonstrator
from envs.metaworld import DEFAULT_CAMERA
from lapo.agent import Agent
from lapo.evaluate import evaluate, random_act


@dataclass
class Args:
    agent: str
    """Agent directory, a demonstrator directory, or ``random``."""
    env_name: str = "coinrun"
    """Procgen game, or a Meta-World task (``*-v3``; camera and frame size from the agent's video)."""
    episodes: int = 200
    """Episodes (one per parallel env, on the evaluation level range)."""
    seed: int = 0
    """Level-draw and action-sampling seed: the same seed gives every agent the same levels, and the
    same agent the same episodes (as in ``lapo benchmark``, which seeds torch with it too)."""
    deterministic: bool = False
    """Greedy actions instead of sampling."""
    camera: str = DEFAULT_CAMERA
    """Meta-World only: camera (as in the agent's training video)."""
    size: int = 64
    """Meta-World only: frame size (as in the agent's training video)."""
    max_steps: int = 150
    """Meta-World only: episode step limit."""


def main(args: Args) -> dict:
    import gymnasium as gym
    import torch

    metaworld = args.env_name.endswith("-v3")
    if metaworld:
        from envs.metaworld import ACTION_DIM, check_task

        check_task(args.env_name)
        space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
    else:
        from envs.procgen import N_ACTIONS, check_game

        check_game(args.env_name)
        space = gym.spaces.Discrete(N_ACTIONS)
    env_kwargs = dict(camera=args.camera, size=args.size, max_steps=args.max_steps) if metaworld else {}
    if args.agent == "random":
        act = random_act(space, seed=args.seed)
    else:
        kind = read_config_kind(args.agent)
        model = (Demonstrator if kind == "demonstrator" else Agent).from_pretrained(args.agent)
        if isinstance(model, Agent):
            model.coding.require(space, args.env_name)
        act = lambda obs: model.act(obs, args.deterministic)  # noqa: E731
    torch.manual_seed(args.seed)  # sampled actions (agents, demonstrators) repeat for the same seed
    if metaworld:
        from lapo.evaluate import evaluate_metaworld

        res = evaluate_metaworld(act, [args.env_name], args.episodes, layout_start=None, **env_kwargs)[args.env_name]
    else:
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
