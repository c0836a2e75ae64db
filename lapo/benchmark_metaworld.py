"""``lapo benchmark --domain metaworld``: success rates on Meta-World tasks, every method side by side.

One multi-task video (scripted experts with action noise, :mod:`envs.metaworld`) of several tasks;
one LAM and one latent policy across all tasks (the task is given by the image only: the default
tasks have five different scenes). For each k (labeled **episodes per task**, drawn by episode
from the training episodes) and seed, the methods of :data:`lapo.benchmark.METHODS` run on the same
video, labeled episodes and evaluation layouts (``eval_episodes`` per task, ids from
:data:`envs.metaworld.EVAL_LAYOUT_START`, which no training episode used; another block per seed):

- ``random``: uniform actions in [-1, 1]^4.
- ``oracle_bc``: BC on every training transition's true action (all labels).
- ``bc``: BC on the k labeled episodes per task.
- ``idm``: supervised IDM on the k labeled episodes -> pseudo-labels for the video -> BC.
- ``ours_bins`` / ``ours_regression``: LAM on frames -> latent BC -> k-shot head, RT-1 256-bin
  or regression decoding of the 4-d action.
- ``ours_tuned``: the ``ours`` agent (the head of ``head.continuous``), then fine-tuned end to end
  on the k labeled episodes with BC on k's recipe (``bc_train``), i.e. ``bc`` from a pretrained start.
- ``clam``: continuous-latent LAM trained jointly with an action decoder on the k labeled
  episodes -> latent BC -> that decoder (Liang et al. 2025).

The recipe was chosen on a development mixture of three other tasks and other layouts
(``python -m scripts.metaworld_recipe``, ``docs/metaworld_recipe.json``; oracle BC there: RT-1 bins
0.40 at 1,500 steps, regression 0.78, regression at 6,000 steps 0.95): BC-type baselines and CLAM
decode actions with ``head.continuous`` (regression), every BC stage on the whole video (oracle,
IDM pseudo-labels, latent) trains for the same ``policy_train`` budget (6,000 steps) and BC on the
k episodes for ``bc_train`` (the best budget for it on the same mixture). ``ours`` names the latent
row the targets are checked on: ``ours_tuned`` (on the development mixture, ``lapo benchmark
--domain metaworld --seeds 0 --video.tasks faucet-open-v3 lever-pull-v3 plate-slide-v3 --methods bc
ours_regression ours_tuned``: BC on k 0.65, ours_regression 0.65, ours_tuned 0.76); every row is
reported.

Cells are JSON files under ``run_dir/cells/metaworld/METHOD/k{K}|all/seed{S}.json`` (a rerun skips
finished cells; shared stages are reused), as in :mod:`lapo.benchmark`.

Metrics: per (task, method, k) the success rate (mean over seeds of each seed's rate) with a 95%
stratified bootstrap CI (:mod:`lapo.stats`), the average over tasks, and the targets: on the tasks
where oracle BC reaches >= 0.5, ours >= 0.8 × oracle BC, and ours above BC-on-k and IDM-on-k by a
paired bootstrap CI of the success difference on the same layouts (lower bound > 0).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from envs.metaworld import EVAL_LAYOUT_START, MetaWorldCollectConfig
from lapo.benchmark import METHOD_NAMES, GameRun, cell_path, check_run_dir, hardware
from lapo.decoder import ActionHeadConfig
from lapo.lam import LAMConfig, LAMTrainConfig
from lapo.policy import PolicyConfig, PolicyTrainConfig

GAME = "metaworld"
MW_METHODS = ("oracle_bc", "bc", "idm", "ours_bins", "ours_regression", "ours_tuned", "clam")
SEED_LAYOUT_STRIDE = 100_000
"""Seed ``s`` evaluates layouts ``EVAL_LAYOUT_START + s * SEED_LAYOUT_STRIDE + [0, eval_episodes)``."""


@dataclass
class MetaWorldBenchmarkConfig:
    """``lapo benchmark --domain metaworld``: the sweep and every budget (sized for a 2-core CPU)."""

    video: MetaWorldCollectConfig = field(default_factory=lambda: MetaWorldCollectConfig(out=Path("dataset")))
    """The multi-task video (tasks, episodes per task, expert noise, camera, frame size, step limit);
    the evaluation uses the same tasks, camera, size and step limit. ``out`` is ignored (the
    dataset lives in ``run_dir/metaworld/dataset``)."""
    ks: tuple[int, ...] = (5,)
    """Labeled episodes per task."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds: labeled draw, network inits (LAM, policies), evaluation layouts; the targets pool them."""
    methods: tuple[str, ...] = MW_METHODS
    """Methods besides ``random`` (always run)."""
    ours: str = "ours_tuned"
    """The latent row the targets name "ours" (chosen on the development mixture; every row is reported)."""
    run_dir: Path = Path("runs/benchmark_metaworld")
    """Cells, shared checkpoints, results.json and results.md."""
    eval_episodes: int = 50
    """Evaluation layouts per task and seed (unseen)."""
    num_envs: int = 2
    """Worker processes for collection and evaluation."""
    probe_fraction: float = 0.05
    """Fraction of video episodes held out for probe / action agreement (never trained on)."""
    probe_max: int = 2048
    """At most this many held-out transitions are scored."""
    lam: LAMConfig = field(default_factory=lambda: LAMConfig(fdm_size=64))
    """LAPO's LAM (FDM at full 64×64: the arm's 1-cm steps, see README's size measurement)."""
    clam_lam: LAMConfig = field(default_factory=lambda: LAMConfig(fdm_size=64, quantizer="none"))
    """CLAM's LAM (continuous latents)."""
    lam_train: LAMTrainConfig = field(default_factory=lambda: LAMTrainConfig(steps=2000, probe_k=0))
    """LAM training (both LAMs)."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """The one policy network of every method."""
    policy_train: PolicyTrainConfig = field(default_factory=lambda: PolicyTrainConfig(steps=6000))
    """BC on the whole video (latent, oracle, IDM pseudo-labels)."""
    bc_train: PolicyTrainConfig = field(default_factory=lambda: PolicyTrainConfig(steps=1500))
    """BC on the k labeled episodes (its own budget: on the development mixture 1,500 steps beat 6,000)."""
    idm_train: PolicyTrainConfig = field(default_factory=lambda: PolicyTrainConfig(steps=1500))
    """Supervised IDM on the k labeled episodes."""
    idm_pseudo_labels: str = "argmax"
    """How the IDM labels the video (:func:`lapo.baselines.pseudo_label`): ``argmax``, the rule the
    robot-domain results were made with (the Procgen benchmark's ``sample`` was tuned on CoinRun only)."""
    head: ActionHeadConfig = field(default_factory=lambda: ActionHeadConfig(continuous="regression"))
    """Action head / decoding (``continuous``: bins or regression) of the baselines and CLAM."""
    head_input: str = "policy"
    """Latents the k-shot head is fitted on (``policy`` or ``idm``)."""
    threads: int = 0
    """torch CPU threads (0 = torch's default)."""
    report_only: bool = False
    """Run nothing; aggregate finished cells."""

    def __post_init__(self):
        from lapo.benchmark import METHODS

        self.ks, self.seeds, self.methods = tuple(self.ks), tuple(self.seeds), tuple(self.methods)
        if not self.seeds or not self.ks:
            raise ValueError("need at least one k and seed")
        bad = [m for m in self.methods if m not in METHODS or m in ("random", "demonstrator", "ours")]
        if bad:
            raise ValueError(f"unknown methods {bad}; choose from {list(MW_METHODS)}")
        if self.ours not in self.methods:
            raise ValueError(f"ours={self.ours!r} is not among methods {self.methods}")
        if any(k < 1 or k > self.video.episodes_per_task for k in self.ks):
            raise ValueError(f"every k must be in [1, episodes_per_task={self.video.episodes_per_task}], got {self.ks}")
        if self.eval_episodes < 2:
            raise ValueError(f"eval_episodes must be >= 2 for a confidence interval, got {self.eval_episodes}")

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.video.tasks)

    def env_kwargs(self) -> dict:
        """The video's camera, frame size and episode rules, for evaluation envs."""
        return self.video.env_kwargs()


