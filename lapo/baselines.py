"""The inverse-dynamics baseline: a supervised IDM trained on k labeled transitions labels the
video with real actions, then BC learns from those pseudo-labels.

This is VPT's recipe (Baker et al. 2022, §2: IDM on a small labeled set -> pseudo-label the
unlabeled video -> behaviour cloning) and BCO(0) (Torabi et al. 2018) without its online phase.
The IDM is the LAM's IDM network (same encoder over ``(o_{t-1}, o_t, o_{t+1})``) with a softmax over
real actions instead of the latent bottleneck, so the two methods differ in the objective, not
the network. Pseudo-labels are the IDM's most likely actions (argmax, or bin centres / regressed
values for continuous actions).

Dimension keys: B batch, T=3 window frames, H W C image, A actions.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from envs.pretrained import Pretrained

K_LABEL_STEPS = {"bc": 250, "idm": 250, "head": 500}
"""The model-selection rule every method trained on the k labels shares, in the quickstart and the
benchmark: a fixed number of optimizer steps, tuned once on a development game (CoinRun, k = 64 and
256, development levels [2M, 2.1M) that no evaluation touches) and then frozen —
``python -m scripts.tune_baselines`` (``docs/tune_baselines.json``): BC on k labels 250 steps
(dev return 6.3 vs 4.8 / 2.8 / 2.6 at 500 / 1500 / 3000), the supervised IDM 250 (held-out accuracy
0.233 vs 0.214 / 0.198 at 500 / 1500), the k-shot head of ours 500 (6.95 vs 6.8 / 4.0 at 100 /
2000; :class:`lapo.decoder.ActionHeadConfig`'s default)."""
from lapo.nets import build_encoder, to_float
from lapo.policy import PolicyConfig


class SupervisedIDM(Pretrained, nn.Module):
    """``(B, 3, H, W, C)`` uint8 windows ``(o_{t-1}, o_t, o_{t+1})`` -> ``(B, A)`` action outputs
    (:class:`lapo.decoder.ActionCoding`). ``cfg`` is a policy config read for 9 input channels,
    ``out_dim`` = A (the benchmark copies the LAM's IDM sizes into it)."""

    kind = "supervised_idm"
    config_class = PolicyConfig

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.cfg = cfg
        self.net = build_encoder(cfg.encoder, 9, cfg.image_size, cfg.channels, cfg.hidden, cfg.out_dim)

    def forward(self, window_B3HWC: torch.Tensor) -> torch.Tensor:
        return self.net(to_float(window_B3HWC))


def train_supervised_idm(ds, indices: np.ndarray, actions: np.ndarray, cfg: PolicyConfig, train_cfg,
                         coding, writer=None) -> SupervisedIDM:
    """Fit a :class:`SupervisedIDM` on labeled transitions (loss of the action coding).

    Args:
        ds: :class:`envs.dataset.EpisodeDataset` (its windows are read, never its actions).
        indices: (k,) transition indices of the labeled subset.
        actions: (k,) int64 or (k, D) float32 true actions of those transitions.
        cfg: network; train_cfg: :class:`lapo.policy.PolicyTrainConfig`; coding: the
            :class:`lapo.decoder.ActionCoding` of the action space.
    """
    from lapo.policy import fit_network
    from lapo.training import build_device

    device = build_device(train_cfg)
    return fit_network(SupervisedIDM(cfg).to(device), ds.idm_window, np.asarray(indices), np.asarray(actions),
                       train_cfg, coding, writer, tag="supervised_idm")


@torch.no_grad()
def pseudo_label(idm: SupervisedIDM, ds, t: np.ndarray, coding, batch_size: int = 512) -> np.ndarray:
    """The IDM's most likely action for each transition ``t``: ``(M,)`` int64 or ``(M, D)`` float32."""
    idm.eval()
    device = next(idm.parameters()).device
    out = [coding.decode(idm(torch.from_numpy(ds.idm_window(t[i:i + batch_size])).to(device)), deterministic=True)
           for i in range(0, len(t), batch_size)]
    return np.concatenate(out)
