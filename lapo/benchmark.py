"""``lapo benchmark``: latent-action policies side by side with the baselines, per game, k and seed.

For each game (video from its shipped demonstrator), each k (labeled transitions) and each seed,
on the same video, the same k labeled transitions and the same unseen evaluation levels:

======================  ====================================================================  =======
method                  what it trains                                                         actions
======================  ====================================================================  =======
``random``              nothing (uniform actions; normalization reference 0)                   none
``demonstrator``        nothing (the PPO agent that made the video; reference 1)               none
``oracle_bc``           BC on every transition of the video with its true action               all
``bc``                  BC on the k labeled transitions only                                   k
``idm``                 supervised IDM on the k -> pseudo-labels for the video -> BC (VPT)     k
``ours``                LAM on frames -> latent BC -> k-shot action head (LAPO §3)             k
``ours_relabel_tuned``  LAM on frames, its IDM fine-tuned on the k as ``idm``'s IDM ->          k
                        pseudo-labels for the video -> BC: the ``idm`` row but for the start
                        (the seed's LAM's IDM; no latent policy); "ours" of the targets
                        (:attr:`BenchmarkConfig.ours`)
======================  ====================================================================  =======

Optional rows (``--methods``): ``ours_bins`` / ``ours_regression`` (continuous action heads),
``ours_tuned`` (ours, then the whole agent fine-tuned end to end on the k labels with BC on k's
recipe: the same row as ``bc`` but for the pretrained start, :func:`lapo.stages.tune_agent`),
``ours_relabel`` (a k-shot head on the LAM's frozen IDM latents as the IDM; "ours" until
2026-11-29),
``clam`` (continuous LAM trained jointly with an action decoder on the k labels, the decoder acts)
``ours_supervised`` (ours, with the k labels also supervising the LAM through that joint
decoder: the label-efficient variant, :func:`jointly_supervised`), and the two RL rows (LAPO §3.4,
:mod:`lapo.finetune`): ``ours_finetune`` (ours at ``finetune_k`` labels, then PPO for
``finetune_frames`` env frames) and ``ppo_scratch`` (PPO from scratch, same frames and settings),
and the diagnostic ``oracle_bc_shuffled`` (oracle BC on ``ours_relabel``'s pseudo-labels shuffled
within each true action: their error rates without their dependence on the frame).
For every k-independent row the table also gives the return normalized by Procgen's easy-mode
constants, ``(R - R_min) / (R_max - R_min)``.

The LAM and latent policy of a seed are trained once and reused for every k. All policies share
one network (:class:`lapo.policy.PolicyConfig`), the supervised IDM copies the LAM's IDM network,
and every BC stage on the whole video (oracle, IDM pseudo-labels, latent) trains for the same
``policy_train`` budget.

True actions are read in exactly three places: the labeled subset (``labeled_subset``, k per
seed), the oracle rows (``oracle_bc``, ``oracle_bc_shuffled``), and the held-out probe episodes, whose actions only score
predictions (probe and action accuracy). Those episodes are excluded from every training set that
uses actions (the labeled draws, oracle BC) and from the BC stages.

Every (game, method, k, seed) result is a JSON cell under ``run_dir/cells``, written when it
finishes; a rerun skips finished cells, and the shared stages (dataset, LAM, labels, latent
policy) are stage outputs under ``run_dir/GAME/`` (:mod:`lapo.stages`; reused when made with the
same settings, resumed when interrupted). Methods are a registry (``METHODS``: name -> function), so
a new method is one entry. A new game, method, k or seed adds only its own
cells. Changing any other setting needs a new ``run_dir`` (checked against
``run_dir/benchmark_config.json``).

Metrics per (game, method, k): mean return over seeds (each seed's mean over its episodes), a 95%
CI from the stratified bootstrap of :mod:`lapo.stats` (episodes resampled within each seed), normalized return
``(R - R_random) / (R_demonstrator - R_random)`` with both references averaged over the same seeds
and levels, probe accuracy (``ours``: a k-shot head on IDM latents, LAPO §4.2's probe; ``idm``:
the supervised IDM) and action accuracy (the agent's argmax action) on held-out transitions.

Dimension keys: N frames, M transitions, k labeled transitions, A actions, L latent dim.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from envs.demonstrator import LAPO_STAGE3, PPOConfig
from lapo.baselines import CHOOSE_MODE, IDM_PSEUDO_LABELS, K_LABEL_STEPS, PSEUDO_LABEL_MODES
from lapo.decoder import ActionHeadConfig
from lapo.lam import LAMConfig, LAMTrainConfig
from lapo.nets import IMPALA_WIDTHS
from lapo.policy import PolicyConfig, PolicyTrainConfig

REFERENCES = ("random", "demonstrator")
TRAINED = ("oracle_bc", "bc", "idm", "ours", "ours_relabel_tuned")  # the default methods besides the references
OPTIONAL = ("ours_bins", "ours_regression", "ours_tuned", "ours_relabel", "clam", "ours_supervised",
            "ours_finetune", "ppo_scratch", "oracle_bc_shuffled")  # further registered methods (registry: METHODS)
K_METHODS = ("bc", "idm", "ours", "ours_bins", "ours_regression", "ours_tuned", "ours_relabel", "ours_relabel_tuned",
             "clam", "ours_supervised", "oracle_bc_shuffled")  # results depend on k
LATENT_ROWS = tuple(m for m in K_METHODS if m not in ("bc", "idm", "oracle_bc_shuffled"))  # built on a latent action model (a seed's, or their own)
METHOD_NAMES = {"random": "random", "demonstrator": "demonstrator", "oracle_bc": "oracle BC (all actions)",
                "bc": "BC on k labels", "idm": "IDM on k labels -> BC", "ours": "latent policy + k-shot head",
                "ours_bins": "latent policy + k-shot head (RT-1 bins)",
                "ours_regression": "latent policy + k-shot head (regression)",
                "ours_tuned": "ours, then the whole agent BC-tuned on the k labels",
                "ours_relabel": "LAM + k-shot head as IDM -> pseudo-labels -> BC",
                "ours_relabel_tuned": "LAM's IDM fine-tuned on k labels -> pseudo-labels -> BC",
                "oracle_bc_shuffled": "oracle BC on ours_relabel's labels shuffled within each true action",
                "clam": "CLAM: continuous LAM + joint action decoder",
                "ours_supervised": "ours + k labels inside LAM training (LAOM-style)",
                "ours_finetune": "ours + PPO fine-tune", "ppo_scratch": "PPO from scratch"}
SWEEP_FIELDS = ("games", "ks", "seeds", "methods", "ours", "run_dir", "threads", "report_only", "report_from")  # may change between reruns
RETRY_SECONDS = 30.0  # a worker sharing its run dir, with only held cells left, retries them this often
RL_METHODS = ("ours_finetune", "ppo_scratch")  # the PPO rows, runs "agent" and "scratch" of lapo.finetune
RL_FIELDS = ("ppo", "finetune_k", "finetune_frames", "finetune_eval_every")  # read by the RL rows only
ROW_FIELDS = {"clam_lam": ("clam",), **{f: RL_METHODS for f in RL_FIELDS}}
"""Settings that only some rows read: a run directory's stored value is checked only once it holds a
cell of those rows (:func:`check_run_dir`)."""


@dataclass
class BenchmarkConfig:
    """``lapo benchmark {cpu,cpu-impala,paper}``: the sweep and every training budget (presets below)."""

    games: tuple[str, ...] = ("coinrun",)
    """Procgen games; each needs a shipped demonstrator (``envs/demonstrators/GAME``)."""
    ks: tuple[int, ...] = (16, 64, 256, 1024)
    """Numbers of labeled transitions."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds: labeled-subset draw, network inits and evaluation levels."""
    methods: tuple[str, ...] = TRAINED
    """Methods besides the two references (random, demonstrator), which always run."""
    run_dir: Path = Path("runs/benchmark")
    """Cells, shared checkpoints, results.json, results.md and the plot. Several workers (the same
    command run again, e.g. twice with ``--threads 1`` on 2 cores) may share it: each cell and shared
    stage is computed once (file locks)."""
    num_frames: int = 100_000
    """Video frames per game (whole episodes, demonstrator on training levels)."""
    distribution_mode: str = "easy"
    """Procgen difficulty."""
    eval_episodes: int = 100
    """Episodes per (method, seed) on unseen levels; the same levels for every method of a seed."""
    probe_fraction: float = 0.05
    """Fraction of the video's episodes held out for probe/action accuracy (never trained on)."""
    probe_max: int = 2048
    """At most this many held-out transitions are scored (evenly spaced)."""
    lam: LAMConfig = field(default_factory=LAMConfig)
    """Latent action model."""
    clam_lam: LAMConfig = field(default_factory=lambda: LAMConfig(quantizer="none"))
    """LAM of the ``clam`` method (continuous latents; trained with an action decoder on the k labels)."""
    lam_train: LAMTrainConfig = field(default_factory=lambda: LAMTrainConfig(steps=3000, probe_k=0))
    """LAM training (its ``seed`` is replaced by each benchmark seed)."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """The one policy network of every method (``out_dim`` is set per use)."""
    policy_train: PolicyTrainConfig = field(default_factory=lambda: PolicyTrainConfig(steps=2000))
    """BC on the whole video: latent BC, oracle BC, BC on IDM pseudo-labels."""
    bc_train: PolicyTrainConfig = field(default_factory=lambda: PolicyTrainConfig(steps=K_LABEL_STEPS["bc"]))
    """BC on the k labeled transitions (frozen budget, :data:`lapo.baselines.K_LABEL_STEPS`)."""
    idm_train: PolicyTrainConfig = field(default_factory=lambda: PolicyTrainConfig(steps=K_LABEL_STEPS["idm"],
                                                                                  batch_size=64))
    """Supervised IDM on the k labeled transitions (frozen budget, :data:`lapo.baselines.K_LABEL_STEPS`)."""
    idm_pseudo_labels: str = IDM_PSEUDO_LABELS
    """``argmax`` or ``sample``: how the supervised IDM labels the video (frozen,
    :data:`lapo.baselines.IDM_PSEUDO_LABELS`)."""
    head: ActionHeadConfig = field(default_factory=ActionHeadConfig)
    """k-shot action head (latent_dim and the action space are set from the LAM and the game)."""
    head_input: str = "policy"
    """Latents the head is fitted on: ``policy`` (π(o_t)) or ``idm`` (see :mod:`lapo.decoder`)."""
    ours: str = "ours_relabel_tuned"
    """The latent row the targets name "ours" and whose agents are saved (:func:`agent_path`); every
    row is reported either way. Fixed on CoinRun (issue 11; ``cpu-impala``, 3 seeds, k = 64 and 256,
    paired on the same LAMs and levels, ``docs/benchmark_coinrun_relabel_vs_tuned_2026-11-29.md``):
    above BC and IDM on k at both k, and ahead of ``ours_relabel`` at k=64 (+0.16 [+0.06, +0.26]),
    which there only tied IDM on k (+0.09 [-0.02, +0.20]); ``ours`` (latent policy + head) was below
    IDM on k at k=64 in the 2026-11-28 run. Before 2026-11-29: ``ours_relabel``."""
    finetune_k: int = 256
    """Labeled transitions of the ours agent that ``ours_finetune`` starts from."""
    finetune_frames: int = 1_000_000
    """Env frames of PPO for ``ours_finetune`` and ``ppo_scratch``."""
    finetune_eval_every: int = 250_000
    """Env frames between the RL rows' evaluations on the unseen levels (frame 0 and the end too);
    each run's curve is in ``run_dir/GAME/seedS/ppo/{agent,scratch}/curve.json``."""
    ppo: PPOConfig = field(default_factory=lambda: PPOConfig(**LAPO_STAGE3))
    """PPO hyperparameters of both RL rows: the demonstrators' with LAPO's stage-3 rollout length,
    minibatch size and entropy bonus, as ``lapo finetune`` (its game, seed and threads are set per cell)."""
    threads: int = 0
    """torch CPU threads (0 = torch's default, all cores)."""
    report_only: bool = False
    """Run nothing: aggregate the sweep's finished cells (e.g. written by per-game runs side by
    side) and list the missing ones. Either way the table holds every method's finished cells of
    ``games`` × ``ks`` × ``seeds`` in ``run_dir``; ``methods`` only chooses what runs (and what counts
    as missing)."""
    report_from: tuple[Path, ...] = ()
    """With ``report_only``: further run directories to read finished cells from (e.g. one per game,
    run side by side), each game from the first of ``run_dir``, ``report_from`` that holds cells of
    it; each must hold this command's settings (checked). The report is written to ``run_dir``."""

    def __post_init__(self):
        self.games, self.ks, self.seeds, self.methods = (tuple(self.games), tuple(self.ks), tuple(self.seeds),
                                                         tuple(self.methods))
        self.report_from = tuple(Path(d) for d in self.report_from)
        from envs.procgen import check_game

        for game in self.games:
            check_game(game, self.distribution_mode)
        if not self.games or not self.seeds:
            raise ValueError("need at least one game and one seed")
        if any(k < 1 for k in self.ks):
            raise ValueError(f"every k must be >= 1, got {self.ks}")
        bad = [m for m in self.methods if m not in TRAINED + OPTIONAL]
        if bad:
            raise ValueError(f"unknown methods {bad}; choose from {list(TRAINED + OPTIONAL)}")
        if self.eval_episodes < 2:
            raise ValueError(f"eval_episodes must be >= 2 for a confidence interval, got {self.eval_episodes}")
        if not 0 < self.probe_fraction < 1:
            raise ValueError(f"probe_fraction must be in (0, 1), got {self.probe_fraction}")
        if self.idm_pseudo_labels not in PSEUDO_LABEL_MODES:
            raise ValueError(f"idm_pseudo_labels {self.idm_pseudo_labels!r}: {CHOOSE_MODE}")
        if self.head_input not in ("policy", "idm"):
            raise ValueError(f"head_input {self.head_input!r}: choose 'policy' or 'idm'")
        if self.ours not in LATENT_ROWS:
            raise ValueError(f"ours {self.ours!r}: choose one of {list(LATENT_ROWS)}")
        if self.report_from and not self.report_only:
            raise ValueError(f"report_from {[str(d) for d in self.report_from]} is read for a report only: "
                             "add --report-only (cells are run into --run-dir alone)")
        missing = [str(d) for d in self.report_from if not (d / "benchmark_config.json").is_file()]
        if missing:
            raise ValueError(f"report_from {missing}: not benchmark run directories (no benchmark_config.json)")