class TaskMixRun(GameRun):
    """The multi-task video, its held-out transitions and per-seed shared stages (the interface the
    methods of :data:`lapo.benchmark.METHODS` use; k counts labeled episodes per task)."""

    def __init__(self, cfg: MetaWorldBenchmarkConfig):
        from envs.dataset import space_to_json
        from lapo import stages

        self.cfg, self.game = cfg, GAME
        self.dir = Path(cfg.run_dir) / GAME
        self.ds = stages.collect(dataclasses.replace(cfg.video, out=self.dir / "dataset", workers=cfg.num_envs))
        self.coding = cfg.head.coding(space_to_json(self.ds.action_space))
        self._hold_out()

    def subset(self, k: int, seed: int):
        """Every transition of k labeled episodes per task, drawn from the training episodes."""
        return self.ds.labeled_subset(k, seed, pool=self.train_t, unit="episode", per_task=True)

    def evaluate(self, act, seed: int, desc: str) -> dict:
        """Success per task on the seed's unseen layouts."""
        from lapo.evaluate import evaluate_metaworld

        cfg = self.cfg
        res = evaluate_metaworld(act, cfg.tasks, cfg.eval_episodes, cfg.num_envs,
                                 EVAL_LAYOUT_START + seed * SEED_LAYOUT_STRIDE, desc=desc, **cfg.env_kwargs())
        tasks = {task: {"successes": r.successes.astype(int).tolist(), "returns": r.returns.tolist(),
                        "lengths": r.lengths.tolist(), "layouts": r.level_seeds.tolist()} for task, r in res.items()}
        rate = float(np.mean([np.mean(t["successes"]) for t in tasks.values()]))
        return {"success_rate": rate, "mean_return": rate, "tasks": tasks,
                "level_seeds": [x for t in tasks.values() for x in t["layouts"]]}


