"""RL fine-tuning of a decoded latent policy with stable-baselines3 PPO (LAPO §3.4), beside PPO from
scratch with the same settings.

``lapo finetune --agent runs/quickstart/agent`` trains two PPO runs on the game's training levels and
evaluates both on the same unseen levels every ``eval_every`` env frames:

- ``agent``: PPO whose actor *is* the saved agent: the policy network's conv trunk and hidden layer
  are the shared features, its latent output layer followed by the k-shot action head is PPO's
  action net (so at frame 0 PPO acts exactly as the agent: logits ``head(π(o))``), and a fresh
  linear value head reads the same features (:class:`AgentPolicy`);
- ``scratch``: PPO from scratch with SB3's ``CnnPolicy`` (the Nature CNN of the demonstrators).

Both runs use the same PPO values: the demonstrators' (:class:`envs.demonstrator.PPOConfig`,
Procgen-paper values with reward normalization) with LAPO's stage-3 rollout length, minibatch size
and entropy bonus (:data:`envs.demonstrator.LAPO_STAGE3`; on CoinRun both runs scored higher with
them than with the demonstrators' values, README "RL fine-tuning").

Both runs resume from ``run_dir/<run>/ppo_checkpoint.zip`` (SB3's format, with the ``VecNormalize``
statistics), log ``eval/mean_return`` and the normalized returns to tensorboard, keep their curve in
``run_dir/<run>/curve.json``, and ``run_dir/curve.png`` plots both. Normalized return is reported
two ways: by Procgen's easy-mode constants ``(R - R_min) / (R_max - R_min)`` (Cobbe et al. 2020) and
by the references measured on the same levels ``(R - R_random) / (R_demonstrator - R_random)``.

Optional (``refit_head_lam``): after every rollout the action head is refitted on the agent's own
transitions, each labeled with the LAM's IDM latent and the action actually taken (LAPO §3.4's
online decoder training: the agent knows its own actions).

Dimension keys: N envs, T rollout steps, H W C image, L latent dim, A actions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from gymnasium.spaces import Discrete

from envs.demonstrator import LAPO_STAGE3, PPOConfig, learn_ppo  # imports Procgen first: no gym banner below
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from envs.io import atomic_write_text, jsonable
from envs.procgen import N_ACTIONS, procgen_normalized

RUNS = ("agent", "scratch")


@dataclass
class FinetuneConfig(PPOConfig):
    """``lapo finetune``: PPO from a saved agent and PPO from scratch, same settings, same levels."""

    n_steps: int = LAPO_STAGE3["n_steps"]
    """Rollout length per env per PPO update (LAPO's stage 3; the demonstrators use 256)."""
    batch_size: int = LAPO_STAGE3["batch_size"]
    """PPO minibatch size (64 × 64 / 512 = 8 minibatches, LAPO's stage 3)."""
    ent_coef: float = LAPO_STAGE3["ent_coef"]
    """Entropy bonus (LAPO's stage 3; the demonstrators use 0.01)."""
    agent: Path = Path("runs/quickstart/agent")
    """Saved agent (``lapo quickstart`` / ``lapo fit-head`` output) that initializes the ``agent`` run."""
    run_dir: Path = Path("runs/finetune")
    """One sub-directory per run (checkpoint, tensorboard, curve.json); curve.png and references.json here."""
    runs: tuple[str, ...] = RUNS
    """Runs to train: ``agent`` (PPO from the agent) and/or ``scratch`` (PPO from scratch). Two
    processes may train one each (then give each ``--threads 1``); a later call with both finds
    them finished and only draws the curve."""
    total_timesteps: int = 1_000_000
    """Env frames per run (a resumed run trains only the remainder)."""
    eval_every: int = 100_000
    """Env frames between evaluations (rounded up to whole PPO rollouts); frame 0 is evaluated too."""
    eval_episodes: int = 100
    """Unseen-level episodes per evaluation (the same levels at every point and for every run)."""
    demonstrator: Path | None = None
    """Normalization reference (default: the game's shipped demonstrator; measured on the same levels)."""
    pretrained_lr_scale: float = 0.1
    """The pretrained actor (trunk, latent layer, head) learns at this fraction of PPO's learning
    rate, the fresh value head at the full rate (LAPO §3.4's stage 3 uses lr/10 for its pretrained
    linear layer and freezes its conv stack). 1.0 = one rate for all."""
    critic_warmup: int = 50_000
    """Env frames during which only the fresh value head learns (the actor, trunk included, is
    frozen), so early, uninformed advantages do not erode the pretrained policy (LAPO §3.4's stage
    3 likewise trains its value head before its policy layers). 0 = off; PPO from scratch has none."""
    refit_head_lam: Path | None = None
    """LAM checkpoint whose IDM labels the agent's own transitions to refit the action head after
    every rollout (None: the head is trained by PPO only)."""
    refit_steps: int = 50
    """AdamW steps of each head refit (full batch over the rollout's transitions)."""

    def __post_init__(self):
        super().__post_init__()
        self.runs = tuple(self.runs)
        bad = [r for r in self.runs if r not in RUNS]
        if bad or not self.runs:
            raise ValueError(f"runs {list(self.runs)}: choose from {list(RUNS)}")
        if not 0 < self.pretrained_lr_scale <= 1:
            raise ValueError(f"pretrained_lr_scale must be in (0, 1], got {self.pretrained_lr_scale}")
        if self.critic_warmup < 0:
            raise ValueError(f"critic_warmup must be >= 0, got {self.critic_warmup}")
        for name in ("total_timesteps", "eval_every", "eval_episodes", "refit_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class AgentTrunk(BaseFeaturesExtractor):
    """SB3 features extractor: the agent policy's conv trunk + hidden layer, ``(N, 3, H, W)`` float
    in [0, 1] (SB3 transposes and scales the frames) -> ``(N, hidden)`` features."""

    def __init__(self, observation_space, agent_config: dict):
        from lapo.policy import Policy, PolicyConfig

        net = Policy(PolicyConfig(**agent_config["policy"])).net
        super().__init__(observation_space, net.head[0].out_features)
        self.convs, self.hidden = net.convs, net.head[:2]  # Linear + ReLU

    def forward(self, x_NCHW: torch.Tensor) -> torch.Tensor:
        return self.hidden(self.convs(x_NCHW))


class AgentPolicy(ActorCriticPolicy):
    """PPO actor-critic whose actor is a saved :class:`lapo.agent.Agent`: features = trunk + hidden
    layer, action net = latent output layer ∘ action head (logits of a ``Discrete`` space), value net
    = a fresh linear layer on the same features. Rebuilt from ``agent_config`` alone, so SB3 saves and
    loads it like any policy; :func:`load_agent_weights` copies the agent's weights in."""

    def __init__(self, observation_space, action_space, lr_schedule, agent_config: dict,
                 pretrained_lr_scale: float = 1.0, **kwargs):
        self.agent_config, self.pretrained_lr_scale = agent_config, pretrained_lr_scale
        kwargs.update(features_extractor_class=AgentTrunk, features_extractor_kwargs={"agent_config": agent_config},
                      net_arch=[], share_features_extractor=True, ortho_init=False)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule) -> None:
        from lapo.agent import Agent

        super()._build(lr_schedule)
        agent = Agent.from_config(self.agent_config)
        out = agent.policy.net.head[2]  # hidden -> latent (or -> action logits for a BC agent)
        self.action_net = nn.Sequential(out, agent.head) if agent.head is not None else out
        pretrained = [*self.features_extractor.parameters(), *self.action_net.parameters()]
        rest = [p for p in self.parameters() if all(p is not q for q in pretrained)]  # the value head
        self.optimizer = ScaledAdam([{"params": pretrained, "lr_scale": self.pretrained_lr_scale}, {"params": rest}],
                                    lr=lr_schedule(1), **self.optimizer_kwargs)


class ScaledAdam(torch.optim.Adam):
    """Adam whose parameter groups may carry an ``lr_scale``. SB3 sets one learning rate on every
    group before each update (its schedule); each group then steps at ``lr × lr_scale``."""

    def step(self, closure=None):
        base = [g["lr"] for g in self.param_groups]
        for g in self.param_groups:
            g["lr"] = g["lr"] * g.get("lr_scale", 1.0)
        try:
            return super().step(closure)
        finally:
            for g, lr in zip(self.param_groups, base):
                g["lr"] = lr


def load_agent_weights(policy, agent) -> None:
    """Copy a :class:`lapo.agent.Agent`'s weights into an ``AgentPolicy`` built from its config."""
    net = agent.policy.net
    policy.features_extractor.convs.load_state_dict(net.convs.state_dict())
    policy.features_extractor.hidden.load_state_dict(net.head[:2].state_dict())
    action_net = policy.action_net
    if agent.head is not None:
        action_net[0].load_state_dict(net.head[2].state_dict())
        action_net[1].load_state_dict(agent.head.state_dict())
    else:
        action_net.load_state_dict(net.head[2].state_dict())


class Curve:
    """Evaluation points of one run, ``curve.json``: ``[{frames, mean_return, ci95, normalized_procgen,
    normalized_demonstrator}]``; points past the resumed checkpoint are dropped."""

    def __init__(self, path: Path):
        self.path = path
        self.points = json.loads(path.read_text()) if path.exists() else []

    def truncate(self, frames_now: int) -> None:
        """Drop points past ``frames_now`` (the frames of the checkpoint training resumes from)."""
        self.points = [p for p in self.points if p["frames"] <= frames_now]

    def add(self, point: dict) -> None:
        self.points.append(point)
        atomic_write_text(self.path, json.dumps(self.points, indent=2))

    @property
    def last_frames(self) -> int:
        return self.points[-1]["frames"] if self.points else -1


def references(cfg: FinetuneConfig) -> dict:
    """Random and demonstrator mean returns on the evaluation levels (computed once, kept in
    ``run_dir/references.json`` with the settings that made them)."""
    from envs.demonstrator import Demonstrator, shipped_demonstrator
    from lapo.evaluate import evaluate, random_act

    demo_dir = cfg.demonstrator or shipped_demonstrator(cfg.env_name)
    key = {"env_name": cfg.env_name, "episodes": cfg.eval_episodes, "seed": cfg.seed, "demonstrator": str(demo_dir)}
    path = cfg.run_dir / "references.json"
    if path.exists() and json.loads(path.read_text()).get("key") == key:
        return json.loads(path.read_text())
    torch.manual_seed(cfg.seed)
    demo = Demonstrator.from_pretrained(demo_dir)
    ev = dict(env_name=cfg.env_name, num_episodes=cfg.eval_episodes, distribution_mode=cfg.distribution_mode,
              seed=cfg.seed)
    out = {"key": key, "random": evaluate(random_act(Discrete(N_ACTIONS), cfg.seed), desc="eval random", **ev).mean,
           "demonstrator": evaluate(demo.act, desc="eval demonstrator", **ev).mean}
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(out, indent=2))
    return out


