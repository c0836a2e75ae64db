"""Action head, policies, agent: k-shot fitting, augmentation, exact save/load, act()."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lapo.agent import Agent
from lapo.decoder import ActionCoding, ActionHead, ActionHeadConfig, fit_action_head, probe_scores
from lapo.policy import Policy, PolicyConfig, PolicyTrainConfig, random_shift, train_policy

TINY_POLICY = PolicyConfig(channels=(8, 8, 8), hidden=16, out_dim=4)
DISCRETE = {"type": "Discrete", "n": 15}
BOX = {"type": "Box", "low": [-1.0, -1.0], "high": [1.0, 1.0], "shape": [2]}


def test_head_fits_separable_latents_from_few_labels():
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 3, 64)
    latents = np.eye(3, 4)[actions].astype(np.float32) + 0.05 * rng.standard_normal((64, 4)).astype(np.float32)
    head = fit_action_head(latents, actions, ActionHeadConfig(latent_dim=4), {"type": "Discrete", "n": 3})
    pred = head(torch.as_tensor(latents)).argmax(-1).numpy()
    assert (pred == actions).mean() == 1.0


def test_probe_reports_majority_baseline():
    lat = np.zeros((10, 2), np.float32)
    acts = np.array([1] * 7 + [0] * 3)
    out = probe_scores(lat, acts, lat, acts, {"type": "Discrete", "n": 2})
    assert out["majority_accuracy"] == pytest.approx(0.7) and out["probe_accuracy"] == pytest.approx(0.7)
    assert out["probe_balanced_accuracy"] == pytest.approx(0.5)  # the minority action is never predicted


def test_head_rejects_mismatched_latent_dim():
    with pytest.raises(ValueError, match=r"expected \(k, 8\)"):
        fit_action_head(np.zeros((4, 3), np.float32), np.zeros(4, np.int64), ActionHeadConfig(latent_dim=8), DISCRETE)


def test_random_shift_keeps_shape_and_zero_shift_is_identity():
    x = torch.randint(0, 256, (6, 64, 64, 3), dtype=torch.uint8)
    assert random_shift(x, 0, None) is x
    y = random_shift(x, 4, np.random.default_rng(0).integers(0, 9, (6, 2)))
    assert y.shape == x.shape and y.dtype == torch.uint8


def test_random_shift_moves_content_by_at_most_shift():
    x = torch.zeros(1, 64, 64, 3, dtype=torch.uint8)
    x[0, 30, 30] = 255
    for dy, dx in [(0, 0), (8, 8), (0, 8), (3, 5)]:
        y = random_shift(x, 4, np.array([[dy, dx]]))
        r, c = np.argwhere(y[0, :, :, 0].numpy() == 255)[0]
        assert (r, c) == (30 + 4 - dy, 30 + 4 - dx)


def test_bc_policy_fits_a_frame_to_action_rule():
    """Frames bright on the left -> action 0, on the right -> action 1: BC must learn it."""
    frames = np.zeros((40, 64, 64, 3), np.uint8)
    actions = np.arange(40) % 2
    frames[actions == 0, :, :32] = 255
    frames[actions == 1, :, 32:] = 255
    cfg = PolicyConfig(channels=(8, 8, 8), hidden=16, out_dim=2)
    policy = train_policy(frames, np.arange(40), actions, cfg,
                          PolicyTrainConfig(steps=60, batch_size=16, lr=3e-3, warmup=5, shift=0),
                          loss=ActionCoding({"type": "Discrete", "n": 2}))
    pred = Agent(policy, coding=ActionCoding({"type": "Discrete", "n": 2})).act(frames, deterministic=True)
    assert (pred == actions).mean() == 1.0


@pytest.mark.parametrize("with_head", [True, False])
@pytest.mark.parametrize("space, continuous", [(DISCRETE, "bins"), (BOX, "bins"), (BOX, "regression")])
def test_agent_save_load_roundtrip_is_exact_and_acts_in_its_space(tmp_path, with_head, space, continuous):
    torch.manual_seed(0)
    head_cfg = ActionHeadConfig(latent_dim=4, steps=2, continuous=continuous)
    coding = head_cfg.coding(space)
    actions = (np.arange(8) % 15 if space is DISCRETE else np.random.default_rng(0).uniform(-1, 1, (8, 2)))
    head = fit_action_head(np.random.rand(8, 4).astype(np.float32), actions, head_cfg, space) if with_head else None
    cfg = TINY_POLICY if with_head else PolicyConfig(channels=(8, 8, 8), hidden=16, out_dim=coding.out_dim)
    agent = Agent(Policy(cfg).eval(), head, coding)
    agent.save_pretrained(tmp_path / "agent", k=8)
    loaded = Agent.from_pretrained(tmp_path / "agent")
    obs = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    torch.testing.assert_close(agent.logits(torch.as_tensor(obs)), loaded.logits(torch.as_tensor(obs)),
                               rtol=0, atol=0)
    actions, state = loaded.predict(obs, deterministic=True)
    assert state is None and loaded.pretrained_meta["k"] == 8
    if space is DISCRETE:
        assert actions.shape == (5,) and actions.dtype == np.int64 and ((0 <= actions) & (actions < 15)).all()
    else:
        assert actions.shape == (5, 2) and actions.dtype == np.float32 and (np.abs(actions) <= 1).all()
    np.testing.assert_array_equal(actions, agent.act(obs, deterministic=True))


def test_rt1_bins_decode_to_bin_centres_within_the_bounds():
    coding = ActionCoding(BOX, "bins", bins=4)  # bins of width 0.5: centres -0.75, -0.25, 0.25, 0.75
    y = torch.tensor([[-1.0, 0.1], [0.99, -0.3], [1.0, -2.0]])
    np.testing.assert_array_equal(coding.bin_of(y).numpy(), [[0, 2], [3, 1], [3, 0]])
    logits = torch.nn.functional.one_hot(coding.bin_of(y), 4).float().view(3, 8) * 10
    np.testing.assert_allclose(coding.decode(logits, deterministic=True), [[-0.75, 0.25], [0.75, -0.25], [0.75, -0.75]])
    assert coding.out_dim == 8 and ActionCoding(BOX, "regression").out_dim == 2
    with pytest.raises(ValueError, match="finite action bounds"):
        ActionCoding({"type": "Box", "low": [-np.inf], "high": [np.inf], "shape": [1]}, "bins")


@pytest.mark.parametrize("continuous", ["bins", "regression"])
def test_head_fits_a_continuous_rule_from_few_labels(continuous):
    """Latents that determine a 2-D action linearly: both Box heads must recover it (bins up to
    half a bin)."""
    rng = np.random.default_rng(0)
    latents = rng.uniform(-1, 1, (128, 4)).astype(np.float32)
    actions = np.clip(latents[:, :2] * 0.8, -1, 1).astype(np.float32)
    cfg = ActionHeadConfig(latent_dim=4, steps=400, continuous=continuous, bins=16)
    head = fit_action_head(latents, actions, cfg, BOX)
    pred = head.coding.decode(head(torch.as_tensor(latents)), deterministic=True)
    assert np.abs(pred - actions).mean() < 0.1


def test_legacy_agent_checkpoint_loads_as_discrete(tmp_path):
    """An agent saved before action spaces (head config with n_actions, no coding) still loads."""
    import json

    from envs.pretrained import save_checkpoint

    head_cfg = ActionHeadConfig(latent_dim=4)
    agent = Agent(Policy(TINY_POLICY), ActionHead(head_cfg, head_cfg.coding(DISCRETE)))
    old = {"policy": TINY_POLICY, "head": {"latent_dim": 4, "n_actions": 15, "discrete": True, "hidden": 128,
                                           "steps": 500, "lr": 3e-3, "weight_decay": 1e-3}}
    save_checkpoint(tmp_path / "old", "agent", old, agent)
    loaded = Agent.from_pretrained(tmp_path / "old")
    assert loaded.coding.space == DISCRETE
    assert json.loads((tmp_path / "old" / "config.json").read_text())["config"]["head"]["n_actions"] == 15


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_agent_on_cuda_keeps_every_part_on_one_device(tmp_path):
    head_cfg = ActionHeadConfig(latent_dim=4, steps=2)
    policy = Policy(TINY_POLICY).to("cuda")
    head = fit_action_head(np.random.rand(8, 4).astype(np.float32), np.arange(8) % 15, head_cfg, DISCRETE)  # on CPU
    agent = Agent(policy, head)
    assert agent.head.net[0].weight.device.type == "cuda"
    actions = agent.act(np.zeros((3, 64, 64, 3), np.uint8))
    assert actions.shape == (3,)
    agent.save_pretrained(tmp_path / "a")
    assert Agent.from_pretrained(tmp_path / "a", device="cuda").device.type == "cuda"


def test_agent_from_wrong_directory_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="agent checkpoint"):
        Agent.from_pretrained(tmp_path)
