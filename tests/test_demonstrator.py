"""Demonstrators: exact save/load as safetensors, the shipped CoinRun checkpoint, resume checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from stable_baselines3.common.policies import ActorCriticCnnPolicy

from envs.demonstrator import SHIPPED_DIR, Demonstrator, TrainExpertConfig, policy_spaces, shipped_demonstrator


def fresh_demonstrator() -> Demonstrator:
    torch.manual_seed(0)
    obs_space, act_space = policy_spaces()
    return Demonstrator(ActorCriticCnnPolicy(obs_space, act_space, lambda _: 0.0),
                        {"kind": "demonstrator", "env_name": "coinrun"})


def test_save_load_roundtrip_is_exact(tmp_path):
    demo = fresh_demonstrator()
    demo.save_pretrained(tmp_path / "demo", evaluation={"mean_return": 1.0})
    loaded = Demonstrator.from_pretrained(tmp_path / "demo")
    obs = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    for a, b in zip(demo.policy.state_dict().values(), loaded.policy.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    np.testing.assert_array_equal(demo.act(obs, deterministic=True), loaded.act(obs, deterministic=True))
    assert loaded.config["evaluation"]["mean_return"] == 1.0
    assert not any(p.suffix in (".pkl", ".zip") for p in (tmp_path / "demo").iterdir())  # weights are data


def test_missing_files_and_wrong_kind_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a demonstrator checkpoint"):
        Demonstrator.from_pretrained(tmp_path)
    fresh_demonstrator().save_pretrained(tmp_path / "d")
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    (tmp_path / "d" / "config.json").write_text(json.dumps({**config, "kind": "agent"}))
    with pytest.raises(ValueError, match="'agent' checkpoint, but a 'demonstrator'"):
        Demonstrator.from_pretrained(tmp_path / "d")


def test_no_shipped_demonstrator_for_a_game_says_how_to_train_one():
    with pytest.raises(FileNotFoundError, match="lapo train-expert --env-name bigfish"):
        shipped_demonstrator("bigfish")


def test_shipped_coinrun_demonstrator_loads_and_records_its_score():
    path = shipped_demonstrator("coinrun")
    assert path == SHIPPED_DIR / "coinrun"
    demo = Demonstrator.from_pretrained(path)
    assert demo.config["evaluation"]["episodes"] >= 100 and "command" in demo.config
    assert sum(f.stat().st_size for f in path.iterdir()) <= 5 * 2**20
    actions = demo.act(np.zeros((2, 64, 64, 3), np.uint8))
    assert actions.shape == (2,) and ((0 <= actions) & (actions < 15)).all()


def test_batch_size_must_divide_the_rollout():
    with pytest.raises(ValueError, match="multiple of batch_size"):
        TrainExpertConfig(num_envs=3, n_steps=5, batch_size=4)


def test_train_expert_resumes_from_its_checkpoint(tmp_path):
    import dataclasses

    from envs.demonstrator import CHECKPOINT_NAME, train_demonstrator

    cfg = TrainExpertConfig(total_timesteps=64, num_envs=4, n_steps=16, batch_size=32, n_epochs=1,
                            run_dir=tmp_path / "run", save_every=64, out=tmp_path / "out", threads=1)
    assert train_demonstrator(cfg).num_timesteps == 64
    assert (tmp_path / "run" / CHECKPOINT_NAME).is_file()
    (tmp_path / "run").rename(tmp_path / "moved")  # a run directory moved between sessions
    cfg = dataclasses.replace(cfg, run_dir=tmp_path / "moved")
    resumed = train_demonstrator(dataclasses.replace(cfg, total_timesteps=128))
    assert resumed.num_timesteps == 128  # continued from 64, not restarted
    # ... and logged where it is now, not at the path stored in the checkpoint
    assert list((tmp_path / "moved" / "tb").rglob("events.out.tfevents*"))
    assert not (tmp_path / "run").exists()
    # SB3 would resume with the checkpoint's values whatever the command says: refused, each named
    with pytest.raises(ValueError, match=r"n_steps: 16 in the checkpoint, 8 now; .*ent_coef: 0.01 in the "
                                         r"checkpoint, 0.0025 now.*new run directory"):
        train_demonstrator(dataclasses.replace(cfg, total_timesteps=256, n_steps=8, ent_coef=0.0025))


def test_train_expert_warm_starts_from_a_saved_demonstrator(tmp_path):
    import dataclasses

    from envs.demonstrator import Demonstrator, train_demonstrator, warm_start

    cfg = TrainExpertConfig(total_timesteps=64, num_envs=4, n_steps=16, batch_size=32, n_epochs=1,
                            run_dir=tmp_path / "run", out=tmp_path / "out", threads=1)
    first = train_demonstrator(cfg)
    Demonstrator.from_sb3(first, cfg).save_pretrained(tmp_path / "demo")  # the shipped form only
    saved = {k: v.clone() for k, v in first.policy.state_dict().items()}
    fresh = dataclasses.replace(cfg, run_dir=tmp_path / "run2", total_timesteps=128, init_from=tmp_path / "demo")
    from stable_baselines3 import PPO

    from envs.demonstrator import make_training_env

    model = PPO("CnnPolicy", make_training_env(fresh, fresh.run_dir), **fresh.ppo_kwargs())
    assert any(not torch.equal(v, model.policy.state_dict()[k]) for k, v in saved.items())
    warm_start(model, tmp_path / "demo", "coinrun")
    assert all(torch.equal(v, model.policy.state_dict()[k]) for k, v in saved.items())
    assert model.num_timesteps == 64
    # through train-expert: a new run continues the step count and trains only the remainder
    assert train_demonstrator(fresh).num_timesteps == 128
    with pytest.raises(ValueError, match=r"'coinrun' demonstrator, this run trains 'ninja'"):
        warm_start(model, tmp_path / "demo", "ninja")


def test_train_expert_stops_at_max_minutes_and_exports_nothing(tmp_path):
    from envs.demonstrator import CHECKPOINT_NAME
    from scripts.train_expert import main

    cfg = TrainExpertConfig(total_timesteps=10_000, num_envs=4, n_steps=16, batch_size=32, n_epochs=1,
                            run_dir=tmp_path / "run", out=tmp_path / "out", threads=1, max_minutes=0)
    res = main(cfg)
    assert res["stopped"] == "max_minutes" and res["env_steps"] < 10_000
    assert (tmp_path / "run" / CHECKPOINT_NAME).is_file()  # resumable
    assert not (tmp_path / "out").exists()  # the shipped form waits for total_timesteps
    with pytest.raises(ValueError, match="max_minutes"):
        TrainExpertConfig(max_minutes=-1)


def test_train_expert_run_dir_defaults_to_its_own_game():
    from pathlib import Path

    cfg = TrainExpertConfig(env_name="ninja")
    assert cfg.run_dir == Path("runs/expert_ninja") and cfg.out == Path("runs/expert_ninja/demonstrator")
    assert TrainExpertConfig(env_name="ninja", run_dir=Path("r")).out == Path("r/demonstrator")


def test_probe_recipes_train_with_their_values_in_their_own_run_directory():
    from pathlib import Path

    from envs.demonstrator import LAPO_STAGE3
    from scripts.probe_games import ProbeConfig, probe_run_config

    paper = probe_run_config(ProbeConfig(games=["ninja"], runs=Path("r")), "ninja")
    lapo = probe_run_config(ProbeConfig(games=["ninja"], runs=Path("r"), recipe="lapo-stage3"), "ninja")
    assert (paper.n_steps, paper.batch_size, paper.ent_coef) == (256, 2048, 0.01)
    assert {k: getattr(lapo, k) for k in LAPO_STAGE3} == LAPO_STAGE3
    assert paper.run_dir == Path("r/expert_ninja") and lapo.run_dir == Path("r/expert_ninja_lapo-stage3")
    ent = probe_run_config(ProbeConfig(games=["ninja"], runs=Path("r"), recipe="lapo-stage3-ent0.01"), "ninja")
    assert (ent.n_steps, ent.batch_size, ent.ent_coef) == (64, 512, 0.01)
    assert ent.run_dir == Path("r/expert_ninja_lapo-stage3-ent0.01")


def test_probe_evaluates_at_each_step_count_of_one_run(tmp_path, monkeypatch):
    import dataclasses

    import scripts.probe_games as probe

    def tiny(cfg, game):  # the probe's run, at a test's size
        return dataclasses.replace(probe_run_config_orig(cfg, game), num_envs=4, n_steps=16, batch_size=32,
                                   n_epochs=1, save_every=64)

    probe_run_config_orig = probe.probe_run_config
    monkeypatch.setattr(probe, "probe_run_config", tiny)
    cfg = probe.ProbeConfig(games=["coinrun"], steps=(128, 64), runs=tmp_path, episodes=2, out=tmp_path / "p.json")
    rows = probe.main(cfg)
    assert [r["env_steps"] for r in rows] == [64, 128]  # ascending, one run trained on between them
    assert rows[0]["random_return"] == rows[1]["random_return"]  # random evaluated once per game
    again = probe.main(dataclasses.replace(cfg, steps=(64, 128)))  # the run is past both: evaluated once
    assert [r["env_steps"] for r in again] == [128]
    assert (tmp_path / "expert_coinrun" / "ppo_checkpoint.zip").is_file()
    with pytest.raises(ValueError, match="steps"):
        probe.ProbeConfig(games=["coinrun"], steps=())


def test_training_return_summarizes_the_logged_rollouts_in_a_step_range(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from scripts.training_return import Args, main

    with SummaryWriter(tmp_path / "tb" / "PPO_1") as w:
        for step, value in [(100, 1.0), (200, 3.0), (300, 5.0), (400, 9.0)]:
            w.add_scalar("rollout/ep_rew_mean", value, step)
            w.add_scalar("train/loss", -value, step)  # another tag: not read
    out = main(Args(tb=tmp_path / "tb", from_step=200, to_step=300))
    assert out == {"rollouts": 2, "first_step": 200, "last_step": 300, "mean": 4.0, "min": 3.0, "max": 5.0}
    with pytest.raises(ValueError, match="no rollout/ep_rew_mean"):
        main(Args(tb=tmp_path / "tb", from_step=500))
