"""Demonstrators: PPO agents (stable-baselines3) that play a Procgen game and produce the video.

Training is SB3's PPO with its Nature CNN ``CnnPolicy`` and Procgen-paper hyperparameters
(Cobbe et al. 2020, App. B: 64 envs × 256 steps, 3 epochs of 8 minibatches, lr 5e-4, γ 0.999,
λ 0.95, entropy 0.01), including the paper's reward normalization (baselines' ``VecNormalize``
with observations left raw; SB3: ``VecNormalize(venv, norm_obs=False, norm_reward=True)``), which
SB3's PPO does not do by default and without which games with large reward scales (fruitbot,
starpilot) learn slowly. The IMPALA CNN is far slower on a CPU; the Nature CNN reaches the target
return on CoinRun in a few million steps.

Two on-disk forms:
- a resume checkpoint in the run directory (``ppo_checkpoint.zip`` + ``vecnormalize.pkl``, SB3's
  own formats, used only to continue training, possibly across sessions);
- the shipped demonstrator (``config.json`` + ``model.safetensors``): weights as data, loaded into
  a policy rebuilt from the config, never unpickled.

Dimension keys: N envs, H W C image (64, 64, 3), pixels uint8 in [0, 255].
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from envs.io import jsonable
from envs.pretrained import Pretrained
from envs.procgen import N_ACTIONS, TRAIN_NUM_LEVELS, TRAIN_START_LEVEL, ProcgenVecEnv, check_game

SHIPPED_DIR = Path(__file__).parent / "demonstrators"
CHECKPOINT_NAME = "ppo_checkpoint.zip"
NORMALIZE_NAME = "vecnormalize.pkl"  # VecNormalize's running return statistics, saved with the checkpoint


@dataclass
class PPOConfig:
    """PPO on Procgen's training levels: the game, the Procgen-paper hyperparameters and the run
    mechanics, shared by ``lapo train-expert`` (demonstrators) and ``lapo finetune`` (the same
    settings for the fine-tuned agent and for PPO from scratch)."""

    env_name: str = "coinrun"
    """Procgen game."""
    distribution_mode: str = "easy"
    """Procgen difficulty, ``easy`` or ``hard``."""
    num_envs: int = 64
    """Parallel Procgen environments."""
    n_steps: int = 256
    """Rollout length per env per PPO update."""
    batch_size: int = 2048
    """PPO minibatch size (num_envs × n_steps / batch_size minibatches: 64 × 256 / 2048 = 8)."""
    n_epochs: int = 3
    """PPO epochs per update."""
    learning_rate: float = 5e-4
    """Adam learning rate."""
    gamma: float = 0.999
    """Discount."""
    gae_lambda: float = 0.95
    """GAE λ."""
    ent_coef: float = 0.01
    """Entropy bonus."""
    clip_range: float = 0.2
    """PPO clip ε."""
    norm_reward: bool = True
    """Scale rewards by a running std of the discounted return (Procgen paper; SB3 ``VecNormalize``
    with ``norm_obs=False``). Evaluation and the logged returns stay raw."""
    seed: int = 0
    """Torch/SB3 seed and Procgen level-draw seed."""
    save_every: int = 250_000
    """Env steps between resume checkpoints."""
    threads: int = 2
    """torch CPU threads."""
    device: str = "cpu"
    """Torch device of the PPO networks (``cpu`` or ``cuda``); on a 2-core CPU, ``cpu`` is the one there is."""

    def __post_init__(self):
        check_game(self.env_name, self.distribution_mode)
        if (self.num_envs * self.n_steps) % self.batch_size:
            raise ValueError(f"num_envs * n_steps = {self.num_envs * self.n_steps} must be a multiple "
                             f"of batch_size = {self.batch_size}")

    def ppo_kwargs(self) -> dict:
        """Keyword arguments of SB3's ``PPO`` for these hyperparameters."""
        return dict(n_steps=self.n_steps, batch_size=self.batch_size, n_epochs=self.n_epochs,
                    learning_rate=self.learning_rate, gamma=self.gamma, gae_lambda=self.gae_lambda,
                    ent_coef=self.ent_coef, clip_range=self.clip_range, seed=self.seed, device=self.device, verbose=0)


