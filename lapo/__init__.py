"""Latent action policies: learn from action-free video, act with a k-shot action head.

Pipeline (LAPO, Schmidt & Jiang, ICLR 2024): :func:`train_lam` (IDM + FSQ/VQ + FDM on frames only)
-> :func:`label_dataset` -> :func:`train_policy` (latent BC) -> :func:`fit_action_head` on k labeled
transitions -> :class:`Agent` -> :func:`evaluate` on unseen levels.
"""

from lapo.agent import Agent
from lapo.decoder import ActionHead, ActionHeadConfig, fit_action_head, policy_latents
from lapo.evaluate import evaluate, normalized_return
from lapo.label import Labels, label_dataset
from lapo.lam import LAMConfig, LAMTrainConfig, LatentActionModel, load_lam, train_lam
from lapo.policy import Policy, PolicyConfig, PolicyTrainConfig, train_policy

__all__ = [
    "Agent", "ActionHead", "ActionHeadConfig", "fit_action_head", "policy_latents", "evaluate",
    "normalized_return", "Labels", "label_dataset", "LAMConfig", "LAMTrainConfig", "LatentActionModel",
    "load_lam", "train_lam", "Policy", "PolicyConfig", "PolicyTrainConfig", "train_policy",
]
