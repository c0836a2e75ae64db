"""Procgen adapter: SB3 VecEnv contract, episode boundaries, level seeds, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from envs.procgen import GAMES, ProcgenVecEnv


def test_all_16_games_step_with_gymnasium_spaces():
    assert len(GAMES) == 16
    for game in GAMES:
        env = ProcgenVecEnv(game, num_envs=2, num_levels=10)
        obs = env.reset()
        assert obs.shape == (2, 64, 64, 3) and obs.dtype == np.uint8
        assert env.observation_space.contains(obs[0]) and env.action_space.n == 15
        obs, rew, done, infos = env.step(np.array([0, 1]))
        assert rew.dtype == np.float32 and done.dtype == bool and len(infos) == 2


def test_episode_end_reports_return_length_and_level_seed_of_the_ended_episode():
    env = ProcgenVecEnv("coinrun", num_envs=4, start_level=500, num_levels=20, rand_seed=1)
    seeds_at_start = env.level_seeds()
    rng = np.random.default_rng(0)
    total, steps, ended = np.zeros(4), np.zeros(4, int), None
    while ended is None:
        _, rew, done, infos = env.step(rng.integers(0, 15, 4))
        total += rew
        steps += 1
        if done.any():
            ended = int(np.flatnonzero(done)[0])
    info = infos[ended]["episode"]
    assert info["r"] == pytest.approx(total[ended]) and info["l"] == steps[ended]
    assert info["level_seed"] == seeds_at_start[ended]
    assert all(500 <= s < 520 for s in env.level_seeds())


def test_same_rand_seed_gives_the_same_levels():
    a = ProcgenVecEnv("coinrun", 8, start_level=10**6, num_levels=1000, rand_seed=3).level_seeds()
    b = ProcgenVecEnv("coinrun", 8, start_level=10**6, num_levels=1000, rand_seed=3).level_seeds()
    np.testing.assert_array_equal(a, b)


def test_sb3_ppo_runs_on_the_adapter():
    from stable_baselines3 import PPO

    env = ProcgenVecEnv("coinrun", num_envs=2, num_levels=5)
    model = PPO("CnnPolicy", env, n_steps=8, batch_size=16, n_epochs=1, device="cpu")
    model.learn(16)
    assert model.num_timesteps >= 16


@pytest.mark.parametrize("kwargs, match", [
    ({"env_name": "coinrunn"}, "unknown Procgen game 'coinrunn'"),
    ({"distribution_mode": "medium"}, "distribution_mode 'medium'"),
    ({"num_levels": 0}, "num_levels must be >= 1"),
])
def test_bad_arguments_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ProcgenVecEnv(**{"num_envs": 1, **kwargs})
