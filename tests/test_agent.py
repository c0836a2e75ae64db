"""Action head, policies, agent: k-shot fitting, augmentation, exact save/load, act()."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lapo.agent import Agent
from lapo.decoder import ActionHeadConfig, fit_action_head, probe_accuracy
from lapo.policy import Policy, PolicyConfig, PolicyTrainConfig, random_shift, train_policy

TINY_POLICY = PolicyConfig(channels=(8, 8, 8), hidden=16, out_dim=4)


def test_head_fits_separable_latents_from_few_labels():
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 3, 64)
    latents = np.eye(3, 4)[actions].astype(np.float32) + 0.05 * rng.standard_normal((64, 4)).astype(np.float32)
    head = fit_action_head(latents, actions, ActionHeadConfig(latent_dim=4, n_actions=3))
    pred = head(torch.as_tensor(latents)).argmax(-1).numpy()
    assert (pred == actions).mean() == 1.0


def test_probe_reports_majority_baseline():
    lat = np.zeros((10, 2), np.float32)
    acts = np.array([1] * 7 + [0] * 3)
    out = probe_accuracy(lat, acts, lat, acts, 2)
    assert out["majority_accuracy"] == pytest.approx(0.7) and out["probe_accuracy"] == pytest.approx(0.7)


def test_head_rejects_mismatched_latent_dim():
    with pytest.raises(ValueError, match=r"expected \(k, 8\)"):
        fit_action_head(np.zeros((4, 3), np.float32), np.zeros(4, np.int64), ActionHeadConfig(latent_dim=8))


def test_random_shift_keeps_shape_and_zero_shift_is_identity():
    x = torch.randint(0, 256, (6, 64, 64, 3), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    assert random_shift(x, 0, g) is x
    y = random_shift(x, 4, g)
    assert y.shape == x.shape and y.dtype == torch.uint8


def test_random_shift_moves_content_by_at_most_shift():
    x = torch.zeros(1, 64, 64, 3, dtype=torch.uint8)
    x[0, 30, 30] = 255
    y = random_shift(x, 4, torch.Generator().manual_seed(1))
    r, c = np.argwhere(y[0, :, :, 0].numpy() == 255)[0]
    assert abs(r - 30) <= 4 and abs(c - 30) <= 4


def test_bc_policy_fits_a_frame_to_action_rule():
    """Frames bright on the left -> action 0, on the right -> action 1: BC must learn it."""
    frames = np.zeros((40, 64, 64, 3), np.uint8)
    actions = np.arange(40) % 2
    frames[actions == 0, :, :32] = 255
    frames[actions == 1, :, 32:] = 255
    cfg = PolicyConfig(channels=(8, 8, 8), hidden=16, out_dim=2)
    policy = train_policy(frames, np.arange(40), actions, cfg,
                          PolicyTrainConfig(steps=60, batch_size=16, lr=3e-3, warmup=5, shift=0), loss="ce")
    pred = Agent(policy).act(frames, deterministic=True)
    assert (pred == actions).mean() == 1.0


@pytest.mark.parametrize("with_head", [True, False])
def test_agent_save_load_roundtrip_is_exact(tmp_path, with_head):
    torch.manual_seed(0)
    head = fit_action_head(np.random.rand(8, 4).astype(np.float32), np.arange(8) % 15,
                           ActionHeadConfig(latent_dim=4, n_actions=15, steps=2)) if with_head else None
    cfg = TINY_POLICY if with_head else PolicyConfig(channels=(8, 8, 8), hidden=16, out_dim=15)
    agent = Agent(Policy(cfg).eval(), head)
    agent.save_pretrained(tmp_path / "agent", k=8)
    loaded = Agent.from_pretrained(tmp_path / "agent")
    obs = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    torch.testing.assert_close(agent.logits(torch.as_tensor(obs)), loaded.logits(torch.as_tensor(obs)),
                               rtol=0, atol=0)
    actions, state = loaded.predict(obs, deterministic=True)
    assert actions.shape == (5,) and actions.dtype == np.int64 and state is None
    assert ((0 <= actions) & (actions < 15)).all()


def test_agent_from_wrong_directory_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="agent checkpoint"):
        Agent.from_pretrained(tmp_path)