LAPO_STAGE3 = {"n_steps": 64, "batch_size": 512, "ent_coef": 0.0025}
"""Where LAPO's stage-3 fine-tuning departs from the demonstrators' PPO values (Schmidt & Jiang 2024,
repository ``schmidtdominik/LAPO``, ``lapo/config.yaml`` ``stage3``: 64-step rollouts, 8 minibatches,
entropy 0.0025): the defaults of ``lapo finetune`` and of the benchmark's RL rows, for the fine-tuned
agent and PPO from scratch alike (README "RL fine-tuning": on CoinRun seed 0 both runs scored higher
after 1M frames with these than with the demonstrators' values)."""


@dataclass
class TrainExpertConfig(PPOConfig):
    """PPO demonstrator training (``lapo train-expert``)."""

    total_timesteps: int = 3_000_000
    """Env steps to train for in total (a resumed run trains only the remainder)."""
    run_dir: Path | None = None
    """Holds the resume checkpoint and tensorboard logs; an existing checkpoint here is resumed.
    None = ``runs/expert_<env_name>`` (never another game's run)."""
    out: Path | None = None
    """Where the shipped form (config.json + model.safetensors) is written at the end;
    None = ``run_dir/demonstrator``."""
    eval_episodes: int = 200
    """Episodes on unseen levels for the return recorded next to the checkpoint."""
    max_minutes: float | None = None
    """Wall-clock budget of this call: training stops at the first PPO step past it and saves the
    resume checkpoint (re-run to continue; the shipped form is written only once
    ``total_timesteps`` is reached). None: no budget."""
    init_from: Path | None = None
    """A demonstrator directory of the same game (config.json + model.safetensors, e.g. a shipped
    one or ``envs/demonstrators/candidates/GAME``) to start a *new* run from: its policy weights and
    env-step count, a fresh optimizer and fresh reward statistics (:func:`warm_start`). Ignored
    once ``run_dir`` holds a resume checkpoint, which is resumed instead. None: random init."""

    def __post_init__(self):
        super().__post_init__()
        if self.run_dir is None:
            self.run_dir = Path(f"runs/expert_{self.env_name}")
        if self.out is None:
            self.out = Path(self.run_dir) / "demonstrator"
        if self.total_timesteps < 1:
            raise ValueError(f"total_timesteps must be >= 1, got {self.total_timesteps}")
        if self.max_minutes is not None and self.max_minutes < 0:
            raise ValueError(f"max_minutes must be >= 0 or None, got {self.max_minutes}")


def policy_spaces():
    # SB3 wraps channel-last images in VecTransposeImage, so the policy itself sees (3, 64, 64).
    return gym.spaces.Box(0, 255, (3, 64, 64), np.uint8), gym.spaces.Discrete(N_ACTIONS)


def train_demonstrator(cfg: TrainExpertConfig):
    """Train (or resume) PPO with SB3's ``CnnPolicy`` on ``cfg.env_name``; returns the SB3 model,
    whose ``num_timesteps`` is below ``cfg.total_timesteps`` when ``cfg.max_minutes`` ran out.
    Resumable across sessions (:func:`learn_ppo`)."""
    import time

    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    class TimeBudget(BaseCallback):
        """Stops ``learn`` at the first step past ``cfg.max_minutes`` of wall time."""

        def __init__(self):
            super().__init__()
            self.deadline = time.monotonic() + 60 * cfg.max_minutes

        def _on_step(self) -> bool:
            return time.monotonic() < self.deadline

    def new_model(env):
        model = PPO("CnnPolicy", env, tensorboard_log=str(cfg.run_dir / "tb"), **cfg.ppo_kwargs())
        if cfg.init_from is not None:
            warm_start(model, Path(cfg.init_from), cfg.env_name)
        return model

    return learn_ppo(cfg, cfg.run_dir, cfg.total_timesteps, new_model,
                     callbacks=() if cfg.max_minutes is None else (TimeBudget(),),
                     desc=f"train-expert {cfg.env_name}")