def cpu_preset() -> BenchmarkConfig:
    """Sized for a 2-core CPU: Nature CNNs, FSQ, 100k frames per game, 3k LAM steps, 2k BC steps."""
    return BenchmarkConfig()


def paper_preset() -> BenchmarkConfig:
    """LAPO's sizes, for a GPU: IMPALA CNN at scale 4, two 64-entry VQ codebooks, 50k LAM steps,
    1M frames per game, bf16."""
    impala = tuple(4 * c for c in IMPALA_WIDTHS)  # LAPO's scale 4
    return BenchmarkConfig(
        games=("coinrun", "fruitbot", "jumper"), run_dir=Path("runs/benchmark_paper"),
        num_frames=1_000_000, eval_episodes=500,
        lam=LAMConfig(idm_encoder="impala", idm_channels=impala, idm_hidden=256, fdm_size=64,
                      widths=(64, 128, 256), latent_dim=128, quantizer="vq", groups=2, codebook_size=64),
        lam_train=LAMTrainConfig(steps=50_000, batch_size=128, lr=3e-4, probe_k=0, precision="bf16"),
        policy=PolicyConfig(encoder="impala", channels=impala, hidden=256),
        policy_train=PolicyTrainConfig(steps=50_000, batch_size=128, precision="bf16"),
        bc_train=PolicyTrainConfig(steps=5_000, precision="bf16"),
        idm_train=PolicyTrainConfig(steps=5_000, batch_size=128, precision="bf16"),
    )


