"""Continuous actions end to end on synthetic video: a square moved by a 2-D velocity action in
[-1, 1]² (Box), with task ids and episode-wise labeled subsets; LAM -> labels -> latent BC ->
k-shot head (RT-1 bins and regression) -> an agent that acts in the Box, evaluated in a gymnasium
vector env with a success signal."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from envs.dataset import EpisodeDataset, EpisodeWriter, space_to_json
from lapo import stages
from lapo.decoder import ActionHeadConfig
from lapo.lam import LAMConfig, LAMTrainConfig
from lapo.policy import PolicyConfig, PolicyTrainConfig

BOX = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
SIZE, SQUARE, SPEED = 64, 8, 6  # pixels; an action of 1 moves the square SPEED pixels


def draw(y: float, x: float) -> np.ndarray:
    frame = np.full((SIZE, SIZE, 3), 30, np.uint8)
    frame[int(round(y)):int(round(y)) + SQUARE, int(round(x)):int(round(x)) + SQUARE] = (250, 200, 50)
    return frame


class SquareEnv(gym.Env):
    """Move the square to the right edge (x >= 48 pixels) within 30 steps: success."""

    observation_space = gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
    action_space = BOX

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.y, self.x = self.np_random.uniform(8, SIZE - 16, 2)
        self.x, self.t = 4.0, 0
        return draw(self.y, self.x), {}

    def step(self, action):
        dy, dx = np.clip(action, -1, 1) * SPEED
        self.y, self.x = np.clip(self.y + dy, 0, SIZE - SQUARE), np.clip(self.x + dx, 0, SIZE - SQUARE)
        self.t += 1
        success = self.x >= 48
        return draw(self.y, self.x), float(success), bool(success), self.t >= 30, {"success": bool(success)}


@pytest.fixture(scope="module")
def velocity_dataset(tmp_path_factory):
    """60 episodes × 20 frames: a noisy rightward demonstrator, half of the episodes task 0, half task 1."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("box") / "velocity"
    with EpisodeWriter(path, {"source": {"kind": "synthetic"}, "action_space": space_to_json(BOX)}) as w:
        for e in range(60):
            y, x = rng.uniform(8, SIZE - 16, 2)
            frames, actions = [], []
            for _ in range(20):
                frames.append(draw(y, x))
                a = np.clip(rng.normal([0.0, 0.3], 0.6), -1, 1).astype(np.float32)
                actions.append(a)
                y, x = np.clip(y + a[0] * SPEED, 0, SIZE - SQUARE), np.clip(x + a[1] * SPEED, 0, SIZE - SQUARE)
            w.add_episode(np.stack(frames), np.stack(actions), level_seed=e, task_id=e % 2)
    return path


def test_dataset_stores_box_actions_task_ids_and_draws_whole_episodes(velocity_dataset):
    ds = EpisodeDataset(velocity_dataset)
    assert ds.action_space == BOX and np.asarray(ds.oracle_actions()).dtype == np.float32
    assert ds.oracle_actions().shape == (len(ds), 2)
    np.testing.assert_array_equal(ds.task_ids, np.arange(60) % 2)
    sub = ds.labeled_subset(3, seed=0, unit="episode")
    episodes = np.unique(ds.episode_index[sub.indices])
    assert len(episodes) == 3 and len(sub.indices) == 3 * 19 and sub.actions.shape == (57, 2)
    assert ds.labeled_subset(5, seed=0).actions.shape == (5, 2)
    with pytest.raises(ValueError, match="k=61 labeled episodes"):
        ds.labeled_subset(61, unit="episode")


def test_writer_refuses_actions_whose_shape_changes(tmp_path):
    with pytest.raises(ValueError, match="differ from earlier episodes"):
        with EpisodeWriter(tmp_path / "d") as w:
            w.add_episode(np.zeros((3, 8, 8, 3), np.uint8), np.zeros((3, 2), np.float32))
            w.add_episode(np.zeros((3, 8, 8, 3), np.uint8), np.zeros((3, 3), np.float32))
    assert not (tmp_path / "d").exists()


