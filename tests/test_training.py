"""The shared trainer: exact resume after SIGKILL (with and without prefetching), torchrun (2 CPU processes) = 1 process at the same
global batch, the LR schedule, sampler sharding, the precision rule, refusing a foreign state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lapo import training
from lapo.training import BatchSampler, TrainConfig, fit, warmup_cosine

TINY_LAM = ["--model.idm-channels", "8", "8", "8", "--model.idm-hidden", "16", "--model.widths", "8", "8", "8",
            "--model.latent-dim", "4"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def train_lam_cmd(dataset: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "scripts.cli", "train-lam", "--dataset", str(dataset), "--out", str(out),
            *TINY_LAM, "--train.batch-size", "16", "--train.probe-k", "0", "--train.threads", "1",
            "--train.precision", "fp32", *extra]


def test_sigkill_then_resume_gives_bitwise_identical_parameters(square_dataset, tmp_path):
    """A LAM run killed with SIGKILL after its first training checkpoint, rerun with the same command,
    ends with exactly the parameters (and buffers) of an uninterrupted run. The killed run prefetches
    its batches and the uninterrupted one does not: prefetching changes neither the batches nor the
    sampler state a checkpoint stores."""
    args = ["--train.steps", "120", "--train.checkpoint-every", "20", "--train.eval-every", "60", "--train.warmup", "10"]
    subprocess.run(train_lam_cmd(square_dataset, tmp_path / "straight", *args, "--train.prefetch", "off"), env=ENV,
                   check=True, capture_output=True)
    killed = tmp_path / "killed"
    args += ["--train.prefetch", "on"]
    proc = subprocess.Popen(train_lam_cmd(square_dataset, killed, *args), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "training_state.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = torch.load(killed / "training_state.pt", weights_only=True)
    assert 0 < state["step"] < 120 and not (killed / "model.safetensors").exists(), "not killed mid-run"
    out = subprocess.run(train_lam_cmd(square_dataset, killed, *args), env=ENV, check=True, capture_output=True,
                         text=True)
    assert f"resuming {killed / 'training_state.pt'} at step {state['step']}" in out.stdout
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not (killed / "training_state.pt").exists()  # the finished checkpoint replaced the state


def scalars(log_dir: Path, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


@pytest.mark.parametrize("quantizer", ["fsq", "vq"])
def test_torchrun_two_processes_match_one_process_at_the_same_global_batch(square_dataset, tmp_path, quantizer):
    """`torchrun --nproc_per_node 2` (gloo, 1 thread each) and one process see the same samples of
    each global batch: the loss trajectory over 20 steps agrees within relative 1e-4, the VQ codebook
    EMA within 1e-5, and the final model's outputs within the looser bound explained below."""
    args = ["--train.steps", "20", "--train.log-every", "1", "--train.eval-every", "20", "--train.warmup", "5",
            "--model.quantizer", quantizer, "--model.codebook-size", "8"]
    single = subprocess.run(train_lam_cmd(square_dataset, tmp_path / "one", *args, "--log-dir", str(tmp_path / "tb1")),
                            env=ENV, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd = train_lam_cmd(square_dataset, tmp_path / "two", *args, "--log-dir", str(tmp_path / "tb2"))
    double = subprocess.run(torchrun + cmd[1:], env=ENV, capture_output=True, text=True)
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = scalars(tmp_path / "tb1", "train/lam_loss"), scalars(tmp_path / "tb2", "train/lam_loss")
    assert sorted(one) == sorted(two) == list(range(20))
    np.testing.assert_allclose([two[s] for s in range(20)], [one[s] for s in range(20)], rtol=1e-4)
    assert one[19] < one[0]  # it trained
    # the logged gradient norm is the global batch's (DDP averages the ranks' gradients before it)
    g1, g2 = scalars(tmp_path / "tb1", "charts/lam_grad_norm"), scalars(tmp_path / "tb2", "charts/lam_grad_norm")
    assert sorted(g1) == sorted(g2) == list(range(20)) and min(g1.values()) > 0
    np.testing.assert_allclose([g2[s] for s in range(20)], [g1[s] for s in range(20)], rtol=1e-3)
    # the VQ codebook EMA (state that is not a gradient) agrees tightly. Batch-norm running means and
    # the model's outputs are compared loosely: parameters whose gradient is near zero (a conv bias
    # before a one-channel-per-group GroupNorm, late biases) get rounding-level gradient differences
    # that Adam turns into steps of up to lr = 1e-3 (measured: parameters differ by at most 6e-4 after
    # 20 steps, VQ running means by 8e-3). The batch-norm sync itself is what the loss trajectory
    # checks: with the sync removed from BatchStandardize (tried once) the losses differed by 0.8%.
    from envs.dataset import EpisodeDataset
    from lapo.lam import LatentActionModel, windows_tensor

    one_lam = LatentActionModel.from_pretrained(tmp_path / "one")
    two_lam = LatentActionModel.from_pretrained(tmp_path / "two")
    for (name, a), (_, b) in zip(one_lam.named_buffers(), two_lam.named_buffers()):
        atol = 1e-5 if name.startswith("quantizer") else 2e-2
        torch.testing.assert_close(b.float(), a.float(), rtol=1e-4, atol=atol, msg=lambda m: f"{name}: {m}")
    ds = EpisodeDataset(square_dataset)
    windows = windows_tensor(ds, ds.transition_indices[:64], torch.device("cpu"))
    with torch.no_grad():
        (out_a, _), (out_b, _) = one_lam(windows), two_lam(windows)
    torch.testing.assert_close(out_b.z, out_a.z, rtol=1e-4, atol=2e-2)
    torch.testing.assert_close(out_b.pred, out_a.pred, rtol=1e-4, atol=2e-2)


def test_warmup_then_cosine_to_the_final_fraction():
    cfg = TrainConfig(steps=110, warmup=10, final_lr_fraction=0.1)
    f = warmup_cosine(cfg)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0) and f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.55) and f(110) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(10, 110))