def eval_callback(cfg: FinetuneConfig, curve: Curve, refs: dict, writer):
    """SB3 callback: evaluate the current policy on unseen levels when a rollout starts at or past
    the next evaluation point (and once more at the end of training, by the caller)."""
    from stable_baselines3.common.callbacks import BaseCallback

    from lapo.evaluate import evaluate
    from lapo.stats import normalized_return

    def run_eval(model) -> None:
        frames = int(model.num_timesteps)
        if frames <= curve.last_frames:
            return
        torch.manual_seed(cfg.seed)
        res = evaluate(lambda obs: model.policy.predict(obs, deterministic=False)[0], cfg.env_name,
                       cfg.eval_episodes, cfg.distribution_mode, seed=cfg.seed, desc=f"eval @ {frames:,} frames")
        point = {"frames": frames, "mean_return": res.mean, "ci95": list(res.ci95),
                 "normalized_procgen": procgen_normalized(res.mean, cfg.env_name),
                 "normalized_demonstrator": normalized_return(res.mean, refs["random"], refs["demonstrator"])}
        curve.add(point)
        for k in ("mean_return", "normalized_procgen", "normalized_demonstrator"):
            writer.add_scalar(f"eval/{k}", point[k], frames)
        writer.flush()

    class EvalCallback(BaseCallback):
        def _on_training_start(self) -> None:
            curve.truncate(int(self.model.num_timesteps))

        def _on_rollout_start(self) -> None:
            if self.model.num_timesteps >= curve.last_frames + cfg.eval_every or not curve.points:
                run_eval(self.model)

        def _on_step(self) -> bool:
            return True

    return EvalCallback(), run_eval


