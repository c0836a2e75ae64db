"""The ``lapo`` command: one tyro subcommand per pipeline stage (see each module's docstring)."""

from __future__ import annotations

import sys

import tyro

from envs.collect import CollectConfig
from envs.demonstrator import TrainExpertConfig
from envs.video import ImportVideoConfig
from lapo.pipeline import QuickstartConfig
from lapo.visualize import VisualizeConfig
from lapo.benchmark import PRESETS as BENCHMARK_PRESETS
from scripts import (benchmark, collect, evaluate, fit_head, import_video, label, quickstart, train_expert, train_lam,
                     train_policy, visualize)

COMMANDS = {
    "train-expert": (TrainExpertConfig, train_expert.main, "train a PPO demonstrator (resumable)"),
    "collect": (CollectConfig, collect.main, "record demonstrator video into a dataset"),
    "import-video": (ImportVideoConfig, import_video.main, "video files -> action-free dataset"),
    "train-lam": (train_lam.Args, train_lam.main, "train the latent action model on frames only"),
    "label": (label.Args, label.main, "label a dataset's transitions with latent actions"),
    "train-policy": (train_policy.Args, train_policy.main, "latent behaviour cloning"),
    "fit-head": (fit_head.Args, fit_head.main, "fit the k-shot action head -> agent"),
    "visualize": (VisualizeConfig, visualize.main, "GIF of codes, latent embedding, code-vs-action matrix"),
    "evaluate": (evaluate.Args, evaluate.main, "returns on unseen levels"),
    "quickstart": (QuickstartConfig, quickstart.main, "the whole pipeline on CoinRun"),
    "benchmark": (BENCHMARK_PRESETS, benchmark.main, "all methods × k × seeds per game (presets: cpu, paper)"),
}


def main(argv: list[str] | None = None) -> None:
    """Dispatch ``lapo NAME [flags]`` to the stage's tyro CLI."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in COMMANDS:
        print("usage: lapo {" + ",".join(COMMANDS) + "} [--help]\n")
        for n, (_, _, doc) in COMMANDS.items():
            print(f"  {n:<14} {doc}")
        raise SystemExit(0 if args and args[0] in ("-h", "--help") else 2)
    name = args[0]
    cls, fn, doc = COMMANDS[name]
    if isinstance(cls, dict):  # named presets: `lapo NAME PRESET [overrides]`
        fn(tyro.extras.overridable_config_cli(cls, args=args[1:], prog=f"lapo {name}", description=doc))
    else:
        fn(tyro.cli(cls, args=args[1:], prog=f"lapo {name}", description=doc))


if __name__ == "__main__":
    main()