def test_each_rank_keeps_its_share_of_the_same_global_batch():
    one = BatchSampler(100, 8, seed=3, shift=2, rank_world=(0, 1))
    ranks = [BatchSampler(100, 8, seed=3, shift=2, rank_world=(r, 2)) for r in range(2)]
    for _ in range(3):
        full = next(one)
        parts = [next(s) for s in ranks]
        np.testing.assert_array_equal(np.concatenate([p.positions for p in parts]), full.positions)
        np.testing.assert_array_equal(np.concatenate([p.shifts for p in parts]), full.shifts)
    with pytest.raises(ValueError, match="divisible by the 3 torchrun processes"):
        BatchSampler(100, 8, seed=0, rank_world=(0, 3))


def linear_task(cfg: TrainConfig, out_dir=None, record=None):
    """Fit y = x @ w on 64 fixed samples with the shared trainer; returns the FitResult."""
    torch.manual_seed(cfg.seed)
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    model = torch.nn.Linear(4, 1)
    sampler = BatchSampler(64, cfg.batch_size, cfg.seed, rank_world=(0, 1))
    return fit(model, sampler, lambda d: (x[d.positions], y[d.positions]),
               lambda m, b: (torch.nn.functional.mse_loss(m(b[0]).squeeze(-1), b[1]), {}), cfg,
               out_dir=out_dir, record=record, progress=False, ddp=False)


