"""Deployable agent: a one-frame policy plus, for latent policies, the k-shot action head.

``Agent.act(obs)`` maps ``(N, H, W, 3)`` uint8 frames to actions of the agent's action space:
``(N,)`` int64 for ``Discrete``, ``(N, D)`` float32 within the bounds for ``Box``. A latent agent
computes ``head(π(o_t))`` (LAPO §3.3); a BC agent's policy outputs action logits (or values)
directly. :class:`lapo.decoder.ActionCoding` turns outputs into actions; they are sampled
(Procgen policies get stuck when acting greedily) unless ``deterministic``. Saved as
``config.json`` + ``model.safetensors`` (kind ``agent``); ``from_pretrained(dir, device=...)``
rebuilds it from the config alone. Every part of an agent lives on one device.

Dimension keys: N observations, L latent dim, A outputs, D action dims.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from envs.pretrained import Pretrained
from lapo.decoder import ActionCoding, ActionHead, ActionHeadConfig, legacy_head_config
from lapo.policy import Policy, PolicyConfig


class Agent(Pretrained, nn.Module):
    """``head ∘ policy`` (latent agent) or ``policy`` alone (BC agent, ``head=None``, then
    ``coding`` says how its outputs are actions). The head is moved to the policy's device."""

    kind = "agent"

    def __init__(self, policy: Policy, head: ActionHead | None = None, coding: ActionCoding | None = None):
        super().__init__()
        if head is None and coding is None:
            raise ValueError("an agent without a head needs the ActionCoding of its policy's outputs")
        self.policy = policy
        self.head = head.to(next(policy.parameters()).device) if head is not None else None
        self.coding = head.coding if head is not None else coding

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, obs_NHWC: torch.Tensor) -> torch.Tensor:
        """``(N, H, W, C)`` uint8 on the agent's device -> ``(N, A)`` float action outputs (logits,
        bin logits or values), differentiable through head and policy (used to fine-tune the agent)."""
        out = self.policy(obs_NHWC)
        return self.head(out) if self.head is not None else out

    @torch.no_grad()
    def logits(self, obs_NHWC: torch.Tensor) -> torch.Tensor:
        """``(N, H, W, C)`` uint8 -> ``(N, A)`` float action outputs, without gradients."""
        return self(obs_NHWC.to(self.device))

    @torch.no_grad()
    def act(self, obs_NHWC: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Actions for frames ``(N, H, W, 3)`` uint8: ``(N,)`` int64 or ``(N, D)`` float32.

        Raises:
            ValueError: frames of another shape or dtype (e.g. channels-first, or floats in [0, 1]).
        """
        obs = np.asarray(obs_NHWC)
        size = self.policy.cfg.image_size
        if obs.dtype != np.uint8 or obs.shape[1:] != (size, size, 3):
            raise ValueError(f"Agent.act takes (N, {size}, {size}, 3) uint8 frames, got {obs.shape} {obs.dtype}; "
                             "pass channels-last pixels in [0, 255]")
        obs = torch.from_numpy(obs.copy())  # a copy: frames may be a read-only memmap
        return self.coding.decode(self.logits(obs), deterministic)

    def predict(self, obs_NHWC: np.ndarray, state=None, episode_start=None, deterministic: bool = False):
        """stable-baselines3-style ``predict``: returns ``(actions, None)``."""
        return self.act(obs_NHWC, deterministic), None

    def to_config(self) -> dict:
        return {"policy": self.policy.cfg, "head": self.head.cfg if self.head is not None else None,
                "coding": self.coding}

    @classmethod
    def from_config(cls, config: dict) -> "Agent":
        policy = Policy(PolicyConfig(**config["policy"]))
        if "coding" not in config:  # written before action spaces: head has n_actions, BC has 15 logits
            if config["head"] is None:
                return cls(policy, coding=ActionCoding({"type": "Discrete", "n": policy.cfg.out_dim}))
            head_cfg, space = legacy_head_config(config["head"])
            head_cfg = ActionHeadConfig(**head_cfg)
            return cls(policy, ActionHead(head_cfg, head_cfg.coding(space)))
        coding = ActionCoding(**config["coding"])
        head = ActionHead(ActionHeadConfig(**config["head"]), coding) if config["head"] else None
        return cls(policy, head, coding)
