"""Latent action model: shapes, exact save/load, learning on synthetic motion, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from envs.dataset import EpisodeDataset, EpisodeWriter
from envs.pretrained import save_checkpoint
from lapo.lam import LAMConfig, LAMTrainConfig, LatentActionModel, train_lam

TINY = LAMConfig(idm_channels=(8, 16, 16), idm_hidden=32, widths=(8, 16, 16), latent_dim=4)


def test_forward_shapes_and_loss():
    lam = LatentActionModel(TINY)
    window = torch.randint(0, 256, (5, 3, 64, 64, 3), dtype=torch.uint8)
    out, loss = lam(window)
    assert out.z.shape == (5, 4) and out.z_q.shape == (5, 4)
    assert out.codes.shape == (5, 2) and out.codes.dtype == torch.int64
    assert out.pred.shape == (5, 3, 32, 32) and loss.ndim == 0 and torch.isfinite(loss)
    enc = lam.encode(window)
    assert enc.z.shape == (5, 4) and enc.aux_loss.ndim == 0 and "perplexity" in enc.stats


def test_fdm_starts_at_the_copy_last_frame_baseline():
    out, _ = LatentActionModel(TINY)(torch.randint(0, 256, (4, 3, 64, 64, 3), dtype=torch.uint8))
    assert float(out.stats["fdm_loss"]) == pytest.approx(float(out.stats["copy_last_loss"]))


@pytest.mark.parametrize("quantizer", ["fsq", "vq"])
def test_save_load_roundtrip_is_exact(tmp_path, quantizer):
    cfg = LAMConfig(**{**TINY.__dict__, "quantizer": quantizer})
    lam = LatentActionModel(cfg).eval()
    lam.save_pretrained(tmp_path / "lam")
    loaded = LatentActionModel.from_pretrained(tmp_path / "lam")
    window = torch.randint(0, 256, (3, 3, 64, 64, 3), dtype=torch.uint8)
    a, _ = lam(window)
    b, _ = loaded(window)
    torch.testing.assert_close(a.z, b.z, rtol=0, atol=0)
    torch.testing.assert_close(a.pred, b.pred, rtol=0, atol=0)
    assert loaded.cfg == cfg


def test_lam_learns_synthetic_actions_from_frames_alone(square_dataset, tmp_path):
    """A square moved by 4 actions: the FDM must beat copy-last-frame and the latents must tell the
    actions apart (probe fitted on 64 labels, tested on held-out episodes; 1.00 measured with seed 0,
    0.94 with seed 1; the README quotes this case)."""
    train_cfg = LAMTrainConfig(steps=250, batch_size=32, eval_every=250, probe_k=64, lr=2e-3, threads=1)
    _, metrics = train_lam(square_dataset, tmp_path / "lam", TINY, train_cfg)
    assert metrics["fdm_loss"] < 0.5 * metrics["copy_last_loss"]
    assert metrics["probe_accuracy"] >= 0.95 and metrics["majority_accuracy"] < 0.35
    assert json.loads((tmp_path / "lam" / "config.json").read_text())["kind"] == "lam"


def test_wrong_frame_size_fails_before_training(tmp_path):
    with EpisodeWriter(tmp_path / "small") as w:
        w.add_episode(np.zeros((4, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\(32, 32, 3\).*image_size"):
        train_lam(tmp_path / "small", tmp_path / "lam", TINY, LAMTrainConfig(steps=1))
    assert not (tmp_path / "lam").exists()


def test_missing_or_wrong_checkpoint_names_the_problem(tmp_path, square_dataset):
    with pytest.raises(FileNotFoundError, match="config.json"):
        LatentActionModel.from_pretrained(tmp_path / "nothing")
    save_checkpoint(tmp_path / "other", "policy", TINY, LatentActionModel(TINY))
    with pytest.raises(ValueError, match="'policy' checkpoint"):
        LatentActionModel.from_pretrained(tmp_path / "other")
    assert EpisodeDataset(square_dataset).num_episodes == 40


@pytest.mark.parametrize("kwargs, match", [
    ({"latent_dim": 5, "groups": 2}, "divisible by groups"),
    ({"fdm_size": 48}, "fdm_size 48"),
    ({"quantizer": "rvq"}, "'fsq', 'vq' or 'none'"),
])
def test_bad_config_names_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LAMConfig(**kwargs)


def test_probe_lam_actions_scores_latents_and_a_supervised_idm(square_dataset, tmp_path):
    from scripts.probe_lam_actions import Args, action_classes, main

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "lam", "lam", TINY, LatentActionModel(TINY).eval())
    out = main(Args(dataset=square_dataset, lams=(tmp_path / "lam",), supervised=("nature",), supervised_steps=150,
                    ks=(16, 64), val_fraction=0.2, out=tmp_path / "probe.json"))
    lam_row, idm_row = out["rows"]
    assert set(lam_row) >= {"action_k16", "action_k64"} and "horizontal_k16" not in lam_row  # not Procgen
    assert all(0 <= lam_row[k] <= 1 for k in ("action_k16", "action_k64"))
    # the square moves 4 px per step: a supervised IDM reads its action; the majority class cannot
    assert idm_row["action_all"] >= 0.9 and out["majority"]["action"] < 0.35
    assert idm_row["action_all_balanced"] >= 0.9 and 0 <= lam_row["action_k64_balanced"] <= 1
    assert json.loads((tmp_path / "probe.json").read_text())["rows"] == out["rows"]

    with EpisodeWriter(tmp_path / "procgen", {"source": {"kind": "procgen"},
                                             "action_space": {"type": "Discrete", "n": 15}}) as w:
        w.add_episode(np.zeros((3, 64, 64, 3), np.uint8), np.array([0, 7, 4]))
    maps = action_classes(EpisodeDataset(tmp_path / "procgen"))
    assert maps["horizontal"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 1, 1, 1, 1, 1, 1]  # left-*, neither, right-*
    assert maps["D"].tolist() == [0] * 9 + [1] + [0] * 5  # the D key (fire) against the rest
    with EpisodeWriter(tmp_path / "frames_only") as w:
        w.add_episode(np.zeros((3, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="needs discrete actions"):
        action_classes(EpisodeDataset(tmp_path / "frames_only"))