def test_a_state_of_other_settings_is_refused_and_resume_never_starts_over(tmp_path):
    cfg = TrainConfig(steps=10, batch_size=8, checkpoint_every=5, precision="fp32")
    # a run that stopped at step 5: its state is in the directory
    linear_task(TrainConfig(steps=5, batch_size=8, checkpoint_every=5, precision="fp32"), tmp_path,
                {"train": {"lr": 1e-3}})
    with pytest.raises(ValueError, match=r"other settings \(train.lr\).*--train.resume never"):
        linear_task(cfg, tmp_path, {"train": {"lr": 2e-3}})
    assert linear_task(cfg, tmp_path, {"train": {"lr": 1e-3}}).resumed_at == 5
    fresh = linear_task(TrainConfig(steps=10, batch_size=8, checkpoint_every=5, precision="fp32", resume="never"),
                        tmp_path, {"train": {"lr": 2e-3}})
    assert fresh.resumed_at == 0 and torch.load(tmp_path / training.STATE_FILE, weights_only=True)["step"] == 10


def test_precision_rule(monkeypatch, tmp_path):
    model = torch.nn.Linear(4, 1)
    batch = (torch.randn(8, 4), torch.randn(8))
    loss = lambda m, b: (torch.nn.functional.mse_loss(m(b[0]).squeeze(-1), b[1]), {})  # noqa: E731
    cpu = torch.device("cpu")
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: False)
    assert training.choose_precision("auto", cpu, model, lambda: batch, loss)[0] == "fp32"
    with pytest.raises(ValueError, match="no native bf16.*--train.precision fp32"):
        training.choose_precision("bf16", cpu, model, lambda: batch, loss)
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: True)
    before = [p.clone() for p in model.parameters()]
    pick, why = training.choose_precision("auto", cpu, model, lambda: batch, loss)
    assert pick in ("fp32", "bf16") and "measured" in why
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # measured on a copy
    # on resume, "auto" keeps the stored precision (where it is native); an explicit request wins
    linear_task(TrainConfig(steps=4, batch_size=8, checkpoint_every=2, precision="fp32"), tmp_path)
    state = torch.load(tmp_path / training.STATE_FILE, weights_only=True)
    torch.save({**state, "precision": "bf16"}, tmp_path / training.STATE_FILE)
    assert linear_task(TrainConfig(steps=6, batch_size=8, checkpoint_every=2), tmp_path).precision == "bf16"
    torch.save({**state, "precision": "bf16"}, tmp_path / training.STATE_FILE)
    assert linear_task(TrainConfig(steps=6, batch_size=8, checkpoint_every=2, precision="fp32"),
                       tmp_path).precision == "fp32"
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: False)  # a stored bf16 this CPU cannot run
    torch.save({**state, "precision": "bf16"}, tmp_path / training.STATE_FILE)
    assert linear_task(TrainConfig(steps=6, batch_size=8, checkpoint_every=2), tmp_path).precision == "fp32"


def test_labeling_precision_follows_the_same_rule(monkeypatch, tmp_path):
    """Labeling picks its precision by the trainer's rule: fp32 without native bf16 (bf16 refused,
    naming the CLI flag), a measured choice where bf16 is native; the labels are the same up to
    bf16 rounding."""
    from lapo.label import encode_batches, label_precision
    from lapo.lam import LAMConfig, LatentActionModel

    torch.manual_seed(0)
    lam = LatentActionModel(LAMConfig(idm_channels=(8, 8, 8), idm_hidden=16, widths=(8, 8, 8), latent_dim=4))
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: False)
    assert label_precision(lam, "auto", 4) == "fp32"
    with pytest.raises(ValueError, match="no native bf16.*--precision fp32"):
        label_precision(lam, "bf16", 4)
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: True)
    assert label_precision(lam, "auto", 4) in ("fp32", "bf16")
    windows = [np.random.default_rng(i).integers(0, 256, (4, 3, 64, 64, 3), dtype=np.uint8) for i in range(3)]
    z32 = np.concatenate([z for z, _ in encode_batches(lam, windows, 2, "fp32")])
    z16 = np.concatenate([z for z, _ in encode_batches(lam, windows, 0, "bf16")])
    assert z32.shape == z16.shape == (12, 4) and np.abs(z32 - z16).max() < 0.1
