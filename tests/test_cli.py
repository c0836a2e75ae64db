"""End-to-end CLI smoke runs through subprocess with tiny sizes, and CLI-level bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageSequence

from lapo.agent import Agent

TINY_LAM = ["--model.idm-channels", "8", "8", "8", "--model.idm-hidden", "16", "--model.widths", "8", "8", "8",
            "--model.latent-dim", "4"]
TINY_POLICY = ["--policy.channels", "8", "8", "8", "--policy.hidden", "16"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def lapo(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "scripts.cli", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"lapo {' '.join(map(str, args))} failed:\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def random_video(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "data"
    lapo("collect", "--policy", "random", "--num-frames", "300", "--num-envs", "8", "--out", out)
    return out


def test_stage_by_stage_pipeline(random_video, tmp_path):
    lam, policy, agent = tmp_path / "lam", tmp_path / "policy", tmp_path / "agent"
    lapo("train-lam", "--dataset", random_video, "--out", lam, *TINY_LAM, "--train.steps", "4",
         "--train.batch-size", "8", "--train.probe-k", "16", "--train.eval-every", "4")
    lapo("label", "--checkpoint", lam, "--input", random_video, "--out", tmp_path / "labels")
    labels = tmp_path / "labels" / random_video.name
    lapo("train-policy", "--dataset", random_video, "--labels", labels, "--out", policy,
         *TINY_POLICY, "--train.steps", "3", "--train.batch-size", "8")
    lapo("fit-head", "--policy", policy, "--dataset", random_video, "--labels", labels,
         "--k", "16", "--out", agent, "--head.steps", "5", "--head-input", "idm")
    out = lapo("evaluate", "--agent", agent, "--episodes", "2")
    assert json.loads(out.stdout[out.stdout.index("{"):])["episodes"] == 2
    again = lapo("evaluate", "--agent", agent, "--episodes", "2")  # sampled actions, the same seed: the same episodes
    assert again.stdout[again.stdout.index("{"):] == out.stdout[out.stdout.index("{"):]
    config = json.loads((agent / "config.json").read_text())
    assert config["k"] == 16 and config["head_input"] == "idm" and config["tune_steps"] == 0
    lapo("fit-head", "--policy", policy, "--dataset", random_video, "--k", "16", "--out", tmp_path / "tuned",
         "--head.steps", "5", "--tune-steps", "2")  # then the whole agent, end to end on the same 16 labels
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["tune_steps"] == 2
    lapo("evaluate", "--agent", tmp_path / "tuned", "--episodes", "2")


def test_bad_k_fails_with_the_numbers_and_writes_nothing(random_video, tmp_path):
    lam = tmp_path / "lam"
    lapo("train-lam", "--dataset", random_video, "--out", lam, *TINY_LAM, "--train.steps", "1",
         "--train.batch-size", "4", "--train.probe-k", "0")
    lapo("label", "--checkpoint", lam, "--input", random_video, "--out", tmp_path)
    lapo("train-policy", "--dataset", random_video, "--labels", tmp_path / "data", "--out", tmp_path / "p",
         *TINY_POLICY, "--train.steps", "1", "--train.batch-size", "4")
    proc = lapo("fit-head", "--policy", tmp_path / "p", "--dataset", random_video, "--labels", tmp_path / "data",
                "--k", "10000000", "--out", tmp_path / "agent", check=False)
    assert proc.returncode != 0 and "k=10000000" in proc.stderr
    assert not (tmp_path / "agent").exists()


def test_unknown_game_is_named(tmp_path):
    proc = lapo("collect", "--env-name", "coinrunn", "--out", tmp_path / "d", check=False)
    assert proc.returncode != 0 and "unknown Procgen game 'coinrunn'" in proc.stderr
    assert not (tmp_path / "d").exists()


def QUICKSTART_ARGS(run, tmp_path):
    return ["quickstart", "--run-dir", run, "--k", "16", "--eval-episodes", "3", "--threads", "1",
            "--collect.demonstrator", tmp_path / "demo", "--collect.policy", "random",
            "--collect.num-frames", "300", "--collect.num-envs", "8",
            *[a.replace("--model.", "--lam.") for a in TINY_LAM], "--lam-train.steps", "3",
            "--lam-train.batch-size", "8", "--lam-train.probe-k", "16",
            *TINY_POLICY, "--policy-train.steps", "3",
            "--policy-train.batch-size", "8", "--bc-train.steps", "3", "--bc-train.batch-size", "8", "--head.steps", "5"]


def test_quickstart_tiny_writes_table_checkpoints_and_gif_and_reuses_stages(tmp_path):
    from stable_baselines3.common.policies import ActorCriticCnnPolicy

    from envs.demonstrator import Demonstrator, policy_spaces

    obs_space, act_space = policy_spaces()
    Demonstrator(ActorCriticCnnPolicy(obs_space, act_space, lambda _: 0.0),
                 {"env_name": "coinrun"}).save_pretrained(tmp_path / "demo")
    run = tmp_path / "run"
    lapo(*QUICKSTART_ARGS(run, tmp_path))
    results = json.loads((run / "results.json").read_text())
    methods = [row["method"] for row in results["table"]]
    assert methods == ["random", "demonstrator", "BC on k=16 labels", "latent policy + k-shot head (k=16)",
                       "latent policy + k-shot head on IDM latents (k=16)"]
    for row in results["table"]:
        assert row["episodes"] == 3 and row["ci95"][0] <= row["mean_return"] <= row["ci95"][1]
        assert set(np.unique(row["mean_return"] * 3)) <= {0.0, 10.0, 20.0, 30.0}  # CoinRun pays 0 or 10
    for key in ("lam", "policy", "agent", "bc_k"):
        assert (run / os.path.basename(results["checkpoints"][key]) / "model.safetensors").is_file()
    agent = Agent.from_pretrained(results["checkpoints"]["agent"])
    assert agent.pretrained_meta["k"] == 16 and agent.coding.space == {"type": "Discrete", "n": 15}
    with Image.open(run / "agent.gif") as gif:
        n_frames = sum(1 for _ in ImageSequence.Iterator(gif))
        assert gif.size == (192, 192) and n_frames >= 2  # 64×64 frames upscaled 3×, one per step
    assert results["timings_s"]["total"] > 0 and results["eval_levels"]["same_levels_for_every_agent"]
    assert all(s >= 1_000_000 for s in results["eval_levels"]["level_seeds"])  # unseen-level range
    assert results["dataset"]["frames"] >= 300
    # a rerun reuses every trained stage made with the same settings (files untouched); the head,
    # seconds to fit, is refitted; --compare-tuned only adds the tuned agent's row
    trained = [run / name / "model.safetensors" for name in ("lam", "policy", "bc_k")] + [run / "labels" / "meta.json"]
    stamps = [p.stat().st_mtime_ns for p in trained]
    lapo(*QUICKSTART_ARGS(run, tmp_path), "--compare-tuned")
    assert [p.stat().st_mtime_ns for p in trained] == stamps
    rerun = json.loads((run / "results.json").read_text())["table"]
    assert [row["method"] for row in rerun] == methods + ["ours, then the whole agent BC-tuned on the k=16 labels"]
    assert rerun[:-1] == results["table"]  # seeded evaluation: the other rows are reproduced exactly


def test_collect_stage_reuses_video_only_if_collected_with_the_same_config(tmp_path):
    from envs.collect import CollectConfig
    from lapo import stages

    cfg = CollectConfig(out=tmp_path / "d", policy="random", num_frames=50, num_envs=4)
    first = stages.collect(cfg).fingerprint()
    stamp = (tmp_path / "d" / "frames.npy").stat().st_mtime_ns
    assert stages.collect(cfg).fingerprint() == first
    assert (tmp_path / "d" / "frames.npy").stat().st_mtime_ns == stamp  # reused, not rewritten
    other = stages.collect(CollectConfig(out=tmp_path / "d", policy="random", num_frames=50, num_envs=4, seed=1))
    assert other.fingerprint() != first
    # a byte-identical re-collection (forced) rewrites the files but is the same dataset for later stages
    again = stages.collect(cfg, reuse=False)
    assert (tmp_path / "d" / "frames.npy").stat().st_mtime_ns != stamp
    assert again.fingerprint() == first


def test_collect_stage_reuses_the_shipped_demonstrators_video_named_by_path_or_by_default(tmp_path):
    from envs.collect import CollectConfig
    from envs.demonstrator import shipped_demonstrator
    from lapo import stages

    by_default = stages.collect(CollectConfig(out=tmp_path / "d", num_frames=50, num_envs=4))  # as `lapo collect`
    stamp = (tmp_path / "d" / "frames.npy").stat().st_mtime_ns
    named = stages.collect(CollectConfig(out=tmp_path / "d", num_frames=50, num_envs=4,  # as the benchmark
                                         demonstrator=shipped_demonstrator("coinrun")))
    assert (tmp_path / "d" / "frames.npy").stat().st_mtime_ns == stamp  # reused, not re-collected
    assert named.fingerprint() == by_default.fingerprint()


def test_readme_python_example_imports_resolve():
    """The README's example must use names the packages really export."""
    import pathlib
    import re

    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    imports = "\n".join(line for line in block.splitlines() if line.startswith(("from ", "import ")))
    assert imports.count("import") >= 3
    exec(compile(imports, "README.md", "exec"), {})
