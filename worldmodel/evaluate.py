"""World-model metrics: dynamics PSNR against the true future, ΔtPSNR, and action recovery.

- **Dynamics PSNR at t** (Genie §3, Eq. 2-3; GenieRedux): from ``C`` true prompt frames of a
  held-out clip, generate ``t`` frames with the latent actions the LAM infers from the true clip
  and score each against the true frame. Baseline in the same run: **copy-last-frame** (the last
  prompt frame repeated).
- **ΔtPSNR** (Genie §3 "controllability"): PSNR with the inferred actions minus PSNR with random
  latent actions (drawn by the codes' frequency in the training video) from the same prompts.
- **Action recovery** (for dreaming, Genie 2's use of a world model to train agents): how often the
  LAM's IDM, run on a *generated* transition, recovers the latent action that conditioned it;
  random actions are the baseline.

Dimension keys: M clips, H horizon, C context frames, A latent actions.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from worldmodel.model import WorldModel, frame_psnr


def heldout_clips(ds, frames: np.ndarray, num_clips: int, context: int, horizon: int, seed: int = 0) -> np.ndarray:
    """``(M, context + horizon)`` frame indices of clips inside held-out episodes (those containing
    ``frames``): the first ``context`` are the prompt, the rest the true future. Drawn with
    ``np.random.default_rng(seed)``, at most one clip per episode first, without replacement.

    Raises:
        ValueError: no held-out episode is long enough.
    """
    rng = np.random.default_rng(seed)
    length = context + horizon
    eps = [e for e in np.unique(ds.episode_index[frames]) if ds.episode_lengths[e] >= length]
    if not eps:
        raise ValueError(f"no held-out episode has {length} frames for a clip of {context} prompt + {horizon} frames")
    rng.shuffle(eps)
    eps = (eps * (num_clips // len(eps) + 1))[:num_clips]
    starts = [ds.episode_starts[e] + rng.integers(0, ds.episode_lengths[e] - length + 1) for e in eps]
    return np.asarray(starts)[:, None] + np.arange(length)[None]


def dynamics_psnr(wm: WorldModel, frames_FHWC: np.ndarray, clips_MT: np.ndarray, context: int,
                  action_probs: np.ndarray, steps: int = 8, temperature: float = 1.0, draws: int = 1,
                  seed: int = 0, progress: bool = True) -> dict[str, np.ndarray]:
    """PSNR of generated frames against the true ones, per clip and horizon step.

    Args:
        frames_FHWC: the dataset's frames (uint8, memory map fine).
        clips_MT: from :func:`heldout_clips`; horizon ``H = T - context``.
        action_probs: ``(A,)`` frequency of each latent action in the training video (random draws).
        draws: random-action draws per clip (their mean is the clip's random-action PSNR).

    Returns:
        ``inferred`` (M, H), ``random`` (M, H) (mean over draws), ``copy_last`` (M, H) PSNR in dB,
        ``actions`` (M, H) the inferred latent actions.
    """
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    M, T = clips_MT.shape
    H = T - context
    out = {k: np.zeros((M, H)) for k in ("inferred", "random", "copy_last")}
    out["actions"] = np.zeros((M, H), np.int64)
    for m in tqdm(range(M), desc="dynamics psnr", unit="clip", disable=not progress):
        clip = np.asarray(frames_FHWC[clips_MT[m]])  # (T, H, W, C)
        prompt, future = clip[:context], clip[context:]
        # the action into future frame h is the LAM's code of transition (context-1+h) -> (context+h)
        inferred = wm.infer_actions(clip)[context - 1:]
        out["actions"][m] = inferred
        out["copy_last"][m] = frame_psnr(np.repeat(prompt[-1:], H, 0), future)
        out["inferred"][m] = frame_psnr(generate(wm, prompt, inferred, steps, temperature, seed + m), future)
        scores = []
        for d in range(draws):
            random_actions = rng.choice(len(action_probs), size=H, p=action_probs)
            scores.append(frame_psnr(generate(wm, prompt, random_actions, steps, temperature, seed + m), future))
        out["random"][m] = np.mean(scores, 0)
    return out


def generate(wm: WorldModel, prompt_THWC: np.ndarray, actions: np.ndarray, steps: int = 8, temperature: float = 1.0,
             seed: int = 0, cfg_scale: float = 1.0) -> np.ndarray:
    """Frames generated from a prompt under a sequence of latent actions: ``(len(actions), H, W, 3)`` uint8."""
    dream = wm.dream(prompt_THWC, steps, temperature, cfg_scale, seed)
    with wm.autocast():
        return np.stack([dream.step(int(a)) for a in actions])


def action_recovery(wm: WorldModel, prompt_HWC: np.ndarray, choose: Callable[[np.ndarray], int], length: int,
                    steps: int = 8, temperature: float = 1.0, cfg_scale: float = 1.0, seed: int = 0) -> dict:
    """Closed loop: ``choose(frame) -> latent action`` acts on each generated frame for ``length``
    steps from ``prompt_HWC`` (sampled with ``steps``, ``temperature`` and guidance ``cfg_scale``);
    then the LAM infers the action of every generated transition.

    Returns:
        ``accuracy`` (fraction of transitions whose inferred action equals the conditioning one),
        ``actions`` and ``recovered`` (length,) int64, ``frames`` (length + 1, H, W, 3) uint8.
    """
    dream = wm.dream(prompt_HWC, steps, temperature, cfg_scale, seed)
    with wm.autocast():
        for _ in range(length):
            dream.step(choose(dream.frames[-1]))
    frames = np.stack(dream.frames[-(length + 1):])
    recovered = wm.infer_actions(frames)
    actions = np.asarray(dream.taken[-length:])
    return {"accuracy": float(np.mean(recovered == actions)), "actions": actions, "recovered": recovered,
            "frames": frames}