def cells_of(cfg: MetaWorldBenchmarkConfig):
    """Every (method, k, seed) of the sweep, ``random`` first."""
    from lapo.benchmark import K_METHODS

    for seed in cfg.seeds:
        for method in ("random",) + cfg.methods:
            for k in (cfg.ks if method in K_METHODS else (None,)):
                yield method, k, seed


def run_metaworld_benchmark(cfg: MetaWorldBenchmarkConfig) -> dict:
    """Run every missing cell, then aggregate; returns the results also written to
    ``run_dir/results.json`` (and ``results.md``)."""
    from envs.io import atomic_write_text
    from lapo.training import set_threads

    set_threads(cfg.threads)
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    check_run_dir(cfg)
    t_start = time.perf_counter()
    todo = [c for c in cells_of(cfg) if not cell_path(run, GAME, *c).is_file()]
    print(f"{GAME}: {len(todo)} of {len(list(cells_of(cfg)))} cells {'missing' if cfg.report_only else 'to run'}")
    mix = None if cfg.report_only and not (run / GAME / "dataset").is_dir() else TaskMixRun(cfg)
    if todo and not cfg.report_only:
        for method, k, seed in todo:
            cell = mix.run_cell(method, k, seed)
            atomic_write_text(cell_path(run, GAME, method, k, seed), json.dumps(cell))
            print(f"  {method} k={k} seed={seed}: success {cell['success_rate']:.2f} "
                  f"({cell['train_seconds']:.0f} s train, {cell['eval_seconds']:.0f} s eval)")
    paths = [cell_path(run, GAME, *c) for c in cells_of(cfg)]
    missing = [str(p.relative_to(run)) for p in paths if not p.is_file()]
    results = aggregate([json.loads(p.read_text()) for p in paths if p.is_file()], cfg)
    if mix is not None:  # k counts episodes per task; how many transitions that is
        results["labeled_transitions"] = {f"k{k}_seed{s}": len(mix.subset(k, s).indices)
                                          for k in cfg.ks for s in cfg.seeds}
        results["expert_success_per_task"] = mix.ds.meta.get("success_rate_per_task")
    results.update(missing_cells=missing, wall_seconds_this_call=round(time.perf_counter() - t_start, 1),
                   hardware=hardware(), config=json.loads(json.dumps(dataclasses.asdict(cfg), default=str)))
    atomic_write_text(run / "results.json", json.dumps(results, indent=2))
    table = format_results(results)
    atomic_write_text(run / "results.md", table + "\n")
    print(table)
    if missing:
        print(f"{len(missing)} cells of the sweep are missing (not in the table): {missing[:5]} ...")
    return results