def cpu_impala_preset() -> BenchmarkConfig:
    """The ``cpu`` preset with LAPO's networks at scale 1: the IMPALA CNN (16, 32, 32) as the LAM's
    IDM (so also the IDM baseline's network) and as every policy, a 64×64 FDM, and 8,000 whole-video
    BC steps (chosen by oracle BC on fruitbot's development levels, ``docs/tune_policy_fruitbot.json``).
    On fruitbot the Nature CNN cannot read the agent's few-pixel move (README, "What the LAM's IDM
    can see"). Far slower: on 2 cores, fruitbot's BC, IDM and ours rows at two k took 37 min, the
    ``cpu`` preset's whole one-game sweep 6 min."""
    return BenchmarkConfig(
        run_dir=Path("runs/benchmark_impala"),
        lam=LAMConfig(idm_encoder="impala", idm_channels=IMPALA_WIDTHS, fdm_size=64),
        clam_lam=LAMConfig(idm_encoder="impala", idm_channels=IMPALA_WIDTHS, fdm_size=64, quantizer="none"),
        policy=PolicyConfig(encoder="impala", channels=IMPALA_WIDTHS),
        policy_train=PolicyTrainConfig(steps=8000),
    )


PRESETS = {"cpu": ("sized for a 2-core CPU (Nature CNN, FSQ, 100k frames, 3k LAM steps)", cpu_preset()),
           "cpu-impala": ("the cpu preset with IMPALA CNNs (IDM, policies), a 64x64 FDM, 8k BC steps", cpu_impala_preset()),
           "paper": ("LAPO sizes for a GPU (IMPALA ×4, 2 × 64-entry VQ, 50k LAM steps)", paper_preset())}


# ----------------------------------------------------------------------------------------------
# cells
# ----------------------------------------------------------------------------------------------


def cell_path(run_dir: Path, game: str, method: str, k: int | None, seed: int) -> Path:
    """``run_dir/cells/GAME/METHOD/k{K}|all/seed{S}.json``."""
    return Path(run_dir) / "cells" / game / method / (f"k{k}" if k is not None else "all") / f"seed{seed}.json"


def agent_path(run_dir: Path, game: str, method: str, k: int | None, seed: int) -> Path:
    """``run_dir/GAME/seedS/agent_METHOD_kK``: the saved agent of a cell (the ``ours`` row's)."""
    return Path(run_dir) / game / f"seed{seed}" / f"agent_{method}_k{k}"


class GameRun:
    """One game's video, held-out probe transitions and per-seed shared stages (built lazily,
    cached as stage outputs under ``run_dir/GAME``)."""

    def __init__(self, cfg: BenchmarkConfig, game: str):
        from envs.collect import CollectConfig
        from envs.dataset import space_to_json
        from envs.demonstrator import shipped_demonstrator
        from lapo import stages

        self.cfg, self.game = cfg, game
        self.dir = Path(cfg.run_dir) / game
        self.demonstrator_dir = shipped_demonstrator(game)
        self.ds = stages.collect(CollectConfig(out=self.dir / "dataset", env_name=game, num_frames=cfg.num_frames,
                                               demonstrator=self.demonstrator_dir,
                                               distribution_mode=cfg.distribution_mode))
        self.coding = cfg.head.coding(space_to_json(self.ds.action_space))
        self._hold_out()

    def _hold_out(self):
        """Split the video's episodes (held-out ones: never in a training set that uses actions,
        never in a BC stage) and start the per-seed caches."""
        self.train_t, test_t = self.ds.episode_split(self.cfg.probe_fraction, seed=0)
        self.test_t = test_t[np.linspace(0, len(test_t) - 1, min(len(test_t), self.cfg.probe_max)).astype(int)]
        self._test_actions = None
        self._labels: dict[int, object] = {}
        self._shared: dict[int, tuple] = {}

    # --- the doors to true actions ---
    def subset(self, k: int, seed: int):
        """The k labeled transitions of a seed (drawn from the training episodes)."""
        return self.ds.labeled_subset(k, seed, pool=self.train_t)

    def oracle_actions(self) -> np.ndarray:
        """Every training transition's true action: for ``oracle_bc`` only."""
        return np.asarray(self.ds.oracle_actions()[self.train_t])

    def test_actions(self) -> np.ndarray:
        """Held-out transitions' true actions: for scoring only."""
        if self._test_actions is None:
            self._test_actions = np.asarray(self.ds.oracle_actions()[self.test_t])
        return self._test_actions

    # --- shared per-seed stages (frames only) ---
    def lam_labels(self, seed: int):
        """The video's latent-action ``Labels`` of a seed: LAM -> labels, each reused if saved (and
        held for the run's other cells of that seed)."""
        if seed not in self._labels:
            from lapo import stages

            self.lam(seed)
            d = self.dir / f"seed{seed}"
            self._labels[seed] = stages.label(d / "lam", self.ds, d / "labels", device=self.cfg.lam_train.device)
        return self._labels[seed]

    def lam(self, seed: int):
        """The seed's frames-only LAM, trained or (if saved) loaded."""
        from lapo import stages

        cfg, d = self.cfg, self.dir / f"seed{seed}"
        return stages.train_lam(self.ds, d / "lam", cfg.lam, dataclasses.replace(cfg.lam_train, seed=seed),
                                d / "tb" / "lam")[0]

    def latent_stages(self, seed: int):
        """``(Labels, latent policy)`` of a seed: :meth:`lam_labels` -> latent BC, each reused if saved."""
        if seed not in self._shared:
            from lapo import stages

            labels = self.lam_labels(seed)
            policy = stages.latent_bc(self.ds, labels, self.dir / f"seed{seed}" / "latent_policy", self.cfg.policy,
                                      dataclasses.replace(self.cfg.policy_train, seed=seed), pool=self.train_t)
            self._shared[seed] = (labels, policy)
        return self._shared[seed]

    def bc(self, indices: np.ndarray, actions: np.ndarray, train_cfg: PolicyTrainConfig, seed: int, tag: str):
        """BC agent (the benchmark's one policy network) on ``actions`` at frame ``indices``."""
        from lapo import stages

        return stages.behaviour_cloning(self.ds, indices, actions, self.coding, self.cfg.policy,
                                        dataclasses.replace(train_cfg, seed=seed), tag=tag)

    def evaluate(self, act, seed: int, desc: str) -> dict:
        """Returns on the seed's unseen levels: the cell's evaluation fields."""
        from lapo import stages

        res = stages.evaluate(act, self.game, self.cfg.eval_episodes, self.cfg.distribution_mode, seed=seed, desc=desc)
        return {"mean_return": res.mean, "returns": res.returns.tolist(), "lengths": res.lengths.tolist(),
                "level_seeds": res.level_seeds.tolist()}

    def run_cell(self, method: str, k: int | None, seed: int) -> dict:
        """Train (``METHODS[method]``), score on held-out transitions, evaluate (:meth:`evaluate`).
        The agent of the row named ``cfg.ours`` (when it is an :class:`lapo.agent.Agent`) is saved to
        :func:`agent_path` before it is evaluated."""
        import torch

        from lapo.agent import Agent

        t0 = time.perf_counter()
        agent, probe = METHODS[method](self, k, seed)
        train_s = time.perf_counter() - t0
        if isinstance(agent, Agent) and method == getattr(self.cfg, "ours", None):  # kept for the GIF
            agent.save_pretrained(agent_path(self.cfg.run_dir, self.game, method, k, seed), method=method, k=k, seed=seed)
        action_acc = None
        if isinstance(agent, Agent):
            pred = np.concatenate([agent.act(np.asarray(self.ds.frames[i]), deterministic=True)
                                   for i in np.array_split(self.test_t, 8)])
            action_acc = action_agreement(pred, self.test_actions(), self.coding.space)
        act = agent.act if isinstance(agent, Agent) else agent
        torch.manual_seed(seed)  # the agent's action sampling
        result = self.evaluate(act, seed, f"eval {self.game} {method} k={k} seed={seed}")
        return {"game": self.game, "method": method, "k": k, "seed": seed, **result, "probe_accuracy": probe,
                "action_accuracy": action_acc, "train_seconds": round(train_s, 1),
                "eval_seconds": round(time.perf_counter() - t0 - train_s, 1)}


