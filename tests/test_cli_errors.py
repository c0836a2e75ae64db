"""The ``lapo`` dispatcher: user errors are one line and exit 2, ``--debug`` shows the traceback, bugs keep
theirs, and a command imports only its own stage (``lapo label`` on a video loads no Procgen, SB3 or gym)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts import cli

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
HEAVY = ("procgen", "stable_baselines3", "gym")


def lapo(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.cli", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=ROOT, timeout=300)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("lapo: error:")]


# --- subprocess: what a user sees ---

def test_unknown_game_is_one_error_line_and_exit_2(tmp_path):
    proc = lapo("collect", "--env-name", "coinrunn", "--out", tmp_path / "d")
    assert proc.returncode == 2, proc.stderr
    assert len(error_lines(proc.stderr)) == 1 and "unknown Procgen game 'coinrunn'" in error_lines(proc.stderr)[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "d").exists()


def test_missing_directory_is_one_error_line_and_exit_2(tmp_path):
    proc = lapo("fit-head", "--policy", tmp_path / "no_policy", "--dataset", tmp_path / "no_dataset",
                "--out", tmp_path / "agent")
    assert proc.returncode == 2, proc.stderr
    assert len(error_lines(proc.stderr)) == 1 and "no_dataset" in error_lines(proc.stderr)[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("where", ["first", "last"])
def test_debug_anywhere_shows_the_traceback(tmp_path, where):
    args = ["collect", "--env-name", "coinrunn", "--out", tmp_path / "d"]
    proc = lapo(*(["--debug", *args] if where == "first" else [*args, "--debug"]))
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ValueError: unknown Procgen game 'coinrunn'" in proc.stderr
    assert error_lines(proc.stderr) == []


def test_label_on_a_video_imports_no_procgen_sb3_or_gym(tmp_path):
    from test_video import tiny_lam, write_video

    tiny_lam(tmp_path)
    video = write_video(tmp_path / "clip.mp4", n=4)
    wrapper = ("import sys\n"
               "from scripts.cli import main\n"
               "main(sys.argv[1:])\n"
               f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
               "assert not heavy, f'imported {heavy}'\n")
    proc = subprocess.run([sys.executable, "-c", wrapper, "label", "--checkpoint", tmp_path / "lam",
                           "--input", video, "--out", tmp_path / "labels"],
                          capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "labels" / "clip" / "latents.npy").is_file()


def test_import_lapo_imports_no_procgen_sb3_or_gym():
    code = f"import sys, lapo; heavy = [m for m in {HEAVY!r} if m in sys.modules]; assert not heavy, heavy"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


# --- in process: the dispatch rules ---

@dataclass
class BoomArgs:
    kind: str = "value"
    """Which exception the fake stage raises."""

    def __post_init__(self):
        if self.kind not in ("value", "missing", "bug"):
            raise ValueError(f"kind {self.kind!r}: choose value, missing or bug")


def boom(args: BoomArgs) -> None:
    """A fake stage that fails the way ``args.kind`` says."""
    errors = {"value": ValueError("bad value\nwith a second line"), "missing": FileNotFoundError("no such dir"),
              "bug": RuntimeError("a bug")}
    raise errors[args.kind]


@pytest.fixture
def fake_command(monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "boom", (f"{__name__}:BoomArgs", f"{__name__}:boom", "fails on purpose"))


@pytest.mark.parametrize("kind, message", [("value", "bad value with a second line"), ("missing", "no such dir")])
def test_user_errors_print_one_line_and_exit_2(fake_command, capsys, kind, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["boom", "--kind", kind])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"lapo: error: {message} (--debug shows the traceback)\n"


@pytest.mark.parametrize("argv, message", [
    (["boom", "--kind", "nope"], "kind 'nope': choose value, missing or bug"),  # the config's __post_init__
    (["import-video", "--inputs", ".", "--video.size", "0"], "size and stride must be >= 1, got 0 and 1"),  # nested
])
def test_config_validation_errors_are_one_line_too(fake_command, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"lapo: error: {message} (--debug shows the traceback)\n"


def test_debug_reraises_user_errors(fake_command):
    with pytest.raises(ValueError, match="bad value"):
        cli.main(["boom", "--debug"])


def test_bugs_keep_their_exception(fake_command):
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["boom", "--kind", "bug"])


def test_help_and_unknown_commands_keep_their_exit_status(capsys):
    for argv, code in ([], 2), (["--help"], 0), (["nonsense"], 2), (["import-video", "--help"], 0):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == code, argv
    assert "import-video" in capsys.readouterr().out


def test_every_command_resolves_to_a_config_and_a_stage():
    for name, (config_ref, main_ref, doc) in cli.COMMANDS.items():
        assert callable(cli.resolve(main_ref)) and doc, name
        config = cli.resolve(config_ref)
        assert isinstance(config, dict) or isinstance(config, type), name
