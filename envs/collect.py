"""Record demonstrator (or random-policy) video from Procgen into an episode dataset.

Only whole episodes are stored; collection stops at the first episode end after ``num_frames``
frames. Each frame ``o_t`` is stored with the action ``a_t`` taken at it and the reward received
after it, and each episode with its Procgen level seed.

Dimension keys: N envs, H W C image, pixels uint8.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from envs.dataset import EpisodeWriter, space_to_json
from envs.procgen import TRAIN_NUM_LEVELS, TRAIN_START_LEVEL, ProcgenVecEnv, check_game


@dataclass
class CollectConfig:
    """``lapo collect``: record N frames of video from a Procgen game."""

    out: Path = Path("data/coinrun")
    """Dataset directory to create."""
    env_name: str = "coinrun"
    """Procgen game."""
    num_frames: int = 100_000
    """Frames to record (whole episodes; the last one may run over)."""
    demonstrator: Path | None = None
    """Demonstrator directory (config.json + model.safetensors); None = the shipped one for
    ``env_name``. Ignored with ``policy=random``."""
    policy: str = "demonstrator"
    """``demonstrator`` or ``random`` (uniform actions)."""
    distribution_mode: str = "easy"
    """Procgen difficulty."""
    start_level: int = TRAIN_START_LEVEL
    """First level seed of the video's level range."""
    num_levels: int = TRAIN_NUM_LEVELS
    """Size of the video's level range."""
    num_envs: int = 64
    """Parallel envs."""
    seed: int = 0
    """Level-draw and action-sampling seed."""
    overwrite: bool = False
    """Replace an existing dataset at ``out`` (only once the new one is complete)."""

    def __post_init__(self):
        check_game(self.env_name, self.distribution_mode)
        if self.policy not in ("demonstrator", "random"):
            raise ValueError(f"policy {self.policy!r}: choose 'demonstrator' or 'random'")
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")


def collect(cfg: CollectConfig) -> Path:
    """Run ``cfg`` and return the dataset path. Raises ``FileExistsError`` if ``cfg.out`` exists
    and ``overwrite`` is False (checked before any env step)."""
    import torch

    from envs.demonstrator import Demonstrator, shipped_demonstrator

    if Path(cfg.out).exists() and not cfg.overwrite:
        raise FileExistsError(f"{cfg.out} already exists; pass --overwrite to replace it or choose "
                              "another --out")
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    act = None
    collector = {"policy": cfg.policy}
    if cfg.policy == "demonstrator":
        demo_dir = cfg.demonstrator or shipped_demonstrator(cfg.env_name)
        demo = Demonstrator.from_pretrained(demo_dir)
        act = demo.act
        collector.update(demonstrator=str(demo_dir), demonstrator_env_steps=demo.config.get("env_steps"))
    env = ProcgenVecEnv(cfg.env_name, cfg.num_envs, cfg.distribution_mode, cfg.start_level,
                        cfg.num_levels, rand_seed=cfg.seed)
    meta = {"source": {"kind": "procgen", "env_name": cfg.env_name,
                       "distribution_mode": cfg.distribution_mode, "start_level": cfg.start_level,
                       "num_levels": cfg.num_levels}, "fps": 15, "collector": collector,
            "action_space": space_to_json(env.action_space),
            "collect_config": collect_record(cfg)}
    frames = [[] for _ in range(cfg.num_envs)]
    actions = [[] for _ in range(cfg.num_envs)]
    rewards = [[] for _ in range(cfg.num_envs)]
    obs = env.reset()
    with EpisodeWriter(cfg.out, meta, overwrite=cfg.overwrite) as writer, \
            tqdm(total=cfg.num_frames, desc="collect", unit="frame") as bar:
        while writer.num_frames < cfg.num_frames:
            a = act(obs) if act else rng.integers(0, env.action_space.n, cfg.num_envs)
            next_obs, rew, done, infos = env.step(a)
            for i in range(cfg.num_envs):
                frames[i].append(obs[i])
                actions[i].append(a[i])
                rewards[i].append(rew[i])
                if done[i]:
                    if len(frames[i]) >= 2 and writer.num_frames < cfg.num_frames:
                        writer.add_episode(np.stack(frames[i]), np.asarray(actions[i]),
                                           np.asarray(rewards[i]), infos[i]["episode"]["level_seed"])
                        bar.update(len(frames[i]))
                    frames[i], actions[i], rewards[i] = [], [], []
            obs = next_obs
    return Path(cfg.out)


def collect_record(cfg: CollectConfig) -> dict:
    """The fields of ``cfg`` that determine the video (not where it is written), as stored in
    ``meta.json["collect_config"]``, plus a hash of the demonstrator's weights (a demonstrator
    retrained into the same directory makes other video); a random collector has no demonstrator.
    The demonstrator's path is kept for the record but is not compared (:func:`same_video`): the
    weights' hash says which demonstrator it was."""
    import hashlib

    from envs.demonstrator import shipped_demonstrator
    from envs.io import jsonable

    record = {k: v for k, v in jsonable(cfg).items() if k not in ("out", "overwrite")}
    if cfg.policy == "random":
        record.pop("demonstrator")
    else:
        weights = Path(cfg.demonstrator or shipped_demonstrator(cfg.env_name)) / "model.safetensors"
        record["demonstrator_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()[:16] if weights.is_file() else None
    return record


def same_video(recorded: dict | None, requested: dict) -> bool:
    """Whether a dataset's stored ``collect_config`` and a requested :func:`collect_record` make the
    same video: equal but for the demonstrator's path where both hash its weights (``lapo collect``
    records ``None`` for the shipped demonstrator, the benchmark its path). Any domain's records
    (Meta-World's have no demonstrator: plain equality)."""
    if recorded is None:
        return False
    if recorded.get("demonstrator_sha256") and requested.get("demonstrator_sha256"):
        recorded, requested = ({k: v for k, v in r.items() if k != "demonstrator"} for r in (recorded, requested))
    return recorded == requested