def critic_warmup_callback(cfg: FinetuneConfig):
    """SB3 callback: before each PPO update, freeze the actor (trunk + action net) while
    ``num_timesteps <= cfg.critic_warmup``, so those updates train the value head only."""
    from stable_baselines3.common.callbacks import BaseCallback

    class CriticWarmup(BaseCallback):
        def _on_rollout_end(self) -> None:  # runs between collecting a rollout and the update on it
            policy = self.model.policy
            frozen = self.model.num_timesteps <= cfg.critic_warmup
            for module in (policy.features_extractor, policy.action_net):
                module.requires_grad_(not frozen)
            self.logger.record("train/actor_frozen", float(frozen))

        def _on_step(self) -> bool:
            return True

    return CriticWarmup()


def head_refit_callback(cfg: FinetuneConfig):
    """SB3 callback: after each rollout, label the rollout's transitions ``o_t -> o_{t+1}`` (same
    episode) with the IDM's latent and refit the action net's head on ``(z, a_t)`` (cross-entropy,
    ``refit_steps`` full-batch AdamW steps from its current weights)."""
    from stable_baselines3.common.callbacks import BaseCallback

    from lapo.label import for_inference
    from lapo.lam import LatentActionModel

    lam = for_inference(LatentActionModel.from_pretrained(cfg.refit_head_lam))

    class RefitHead(BaseCallback):
        def _init_callback(self) -> None:
            if not isinstance(self.model.policy.action_net, nn.Sequential):
                raise ValueError(f"refit_head_lam needs a latent agent (policy + action head); {cfg.agent} "
                                 "is a BC agent without a head")

        def _on_rollout_end(self) -> None:
            buf = self.model.rollout_buffer
            obs = np.asarray(buf.observations)  # (T, N, 3, H, W) uint8 (SB3 stores the transposed frames)
            starts = np.asarray(buf.episode_starts, bool)  # (T, N): o_t begins an episode
            acts = np.asarray(buf.actions).reshape(starts.shape).astype(np.int64)
            # window (o_{t-1}, o_t, o_{t+1}) inside one episode: t-1 and t+1 in the buffer, no start at t or t+1
            t, n = np.nonzero(~starts[1:-1] & ~starts[2:])
            t = t + 1
            if len(t) == 0:
                return
            frames = torch.from_numpy(obs).permute(0, 1, 3, 4, 2)  # (T, N, H, W, 3)
            with torch.no_grad():
                z = torch.cat([lam.encode(torch.stack([frames[t[i:i + 512] + d, n[i:i + 512]] for d in (-1, 0, 1)], 1)).z
                               for i in range(0, len(t), 512)])
            head = self.model.policy.action_net[1]
            y = torch.from_numpy(acts[t, n])
            opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
            trainable = [p.requires_grad for p in head.parameters()]  # False while the critic warms up
            head.train().requires_grad_(True)
            for _ in range(cfg.refit_steps):
                loss = head.coding.loss(head(z), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            for p, flag in zip(head.parameters(), trainable):
                p.requires_grad_(flag)
            self.logger.record("train/head_refit_loss", float(loss.detach()))

        def _on_step(self) -> bool:
            return True

    return RefitHead()


def train_run(cfg: FinetuneConfig, name: str, refs: dict):
    """Train (or resume) one run and evaluate it along the way; returns its curve points."""
    from stable_baselines3 import PPO

    from lapo.training import summary_writer

    run_dir = cfg.run_dir / name
    tb = str(run_dir / "tb")

    def new_model(env):
        if name == "scratch":
            return PPO("CnnPolicy", env, tensorboard_log=tb, **cfg.ppo_kwargs())
        from lapo.agent import Agent

        agent = Agent.from_pretrained(cfg.agent)
        if agent.coding.is_box:
            raise ValueError(f"{cfg.agent} acts in a Box space; lapo finetune fine-tunes Procgen (Discrete) agents")
        model = PPO(AgentPolicy, env, tensorboard_log=tb, **cfg.ppo_kwargs(),
                    policy_kwargs={"agent_config": jsonable(agent.to_config()),
                                   "pretrained_lr_scale": cfg.pretrained_lr_scale})
        load_agent_weights(model.policy, agent)
        return model

    curve = Curve(run_dir / "curve.json")
    writer = summary_writer(run_dir / "tb" / "eval")
    callback, run_eval = eval_callback(cfg, curve, refs, writer)
    callbacks = [callback]
    if name == "agent" and cfg.critic_warmup:
        callbacks.append(critic_warmup_callback(cfg))
    if name == "agent" and cfg.refit_head_lam is not None:
        callbacks.append(head_refit_callback(cfg))
    model = learn_ppo(cfg, run_dir, cfg.total_timesteps, new_model, callbacks, desc=f"finetune {name}")
    run_eval(model)  # the end point
    writer.close()
    return curve.points


def load_finetuned(run_dir: Path):
    """Act function ``(N, 64, 64, 3) uint8 -> (N,) int64`` (sampled actions) of the PPO policy saved
    in ``run_dir/ppo_checkpoint.zip`` by :func:`train_run`."""
    from stable_baselines3 import PPO

    model = PPO.load(Path(run_dir) / "ppo_checkpoint.zip", device="cpu")
    return lambda obs: model.policy.predict(np.asarray(obs), deterministic=False)[0].astype(np.int64)


def plot_curves(cfg: FinetuneConfig, curves: dict[str, list[dict]], refs: dict) -> Path:
    """``run_dir/curve.png``: normalized return (Procgen constants) vs env frames, one line per run
    with its 95% CI band, the demonstrator and random as grey lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    labels = {"agent": f"PPO from our agent ({cfg.agent})", "scratch": "PPO from scratch"}
    for name, points in curves.items():
        if not points:
            continue
        x = np.array([p["frames"] for p in points]) / 1e6
        y = np.array([p["normalized_procgen"] for p in points])
        lo = np.array([procgen_normalized(p["ci95"][0], cfg.env_name) for p in points])
        hi = np.array([procgen_normalized(p["ci95"][1], cfg.env_name) for p in points])
        ax.plot(x, y, marker="o", label=labels[name])
        ax.fill_between(x, lo, hi, alpha=0.2)
    for ref, style in (("demonstrator", "--"), ("random", ":")):
        ax.axhline(procgen_normalized(refs[ref], cfg.env_name), color="grey", ls=style, label=ref)
    ax.set_xlabel("env frames (M)")
    ax.set_ylabel("normalized return (Procgen easy constants)")
    ax.set_title(f"{cfg.env_name}: {cfg.eval_episodes} unseen levels per point")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = cfg.run_dir / "curve.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def finetune(cfg: FinetuneConfig) -> dict:
    """Train the requested runs, then plot every run found in ``run_dir``; returns the curves and
    references (also written to ``run_dir/finetune.json``)."""
    refs = references(cfg)
    curves = {name: train_run(cfg, name, refs) for name in cfg.runs}
    for name in RUNS:  # a run trained by another process
        if name not in curves and (cfg.run_dir / name / "curve.json").exists():
            curves[name] = json.loads((cfg.run_dir / name / "curve.json").read_text())
    png = plot_curves(cfg, curves, refs)
    out = {"env_name": cfg.env_name, "references": refs, "curves": curves, "plot": str(png),
           "config": jsonable(cfg)}
    atomic_write_text(cfg.run_dir / "finetune.json", json.dumps(out, indent=2))
    return out

