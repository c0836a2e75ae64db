"""The inverse-dynamics baseline: a supervised IDM trained on k labeled transitions labels the
video with real actions, then BC learns from those pseudo-labels.

This is VPT's recipe (Baker et al. 2022, §2: IDM on a small labeled set -> pseudo-label the
unlabeled video -> behaviour cloning) and BCO(0) (Torabi et al. 2018) without its online phase.
The IDM is the LAM's IDM network (same encoder over ``(o_{t-1}, o_t, o_{t+1})``) with a softmax over
real actions instead of the latent bottleneck, so the two methods differ in the objective, not
the network. Pseudo-labels are the IDM's most likely actions (``argmax``: VPT's rule; bin centres /
regressed values for continuous actions) or one draw from its predicted distribution per
transition (``sample``), which keeps the IDM's uncertainty in the labels: with argmax an IDM that is
unsure between RUN and JUMP labels every such transition RUN, and BC on those labels never jumps.
Which of the two the benchmark uses is frozen like the step budgets (:data:`IDM_PSEUDO_LABELS`).

Dimension keys: B batch, T=3 window frames, H W C image, A actions.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from envs.pretrained import Pretrained

K_LABEL_STEPS = {"bc": 250, "idm": 500, "head": 500}
"""The model-selection rule every method trained on the k labels shares, in the quickstart and the
benchmark: a fixed number of optimizer steps, tuned once on a development game (CoinRun, k = 64 and
256, seed 0, development levels [2M, 2.1M) that no evaluation touches) by mean return there, and
then frozen — ``python -m scripts.tune_baselines``: BC on k labels 250 steps (dev return 6.3 vs
4.8 / 2.8 / 2.6 at 500 / 1500 / 3000, ``docs/tune_baselines.json``), the k-shot head of ours 500
(6.95 vs 6.8 / 4.0 at 100 / 2000; :class:`lapo.decoder.ActionHeadConfig`'s default), the supervised
IDM 500 with sampled pseudo-labels (6.85 vs 6.35 / 6.55 at 250 / 1500 sampled, 5.15 / 6.55 / 6.65
with argmax labels; ``--knobs idm``, ``docs/tune_idm.json``). The IDM's steps were first chosen by
its held-out action accuracy (250, argmax): the one k-label knob not chosen by return, and the worst
of the six by return."""

PSEUDO_LABEL_MODES = ("argmax", "sample")
"""The ways :func:`pseudo_label` can label the video."""
CHOOSE_MODE = "choose " + " or ".join(map(repr, PSEUDO_LABEL_MODES))

IDM_PSEUDO_LABELS = "sample"
"""How the IDM baseline labels the video (``argmax`` or ``sample``), chosen with its steps by the
rule of :data:`K_LABEL_STEPS`."""
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

    def init_from_lam(self, lam: nn.Module) -> "SupervisedIDM":
        """Start from a LAM's IDM (``lam.idm`` of a :class:`lapo.lam.LatentActionModel`, the same
        network but for its output size): every weight but the output layer ``head.2`` (latent dim
        -> A; this IDM keeps its fresh one) is copied. The IDM thus starts from features learned
        from frames alone (action-free pretraining, then supervised fine-tuning as in VPT's IDM).
        Returns self.

        Raises:
            ValueError: the networks differ (encoder, widths, hidden size or image size); the
                message names the first mismatched weights.
        """
        theirs = {k: v for k, v in lam.idm.state_dict().items() if not k.startswith("head.2.")}
        mine = self.net.state_dict()
        bad = sorted(k for k in set(theirs) | set(mine) - {"head.2.weight", "head.2.bias"}
                     if k not in mine or k not in theirs or mine[k].shape != theirs[k].shape)
        if bad:
            raise ValueError(f"the LAM's IDM is not this IDM's network (weights {bad[:3]} differ): build the "
                             "SupervisedIDM with the LAM's idm_encoder, idm_channels, idm_hidden and image_size")
        self.net.load_state_dict(theirs, strict=False)
        return self


def train_supervised_idm(ds, indices: np.ndarray, actions: np.ndarray, cfg: PolicyConfig, train_cfg,
                         coding, writer=None, init_lam: nn.Module | None = None) -> SupervisedIDM:
    """Fit a :class:`SupervisedIDM` on labeled transitions (loss of the action coding).

    Args:
        ds: :class:`envs.dataset.EpisodeDataset` (its windows are read, never its actions).
        indices: (k,) transition indices of the labeled subset.
        actions: (k,) int64 or (k, D) float32 true actions of those transitions.
        cfg: network; train_cfg: :class:`lapo.policy.PolicyTrainConfig`; coding: the
            :class:`lapo.decoder.ActionCoding` of the action space.
        init_lam: a LAM whose IDM the network starts from (:meth:`SupervisedIDM.init_from_lam`);
            None: random initialization.
    """
    from lapo.policy import fit_network
    from lapo.training import build_device

    device = build_device(train_cfg)  # seeds torch: first, so the initialization is the seed's
    idm = SupervisedIDM(cfg)
    if init_lam is not None:
        idm.init_from_lam(init_lam)
    return fit_network(idm.to(device), ds.idm_window, np.asarray(indices), np.asarray(actions),
                       train_cfg, coding, writer, tag="supervised_idm")


@torch.no_grad()
def pseudo_label(idm: nn.Module, ds, t: np.ndarray, coding, mode: str = "argmax", seed: int = 0,
                 batch_size: int = 512, read=None) -> np.ndarray:
    """Pseudo-labels of transitions ``t``: ``(M,)`` int64 or ``(M, D)`` float32.

    ``idm`` maps what ``read(t_chunk)`` returns to action outputs of ``coding``: by default the
    dataset's windows ``ds.idm_window`` (:class:`SupervisedIDM`); the ``ours_relabel`` row passes
    the k-shot head and reads the LAM's stored latents (``(b, L)`` float32) instead.
    ``mode`` ``argmax``: the IDM's most likely action; ``sample``: one draw from its distribution
    (seeded by ``seed``; regression outputs are the same in both). Raises ValueError for another mode.
    """
    if mode not in PSEUDO_LABEL_MODES:
        raise ValueError(f"pseudo-label mode {mode!r}: {CHOOSE_MODE}")
    read = read or ds.idm_window
    idm.eval()
    device = next(idm.parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = [coding.decode(idm(torch.from_numpy(read(t[i:i + batch_size])).to(device)),
                             deterministic=mode == "argmax")
               for i in range(0, len(t), batch_size)]
    return np.concatenate(out)
