"""``lapo finetune``: PPO's actor starts as the saved agent; both runs train, evaluate, resume and plot."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lapo.agent import Agent
from lapo.decoder import ActionHeadConfig, fit_action_head
from lapo.finetune import FinetuneConfig, finetune
from lapo.lam import LAMConfig, LatentActionModel
from lapo.policy import Policy, PolicyConfig

DISCRETE = {"type": "Discrete", "n": 15}


def tiny_agent(path):
    torch.manual_seed(0)
    head_cfg = ActionHeadConfig(latent_dim=4, hidden=8, steps=20)
    rng = np.random.default_rng(0)
    head = fit_action_head(rng.normal(size=(32, 4)).astype(np.float32), rng.integers(0, 15, 32), head_cfg, DISCRETE)
    agent = Agent(Policy(PolicyConfig(channels=(8, 8, 8), hidden=16, out_dim=4)).eval(), head)
    agent.save_pretrained(path)
    return agent


def tiny_cfg(tmp_path, **kw):
    return FinetuneConfig(agent=tmp_path / "agent", run_dir=tmp_path / "ft", num_envs=4, n_steps=16, batch_size=32,
                          n_epochs=1, total_timesteps=128, eval_every=64, eval_episodes=2, save_every=64,
                          threads=1, **kw)


def test_ppo_actor_starts_as_the_agent(tmp_path):
    from stable_baselines3 import PPO

    from envs.demonstrator import make_training_env
    from lapo.finetune import AgentPolicy, load_agent_weights
    from envs.io import jsonable

    agent = tiny_agent(tmp_path / "agent")
    cfg = tiny_cfg(tmp_path)
    model = PPO(AgentPolicy, make_training_env(cfg, tmp_path), policy_kwargs={"agent_config": jsonable(agent.to_config())},
                **cfg.ppo_kwargs())
    obs = np.random.default_rng(1).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    tensor, _ = model.policy.obs_to_tensor(obs)
    before = model.policy.get_distribution(tensor).distribution.logits
    load_agent_weights(model.policy, agent)
    ppo_logits = model.policy.get_distribution(tensor).distribution.logits
    agent_logits = torch.log_softmax(agent.logits(torch.from_numpy(obs)), -1)
    torch.testing.assert_close(ppo_logits, agent_logits, rtol=0, atol=1e-5)
    assert not torch.allclose(before, agent_logits, atol=1e-3)  # the copy is what made them equal
    assert model.policy.predict_values(tensor).shape == (6, 1)


def test_finetune_trains_both_runs_evaluates_resumes_and_plots(tmp_path):
    tiny_agent(tmp_path / "agent")
    cfg = tiny_cfg(tmp_path)
    out = finetune(cfg)
    assert set(out["curves"]) == {"agent", "scratch"}
    for name, points in out["curves"].items():
        frames = [p["frames"] for p in points]
        assert frames[0] == 0 and frames[-1] == 128 and frames == sorted(frames), (name, frames)
        for p in points:
            lo, hi = p["ci95"]
            assert lo <= p["mean_return"] <= hi
            assert p["normalized_procgen"] == pytest.approx((p["mean_return"] - 5) / 5)  # coinrun: (5, 10)
    assert (tmp_path / "ft" / "curve.png").stat().st_size > 0
    refs = json.loads((tmp_path / "ft" / "references.json").read_text())
    assert {"random", "demonstrator"} <= set(refs)
    # resume: a larger budget continues the checkpoint (no new frame-0 point) and extends the curve
    import dataclasses

    out2 = finetune(dataclasses.replace(cfg, runs=("agent",), total_timesteps=192))
    frames = [p["frames"] for p in out2["curves"]["agent"]]
    assert frames[:3] == [0, 64, 128] and frames[-1] == 192 and frames.count(0) == 1
    assert [p["frames"] for p in out2["curves"]["scratch"]][-1] == 128  # read back, not retrained


def test_head_refit_on_own_transitions_changes_only_the_head(tmp_path):
    import dataclasses

    from stable_baselines3 import PPO

    agent = tiny_agent(tmp_path / "agent")
    torch.manual_seed(0)
    LatentActionModel(LAMConfig(idm_channels=(8, 8, 8), idm_hidden=16, widths=(8, 8, 8), latent_dim=4)).save_pretrained(
        tmp_path / "lam")
    cfg = dataclasses.replace(tiny_cfg(tmp_path), runs=("agent",), total_timesteps=64, refit_head_lam=tmp_path / "lam",
                              learning_rate=0.0)  # PPO itself changes nothing: any change is the refit's
    finetune(cfg)
    model = PPO.load(tmp_path / "ft" / "agent" / "ppo_checkpoint.zip", device="cpu")
    head = model.policy.action_net[1].state_dict()
    assert any(not torch.equal(v, agent.head.state_dict()[k]) for k, v in head.items())
    trunk = model.policy.features_extractor.convs.state_dict()
    assert all(torch.equal(v, agent.policy.net.convs.state_dict()[k]) for k, v in trunk.items())


def test_bad_runs_and_box_agents_are_refused(tmp_path):
    with pytest.raises(ValueError, match="runs"):
        FinetuneConfig(runs=("agnet",))
    box = {"type": "Box", "low": [-1.0], "high": [1.0], "shape": [1]}
    head_cfg = ActionHeadConfig(latent_dim=4, steps=2)
    head = fit_action_head(np.zeros((4, 4), np.float32), np.zeros((4, 1), np.float32), head_cfg, box)
    Agent(Policy(PolicyConfig(channels=(8, 8, 8), hidden=16, out_dim=4)), head).save_pretrained(tmp_path / "agent")
    with pytest.raises(ValueError, match="Discrete"):
        finetune(tiny_cfg(tmp_path, runs=("agent",)))


def test_critic_warmup_trains_only_the_value_head(tmp_path):
    import dataclasses

    from stable_baselines3 import PPO

    agent = tiny_agent(tmp_path / "agent")
    cfg = dataclasses.replace(tiny_cfg(tmp_path), runs=("agent",), total_timesteps=64, critic_warmup=64)
    finetune(cfg)
    policy = PPO.load(tmp_path / "ft" / "agent" / "ppo_checkpoint.zip", device="cpu").policy
    for mine, theirs in ((policy.features_extractor.convs, agent.policy.net.convs), (policy.action_net[1], agent.head)):
        assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in mine.state_dict().items())
    # the value head did learn: it differs from its initialization (the same seeded construction)
    from envs.demonstrator import make_training_env
    from envs.io import jsonable
    from lapo.finetune import AgentPolicy

    init = PPO(AgentPolicy, make_training_env(cfg, tmp_path), policy_kwargs={"agent_config": jsonable(agent.to_config())},
               **cfg.ppo_kwargs()).policy.value_net
    assert not torch.equal(init.weight, policy.value_net.weight)


def test_pretrained_parameters_step_at_their_learning_rate_scale():
    from stable_baselines3.common.utils import update_learning_rate

    from lapo.finetune import ScaledAdam

    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3))
    opt = ScaledAdam([{"params": [a], "lr_scale": 0.1}, {"params": [b]}], lr=1.0)
    update_learning_rate(opt, 1e-2)  # what SB3 does before each update: one rate on every group
    (a.sum() + b.sum()).backward()
    opt.step()
    torch.testing.assert_close(b.detach(), torch.full((3,), -1e-2))  # Adam's first step: lr × sign(grad)
    torch.testing.assert_close(a.detach(), torch.full((3,), -1e-3))
    assert [g["lr"] for g in opt.param_groups] == [1e-2, 1e-2]
