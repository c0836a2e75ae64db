"""Labeling aligned with frames; evaluation on fixed unseen levels; normalized return."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.dataset import EpisodeDataset
from envs.procgen import EVAL_NUM_LEVELS, EVAL_START_LEVEL
from lapo.checkpoint import save_checkpoint
from lapo.evaluate import evaluate, normalized_return, random_act, save_gif
from lapo.label import Labels, label_dataset
from lapo.lam import LAMConfig, LatentActionModel, encode_transitions

TINY = LAMConfig(idm_channels=(8, 16, 16), idm_hidden=32, widths=(8, 16, 16), latent_dim=4)


def test_labels_align_with_transitions_and_match_the_idm(square_dataset, tmp_path):
    torch.manual_seed(0)
    lam = LatentActionModel(TINY).eval()
    save_checkpoint(tmp_path / "lam", "lam", TINY, lam)
    out = label_dataset(tmp_path / "lam", square_dataset, batch_size=64)
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
    a = evaluate(random_act(seed=0), "coinrun", num_episodes=4, seed=5)
    b = evaluate(random_act(seed=1), "coinrun", num_episodes=4, seed=5)
    np.testing.assert_array_equal(a.level_seeds, b.level_seeds)
    assert ((EVAL_START_LEVEL <= a.level_seeds) & (a.level_seeds < EVAL_START_LEVEL + EVAL_NUM_LEVELS)).all()
    assert a.returns.shape == (4,) and (a.lengths > 0).all()
    assert set(np.unique(a.returns)) <= {0.0, 10.0}  # CoinRun pays 10 for the coin, else 0
    assert a.summary()["episodes"] == 4


def test_normalized_return_maps_random_to_0_and_demonstrator_to_1():
    assert normalized_return(3.0, 3.0, 8.0) == 0.0
    assert normalized_return(8.0, 3.0, 8.0) == 1.0
    assert normalized_return(5.5, 3.0, 8.0) == pytest.approx(0.5)
    assert np.isnan(normalized_return(5.0, 4.0, 4.0))


def test_gif_is_written(tmp_path):
    frames = [np.full((64, 64, 3), i * 40, np.uint8) for i in range(4)]
    path = save_gif(frames, tmp_path / "a.gif")
    assert path.read_bytes()[:6] == b"GIF89a"


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