def action_agreement(pred: np.ndarray, true: np.ndarray, space) -> float:
    """Held-out agreement of predicted with true actions: accuracy (Discrete) or accuracy of the
    action's direction (Box; :func:`lapo.decoder.action_direction`)."""
    from lapo.decoder import action_direction

    if space.get("type") == "Box":
        return float((action_direction(pred) == action_direction(true)).mean())
    return float((np.asarray(pred) == np.asarray(true)).mean())


# ----------------------------------------------------------------------------------------------
# methods: name -> (game run, k, seed) -> (agent or act function, held-out probe accuracy or None)
# ----------------------------------------------------------------------------------------------


def random_method(run: GameRun, k, seed: int):
    from lapo.evaluate import random_act

    return random_act(run.coding.space, seed), None


def demonstrator_method(run: GameRun, k, seed: int):
    from envs.demonstrator import Demonstrator

    return Demonstrator.from_pretrained(run.demonstrator_dir).act, None


def oracle_bc_method(run: GameRun, k, seed: int):
    """BC on every training transition's true action."""
    return run.bc(run.train_t, run.oracle_actions(), run.cfg.policy_train, seed, "oracle_bc"), None


def bc_method(run: GameRun, k: int, seed: int):
    """BC on the k labeled transitions only."""
    subset = run.subset(k, seed)
    return run.bc(subset.indices, subset.actions, run.cfg.bc_train, seed, "bc_k"), None


def idm_pseudo_labels(run: GameRun, k: int, seed: int, from_lam: bool = False) -> tuple[np.ndarray, float]:
    """The ``idm`` row's labeler: a supervised IDM (the LAM's IDM network) trained on the k labels
    with ``idm_train`` labels every training transition of the video (``idm_pseudo_labels`` mode).
    ``from_lam`` (the ``ours_relabel_tuned`` row): the IDM starts from the seed's LAM's IDM
    (:meth:`lapo.baselines.SupervisedIDM.init_from_lam`), all else the same. Returns
    ``(pseudo-labels of run.train_t, held-out agreement with the true actions)``."""
    from lapo.baselines import pseudo_label, train_supervised_idm

    cfg, subset = run.cfg, run.subset(k, seed)
    idm_cfg = PolicyConfig(image_size=cfg.lam.image_size, encoder=cfg.lam.idm_encoder, channels=cfg.lam.idm_channels,
                           hidden=cfg.lam.idm_hidden, out_dim=run.coding.out_dim)
    idm = train_supervised_idm(run.ds, subset.indices, subset.actions, idm_cfg,
                               dataclasses.replace(cfg.idm_train, seed=seed), run.coding,
                               init_lam=run.lam(seed) if from_lam else None)
    probe = action_agreement(pseudo_label(idm, run.ds, run.test_t, run.coding), run.test_actions(), run.coding.space)
    return pseudo_label(idm, run.ds, run.train_t, run.coding, cfg.idm_pseudo_labels, seed), probe


def bc_on_pseudo_labels(run: GameRun, labeler: str, k: int, seed: int, tag: str):
    """A labeling row: ``LABELERS[labeler]`` labels every training transition of the video from the
    k labels, then whole-video BC (``policy_train``) on those labels. Returns ``(agent, held-out
    agreement of the labeler)``."""
    pseudo, probe = LABELERS[labeler](run, k, seed)
    return run.bc(run.train_t, pseudo, run.cfg.policy_train, seed, tag), probe


def idm_method(run: GameRun, k: int, seed: int):
    """Supervised IDM on the k labels -> pseudo-labels for the video -> BC (VPT / BCO(0))."""
    return bc_on_pseudo_labels(run, "idm", k, seed, "idm_bc")


def ours_method(run: GameRun, k: int, seed: int, head_cfg: ActionHeadConfig | None = None):
    """LAM on frames -> latent BC (shared per seed) -> k-shot head on the k labels (LAPO §3)."""
    from lapo import stages
    from lapo.decoder import probe_scores

    labels, policy = run.latent_stages(seed)
    subset = run.subset(k, seed)
    agent = stages.fit_head(policy, run.ds, labels, subset, head_cfg or run.cfg.head, run.cfg.head_input, seed)
    probe = probe_scores(np.asarray(labels.latents[subset.indices]), subset.actions,
                         np.asarray(labels.latents[run.test_t]), run.test_actions(), run.coding.space)
    return agent, probe.get("probe_accuracy", probe.get("probe_direction_accuracy"))


def relabel_pseudo_labels(run: GameRun, k: int, seed: int) -> tuple[np.ndarray, float]:
    """``ours_relabel``'s labeler: the k-shot head fitted on the LAM's IDM latents of the k labels
    (``--head-input idm``'s head) labels every training transition of the video from its stored
    latent. Returns ``(pseudo-labels of run.train_t, held-out agreement with the true actions)``."""
    from lapo.baselines import pseudo_label
    from lapo.decoder import fit_action_head

    cfg, subset, labels = run.cfg, run.subset(k, seed), run.lam_labels(seed)
    head = fit_action_head(np.asarray(labels.latents[subset.indices]), subset.actions,
                           dataclasses.replace(cfg.head, latent_dim=labels.latents.shape[1]), run.coding.space, seed)

    def read(t):
        return np.asarray(labels.latents[t], np.float32)

    probe = action_agreement(pseudo_label(head, run.ds, run.test_t, head.coding, read=read), run.test_actions(),
                             run.coding.space)
    return pseudo_label(head, run.ds, run.train_t, head.coding, cfg.idm_pseudo_labels, seed, read=read), probe


LABELERS = {"idm": idm_pseudo_labels, "ours_relabel": relabel_pseudo_labels,
            "ours_relabel_tuned": lambda run, k, seed: idm_pseudo_labels(run, k, seed, from_lam=True)}
"""Rows that label the whole video from the k labels, then BC: row -> ``(run, k, seed) ->
(pseudo-labels of run.train_t, held-out agreement)``, exactly as the row labels it."""


def ours_relabel_method(run: GameRun, k: int, seed: int):
    """The LAM as a label-efficient IDM: :func:`relabel_pseudo_labels` labels every video
    transition, then BC on those pseudo-labels: the ``idm`` row's pipeline (same labeling mode, same
    BC) with the frames-only LAM + head in place of the supervised IDM, so the row shows what
    action-free pretraining adds to the IDM (the LAM's latents as features for VPT's recipe). No
    latent policy."""
    return bc_on_pseudo_labels(run, "ours_relabel", k, seed, "ours_relabel")


def ours_relabel_tuned_method(run: GameRun, k: int, seed: int):
    """``ours_relabel`` with the LAM's IDM itself fine-tuned on the k labels instead of a head on
    its frozen latents: the ``idm`` row (same network, k-label budget ``idm_train``, labeling mode
    and BC) started from the seed's frames-only LAM's IDM, so the row shows what action-free
    pretraining adds to the supervised IDM's weights. No latent policy."""
    return bc_on_pseudo_labels(run, "ours_relabel_tuned", k, seed, "ours_relabel_tuned")


def oracle_bc_shuffled_method(run: GameRun, k: int, seed: int):
    """Diagnostic (reads every true action, like ``oracle_bc``): ``ours_relabel``'s pseudo-labels
    shuffled among the training transitions that share a true action, then the same BC. The labels
    keep ``ours_relabel``'s error rate for every true action (the same joint distribution of true
    and pseudo-label) but their errors no longer depend on the frame. Between ``oracle_bc`` (no
    errors) and ``ours_relabel`` (its errors where they fall): near ``oracle_bc``, the errors' rate
    is harmless and where they fall costs the return; near ``ours_relabel``, the rate alone explains
    it. Discrete actions only (raises ValueError otherwise)."""
    if run.coding.space.get("type") != "Discrete":
        raise ValueError(f"oracle_bc_shuffled needs discrete actions; {run.game} has {run.coding.space.get('type')}")
    pseudo, _ = relabel_pseudo_labels(run, k, seed)
    true, shuffled = run.oracle_actions(), pseudo.copy()
    rng = np.random.default_rng(seed)
    for a in np.unique(true):
        at = np.flatnonzero(true == a)
        shuffled[at] = pseudo[rng.permutation(at)]
    return run.bc(run.train_t, shuffled, run.cfg.policy_train, seed, "oracle_bc_shuffled"), None