def warm_start(model, path: Path, env_name: str) -> None:
    """Load a saved demonstrator's policy weights into a new SB3 PPO ``model`` and continue its
    env-step count (``config.json`` ``env_steps``), so that a run can go on from weights alone (the
    shipped form, 2.4 MB) where the resume checkpoint (~9.5 MB, pickled, with Adam's moments) was
    not kept. What is not in the weights restarts: Adam's moments and ``VecNormalize``'s return
    statistics; the PPO values are this run's.

    Raises:
        FileNotFoundError / ValueError: ``path`` is not a demonstrator directory (see
            :meth:`Pretrained.from_pretrained`), or it plays another game than ``env_name``.
    """
    demo = Demonstrator.from_pretrained(path)
    if demo.config.get("env_name") != env_name:
        raise ValueError(f"--init-from {path} is a {demo.config.get('env_name')!r} demonstrator, this run trains "
                         f"{env_name!r}: pass a demonstrator of {env_name!r}, or none")
    model.policy.load_state_dict(demo.policy.state_dict())
    model.num_timesteps = int(demo.config["env_steps"])
    print(f"warm start from {path}: its weights at {model.num_timesteps} env steps (fresh optimizer "
          f"and reward statistics)")


def learn_ppo(cfg: PPOConfig, run_dir: Path, total_timesteps: int, new_model, callbacks=(), desc: str = "ppo"):
    """Train an SB3 PPO model on Procgen's training levels up to ``total_timesteps`` env steps.

    A ``run_dir`` that already holds ``ppo_checkpoint.zip`` is resumed from it (with its
    ``VecNormalize`` statistics; tensorboard logs go to ``run_dir/tb`` even if the run directory was
    moved since), so a long run can span several sessions; otherwise
    ``new_model(env)`` builds the model. The checkpoint is rewritten atomically every
    ``cfg.save_every`` steps and at the end.

    Args:
        cfg: game and hyperparameters (:class:`PPOConfig`).
        run_dir: checkpoint and tensorboard directory (created).
        total_timesteps: env steps in total, counting those of a resumed run.
        new_model: ``VecEnv -> PPO`` for a fresh run.
        callbacks: extra SB3 callbacks (e.g. evaluation), run after the checkpointing one.
        desc: progress-bar label.
    """
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback, CallbackList

    torch.set_num_threads(cfg.threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / CHECKPOINT_NAME
    env = make_training_env(cfg, run_dir, resume=ckpt.exists())
    if ckpt.exists():
        # the checkpoint stores the tensorboard path of the run that wrote it: log where the run is now
        model = PPO.load(ckpt, env=env, device=cfg.device, tensorboard_log=str(run_dir / "tb"))
        check_resumed_values(model, cfg, ckpt)
        print(f"resuming {ckpt} at {model.num_timesteps} env steps")
    else:
        model = new_model(env)

    class SaveCallback(BaseCallback):
        """Resume checkpoint every ``save_every`` steps, plus a tqdm bar over env steps."""

        def __init__(self):
            super().__init__()
            self.next_save = model.num_timesteps + cfg.save_every
            self.bar = tqdm(total=total_timesteps, initial=model.num_timesteps, unit="step", desc=desc,
                            smoothing=0.05)

        def _on_step(self) -> bool:
            self.bar.update(self.model.num_timesteps - self.bar.n)
            if self.model.num_timesteps >= self.next_save:
                save_resume_checkpoint(self.model, ckpt)
                self.next_save += cfg.save_every
            return True

    remaining = total_timesteps - model.num_timesteps
    if remaining > 0:
        save = SaveCallback()
        model.learn(remaining, callback=CallbackList([save, *callbacks]), reset_num_timesteps=False,
                    tb_log_name="ppo")
        save.bar.close()
        save_resume_checkpoint(model, ckpt)
    return model


def check_resumed_values(model, cfg: PPOConfig, ckpt: Path) -> None:
    """SB3 resumes with the hyperparameters saved in the checkpoint, whatever the command says; so a
    resumed run whose command asks for other values raises instead of silently training with the old
    ones.

    Raises:
        ValueError: naming each differing value (``n_steps: 256 in the checkpoint, 64 now``) and the fix.
    """
    saved = {"num_envs": model.n_envs, "n_steps": model.n_steps, "batch_size": model.batch_size,
             "n_epochs": model.n_epochs, "gamma": model.gamma, "gae_lambda": model.gae_lambda,
             "ent_coef": model.ent_coef, "learning_rate": model.learning_rate}
    diff = [f"{k}: {v} in the checkpoint, {getattr(cfg, k)} now" for k, v in saved.items()
            if isinstance(v, (int, float)) and not np.isclose(v, getattr(cfg, k), rtol=1e-9, atol=0)]
    if diff:
        raise ValueError(f"{ckpt} was trained with other PPO values ({'; '.join(diff)}): pass the "
                         f"checkpoint's values to resume it, or a new run directory to start afresh")


def make_training_env(cfg: PPOConfig, run_dir: Path, resume: bool = False):
    """The training ``VecEnv``: Procgen on the training levels, wrapped in ``VecNormalize`` (rewards
    only) when ``cfg.norm_reward``; a resumed run reloads the normalizer's running statistics."""
    from stable_baselines3.common.vec_env import VecNormalize

    env = ProcgenVecEnv(cfg.env_name, cfg.num_envs, cfg.distribution_mode, TRAIN_START_LEVEL,
                        TRAIN_NUM_LEVELS, rand_seed=cfg.seed)
    if not cfg.norm_reward:
        return env
    stats = run_dir / NORMALIZE_NAME
    if resume and stats.exists():
        return VecNormalize.load(str(stats), env)
    if resume:
        print(f"{stats} not found: reward normalization restarts its statistics")
    return VecNormalize(env, norm_obs=False, norm_reward=True, gamma=cfg.gamma)


def save_resume_checkpoint(model, path: Path) -> None:
    """Write SB3's resume checkpoint (and the ``VecNormalize`` statistics next to it) atomically."""
    tmp = path.with_name(path.name + ".tmp.zip")
    model.save(tmp)
    env = model.get_vec_normalize_env()
    if env is not None:
        stats = path.with_name(NORMALIZE_NAME)
        env.save(str(stats) + ".tmp")
        os.replace(str(stats) + ".tmp", stats)
    os.replace(tmp, path)


class Demonstrator(Pretrained, nn.Module):
    """A trained PPO policy that acts on raw Procgen frames.

    Use ``Demonstrator.from_pretrained(dir)`` (kind ``demonstrator``; the shipped ones have a flat
    ``config.json``); ``act(obs)`` takes ``(N, 64, 64, 3)`` uint8 frames and returns ``(N,)`` int64
    actions (sampled from the policy unless ``deterministic``). Its weights are the SB3 policy's.
    """

    kind = "demonstrator"

    def __init__(self, policy, config: dict):
        super().__init__()
        self.policy = policy.eval()
        self.config = config

    def to_config(self) -> dict:
        return self.config

    @classmethod
    def from_config(cls, config: dict) -> "Demonstrator":
        from stable_baselines3.common.policies import ActorCriticCnnPolicy

        obs_space, act_space = policy_spaces()
        return cls(ActorCriticCnnPolicy(obs_space, act_space, lr_schedule=lambda _: 0.0), config)

    def _weights_module(self) -> nn.Module:
        return self.policy

    def save_pretrained(self, path: str | os.PathLike, **extra) -> Path:
        """Write ``config.json`` + ``model.safetensors`` atomically; ``extra`` (evaluation, command)
        is merged into ``self.config``, where the shipped demonstrators keep it."""
        self.config = {**self.config, **jsonable(extra)}
        return super().save_pretrained(path)

    @torch.no_grad()
    def act(self, obs_NHWC: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Actions ``(N,)`` int64 for frames ``(N, 64, 64, 3)`` uint8."""
        obs, _ = self.policy.obs_to_tensor(np.asarray(obs_NHWC))  # transposes to (N, C, H, W)
        dist = self.policy.get_distribution(obs)  # the policy scales pixels by 1/255
        return dist.get_actions(deterministic=deterministic).numpy().astype(np.int64)

    @classmethod
    def from_sb3(cls, model, cfg: TrainExpertConfig) -> "Demonstrator":
        config = {"algo": "sb3-ppo", "policy": "CnnPolicy (Nature CNN)",
                  "env_name": cfg.env_name, "distribution_mode": cfg.distribution_mode,
                  "env_steps": int(model.num_timesteps), "train_config": jsonable(cfg)}
        return cls(model.policy, config)


def shipped_demonstrator(env_name: str) -> Path:
    """Directory of the demonstrator shipped with the package for ``env_name``.

    Raises:
        FileNotFoundError: none is shipped for that game; train one with ``lapo train-expert``.
    """
    path = SHIPPED_DIR / env_name
    if not (path / "model.safetensors").is_file():
        shipped = sorted(p.name for p in SHIPPED_DIR.glob("*") if (p / "model.safetensors").is_file())
        raise FileNotFoundError(f"no shipped demonstrator for {env_name!r} (shipped: {shipped}); "
                                f"train one with `lapo train-expert --env-name {env_name}`")
    return path
