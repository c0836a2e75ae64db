"""Latent action policies: learn from action-free video, act with a k-shot action head.

Pipeline (LAPO, Schmidt & Jiang, ICLR 2024), one function per stage in :mod:`lapo.stages`:
:func:`train_lam` (IDM + FSQ/VQ + FDM on frames only) -> :func:`label_dataset` ->
:func:`train_policy` (latent BC) -> :func:`fit_action_head` on k labeled transitions ->
:class:`Agent` -> :func:`evaluate` / :func:`rollout`. Every model has ``save_pretrained`` /
``from_pretrained``; every trainer is :func:`lapo.training.fit` (resumable, torchrun-ready).

``import lapo`` imports neither Procgen nor stable-baselines3: they load where they are used.
"""

from lapo.agent import Agent
from lapo.decoder import ActionCoding, ActionHead, ActionHeadConfig, fit_action_head, policy_latents
from lapo.evaluate import EvalResult, evaluate, rollout
from lapo.label import Labels, label_dataset
from lapo.lam import LAMConfig, LAMTrainConfig, LatentActionModel, train_lam
from lapo.policy import Policy, PolicyConfig, PolicyTrainConfig, train_policy
from lapo.stats import bootstrap_ci, normalized_return
from lapo.training import TrainConfig, fit

__all__ = [
    "Agent", "ActionCoding", "ActionHead", "ActionHeadConfig", "fit_action_head", "policy_latents", "EvalResult",
    "evaluate", "rollout", "Labels", "label_dataset", "LAMConfig", "LAMTrainConfig", "LatentActionModel",
    "train_lam", "Policy", "PolicyConfig", "PolicyTrainConfig", "train_policy", "bootstrap_ci",
    "normalized_return", "TrainConfig", "fit",
]