def ours_tuned_method(run: GameRun, k: int, seed: int):
    """``ours``, then the whole agent fine-tuned end to end on the same k labels with BC on k's
    recipe (``bc_train``: steps, learning rate, augmentation), so the row differs from ``bc`` only
    in starting from the latent agent (:func:`lapo.stages.tune_agent`)."""
    from lapo import stages

    agent, probe = ours_method(run, k, seed)
    tuned = stages.tune_agent(agent, run.ds, run.subset(k, seed), dataclasses.replace(run.cfg.bc_train, seed=seed),
                              tag="ours_tuned")
    return tuned, probe


def ours_head(continuous: str):
    """``ours`` with a head of the given continuous decoding (``bins`` RT-1 or ``regression``)."""
    def method(run: GameRun, k: int, seed: int):
        return ours_method(run, k, seed, dataclasses.replace(run.cfg.head, continuous=continuous))
    method.__doc__ = f"ours with a '{continuous}' action head."
    return method


def jointly_supervised(lam_field: str, head: str, name: str):
    """A method whose LAM is trained *with* the k labels (the joint action-decoder mechanism of
    :func:`lapo.lam.train_lam`), then latent BC on its latents, then an action head:

    - ``lam_field="clam_lam", head="decoder"``: CLAM (Liang et al. 2025): continuous latents, the
      jointly trained decoder is the action head;
    - ``lam_field="lam", head="fit"``: ours with label supervision inside the LAM (LAOM, Nikulin et
      al. 2025: labels shape the latent actions): the same FSQ LAM as ``ours``, and the same k-shot
      head fitted on the policy's latents as ``ours``, so the row isolates what the labels add to
      the LAM itself.
    """
    def method(run: GameRun, k: int, seed: int):
        import torch

        from lapo import stages
        from lapo.agent import Agent
        from lapo.decoder import probe_scores

        cfg, subset = run.cfg, run.subset(k, seed)
        d = run.dir / f"seed{seed}" / f"{name}_k{k}"
        lam, _ = stages.train_lam(run.ds, d / "lam", getattr(cfg, lam_field), dataclasses.replace(cfg.lam_train, seed=seed),
                                  d / "tb", labeled=subset, head_cfg=cfg.head)
        labels = stages.label(d / "lam", run.ds, d / "labels", device=cfg.lam_train.device)
        policy = stages.latent_bc(run.ds, labels, d / "latent_policy", cfg.policy,
                                  dataclasses.replace(cfg.policy_train, seed=seed), pool=run.train_t)
        test_latents = np.asarray(labels.latents[run.test_t])
        if head == "fit":
            agent = stages.fit_head(policy, run.ds, labels, subset, cfg.head, cfg.head_input, seed)
            probe = probe_scores(np.asarray(labels.latents[subset.indices]), subset.actions, test_latents,
                                 run.test_actions(), run.coding.space)
            return agent, probe.get("probe_accuracy", probe.get("probe_direction_accuracy"))
        decoder = lam.action_decoder.eval()
        with torch.no_grad():
            out = decoder(torch.as_tensor(test_latents, dtype=torch.float32, device=next(decoder.parameters()).device))
        pred = decoder.coding.decode(out, deterministic=True)
        return Agent(policy, decoder), action_agreement(pred, run.test_actions(), run.coding.space)

    method.__doc__ = jointly_supervised.__doc__
    return method


def ppo_method(name: str):
    """``ours_finetune`` (``name="agent"``: ours at ``finetune_k`` labels, fine-tuned) or ``ppo_scratch``
    (``name="scratch"``): :func:`lapo.finetune.finetune` for ``finetune_frames`` env frames, resumable
    under ``run_dir/GAME/seedS/ppo``; returns the final PPO policy's act function."""
    def method(run: GameRun, k, seed: int):
        import torch

        from lapo.finetune import FinetuneConfig, finetune, load_finetuned

        cfg = run.cfg
        d = run.dir / f"seed{seed}" / "ppo"
        if name == "agent" and not (d / "agent" / "ppo_checkpoint.zip").exists():
            agent, _ = ours_method(run, cfg.finetune_k, seed)
            agent.save_pretrained(d / f"ours_k{cfg.finetune_k}")
        ppo = {**dataclasses.asdict(cfg.ppo), "env_name": run.game, "distribution_mode": cfg.distribution_mode,
               "seed": seed, "threads": cfg.threads or torch.get_num_threads()}
        ft = FinetuneConfig(**ppo, agent=d / f"ours_k{cfg.finetune_k}", run_dir=d, runs=(name,),
                            total_timesteps=cfg.finetune_frames, eval_every=cfg.finetune_eval_every,
                            eval_episodes=cfg.eval_episodes, demonstrator=run.demonstrator_dir)
        finetune(ft)
        return load_finetuned(d / name), None

    method.__doc__ = ppo_method.__doc__
    return method


METHODS = {"random": random_method, "demonstrator": demonstrator_method, "oracle_bc": oracle_bc_method,
           "bc": bc_method, "idm": idm_method, "ours": ours_method, "ours_bins": ours_head("bins"),
           "ours_regression": ours_head("regression"), "ours_tuned": ours_tuned_method,
           "ours_relabel": ours_relabel_method, "ours_relabel_tuned": ours_relabel_tuned_method,
           "oracle_bc_shuffled": oracle_bc_shuffled_method,
           "clam": jointly_supervised("clam_lam", "decoder", "clam"),
           "ours_supervised": jointly_supervised("lam", "fit", "supervised"),
           "ours_finetune": ppo_method("agent"), "ppo_scratch": ppo_method("scratch")}


# ----------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------


def check_run_dir(cfg: BenchmarkConfig, run_dir: Path | None = None) -> None:
    """Record the non-sweep settings in ``run_dir/benchmark_config.json``, or check they match.
    A setting that only some rows read (:data:`ROW_FIELDS`: the RL rows' PPO values, the CLAM row's
    LAM) is checked only once the directory holds a cell of those rows; before that, the stored value
    is replaced by this call's. ``run_dir`` None: ``cfg.run_dir``; another directory (one of
    ``cfg.report_from``) is only read, never written.

    Raises:
        ValueError: the run directory holds cells made with other settings (names each differing value, nested ones as ``ppo.n_steps``).
    """
    from envs.io import atomic_write_text, jsonable

    run_dir = Path(cfg.run_dir if run_dir is None else run_dir)
    writable = run_dir == Path(cfg.run_dir)
    settings = {k: v for k, v in jsonable(cfg).items() if k not in SWEEP_FIELDS}
    path = run_dir / "benchmark_config.json"
    if not path.is_file():
        atomic_write_text(path, json.dumps(settings, indent=2))
        return
    # a setting added after the run was made counts as its default there
    stored = json.loads(path.read_text())
    old = {**jsonable(BenchmarkConfig()), **stored}
    diff = sorted(k for k in set(settings) if old.get(k) != settings.get(k))
    unused = [k for k in diff if k in ROW_FIELDS
              and not any(p for m in ROW_FIELDS[k] for p in run_dir.glob(f"cells/*/{m}/*/seed*.json"))]
    if unused and writable:  # no cell of those rows made with the stored values yet
        atomic_write_text(path, json.dumps({**stored, **{k: settings[k] for k in unused}}, indent=2))
    diff = [k for k in diff if k not in unused]
    if diff:
        def changed(k):  # only the differing entries of a nested setting (e.g. ppo.n_steps)
            a, b = old.get(k), settings.get(k)
            if isinstance(a, dict) and isinstance(b, dict):
                return ", ".join(f"{k}.{x}: {a.get(x)!r} there, {b.get(x)!r} now"
                                 for x in sorted(set(a) | set(b)) if a.get(x) != b.get(x))
            return f"{k}: {a!r} there, {b!r} now"
        raise ValueError(f"{run_dir} holds a benchmark run with other settings "
                         f"({'; '.join(changed(k) for k in diff)}); its cells would not be comparable. "
                         "Use another --run-dir, or the same settings")


