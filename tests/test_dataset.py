"""Episode dataset format: boundaries, windows, labeled subset, atomic writes, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from envs.dataset import EpisodeDataset, EpisodeWriter
from tests.conftest import encoded_episode


def test_roundtrip_preserves_frames_actions_and_episode_ends(encoded_dataset):
    ds = EpisodeDataset(encoded_dataset)
    assert len(ds) == 14 and ds.num_episodes == 3
    np.testing.assert_array_equal(ds.episode_ends, [5, 7, 14])
    np.testing.assert_array_equal(ds.level_seeds, [100, 101, 102])
    np.testing.assert_array_equal(ds.frames[5:7], encoded_episode(1, 2))
    assert isinstance(ds.frames, np.memmap)  # bounded RAM: never loaded whole
    assert json.loads((encoded_dataset / "meta.json").read_text())["format_version"] == 1


def test_transitions_exclude_each_episodes_last_frame(encoded_dataset):
    ds = EpisodeDataset(encoded_dataset)
    np.testing.assert_array_equal(ds.transition_indices, [0, 1, 2, 3, 5, 7, 8, 9, 10, 11, 12])


def test_idm_windows_never_cross_an_episode_boundary(encoded_dataset):
    ds = EpisodeDataset(encoded_dataset)
    w = ds.idm_window(ds.transition_indices)  # (M, 3, H, W, C)
    episode, t = w[:, :, 0, 0, 0], w[:, :, 0, 0, 1]
    assert (episode == episode[:, :1]).all(), "a window mixes frames of two episodes"
    t_now = t[:, 1].astype(int)
    np.testing.assert_array_equal(t[:, 2], t_now + 1)
    np.testing.assert_array_equal(t[:, 0], np.maximum(t_now - 1, 0))  # edge-padded at t = 0


def test_idm_window_rejects_last_frame_of_episode(encoded_dataset):
    ds = EpisodeDataset(encoded_dataset)
    with pytest.raises(ValueError, match="transition index"):
        ds.idm_window(np.array([4]))


def test_labeled_subset_is_seeded_and_reads_only_k_actions(encoded_dataset):
    ds = EpisodeDataset(encoded_dataset)
    a, b = ds.labeled_subset(4, seed=3), ds.labeled_subset(4, seed=3)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert len(a.indices) == 4 and set(a.indices) <= set(ds.transition_indices)
    # actions are a_t = 10 * episode + t
    expected = 10 * ds.episode_index[a.indices] + (a.indices - ds.episode_starts[ds.episode_index[a.indices]])
    np.testing.assert_array_equal(a.actions, expected)


def test_k_larger_than_transitions_fails_with_the_number(encoded_dataset):
    with pytest.raises(ValueError, match="k=12 .* has 11"):
        EpisodeDataset(encoded_dataset).labeled_subset(12)


def test_episode_split_is_by_episode(encoded_dataset):
    ds = EpisodeDataset(encoded_dataset)
    train, val = ds.episode_split(0.34, seed=0)
    assert set(ds.episode_index[train]).isdisjoint(ds.episode_index[val])
    assert len(train) + len(val) == len(ds.transition_indices)


def test_writer_refuses_to_overwrite_and_error_leaves_no_partial_files(encoded_dataset, tmp_path):
    with pytest.raises(FileExistsError, match="--overwrite"):
        EpisodeWriter(encoded_dataset)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(RuntimeError):
        with EpisodeWriter(tmp_path / "new") as w:
            w.add_episode(encoded_episode(0, 3))
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_overwrite_replaces_only_after_completion(encoded_dataset):
    with pytest.raises(ValueError):
        with EpisodeWriter(encoded_dataset, overwrite=True) as w:
            w.add_episode(np.zeros((3, 64, 64, 3), np.float32))  # wrong dtype
    assert len(EpisodeDataset(encoded_dataset)) == 14  # the old dataset survived


@pytest.mark.parametrize("frames, match", [
    (np.zeros((3, 64, 64, 3), np.float32), "uint8"),
    (np.zeros((3, 64, 64), np.uint8), r"\(T, H, W, C\)"),
    (np.zeros((1, 64, 64, 3), np.uint8), "at least 2 frames"),
])
def test_bad_episode_frames_are_rejected(tmp_path, frames, match):
    w = EpisodeWriter(tmp_path / "x")
    with pytest.raises(ValueError, match=match):
        w.add_episode(frames)
    w.abort()


def test_empty_dataset_is_never_written(tmp_path):
    with pytest.raises(ValueError, match="no episodes"):
        EpisodeWriter(tmp_path / "empty").close()
    assert not (tmp_path / "empty").exists()


def test_missing_dataset_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="lapo collect"):
        EpisodeDataset(tmp_path / "nope")


def test_action_free_dataset_has_no_labeled_subset(tmp_path):
    with EpisodeWriter(tmp_path / "free") as w:
        w.add_episode(encoded_episode(0, 4))
    ds = EpisodeDataset(tmp_path / "free")
    assert not ds.has_actions
    with pytest.raises(ValueError, match="action-free"):
        ds.labeled_subset(1)


def _write(path, frames, actions, meta):
    with EpisodeWriter(path, meta, overwrite=True) as w:
        w.add_episode(frames, actions)
    return EpisodeDataset(path)


def test_fingerprint_keys_on_content_not_on_the_write_or_its_provenance(tmp_path):
    frames, actions = encoded_episode(0, 5), np.arange(5)
    first = _write(tmp_path / "a", frames, actions, {"source": {"kind": "synthetic"}, "collector": {"by": "cli"}})
    fingerprint, dataset_id = first.fingerprint(), first.meta["dataset_id"]
    again = _write(tmp_path / "a", frames, actions, {"source": {"kind": "synthetic"}, "collector": {"by": "benchmark"}})
    assert again.meta["dataset_id"] != dataset_id  # a new write ...
    assert again.fingerprint() == fingerprint  # ... of the same video is the same dataset
    pixel = frames.copy()
    pixel[3, 10, 10, 1] = 1
    assert _write(tmp_path / "b", pixel, actions, {"source": {"kind": "synthetic"}}).fingerprint() != fingerprint
    assert _write(tmp_path / "c", frames, actions[::-1].copy(),
                  {"source": {"kind": "synthetic"}}).fingerprint() != fingerprint
    assert _write(tmp_path / "d", frames, actions, {"source": {"kind": "other"}}).fingerprint() != fingerprint


def test_a_dataset_written_before_content_hashes_keeps_its_old_fingerprint(tmp_path):
    import hashlib

    ds = _write(tmp_path / "old", encoded_episode(0, 4), np.arange(4), {"source": {"kind": "synthetic"}})
    meta = {k: v for k, v in ds.meta.items() if k != "content_sha256"}
    (ds.path / "meta.json").write_text(json.dumps(meta))
    h = hashlib.sha256((ds.path / "meta.json").read_bytes())
    h.update((ds.path / "episode_ends.npy").read_bytes())
    assert EpisodeDataset(ds.path).fingerprint() == h.hexdigest()[:16]  # its stages stay valid
