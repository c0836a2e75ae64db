"""The ``lapo`` command: one tyro subcommand per pipeline stage (see each module's docstring).

    lapo NAME [flags]          run a stage, e.g. ``lapo label --checkpoint runs/lam --input clip.mp4``
    lapo NAME --help           its flags
    lapo NAME --domain metaworld [flags]   the Meta-World variant (collect, quickstart, benchmark)
    lapo wm NAME [flags]       the world model: ``lapo wm train|generate|play|dream``
    lapo --debug NAME [flags]  the same, with the full traceback of an error

Only the chosen stage's module is imported, so ``lapo label`` on a video never loads Procgen or
stable-baselines3. An error the user can cause (``ValueError`` including ``envs.video.VideoError``,
``FileNotFoundError``, ``FileExistsError``) is printed as one line ``lapo: error: MESSAGE`` on stderr
with exit status 2; ``--debug`` (anywhere on the command line) re-raises it with its traceback. Any
other exception is a bug and keeps its traceback. A stage's own exit status (e.g. the number of
files that failed) is passed through.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from typing import Any

import tyro

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError)
"""Exceptions that mean bad input, not a bug: one line on stderr, exit 2."""

COMMANDS: dict[str, tuple[str, str, str]] = {
    # name: ("module:config class or dict of presets", "module:main", one-line description)
    "train-expert": ("envs.demonstrator:TrainExpertConfig", "scripts.train_expert:main",
                     "train a PPO demonstrator (resumable)"),
    "collect": ("envs.collect:CollectConfig", "scripts.collect:main", "record demonstrator video into a dataset"),
    "import-video": ("envs.video:ImportVideoConfig", "scripts.import_video:main", "video files -> action-free dataset"),
    "train-lam": ("scripts.train_lam:Args", "scripts.train_lam:main", "train the latent action model on frames only"),
    "label": ("scripts.label:Args", "scripts.label:main", "latent actions for datasets and video files"),
    "train-policy": ("scripts.train_policy:Args", "scripts.train_policy:main", "latent behaviour cloning"),
    "fit-head": ("scripts.fit_head:Args", "scripts.fit_head:main", "fit the k-shot action head -> agent"),
    "visualize": ("lapo.visualize:VisualizeConfig", "scripts.visualize:main",
                  "GIF of codes, latent embedding, code-vs-action matrix"),
    "evaluate": ("scripts.evaluate:Args", "scripts.evaluate:main", "returns on unseen levels"),
    "quickstart": ("lapo.pipeline:QuickstartConfig", "scripts.quickstart:main", "the whole pipeline on CoinRun"),
    "finetune": ("lapo.finetune:FinetuneConfig", "scripts.finetune:main",
                 "PPO from a saved agent beside PPO from scratch (resumable; curve.png)"),
    "benchmark": ("lapo.benchmark:PRESETS", "scripts.benchmark:main",
                  "all methods × k × seeds per game (presets: cpu, cpu-impala, paper)"),
    "wm train": ("worldmodel.pipeline:PRESETS", "scripts.wm:train_main",
                 "world model: tokenizer, LAM, MaskGIT dynamics (presets: cpu, genie-coinrun)"),
    "wm generate": ("scripts.wm:GenerateArgs", "scripts.wm:generate_main",
                    "world model: frames from any prompt image + latent actions -> MP4 + GIF"),
    "wm play": ("scripts.wm:PlayArgs", "scripts.wm:play_main", "world model: play it with keys 1..9 (pygame)"),
    "wm dream": ("scripts.wm:DreamArgs", "scripts.wm:dream_main",
                 "world model: the latent policy acts in imagination; action recovery"),
}
"""Subcommands. References are ``module:attribute`` strings, imported only when the command runs."""

DOMAINS: dict[str, dict[str, tuple[str, str, str]]] = {
    # `lapo NAME --domain DOMAIN ...`: (config class or default instance, main, description)
    "collect": {"metaworld": ("envs.metaworld:MetaWorldCollectConfig", "scripts.collect:main_metaworld",
                              "scripted-expert video of Meta-World tasks")},
    "quickstart": {"metaworld": ("lapo.benchmark_metaworld:QUICKSTART", "scripts.quickstart:main_metaworld",
                                 "the whole pipeline on 5 Meta-World tasks (CPU preset)")},
    "benchmark": {"metaworld": ("lapo.benchmark_metaworld:MetaWorldBenchmarkConfig", "scripts.benchmark:main_metaworld",
                                "success rates of every method on Meta-World tasks")},
}
"""Commands with more than the default domain (``procgen``), chosen by ``--domain``."""


def resolve(ref: str) -> Any:
    """Import ``module:attribute`` and return the attribute."""
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)


def usage(exit_code: int) -> None:
    """Print the command list and exit."""
    print("usage: lapo [--debug] {" + ",".join(COMMANDS) + "} [--help]\n")
    for name, (_, _, doc) in COMMANDS.items():
        print(f"  {name:<14} {doc}")
    print(f"\n  {'--debug':<14} show the full traceback of an error")
    raise SystemExit(exit_code)


def pop_domain(name: str, args: list[str]) -> tuple[str, list[str]]:
    """Remove ``--domain D`` / ``--domain=D`` from ``args``; returns ``(D or "procgen", rest)``.

    Raises:
        ValueError: a domain command ``name`` does not have (names the choices).
    """
    domain, rest, i = "procgen", [], 0
    while i < len(args):
        if args[i] == "--domain" and i + 1 < len(args):
            domain, i = args[i + 1], i + 2
            continue
        if args[i].startswith("--domain="):
            domain = args[i].split("=", 1)[1]
        else:
            rest.append(args[i])
        i += 1
    choices = ["procgen", *DOMAINS.get(name, {})]
    if domain not in choices:
        raise ValueError(f"lapo {name} has no domain {domain!r}; choose one of {', '.join(choices)}")
    return domain, rest


def run(name: str, args: list[str]) -> Any:
    """Parse ``args`` for command ``name`` (and its ``--domain``) with tyro and call its stage."""
    config_ref, main_ref, doc = COMMANDS[name]
    domain, args = pop_domain(name, args)
    if domain != "procgen":
        config_ref, main_ref, doc = DOMAINS[name][domain]
    config, fn = resolve(config_ref), resolve(main_ref)
    with config_errors_propagate():
        if isinstance(config, dict):  # named presets: `lapo NAME PRESET [overrides]`
            cfg = tyro.extras.overridable_config_cli(config, args=args, prog=f"lapo {name}", description=doc)
        elif isinstance(config, type):
            cfg = tyro.cli(config, args=args, prog=f"lapo {name}", description=doc)
        else:  # a default instance
            cfg = tyro.cli(type(config), default=config, args=args, prog=f"lapo {name}", description=doc)
    return fn(cfg)


def config_errors_propagate() -> contextlib.AbstractContextManager:
    """While parsing, let a ``ValueError`` from a config's validation (``__post_init__``) reach
    :func:`main` like any other user error, instead of tyro's multi-line box.

    Uses tyro's parse-error hook (``tyro._errors.on_parse_error``, private in tyro 1.0); with a tyro
    without it, tyro prints its box and exits 2, which is still a user error without a traceback.
    """
    try:
        on_parse_error = importlib.import_module("tyro._errors").on_parse_error
    except (ImportError, AttributeError):
        return contextlib.nullcontext()

    def reraise(event) -> None:
        if type(event).__name__ != "InstantiationFailure":
            return  # other parse errors (unknown flag, missing value): tyro's own message
        error = sys.exc_info()[1]  # the hook runs while tyro handles the config's exception
        while error is not None and not isinstance(error, ValueError):
            error = error.__context__
        raise error if error is not None else ValueError(event.message)

    return on_parse_error(reraise)


def main(argv: list[str] | None = None) -> None:
    """Dispatch ``lapo [--debug] NAME [flags]`` to the stage's tyro CLI.

    Raises:
        SystemExit: 2 after printing ``lapo: error: ...`` for a user error (without ``--debug``), 2 for
            an unknown command, or the stage's / tyro's own exit status.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    if len(args) >= 2 and args[0] == "wm" and f"wm {args[1]}" in COMMANDS:  # `lapo wm NAME`
        args = [f"wm {args[1]}"] + args[2:]
    if not args or args[0] not in COMMANDS:
        usage(0 if args and args[0] in ("-h", "--help") else 2)
    try:
        run(args[0], args[1:])
    except USER_ERRORS as e:
        if debug:
            raise
        message = " ".join(str(e).split()) or type(e).__name__  # one line, whatever the message holds
        print(f"lapo: error: {message} (--debug shows the traceback)", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