def game_dir(cfg: BenchmarkConfig, game: str) -> Path:
    """The run directory a game's cells and RL curves are read from: ``run_dir``, or the first of
    ``run_dir``, ``report_from`` that holds cells of the game."""
    for d in (Path(cfg.run_dir), *cfg.report_from):
        if (d / "cells" / game).is_dir():
            return d
    return Path(cfg.run_dir)


def cells_of(cfg: BenchmarkConfig, game: str):
    """Every (method, k, seed) of the sweep for a game, in the order they run: per seed the
    references, then the latent rows (their LAM -> latent policy chain is the longest, so a second
    worker sharing the run dir does the other rows meanwhile), then the rest."""
    selected = [m for m in TRAINED + OPTIONAL if m in cfg.methods]
    for seed in cfg.seeds:
        for method in REFERENCES + tuple(sorted(selected, key=lambda m: m not in LATENT_ROWS)):
            for k in (cfg.ks if method in K_METHODS else (None,)):
                yield method, k, seed


def run_benchmark(cfg: BenchmarkConfig) -> dict:
    """Run every missing cell, then aggregate; returns the results dict also written to
    ``run_dir/results.json`` (plus ``results.md`` and ``normalized_return.png``).

    Several processes may share ``run_dir`` (e.g. two 1-thread workers on 2 cores, the same command
    twice): each cell, and each stage the cells share (the video, a seed's LAM, labels and latent
    policy), is computed by one of them under a file lock (:func:`envs.io.file_lock`); a worker
    moves on from a cell another one holds, or whose shared stage another one is computing, and
    retries it (every ``RETRY_SECONDS`` when all it has left are held)."""
    from envs.io import LockBusy, atomic_write_text, file_lock, wait_for_locks
    from lapo.training import set_threads

    set_threads(cfg.threads)
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    check_run_dir(cfg)
    for other in cfg.report_from:
        check_run_dir(cfg, other)
    t_start = time.perf_counter()
    for game in cfg.games:
        todo = [c for c in cells_of(cfg, game) if not cell_path(game_dir(cfg, game), game, *c).is_file()]
        print(f"{game}: {len(todo)} of {len(list(cells_of(cfg, game)))} cells {'missing' if cfg.report_only else 'to run'}")
        if not todo or cfg.report_only:
            continue
        game_run = GameRun(cfg, game)
        pending, announced = todo, set()
        while pending:  # cells another process holds (the cell, or a stage it needs) are retried
            held = []
            for method, k, seed in pending:
                path = cell_path(run, game, method, k, seed)
                try:
                    with wait_for_locks(False), file_lock(path):
                        if path.is_file():  # another process finished it meanwhile
                            continue
                        cell = game_run.run_cell(method, k, seed)
                        atomic_write_text(path, json.dumps(cell))
                    print(f"  {game} {method} k={k} seed={seed}: return {cell['mean_return']:.2f} "
                          f"({cell['train_seconds']:.0f} s train, {cell['eval_seconds']:.0f} s eval)")
                except LockBusy as busy:
                    held.append((method, k, seed))
                    if (method, k, seed) not in announced:
                        announced.add((method, k, seed))
                        print(f"  {game} {method} k={k} seed={seed}: {busy}; back to it later", flush=True)
            if len(held) == len(pending):  # nothing done this round: all held elsewhere
                time.sleep(RETRY_SECONDS)
            pending = held
    # the table reports every method's finished cells, not only the methods this call ran
    everything = dataclasses.replace(cfg, methods=TRAINED + OPTIONAL)
    def missing_of(sweep, methods=None):  # cells of the sweep (of those methods only) not on disk
        return [os.path.relpath(p, run) for g in sweep.games for c in cells_of(sweep, g)
                if (methods is None or c[0] in methods) and not (p := cell_path(game_dir(cfg, g), g, *c)).is_file()]

    missing = missing_of(cfg)
    paths = [cell_path(game_dir(cfg, g), g, *c) for g in cfg.games for c in cells_of(everything, g)]
    cells = [json.loads(p.read_text()) for p in paths if p.is_file()]
    results = aggregate(cells, cfg)
    results["finetune_curves"] = finetune_curves(everything, results["references_per_seed"])
    results["missing_cells"] = missing
    results["game_dirs"] = {g: str(game_dir(cfg, g)) for g in cfg.games}
    # the targets are evaluated on the finished cells of the "ours" row, whichever methods this call ran
    results["targets"]["ours_missing_cells"] = missing_of(dataclasses.replace(cfg, methods=(cfg.ours,)), (cfg.ours,))
    results["wall_seconds_this_call"] = round(time.perf_counter() - t_start, 1)
    results["hardware"] = hardware()
    results["config"] = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    atomic_write_text(run / "results.json", json.dumps(results, indent=2))
    table = format_results(results)
    atomic_write_text(run / "results.md", table + "\n")
    plot_results(results, run / "normalized_return.png")
    print(table)
    if missing:
        print(f"{len(missing)} cells of the sweep are missing (not in the table): {missing[:5]} ...")
    if results["targets"]["ours_missing_cells"]:
        print(f"the targets leave out {len(results['targets']['ours_missing_cells'])} missing cells of the "
              f"'ours' row ({cfg.ours}); run them with --methods {cfg.ours} (or choose the row with --ours)")
    return results


# ----------------------------------------------------------------------------------------------
# aggregation, table, plot
# ----------------------------------------------------------------------------------------------


def aggregate(cells: list[dict], cfg: BenchmarkConfig) -> dict:
    """Rows per (game, method, k) with mean return, bootstrap CI, normalized return and accuracies,
    the per-k average over games, and the issue's targets evaluated on them.

    Each row is normalized by the references averaged over that row's own seeds (a row run on fewer
    seeds than the references is not shifted by the others); ``references`` holds them averaged
    over every seed, ``references_per_seed`` per seed. A cell whose seed has no references yet is
    left out until they exist.

    Raises:
        ValueError: two methods of one (game, seed) were evaluated on different levels.
    """
    from envs.procgen import procgen_normalized
    from lapo.stats import bootstrap_ci, normalized_return

    by_key, all_refs = index_cells(cells)
    rows, refs, per_seed = [], {}, {}
    for game in cfg.games:
        seed_refs = all_refs.get(game)
        if not seed_refs:
            continue  # no references yet: nothing to normalize by
        per_seed[game] = seed_refs
        refs[game] = reference_over(seed_refs, seed_refs)
        for (g, method, k), group in by_key.items():
            if g != game:
                continue
            # a cell whose seed has no references yet (another worker is running them) waits
            group = sorted((c for c in group if c["seed"] in seed_refs), key=lambda c: c["seed"])
            if not group:
                continue
            seeds = [c["seed"] for c in group]
            ref = reference_over(seed_refs, seeds)  # the row's own seeds, also for a row run on fewer
            mean = float(np.mean([c["mean_return"] for c in group]))
            lo, hi = bootstrap_ci([c["returns"] for c in group])
            norm = [normalized_return(x, ref["random"], ref["demonstrator"]) for x in (mean, lo, hi)]
            acc = {key: (float(np.mean([c[key] for c in group])) if group[0][key] is not None else None)
                   for key in ("probe_accuracy", "action_accuracy")}
            rows.append({"game": game, "method": method, "k": k, "seeds": seeds,
                         "mean_return": mean, "ci95": [lo, hi], "per_seed_mean_return": [c["mean_return"] for c in group],
                         "references": ref, "normalized_return": norm[0], "normalized_ci95": norm[1:],
                         "normalized_procgen": procgen_normalized(mean, game),
                         "episodes": sum(len(c["returns"]) for c in group), **acc,
                         "train_seconds": sum(c["train_seconds"] for c in group),
                         "eval_seconds": sum(c["eval_seconds"] for c in group)})
    # average normalized return over games, per (method, k)
    average = []
    for method in REFERENCES + TRAINED + OPTIONAL:
        for k in sorted({r["k"] for r in rows if r["method"] == method}, key=lambda x: -1 if x is None else x):
            vals = [r["normalized_return"] for r in rows if r["method"] == method and r["k"] == k]
            if len(vals) == len(refs):
                average.append({"method": method, "k": k, "normalized_return": float(np.mean(vals))})
    return {"rows": rows, "references": refs, "references_per_seed": per_seed, "average_over_games": average,
            "targets": targets(by_key, per_seed, average, cfg.ours),
            "total_train_seconds": sum(c["train_seconds"] for c in cells),
            "total_eval_seconds": sum(c["eval_seconds"] for c in cells)}


