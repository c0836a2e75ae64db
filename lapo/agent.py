"""Deployable agent: a one-frame policy plus, for latent policies, the k-shot action head.

``Agent.act(obs)`` maps ``(N, 64, 64, 3)`` uint8 frames to ``(N,)`` int64 actions. A latent agent
computes ``head(π(o_t))`` (LAPO §3.3); a BC agent's policy outputs action logits directly. Actions
are sampled from the softmax (Procgen policies get stuck when acting greedily) unless
``deterministic``. Saved as ``config.json`` + ``model.safetensors``; ``from_pretrained(dir)``
rebuilds it from the config alone.

Dimension keys: N observations, L latent dim, A actions.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from lapo.checkpoint import load_weights, read_config, save_checkpoint
from lapo.decoder import ActionHead, ActionHeadConfig
from lapo.policy import Policy, PolicyConfig


class Agent(nn.Module):
    """``head ∘ policy`` (latent agent) or ``policy`` alone (BC agent, ``head=None``)."""

    def __init__(self, policy: Policy, head: ActionHead | None = None):
        super().__init__()
        self.policy = policy
        self.head = head

    @torch.no_grad()
    def logits(self, obs_NHWC: torch.Tensor) -> torch.Tensor:
        """``(N, H, W, C)`` uint8 -> ``(N, A)`` float action logits."""
        out = self.policy(obs_NHWC)
        return self.head(out) if self.head is not None else out

    @torch.no_grad()
    def act(self, obs_NHWC: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Actions ``(N,)`` int64 for frames ``(N, 64, 64, 3)`` uint8."""
        device = next(self.parameters()).device
        logits = self.logits(torch.as_tensor(np.asarray(obs_NHWC)).to(device))
        if deterministic:
            return logits.argmax(-1).cpu().numpy()
        return torch.distributions.Categorical(logits=logits.float()).sample().cpu().numpy()

    def predict(self, obs_NHWC: np.ndarray, state=None, episode_start=None, deterministic: bool = False):
        """stable-baselines3-style ``predict``: returns ``(actions, None)``."""
        return self.act(obs_NHWC, deterministic), None

    def save_pretrained(self, path: str | os.PathLike, **extra) -> Path:
        """Atomically write ``config.json`` + ``model.safetensors`` (``extra`` goes into the config)."""
        config = {"policy": self.policy.cfg, "head": self.head.cfg if self.head is not None else None}
        return save_checkpoint(path, "agent", config, self, **extra)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str = "cpu") -> "Agent":
        """Rebuild from ``config.json`` and load the weights.

        Raises:
            FileNotFoundError: missing files; ValueError: not an agent checkpoint or mismatched weights.
        """
        config = read_config(path, "agent")["config"]
        head = ActionHead(ActionHeadConfig(**config["head"])) if config["head"] else None
        agent = cls(Policy(PolicyConfig(**config["policy"])), head)
        return load_weights(path, agent).to(device).eval()
