"""Labeling aligned with frames; evaluation on fixed unseen levels and on any vectorized env with a
success signal; GIFs and pictures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.dataset import EpisodeDataset
from envs.procgen import EVAL_NUM_LEVELS, EVAL_START_LEVEL
from envs.pretrained import save_checkpoint
from envs.procgen import N_ACTIONS
from lapo.evaluate import evaluate, random_act, rollout, save_gif
from lapo.label import Labels, label_dataset
from lapo.lam import LAMConfig, LatentActionModel, encode_transitions

TINY = LAMConfig(idm_channels=(8, 16, 16), idm_hidden=32, widths=(8, 16, 16), latent_dim=4)


def test_labels_align_with_transitions_and_match_the_idm(square_dataset, tmp_path):
    torch.manual_seed(0)
    lam = LatentActionModel(TINY).eval()
    save_checkpoint(tmp_path / "lam", "lam", TINY, lam)
    out = label_dataset(tmp_path / "lam", square_dataset, batch_size=64, precision="fp32")  # fp32 like z below
    assert out == square_dataset / "labels"
    labels, ds = Labels(out), EpisodeDataset(square_dataset)
    assert labels.latents.shape == (len(ds), 4) and labels.codes.shape == (len(ds), 2)
    np.testing.assert_array_equal(np.flatnonzero(labels.valid), ds.transition_indices)
    assert not labels.valid[ds.episode_ends - 1].any()
    z, codes = encode_transitions(lam, ds, ds.transition_indices[:10])
    np.testing.assert_allclose(labels.latents[ds.transition_indices[:10]], z, atol=1e-6)
    np.testing.assert_array_equal(labels.codes[ds.transition_indices[:10]], codes)
    with pytest.raises(FileExistsError, match="--overwrite"):
        label_dataset(tmp_path / "lam", square_dataset)


def test_evaluation_plays_fixed_unseen_levels():
    space = {"type": "Discrete", "n": N_ACTIONS}
    a = evaluate(random_act(space, seed=0), "coinrun", num_episodes=4, seed=5)
    b = evaluate(random_act(space, seed=1), "coinrun", num_episodes=4, seed=5)
    np.testing.assert_array_equal(a.level_seeds, b.level_seeds)
    assert ((EVAL_START_LEVEL <= a.level_seeds) & (a.level_seeds < EVAL_START_LEVEL + EVAL_NUM_LEVELS)).all()
    assert a.returns.shape == (4,) and (a.lengths > 0).all()
    assert set(np.unique(a.returns)) <= {0.0, 10.0}  # CoinRun pays 10 for the coin, else 0
    assert a.summary()["episodes"] == 4


def test_rollout_on_a_gymnasium_vector_env_counts_success_and_float_actions():
    """Any gymnasium vector env: Box actions, each env's first episode only, success from info."""
    import gymnasium as gym

    class Reach(gym.Env):
        """1-D point at 0 must reach x >= 1 within 10 steps; reward = action; success flag in info;
        every observation is filled with the env's id."""

        observation_space = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)
        action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

        def __init__(self, env_id: int):
            self.env_id = env_id

        def reset(self, seed=None, options=None):
            self.x, self.t = 0.0, 0
            return np.full((8, 8, 3), self.env_id, np.uint8), {}

        def step(self, action):
            self.x += float(action[0])
            self.t += 1
            success = self.x >= 1.0
            obs = np.full((8, 8, 3), self.env_id, np.uint8)
            return obs, float(action[0]), success, self.t >= 10, {"success": success}

    env = gym.vector.SyncVectorEnv([lambda i=i: Reach(i) for i in range(4)])
    calls = []

    def act(obs):  # envs 0 and 1 push right at 0.5 (success in 2 steps), the others push left
        calls.append(len(obs))
        return np.where(obs[:, 0, 0, :1] < 2, 0.5, -0.5).astype(np.float32)

    res = rollout(act, env, success_key="success")
    np.testing.assert_array_equal(res.successes, [True, True, False, False])
    np.testing.assert_array_equal(res.lengths, [2, 2, 10, 10])
    np.testing.assert_allclose(res.returns, [1.0, 1.0, -5.0, -5.0])
    assert calls[:2] == [4, 4] and calls[2] == 2  # finished envs are not asked for actions
    assert res.summary()["success_rate"] == 0.5


def test_gif_is_written_with_every_frame(tmp_path):
    from PIL import Image, ImageSequence

    frames = [np.full((64, 48, 3), i * 40, np.uint8) for i in range(4)]
    path = save_gif(frames, tmp_path / "a.gif", scale=2)
    with Image.open(path) as gif:
        decoded = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(gif)]
    assert len(decoded) == 4 and decoded[0].shape == (128, 96, 3)
    assert [int(f[0, 0, 0]) for f in decoded] == [0, 40, 80, 120]


def test_visualize_writes_gif_embedding_and_confusion(square_dataset, tmp_path):
    from lapo.visualize import VisualizeConfig, pca_2d, visualize

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "lam", "lam", TINY, LatentActionModel(TINY).eval())
    label_dataset(tmp_path / "lam", square_dataset)
    paths = visualize(VisualizeConfig(dataset=square_dataset, out=tmp_path / "viz", gif_frames=10, points=200))
    assert [p.name for p in paths] == ["codes.gif", "embedding.png", "confusion.png"]
    assert paths[0].read_bytes()[:6] == b"GIF89a"
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths[1:])
    x = np.random.default_rng(0).standard_normal((100, 3)) * np.array([5.0, 1.0, 0.1])
    xy = pca_2d(x)
    assert xy.shape == (100, 2) and xy[:, 0].std() > xy[:, 1].std() > 0.5  # largest variance first


def test_row_blocks_keep_rows_in_order_across_block_boundaries():
    from lapo.label import RowBlocks

    rows = RowBlocks(block_rows=3)
    parts = [np.arange(n * 2, dtype=np.float32).reshape(n, 2) + 100 * i for i, n in enumerate((2, 5, 1, 3))]
    for p in parts:
        rows.append(p)
    assert len(rows.blocks) == 4  # 11 rows in blocks of 3
    np.testing.assert_array_equal(rows.array(), np.concatenate(parts))