def aggregate(cells: list[dict], cfg: MetaWorldBenchmarkConfig) -> dict:
    """Rows per (task, method, k) and per (method, k) over tasks, with CIs, plus the targets.

    Raises:
        ValueError: two methods of one seed were evaluated on different layouts.
    """
    from lapo.stats import bootstrap_ci

    layouts: dict[int, list] = {}
    for c in cells:
        if layouts.setdefault(c["seed"], c["level_seeds"]) != c["level_seeds"]:
            raise ValueError(f"seed {c['seed']}: {c['method']} k={c['k']} played other layouts")
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault((c["method"], c["k"]), []).append(c)
    rows = []
    for (method, k), group in groups.items():
        group = sorted(group, key=lambda c: c["seed"])
        per_task = {}
        for task in cfg.tasks:
            succ = [np.asarray(c["tasks"][task]["successes"], float) for c in group]
            lo, hi = bootstrap_ci(succ)
            per_task[task] = {"success_rate": float(np.mean([s.mean() for s in succ])), "ci95": [lo, hi]}
        everything = [np.asarray(c["tasks"][t]["successes"], float) for c in group for t in cfg.tasks]
        lo, hi = bootstrap_ci(everything)
        acc = {key: (float(np.mean([c[key] for c in group])) if group[0][key] is not None else None)
               for key in ("probe_accuracy", "action_accuracy")}
        rows.append({"method": method, "k": k, "seeds": [c["seed"] for c in group], "tasks": per_task,
                     "average": {"success_rate": float(np.mean([s.mean() for s in everything])), "ci95": [lo, hi]},
                     "per_seed_average": [float(np.mean([np.mean(c["tasks"][t]["successes"]) for t in cfg.tasks]))
                                          for c in group],
                     "episodes_per_task": sum(len(c["tasks"][cfg.tasks[0]]["successes"]) for c in group), **acc,
                     "train_seconds": sum(c["train_seconds"] for c in group),
                     "eval_seconds": sum(c["eval_seconds"] for c in group)})
    rows.sort(key=lambda r: (("random",) + MW_METHODS).index(r["method"]) if r["method"] in MW_METHODS + ("random",)
              else 99)
    return {"rows": rows, "targets": targets(groups, cfg), "tasks": list(cfg.tasks)}


def targets(groups: dict, cfg: MetaWorldBenchmarkConfig) -> dict:
    """Per k: the tasks where oracle BC >= 0.5; ours / oracle on them; paired success differences
    ours − BC-on-k and ours − IDM-on-k on the same layouts with a stratified bootstrap CI."""
    from lapo.stats import bootstrap_ci

    out = {}
    oracle = groups.get(("oracle_bc", None))
    if not oracle:
        return out
    rate = {t: np.mean([np.mean(c["tasks"][t]["successes"]) for c in oracle]) for t in cfg.tasks}
    good = [t for t in cfg.tasks if rate[t] >= 0.5]
    for k in cfg.ks:
        ours = groups.get((cfg.ours, k))
        if not ours or not good:
            continue
        by_seed = {c["seed"]: c for c in ours}
        ours_rate = float(np.mean([np.mean(c["tasks"][t]["successes"]) for c in ours for t in good]))
        oracle_rate = float(np.mean([rate[t] for t in good]))
        entry = {"tasks_oracle_ge_0.5": good, "ours": cfg.ours, "ours_success": ours_rate,
                 "oracle_success": oracle_rate, "ratio": ours_rate / oracle_rate,
                 "ours_ge_0.8_oracle": ours_rate >= 0.8 * oracle_rate}
        for base in ("bc", "idm"):
            other = groups.get((base, k))
            if not other:
                continue
            diffs = [np.asarray(by_seed[c["seed"]]["tasks"][t]["successes"], float)
                     - np.asarray(c["tasks"][t]["successes"], float)
                     for c in other if c["seed"] in by_seed for t in good]
            lo, hi = bootstrap_ci(diffs)
            per_seed = {c["seed"]: float(np.mean([np.mean(by_seed[c["seed"]]["tasks"][t]["successes"])
                                                  - np.mean(c["tasks"][t]["successes"]) for t in good]))
                        for c in sorted(other, key=lambda c: c["seed"]) if c["seed"] in by_seed}
            entry[f"ours_minus_{base}"] = {"mean": float(np.mean([d.mean() for d in diffs])), "ci95": [lo, hi],
                                           "ours_above": lo > 0, "per_seed": per_seed}
        out[f"k{k}"] = entry
    return out