def index_cells(cells: list[dict]) -> tuple[dict, dict]:
    """Cells by ``(game, method, k)``, and per game the references of each seed that has both
    (game -> seed -> ``{"random": R, "demonstrator": R}``, seeds in order): what :func:`aggregate`
    and :func:`paired_difference` read.

    Raises:
        ValueError: two methods of one (game, seed) were evaluated on different levels.
    """
    by_key: dict[tuple, list[dict]] = {}
    levels: dict[tuple, list] = {}
    for c in cells:
        by_key.setdefault((c["game"], c["method"], c["k"]), []).append(c)
        first = levels.setdefault((c["game"], c["seed"]), c["level_seeds"])
        if first != c["level_seeds"]:
            raise ValueError(f"{c['game']} seed {c['seed']}: {c['method']} k={c['k']} played other levels")
    refs: dict[str, dict] = {}
    for (game, method, _), group in by_key.items():
        if method in REFERENCES:
            for c in group:
                refs.setdefault(game, {}).setdefault(c["seed"], {})[method] = c["mean_return"]
    refs = {g: {s: r for s, r in sorted(per_seed.items()) if len(r) == len(REFERENCES)} for g, per_seed in refs.items()}
    return by_key, refs


def reference_over(per_seed: dict, seeds) -> dict:
    """``{"random": R, "demonstrator": R}``: the mean returns of the two references over ``seeds``
    (``per_seed``: seed -> the references of that seed, :func:`aggregate`'s ``references_per_seed[game]``).

    Raises:
        KeyError: a seed without references.
    """
    return {m: float(np.mean([per_seed[s][m] for s in seeds])) for m in REFERENCES}


def finetune_curves(cfg: BenchmarkConfig, refs: dict) -> dict:
    """Per game, the RL rows' evaluation curves (``ppo/{agent,scratch}/curve.json`` of each seed) at
    the frame counts every seed of both rows has reached: mean normalized return over seeds, the
    per-seed values, and ours_finetune − ppo_scratch at each point. ``{}`` for a game without both
    rows or without references.

    Normalized by the benchmark's reference cells averaged over the curves' seeds (``refs[game]``:
    seed -> references, :func:`aggregate`'s ``references_per_seed``), as the table's rows, not by
    the ones :mod:`lapo.finetune` measures for its own curve (another sampling draw on the same
    levels: seed 0's CoinRun demonstrator scored 7.4 in the benchmark's cell and 8.0 there)."""
    from lapo.stats import normalized_return

    out = {}
    for game in (g for g in cfg.games if g in refs):
        curves = {}  # run -> seed -> {frames: mean return}
        for method, name in zip(RL_METHODS, ("agent", "scratch")):
            for seed in (s for s in cfg.seeds if s in refs[game]):
                path = game_dir(cfg, game) / game / f"seed{seed}" / "ppo" / name / "curve.json"
                if method in cfg.methods and path.is_file():
                    curves.setdefault(name, {})[seed] = {p["frames"]: p["mean_return"] for p in json.loads(path.read_text())}
        if set(curves) != {"agent", "scratch"}:
            continue
        seeds = sorted(set(curves["agent"]) & set(curves["scratch"]))
        frames = sorted(set.intersection(*(set(curves[n][s]) for n in curves for s in seeds))) if seeds else []
        if not frames:
            continue
        ref = reference_over(refs[game], seeds)
        point = {n: [[normalized_return(curves[n][s][f], ref["random"], ref["demonstrator"]) for s in seeds]
                     for f in frames] for n in curves}
        mean = {n: [float(np.mean(v)) for v in point[n]] for n in point}
        out[game] = {"seeds": seeds, "frames": frames, "agent": mean["agent"], "scratch": mean["scratch"],
                     "agent_per_seed": point["agent"], "scratch_per_seed": point["scratch"],
                     "agent_minus_scratch": [a - b for a, b in zip(mean["agent"], mean["scratch"])]}
    return out


def paired_difference(by_key: dict, refs: dict, row: tuple, base: tuple) -> dict | None:
    """``row`` − ``base`` (each ``(method, k)``, k None for a k-independent row): the paired
    difference of normalized returns, episode by episode on the same levels of every seed both have,
    divided by the game's demonstrator − random gap (references averaged over those seeds), with a
    stratified bootstrap 95% CI (:func:`lapo.stats.bootstrap_ci`, one stratum per game and seed).
    Arguments as :func:`targets`. Returns ``{"games", "mean", "ci95", "above" (CI low end > 0),
    "per_game": game -> {"mean", "ci95", "seeds", "worse_beyond_ci" (CI high end < 0)}}``, or None
    when no game has both rows and references on a common seed."""
    from lapo.stats import bootstrap_ci

    per_game, strata = {}, []
    for game, per_seed in refs.items():
        ours = {c["seed"]: c for c in by_key.get((game, *row), [])}
        other = {c["seed"]: c for c in by_key.get((game, *base), [])}
        seeds = sorted(set(ours) & set(other) & set(per_seed))
        if not seeds:
            continue
        ref = reference_over(per_seed, seeds)
        gap = ref["demonstrator"] - ref["random"]
        if gap == 0:
            continue
        diffs = [(np.asarray(ours[s]["returns"], float) - np.asarray(other[s]["returns"], float)) / gap
                 for s in seeds]
        lo, hi = bootstrap_ci(diffs)
        per_game[game] = {"mean": float(np.mean([d.mean() for d in diffs])), "ci95": [lo, hi],
                          "seeds": len(diffs), "worse_beyond_ci": hi < 0}
        strata += diffs
    if not per_game:
        return None
    lo, hi = bootstrap_ci(strata)
    return {"games": list(per_game), "mean": float(np.mean([d.mean() for d in strata])), "ci95": [lo, hi],
            "above": lo > 0, "per_game": per_game}


def targets(by_key: dict, refs: dict, average: list[dict], ours_row: str = "ours") -> dict:
    """Issue 11's offline targets, evaluated on the finished cells of the row ``ours_row``
    (:attr:`BenchmarkConfig.ours`; "ours" below).

    - ``ours`` at k=256 >= 0.8 normalized return on average over the games (the issue asks for >= 4
      games with 3 seeds each; ``games`` says how many this is over).
    - At every k >= 64, ours − BC-on-k and ours − IDM-on-k: the paired difference of normalized
      returns (episode by episode on the same levels, divided by the game's demonstrator − random
      gap), averaged over games, with a stratified bootstrap 95% CI (:func:`lapo.stats.bootstrap_ci`,
      one stratum per game and seed: with the same seeds on every game the mean over strata is the
      mean over games). ``above`` = the CI's low end > 0. Per game the same difference and CI;
      ``worse_beyond_ci`` = its high end < 0 (the issue: on no game worse beyond its CI).

    Args:
        by_key: ``(game, method, k) -> cells`` (each with ``seed`` and per-episode ``returns``).
        refs: ``game -> seed -> {"random": R, "demonstrator": R}`` (:func:`aggregate`'s
            ``references_per_seed``; games without references are skipped). A pair's gap is the
            references' averaged over the seeds it has.
        average: :func:`aggregate`'s per-(method, k) averages over games.
    """
    ours256 = [a["normalized_return"] for a in average if a["method"] == ours_row and a["k"] == 256]
    ks = sorted({k for (_, m, k) in by_key if m == ours_row and k is not None and k >= 64})
    paired = {}
    for k in ks:
        for base in ("bc", "idm"):
            d = paired_difference(by_key, refs, (ours_row, k), (base, k))
            if d is not None:
                paired[f"k{k}_ours_minus_{base}"] = {"k": k, "baseline": base, **d}
    return {"ours": ours_row, "ours_k256_average_normalized": ours256[0] if ours256 else None, "games": list(refs),
            "ours_k256_at_least_0.8": bool(ours256 and ours256[0] >= 0.8),
            "paired_differences": paired,
            "ours_above_bc_and_idm_at_every_k_ge_64": bool(ks) and all(  # both baselines run at every k
                (d := paired.get(f"k{k}_ours_minus_{base}")) is not None and d["above"]
                and not any(g["worse_beyond_ci"] for g in d["per_game"].values())
                for k in ks for base in ("bc", "idm"))}


