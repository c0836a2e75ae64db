"""Meta-World adapter, scripted-expert collection, evaluation protocol, CLAM's joint decoder, bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("metaworld")

from envs.dataset import EpisodeDataset  # noqa: E402
from tests.test_continuous import velocity_dataset  # noqa: E402,F401  (the moving-square video fixture)
from envs.metaworld import (EVAL_LAYOUT_START, MetaWorldCollectConfig, MetaWorldEnv, ScriptedExpert,  # noqa: E402
                            check_camera, check_task, collect)


def _gl_works() -> bool:
    try:
        env = MetaWorldEnv("reach-v3", layouts=[0])
        env.reset()
        env.close()
        return True
    except Exception:  # no EGL on this machine
        return False


pytestmark = pytest.mark.skipif(not _gl_works(), reason="MuJoCo cannot render headless here (MUJOCO_GL=egl)")


def test_layouts_are_seeded_frames_are_upright_and_not_black():
    env = MetaWorldEnv("pick-place-v3", layouts=[3, 4])
    a, info = env.reset()
    b, _ = env.reset()
    again, _ = env.reset(options={"layout": 3})
    env.close()
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8 and a.max() > 0
    assert info["layout"] == 3
    assert np.array_equal(a, again) and not np.array_equal(a, b)  # layout id = scene
    # sky (grey background) is at the top of an upright corner-camera frame, the table below it
    assert a[:8].std() < a[-16:].std()


def test_scripted_expert_succeeds_and_episode_ends_after_the_hold():
    env = MetaWorldEnv("button-press-topdown-v3", max_steps=150, success_hold=3, layouts=[EVAL_LAYOUT_START])
    expert = ScriptedExpert("button-press-topdown-v3", noise=0.1, seed=0)
    env.reset()
    flags, done, t = [], False, 0
    while not done:
        _, _, terminated, truncated, info = env.step(expert(env.state))
        flags.append(info["success"])
        done, t = terminated or truncated, t + 1
    env.close()
    first = flags.index(True)
    assert terminated and t == first + 1 + 3 and t < 150


def test_fast_render_changes_pictures_little_and_physics_not_at_all():
    frames, states = [], []
    for fast in (True, False):
        env = MetaWorldEnv("drawer-open-v3", layouts=[7], fast_render=fast)
        obs, _ = env.reset()
        for _ in range(5):
            obs, *_ = env.step(np.array([0.5, -0.5, 0.2, 1.0], np.float32))
        frames.append(obs.astype(float))
        states.append(env.state.copy())
        env.close()
    assert np.array_equal(states[0], states[1])
    assert np.abs(frames[0] - frames[1]).mean() < 12  # of 255: shading only, same scene and pose


def test_collect_writes_continuous_actions_tasks_and_layouts(tmp_path):
    cfg = MetaWorldCollectConfig(out=tmp_path / "mw", tasks=("button-press-topdown-v3", "reach-v3"),
                                 episodes_per_task=2, max_steps=30, workers=1)
    ds = EpisodeDataset(collect(cfg))
    assert ds.num_episodes == 4 and ds.meta["tasks"] == ["button-press-topdown-v3", "reach-v3"]
    assert ds.task_ids.tolist() == [0, 0, 1, 1] and ds.level_seeds.tolist() == [0, 1, 0, 1]
    actions = np.load(tmp_path / "mw" / "actions.npy")
    assert actions.shape == (len(ds), 4) and actions.dtype == np.float32 and np.abs(actions).max() <= 1
    assert ds.action_space.shape == (4,)
    assert (ds.episode_lengths <= 30).all()
    sub = ds.labeled_subset(1, 0, unit="episode", per_task=True)  # one episode of each task
    assert sorted(set(ds.task_ids[ds.episode_index[sub.indices]])) == [0, 1]
    with pytest.raises(FileExistsError):
        collect(cfg)


def test_black_frames_fail_loudly(monkeypatch):
    env = MetaWorldEnv("reach-v3", layouts=[0])
    monkeypatch.setattr(env._env, "render", lambda: np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(RuntimeError, match="all-black"):
        env.reset()
    env.close()


def test_evaluation_plays_each_unseen_layout_once():
    from lapo.evaluate import evaluate_metaworld, random_act

    box = {"type": "Box", "low": [-1.0] * 4, "high": [1.0] * 4, "shape": [4]}
    res = evaluate_metaworld(random_act(box), ["reach-v3"], episodes=3, num_envs=2, max_steps=10)["reach-v3"]
    assert sorted(res.level_seeds.tolist()) == [EVAL_LAYOUT_START + i for i in range(3)]
    assert res.lengths.tolist() == [10, 10, 10] and res.successes.dtype == bool


def test_bad_task_and_camera_are_named():
    with pytest.raises(ValueError, match="did you mean reach-v3"):
        check_task("reach")
    with pytest.raises(ValueError, match="unknown Meta-World camera 'side'.*corner"):
        check_camera("side")
    with pytest.raises(ValueError, match="evaluation layouts"):
        MetaWorldCollectConfig(layout_start=EVAL_LAYOUT_START - 5, episodes_per_task=10)


def test_cli_errors_name_bad_values(tmp_path):
    def lapo(*args):
        return subprocess.run([sys.executable, "-m", "scripts.cli", *args], capture_output=True, text=True)

    proc = lapo("collect", "--domain", "metaworld", "--tasks", "pick-place", "--out", str(tmp_path / "d"))
    assert proc.returncode == 2 and "pick-place-v3" in proc.stderr
    proc = lapo("collect", "--domain", "metaworld", "--camera", "nope", "--out", str(tmp_path / "d"))
    assert proc.returncode == 2 and "'nope'" in proc.stderr and "corner2" in proc.stderr
    proc = lapo("collect", "--domain", "atari", "--out", str(tmp_path / "d"))
    assert proc.returncode == 2 and "'atari'" in proc.stderr and "metaworld" in proc.stderr
    assert not (tmp_path / "d").exists()


def test_heads_refuse_actions_of_the_other_kind():
    from lapo.decoder import ActionCoding, ActionHeadConfig, fit_action_head

    box = {"type": "Box", "low": [-1.0] * 4, "high": [1.0] * 4, "shape": [4]}
    discrete = {"type": "Discrete", "n": 15}
    z = np.zeros((6, 8), np.float32)
    with pytest.raises(ValueError, match="Discrete\\(15\\).*Box"):
        fit_action_head(z, np.zeros((6, 4), np.float32), ActionHeadConfig(), discrete)
    with pytest.raises(ValueError, match="Box\\(4,\\).*Discrete"):
        fit_action_head(z, np.zeros(6, np.int64), ActionHeadConfig(), box)
    with pytest.raises(ValueError, match="outputs Discrete\\(15\\).*takes Box\\(4,\\)"):
        ActionCoding(discrete).require(box, "drawer-open-v3")
    ActionCoding(box).require(box, "drawer-open-v3")  # the same space passes


def test_clam_decoder_is_trained_jointly_and_saved(velocity_dataset, tmp_path):
    """A continuous-latent LAM with a joint action decoder learns the velocity of the moving-square
    video from 8 labeled episodes; the decoder is saved with the LAM (a random-weight decoder fails)."""
    import torch

    from lapo.decoder import ActionHeadConfig
    from lapo.lam import LAMConfig, LAMTrainConfig, LatentActionModel, encode_transitions, train_lam

    path = velocity_dataset
    ds = EpisodeDataset(path)
    labeled = ds.labeled_subset(8, 0, unit="episode")
    cfg = LAMConfig(idm_channels=(8, 16, 16), idm_hidden=32, widths=(8, 16, 16), latent_dim=4, quantizer="none")
    train_lam(path, tmp_path / "lam", cfg, LAMTrainConfig(steps=400, batch_size=32, lr=2e-3, probe_k=0, eval_every=400,
                                                          threads=1, precision="fp32"), labeled=labeled,
              head_cfg=ActionHeadConfig(continuous="regression"))
    loaded = LatentActionModel.from_pretrained(tmp_path / "lam")
    assert loaded.action_decoder is not None and loaded.cfg.quantizer == "none"
    test = np.setdiff1d(ds.transition_indices, labeled.indices)[:200]
    z, _ = encode_transitions(loaded, ds, test)
    truth = ds.oracle_actions()[test]
    with torch.no_grad():
        pred = loaded.action_decoder.coding.decode(loaded.action_decoder(torch.as_tensor(z)), deterministic=True)
        untrained = LatentActionModel.from_config(json.loads((tmp_path / "lam" / "config.json").read_text())["config"])
        base = untrained.action_decoder.coding.decode(untrained.action_decoder(torch.as_tensor(z)), deterministic=True)

    def r2(p):
        return 1 - ((p - truth) ** 2).mean() / ((truth - truth.mean(0)) ** 2).mean()

    assert r2(pred) > 0.4 and r2(base) < 0.1  # measured: 0.64 (held out) vs < 0


def test_benchmark_end_to_end_tiny(tmp_path, monkeypatch):
    """The Meta-World sweep at toy budgets: every cell runs, one layout block per seed for all
    methods, k counts episodes per task, the report has a row per method and the targets block;
    the ``ours`` agent is saved and the GIF plays it without retraining."""
    from envs.metaworld import MetaWorldCollectConfig
    from lapo.agent import Agent
    from lapo.benchmark import METHODS, agent_path
    from lapo.benchmark_metaworld import MetaWorldBenchmarkConfig, record_agent_gif, run_metaworld_benchmark
    from lapo.lam import LAMConfig, LAMTrainConfig
    from lapo.policy import PolicyConfig, PolicyTrainConfig

    tiny_lam = dict(idm_channels=(8, 16, 16), idm_hidden=32, widths=(8, 16, 16), latent_dim=4)
    steps = PolicyTrainConfig(steps=5, batch_size=8)
    cfg = MetaWorldBenchmarkConfig(
        video=MetaWorldCollectConfig(tasks=("button-press-topdown-v3",), episodes_per_task=4, max_steps=20),
        ks=(1,), seeds=(0,), methods=("oracle_bc", "bc", "ours_bins", "ours_tuned", "clam"), ours="ours_bins", run_dir=tmp_path / "bench", eval_episodes=2,
        lam=LAMConfig(**tiny_lam), clam_lam=LAMConfig(**tiny_lam, quantizer="none"),
        lam_train=LAMTrainConfig(steps=5, batch_size=8, probe_k=0, eval_every=5), policy=PolicyConfig(channels=(8, 16, 16), hidden=32),
        policy_train=steps, bc_train=steps, idm_train=steps, threads=1)
    results = run_metaworld_benchmark(cfg)
    assert not results["missing_cells"]
    assert [r["method"] for r in results["rows"]] == ["random", "oracle_bc", "bc", "ours_bins", "ours_tuned", "clam"]
    assert all(r["episodes_per_task"] == 2 for r in results["rows"])
    episodes = results["labeled_transitions"]["k1_seed0"]
    assert 2 <= episodes <= 20  # one labeled episode of the only task
    assert (tmp_path / "bench" / "results.md").read_text().count("\n|") >= 7
    saved = Agent.from_pretrained(agent_path(cfg.run_dir, "metaworld", "ours_bins", 1, 0))
    assert saved.pretrained_meta == {"method": "ours_bins", "k": 1, "seed": 0}
    monkeypatch.setitem(METHODS, "ours_bins", lambda *a: pytest.fail("the GIF retrained the saved agent"))
    assert record_agent_gif(cfg, tmp_path / "agent.gif").stat().st_size > 0


def test_targets_use_paired_differences_on_the_same_layouts():
    from lapo.benchmark_metaworld import MetaWorldBenchmarkConfig, aggregate, format_results

    cfg = MetaWorldBenchmarkConfig(methods=("oracle_bc", "bc", "ours_regression"), ours="ours_regression")
    tasks = cfg.tasks

    def cell(method, k, rates, seed=0):
        return {"method": method, "k": k, "seed": seed, "level_seeds": list(range(10 * len(tasks))),
                "probe_accuracy": None, "action_accuracy": None, "train_seconds": 0, "eval_seconds": 0,
                "tasks": {t: {"successes": [1] * int(10 * r) + [0] * (10 - int(10 * r))} for t, r in zip(tasks, rates)}}

    cells = [cell("random", None, [0] * 5), cell("oracle_bc", None, [1, 1, 0.8, 0.6, 0.2]),
             cell("bc", 5, [0.3] * 5), cell("ours_regression", 5, [0.9, 0.9, 0.8, 0.6, 0.0])]
    t = aggregate(cells, cfg)["targets"]["k5"]
    assert t["tasks_oracle_ge_0.5"] == list(tasks[:4])  # pick-place (0.2) is left out
    assert abs(t["ratio"] - 0.8 / 0.85) < 1e-9 and t["ours_ge_0.8_oracle"]
    assert t["ours_minus_bc"]["ours_above"] and abs(t["ours_minus_bc"]["mean"] - 0.5) < 1e-9
    # a second seed where ours only ties BC: pooled over seeds, with each seed's difference reported
    seed1 = [cell("random", None, [0] * 5, 1), cell("oracle_bc", None, [1, 1, 0.8, 0.6, 0.2], 1),
             cell("bc", 5, [0.3] * 5, 1), cell("ours_regression", 5, [0.3] * 5, 1)]
    both = aggregate(cells + seed1, cfg)["targets"]["k5"]["ours_minus_bc"]
    assert both["per_seed"] == pytest.approx({0: 0.5, 1: 0.0}) and both["mean"] == pytest.approx(0.25)
    results = aggregate(cells + seed1, cfg)
    ours = next(r for r in results["rows"] if r["method"] == "ours_regression")
    assert ours["seeds"] == [0, 1] and ours["per_seed_average"] == pytest.approx([0.64, 0.3])
    assert "ours_regression k=5: seed 0 0.64, seed 1 0.30" in format_results(results)
    assert "(seed 0 only)" in format_results(aggregate(cells + seed1[:-1], cfg))  # a row short of seeds says so
    cells[-1]["level_seeds"] = cells[-1]["level_seeds"][::-1]
    with pytest.raises(ValueError, match="other layouts"):
        aggregate(cells, cfg)