def test_continuous_pipeline_end_to_end(velocity_dataset, tmp_path):
    ds = EpisodeDataset(velocity_dataset)
    lam_cfg = LAMConfig(idm_channels=(8, 16, 16), idm_hidden=32, widths=(8, 16, 16), latent_dim=4)
    _, metrics = stages.train_lam(ds, tmp_path / "lam", lam_cfg,
                                  LAMTrainConfig(steps=400, batch_size=32, eval_every=400, probe_k=128, lr=2e-3,
                                                 threads=1, precision="fp32"))
    # the latent encodes the velocity: a k-shot regression probe explains most of its variance
    assert metrics["fdm_loss"] < 0.5 * metrics["copy_last_loss"] and metrics["probe_r2"] > 0.5
    labels = stages.label(tmp_path / "lam", ds, tmp_path / "labels")
    policy = stages.latent_bc(ds, labels, tmp_path / "policy", PolicyConfig(channels=(8, 16, 16), hidden=32),
                              PolicyTrainConfig(steps=150, batch_size=32, threads=1, precision="fp32"))
    subset = ds.labeled_subset(10, seed=0, unit="episode")
    env = gym.vector.SyncVectorEnv([SquareEnv] * 8)
    from lapo.evaluate import random_act, rollout

    rand = rollout(random_act(BOX, seed=0), env, success_key="success")
    assert rand.lengths.max() <= 30
    for continuous in ("bins", "regression"):
        agent = stages.fit_head(policy, ds, labels, subset, ActionHeadConfig(continuous=continuous), "policy",
                                out=tmp_path / f"agent_{continuous}")
        actions = agent.act(np.asarray(ds.frames[:5]), deterministic=True)
        assert actions.shape == (5, 2) and actions.dtype == np.float32 and (np.abs(actions) <= 1).all()
        res = rollout(lambda obs: agent.act(obs, deterministic=True), env, success_key="success")
        # the demonstrator drifts right: its imitation reaches the edge, random actions do not
        # (measured: 8/8 for both heads, random 0/8; 400 LAM steps, as at 250 an AVX-512 CPU's fp32
        # arithmetic left the LAM unlearned, probe R² 0.05 vs 0.70 at 400, and the head fitted on
        # IDM latents failed there at 400 and 800 steps while the default, policy latents, passed)
        assert res.successes.shape == (8,) and res.summary()["success_rate"] >= rand.summary()["success_rate"] + 0.5


def test_tune_agent_fits_the_labels_end_to_end_and_leaves_the_agent_alone(velocity_dataset):
    import dataclasses

    import torch

    from lapo.agent import Agent
    from lapo.decoder import ActionHead
    from lapo.policy import Policy

    ds = EpisodeDataset(velocity_dataset)
    subset = ds.labeled_subset(10, seed=0, unit="episode")
    # labels the frame determines (the demonstrator's are noise around a mean): the square's column, in [-1, 1]
    frames = np.asarray(ds.frames[subset.indices])
    column = (frames[..., 0] > 200).any(axis=1).argmax(axis=1) / (SIZE - SQUARE) * 2 - 1
    subset = dataclasses.replace(subset, actions=np.stack([-column, column], 1).astype(np.float32))
    head_cfg = ActionHeadConfig(latent_dim=4, hidden=16, continuous="regression")
    torch.manual_seed(0)
    agent = Agent(Policy(PolicyConfig(channels=(8, 16, 16), hidden=32, out_dim=4)),
                  ActionHead(head_cfg, head_cfg.coding(space_to_json(BOX))))
    before = {k: v.clone() for k, v in agent.state_dict().items()}

    def mse(a):
        return float(((a.act(frames, deterministic=True) - subset.actions) ** 2).mean())

    tuned = stages.tune_agent(agent, ds, subset, PolicyTrainConfig(steps=150, batch_size=32, threads=1, shift=0))
    assert mse(tuned) < 0.5 * mse(agent)  # measured: 0.59 -> 0.21 (label variance 0.48)
    assert all(torch.equal(v, agent.state_dict()[k]) for k, v in before.items())  # the original is untouched
    with pytest.raises(ValueError, match="no head"):
        stages.tune_agent(Agent(agent.policy, coding=agent.coding), ds, subset, PolicyTrainConfig(steps=1))