def format_results(results: dict) -> str:
    """Markdown: per game a table of normalized return (mean return [95% CI]) per method and k,
    probe accuracies, and the average over games."""
    rows = results["rows"]
    ks = sorted({r["k"] for r in rows if r["k"] is not None})
    head = "| method | " + " | ".join(f"k={k}" for k in ks) + " |"
    sep = "|---|" + "---|" * len(ks)
    out = []
    for game in dict.fromkeys(r["game"] for r in rows):
        seeds = sorted({s for r in rows if r["game"] == game for s in r["seeds"]})
        episodes = next(r["episodes"] for r in rows if r["game"] == game) // len(seeds)
        out += [f"### {game}", "", f"seeds {seeds}, {episodes} unseen levels per seed"]
        if ks:  # tables per k (none for a sweep of rows without k only)
            out += ["", "normalized return (mean return [95% CI])", "", head, sep]
            for method in REFERENCES + TRAINED + OPTIONAL:
                cells = {r["k"]: r for r in rows if r["game"] == game and r["method"] == method}
                if not cells:
                    continue
                fmt = {k: f"{r['normalized_return']:.2f} ({r['mean_return']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}])"
                          + ("" if r["seeds"] == seeds else f" seeds {r['seeds']}") for k, r in cells.items()}
                vals = [fmt.get(k, fmt.get(None, "")) for k in ks]
                out.append(f"| {METHOD_NAMES[method]} | " + " | ".join(vals) + " |")
            out += ["", "held-out accuracy of true actions: probe / agent", "", head, sep]
            for method in ("oracle_bc",) + K_METHODS:
                cells = {r["k"]: r for r in rows if r["game"] == game and r["method"] == method}
                if cells:
                    out.append(f"| {METHOD_NAMES[method]} | " + " | ".join(
                        _accuracies(cells.get(k, cells.get(None))) for k in ks) + " |")
        fixed = [r for m in REFERENCES + TRAINED + OPTIONAL for r in rows
                 if r["game"] == game and r["method"] == m and r["k"] is None]
        out += ["", "rows without k: normalized by the references / by Procgen's easy-mode constants", "",
                "| method | mean return [95% CI] | normalized (random 0, demonstrator 1) [95% CI] | "
                "normalized ((R - R_min) / (R_max - R_min)) |", "|---|---|---|---|"]
        out += [f"| {METHOD_NAMES[r['method']]} | {r['mean_return']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] | "
                f"{r['normalized_return']:.2f} [{r['normalized_ci95'][0]:.2f}, {r['normalized_ci95'][1]:.2f}] | "
                f"{r['normalized_procgen']:.2f} |" for r in fixed]
        out.append("")
    avg = results["average_over_games"]
    if avg and ks:
        out += [f"### average over games ({', '.join(results['references'])}; normalized return)", "", head, sep]
        for method in REFERENCES + TRAINED + OPTIONAL:
            vals = {a["k"]: a["normalized_return"] for a in avg if a["method"] == method}
            if vals:
                out.append(f"| {METHOD_NAMES[method]} | " + " | ".join(
                    "—" if (v := vals.get(k, vals.get(None))) is None else f"{v:.2f}" for k in ks) + " |")
    t = results.get("targets", {})
    if t.get("paired_differences"):
        left_out = t.get("ours_missing_cells") or []
        out += ["", f"### targets over {len(t['games'])} game(s) ({', '.join(t['games'])})", "",
                f"ours = {METHOD_NAMES[t.get('ours', 'ours')]}"
                + (f"; {len(left_out)} of its cells are missing and left out: {', '.join(left_out[:4])}"
                   + (" ..." if len(left_out) > 4 else "") if left_out else ""), "",
                "ours at k=256, average normalized return: "
                + (f"{t['ours_k256_average_normalized']:.2f} (target >= 0.8 over >= 4 games)"
                   if t["ours_k256_average_normalized"] is not None else "-"), "",
                "paired difference of normalized returns on the same levels, average over games [95% CI]; "
                "games where ours is worse beyond the CI", "",
                "| k | baseline | ours − baseline [95% CI] | above | per game | worse beyond CI |", "|---|---|---|---|---|---|"]
        out += [f"| {d['k']} | {METHOD_NAMES[d['baseline']]} | {d['mean']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}] "
                f"| {'yes' if d['above'] else 'no'} | "
                + ", ".join(f"{g} {e['mean']:+.2f} [{e['ci95'][0]:+.2f}, {e['ci95'][1]:+.2f}]" for g, e in d["per_game"].items())
                + " | " + (", ".join(g for g, e in d["per_game"].items() if e["worse_beyond_ci"]) or "none") + " |"
                for d in t["paired_differences"].values()]
    for game, c in results.get("finetune_curves", {}).items():
        out += ["", f"### {game}: fine-tuning curves (normalized return, mean over seeds {c['seeds']})", "",
                "| env frames | PPO from ours | PPO from scratch | difference |", "|---|---|---|---|"]
        out += [f"| {f:,} | {a:.2f} | {b:.2f} | {d:+.2f} |"
                for f, a, b, d in zip(c["frames"], c["agent"], c["scratch"], c["agent_minus_scratch"])]
    return "\n".join(out)


def _accuracies(row: dict | None) -> str:
    """``probe / agent`` held-out accuracies of a row (``—`` where there is no probe, and for a cell
    not finished yet: a ``--report-only`` of a running sweep)."""
    if row is None:
        return "—"
    probe = "—" if row["probe_accuracy"] is None else f"{row['probe_accuracy']:.2f}"
    return f"{probe} / {row['action_accuracy']:.2f}"


def plot_results(results: dict, path: Path) -> Path:
    """PNG: normalized return vs k (log axis), one line per method with its 95% CI band, one panel
    per game plus the average; rows without k (oracle BC, the RL rows) dashed, random 0 and
    demonstrator 1 as grey lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    games = list(dict.fromkeys(r["game"] for r in rows))
    panels = games + (["average"] if len(games) > 1 and results["average_over_games"] else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4), squeeze=False)
    colors = {"bc": "tab:blue", "idm": "tab:orange", "ours": "tab:green", "oracle_bc": "tab:purple"}
    for ax, panel in zip(axes[0], panels):
        for method in ("oracle_bc",) + RL_METHODS + K_METHODS:
            if panel == "average":
                pts = sorted((a["k"], a["normalized_return"], None, None) for a in results["average_over_games"]
                             if a["method"] == method and a["k"] is not None)
                ref = [a["normalized_return"] for a in results["average_over_games"]
                       if a["method"] == method and a["k"] is None]
            else:
                pts = sorted((r["k"], r["normalized_return"], *r["normalized_ci95"]) for r in rows
                             if r["game"] == panel and r["method"] == method and r["k"] is not None)
                ref = [r["normalized_return"] for r in rows if r["game"] == panel and r["method"] == method
                       and r["k"] is None]
            if ref:
                ax.axhline(ref[0], color=colors.get(method), ls="--", label=METHOD_NAMES[method])
            if pts:
                k, y, lo, hi = zip(*pts)
                ax.plot(k, y, "o-", color=colors.get(method), label=METHOD_NAMES[method])
                if lo[0] is not None:
                    ax.fill_between(k, lo, hi, color=colors.get(method), alpha=0.15)
        ax.axhline(1, color="grey", lw=0.8)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("log", base=2)
        ks = sorted({r["k"] for r in rows if r["k"] is not None})
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        ax.set_title(panel)
        ax.set_xlabel("k labeled transitions")
    axes[0][0].set_ylabel("normalized return")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def hardware() -> dict:
    """CPU model, cores, torch threads and CUDA device (if any) of this run."""
    import platform

    import torch

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
