"""The one model interface (save_pretrained / from_pretrained for every model), damaged checkpoints
named as such, the device rule, and the atomic writes underneath."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from envs.io import atomic_dir, atomic_write_text, jsonable
from envs.pretrained import load_weights, read_config, resolve_device
from lapo.agent import Agent
from lapo.baselines import SupervisedIDM
from lapo.decoder import ActionHead, ActionHeadConfig
from lapo.lam import LAMConfig, LatentActionModel
from lapo.policy import Policy, PolicyConfig

TINY_POLICY = PolicyConfig(channels=(8, 8, 8), hidden=16, out_dim=4)
HEAD = ActionHeadConfig(latent_dim=4, hidden=8)


def models():
    torch.manual_seed(0)
    box = {"type": "Box", "low": [-1.0] * 3, "high": [1.0] * 3, "shape": [3]}
    return {
        "lam": LatentActionModel(LAMConfig(idm_channels=(8, 8, 8), idm_hidden=16, widths=(8, 8, 8), latent_dim=4)),
        "policy": Policy(TINY_POLICY),
        "action_head": ActionHead(HEAD, HEAD.coding(box)),
        "agent": Agent(Policy(TINY_POLICY), ActionHead(HEAD, HEAD.coding({"type": "Discrete", "n": 5}))),
        "supervised_idm": SupervisedIDM(TINY_POLICY),
    }


@pytest.mark.parametrize("kind", list(models()))
def test_every_model_round_trips_exactly_from_its_config_alone(tmp_path, kind):
    model = models()[kind].eval()
    model.save_pretrained(tmp_path / kind, note="x")
    loaded = type(model).from_pretrained(tmp_path / kind)
    assert read_config(tmp_path / kind, kind)["kind"] == kind and loaded.pretrained_meta == {"note": "x"}
    assert not loaded.training
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_truncated_weights_and_broken_config_are_named(tmp_path):
    model = models()["policy"]
    model.save_pretrained(tmp_path / "p")
    weights = tmp_path / "p" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated or not a safetensors file"):
        Policy.from_pretrained(tmp_path / "p")
    model.save_pretrained(tmp_path / "q")
    (tmp_path / "q" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        Policy.from_pretrained(tmp_path / "q")
    with pytest.raises(ValueError, match="'policy' checkpoint, but a 'lam' checkpoint"):
        LatentActionModel.from_pretrained(tmp_path / "p")


def test_weights_of_another_architecture_are_refused(tmp_path):
    models()["policy"].save_pretrained(tmp_path / "p")
    with pytest.raises(ValueError, match="does not match the model"):
        load_weights(tmp_path / "p", Policy(PolicyConfig(channels=(8, 8, 8), hidden=32, out_dim=4)))


def test_device_rule():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available; use --device cpu"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="not a device name"):
        resolve_device("gpu0")


def test_agent_puts_a_head_on_its_policys_device():
    policy = Policy(TINY_POLICY).to("meta")
    agent = Agent(policy, ActionHead(HEAD, HEAD.coding({"type": "Discrete", "n": 5})))
    assert agent.head.net[0].weight.device.type == "meta"


def test_atomic_dir_keeps_the_old_directory_when_the_write_fails(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("new, half written")
            raise RuntimeError("killed")
    assert (target / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary left behind
    with pytest.raises(FileExistsError, match="--overwrite"):
        with atomic_dir(target, overwrite=False):
            pass
    atomic_write_text(tmp_path / "f.json", json.dumps(jsonable({"p": tmp_path, "t": (1, 2)})))
    assert json.loads((tmp_path / "f.json").read_text()) == {"p": str(tmp_path), "t": [1, 2]}


def test_nets_scale_pixels_once_and_channels_last_changes_only_the_layout():
    from lapo.nets import build_encoder, to_float

    frames = torch.randint(0, 256, (2, 3, 64, 64, 3), dtype=torch.uint8)
    x, y = to_float(frames), to_float(frames, channels_last=True)
    assert x.shape == (2, 9, 64, 64) and torch.equal(x, y) and y.is_contiguous(memory_format=torch.channels_last)
    assert float(x.max()) <= 1.0 and torch.equal(x[:, 3:6], frames[:, 1].permute(0, 3, 1, 2).float() / 255)
    for kind, channels in (("nature", (8, 8, 8)), ("impala", (8, 8))):
        assert build_encoder(kind, 9, 64, channels, 16, 5)(x).shape == (2, 5)
    with pytest.raises(ValueError, match="encoder 'resnet'"):
        build_encoder("resnet", 9, 64, (8,), 16, 5)


def test_collect_records_whole_episodes_on_training_levels_with_their_action_space(tmp_path):
    from envs.collect import CollectConfig, collect
    from envs.dataset import EpisodeDataset
    from envs.procgen import EVAL_START_LEVEL, N_ACTIONS

    ds = EpisodeDataset(collect(CollectConfig(out=tmp_path / "d", policy="random", num_frames=200, num_envs=4)))
    assert len(ds) >= 200 and ds.action_space.n == N_ACTIONS
    actions = np.asarray(ds.oracle_actions())
    assert actions.dtype == np.int64 and ((0 <= actions) & (actions < N_ACTIONS)).all()
    assert ((0 <= ds.level_seeds) & (ds.level_seeds < EVAL_START_LEVEL)).all()
    assert (ds.episode_lengths >= 2).all() and ds.meta["collect_config"]["num_frames"] == 200


def test_layers_point_one_way():
    """envs never imports lapo or worldmodel; lapo never imports worldmodel or scripts."""
    import re
    from pathlib import Path

    root = Path(__file__).parents[1]
    rules = {"envs": ("lapo", "worldmodel", "scripts"), "lapo": ("worldmodel", "scripts")}
    for package, forbidden in rules.items():
        for file in (root / package).rglob("*.py"):
            for line in file.read_text().splitlines():
                m = re.match(r"\s*(?:from|import)\s+(\w+)", line)
                assert not (m and m.group(1) in forbidden), f"{file.relative_to(root)}: {line.strip()}"