def format_results(results: dict) -> str:
    """Markdown: success rate [95% CI] per task and averaged, one row per (method, k)."""
    tasks = results["tasks"]
    short = [t.removesuffix("-v3") for t in tasks]
    lines = ["| method | k (episodes/task) | " + " | ".join(short) + " | average | held-out action direction: probe / agent |",
             "|---|---|" + "---|" * (len(tasks) + 2)]
    all_seeds = sorted({s for r in results["rows"] for s in r["seeds"]})
    for r in results["rows"]:
        cells = [f"{r['tasks'][t]['success_rate']:.2f} [{r['tasks'][t]['ci95'][0]:.2f}, {r['tasks'][t]['ci95'][1]:.2f}]"
                 for t in tasks]
        seeds = "" if r["seeds"] == all_seeds else " (seed{} {} only)".format(
            "s" if len(r["seeds"]) > 1 else "", ", ".join(map(str, r["seeds"])))
        avg = r["average"]
        acc = ("—" if r["probe_accuracy"] is None else f"{r['probe_accuracy']:.2f}") + " / " + (
            "—" if r["action_accuracy"] is None else f"{r['action_accuracy']:.2f}")
        lines.append(f"| {METHOD_NAMES.get(r['method'], r['method'])}{seeds} | {('—' if r['method'] == 'random' else 'all') if r['k'] is None else r['k']} | "
                     + " | ".join(cells) + f" | **{avg['success_rate']:.2f}** [{avg['ci95'][0]:.2f}, {avg['ci95'][1]:.2f}] | {acc} |")
    if any(len(r["seeds"]) > 1 for r in results["rows"]):
        per_seed = ["{} k={}: {}".format(r["method"], r["k"], ", ".join(
            f"seed {s} {v:.2f}" for s, v in zip(r["seeds"], r["per_seed_average"]))) for r in results["rows"]]
        lines += ["", "average success per seed: " + "; ".join(per_seed)]
    if results.get("labeled_transitions"):
        lines += ["", "labeled transitions (k episodes per task, all tasks): " + ", ".join(
            f"{key} = {n}" for key, n in results["labeled_transitions"].items())]
    for k, t in results["targets"].items():
        lines += ["", f"targets at {k} (tasks where oracle BC >= 0.5: {', '.join(x.removesuffix('-v3') for x in t['tasks_oracle_ge_0.5'])}): "
                  f"{t['ours']} {t['ours_success']:.2f} vs oracle {t['oracle_success']:.2f} (ratio {t['ratio']:.2f}, "
                  f"target >= 0.8: {'met' if t['ours_ge_0.8_oracle'] else 'NOT met'})"]
        for base in ("bc", "idm"):
            d = t.get(f"ours_minus_{base}")
            if d:
                seeds = "" if len(d.get("per_seed", {})) < 2 else " (per seed: " + ", ".join(
                    f"{s} {v:+.2f}" for s, v in d["per_seed"].items()) + ")"
                lines.append(f"; ours − {base} = {d['mean']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}] "
                             f"({'above' if d['ours_above'] else 'NOT above'}){seeds}")
    return "\n".join(lines)


def record_agent_gif(cfg: MetaWorldBenchmarkConfig, path: Path, method: str | None = None, k: int | None = None,
                     seed: int | None = None) -> Path:
    """GIF of a method's agent (default: ``cfg.ours`` at the first k and seed) playing one unseen
    layout of each task, captioned with task and success. Loads the agent the benchmark saved for
    that cell (:func:`lapo.benchmark.agent_path`: the ``ours`` row), else rebuilds it from
    the run's saved stages."""
    import torch

    from lapo.agent import Agent
    from lapo.benchmark import METHODS, agent_path
    from lapo.evaluate import evaluate_metaworld, save_gif

    method, k = method or cfg.ours, cfg.ks[0] if k is None else k
    seed = cfg.seeds[0] if seed is None else seed
    saved = agent_path(cfg.run_dir, GAME, method, k, seed)
    if (saved / "model.safetensors").is_file():
        agent = Agent.from_pretrained(saved)
    else:
        agent, _ = METHODS[method](TaskMixRun(cfg), k, seed)
    act = agent.act if isinstance(agent, Agent) else agent
    frames, captions = [], []
    torch.manual_seed(seed)
    for task in cfg.tasks:
        res = evaluate_metaworld(act, [task], 1, 1, EVAL_LAYOUT_START + seed * SEED_LAYOUT_STRIDE, record=True,
                                 desc=f"gif {task}", **cfg.env_kwargs())[task]
        frames += res.frames
        label = f"{task.removesuffix('-v3')} {'success' if res.successes[0] else 'fail'}"
        captions += [label] * len(res.frames)
    return save_gif(frames, path, fps=20, scale=4, captions=captions)


QUICKSTART = MetaWorldBenchmarkConfig(
    run_dir=Path("runs/quickstart_metaworld"), seeds=(0,), methods=("bc", "ours_bins", "ours_regression", "ours_tuned"),
    video=MetaWorldCollectConfig(out=Path("dataset"), episodes_per_task=40), eval_episodes=10,
    lam_train=LAMTrainConfig(steps=1000, probe_k=0), policy_train=PolicyTrainConfig(steps=3000),
    bc_train=PolicyTrainConfig(steps=1000))
"""``lapo quickstart --domain metaworld``: 5 tasks × 40 episodes of video, k = 5 labeled episodes
per task, BC-on-k beside the latent policy with both heads and the tuned agent, 10 unseen layouts per task (the
benchmark's targets use 50); the benchmark's recipe (regression decoding for BC) at smaller
budgets, sized for <= 20 minutes on 2 CPU cores."""
