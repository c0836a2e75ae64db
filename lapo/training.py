"""One training loop for every model (LAM, latent BC, BC baselines, supervised IDM, action head).

:func:`fit` is the loop: AdamW, linear warmup + cosine decay as a ``torch.optim.lr_scheduler``,
optional gradient clipping, fp32 or bf16 autocast, tensorboard scalars (``train/``, ``val/``,
``charts/``, among them the gradient norm before clipping, ``charts/{tag}_grad_norm``), a tqdm bar,
and periodic **atomic training checkpoints** (``training_state.pt``: model, optimizer, scheduler,
step, torch/numpy/python RNG states, sampler state, precision) that a rerun into the same output
directory resumes from (``resume="auto"``). Resumed runs are bitwise
identical to uninterrupted ones on CPU (tested with SIGKILL in ``tests/test_training.py``).

**torchrun.** Under ``torchrun --nproc_per_node N`` (``WORLD_SIZE > 1``) the model is wrapped in
DDP (gloo on CPU, NCCL on CUDA). :class:`BatchSampler` draws the *global* batch with the same
seeded generator on every rank and each rank keeps its contiguous share, so N processes see exactly
the samples one process would; DDP averages the gradients of the per-rank mean losses, which is the
gradient of the global mean. State that is not a gradient (the LAM's batch-norm statistics, the VQ
codebook EMA) is all-reduced inside those modules (:func:`all_reduce_sum`). Rank 0 alone writes
files and logs.

**Precision** (``"auto"`` by default): bf16 autocast is tried only on CUDA with bf16 support or on a
CPU whose flags show native bf16 (``avx512_bf16`` or ``amx_bf16``; on AVX2-only CPUs bf16 runs ~20×
slower), and kept only if a short measurement of training steps on a copy of the model is faster.
The choice is printed and stored in the training state, so a resumed run keeps it.

**Data.** ``charts/{tag}_data_wait_fraction`` logs the share of wall time the loop waited for its
batches. With ``prefetch`` (``auto``: CUDA only) :class:`Prefetcher` builds the next batch in a
thread while the step computes; batches and checkpointed sampler state are those of a run without.

Dimension keys: B global batch, b per-rank batch (B / world size).
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from envs.io import jsonable
from envs.pretrained import resolve_device

STATE_FILE = "training_state.pt"
PRECISIONS = ("auto", "fp32", "bf16")
# fields that do not change the trained weights (up to rounding): a resumed or reused run may differ
# in them. Precision: an explicit request on resume wins over the stored one, "auto" keeps it.
RUN_ONLY_FIELDS = ("log_every", "checkpoint_every", "resume", "threads", "device", "precision", "eval_every",
                   "probe_k", "prefetch")


@dataclass
class TrainConfig:
    """Optimization shared by every trainer (subclassed per model with its own defaults)."""

    steps: int = 3000
    """Optimizer steps."""
    batch_size: int = 64
    """Global batch (split evenly across torchrun processes)."""
    lr: float = 1e-3
    """Peak AdamW learning rate (linear warmup, then cosine decay to ``final_lr_fraction`` of it)."""
    warmup: int = 100
    """Warmup steps."""
    final_lr_fraction: float = 0.1
    """Learning rate at the last step, as a fraction of ``lr``."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    grad_clip: float = 0.0
    """Clip the global gradient norm to this value (0 = no clipping)."""
    log_every: int = 50
    """Steps between tensorboard scalars."""
    checkpoint_every: int = 500
    """Steps between atomic training checkpoints (``training_state.pt`` in the output directory;
    0 = none)."""
    resume: str = "auto"
    """``auto``: continue from ``training_state.pt`` in the output directory if there is one;
    ``never``: start from scratch (the old state is overwritten at the next checkpoint)."""
    seed: int = 0
    """Seed for initialization, batch draws and augmentation."""
    device: str = "auto"
    """``auto`` (CUDA if present), ``cpu`` or ``cuda[:N]``."""
    precision: str = "auto"
    """``auto`` (bf16 only where native and measured faster), ``fp32`` or ``bf16`` autocast."""
    threads: int = 0
    """torch CPU threads per process (0 = torch's default)."""
    prefetch: str = "auto"
    """Build the next batch in a background thread while the current step computes: ``on``, ``off``
    or ``auto`` (on for CUDA only: on a 2-core CPU the thread takes its core from the step, measured
    no faster, ``scripts/profile_stages.py``). Batches and result are the same either way."""

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")
        if self.prefetch not in ("auto", "on", "off"):
            raise ValueError(f"prefetch {self.prefetch!r}: choose 'auto', 'on' or 'off'")
        if self.resume not in ("auto", "never"):
            raise ValueError(f"resume {self.resume!r}: choose 'auto' or 'never'")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        for name in ("grad_clip", "checkpoint_every", "warmup", "threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")
        if not 0 <= self.final_lr_fraction <= 1:
            raise ValueError(f"final_lr_fraction must be in [0, 1], got {self.final_lr_fraction}")


# ----------------------------------------------------------------------------------------------
# processes, threads, devices
# ----------------------------------------------------------------------------------------------


def set_threads(threads: int) -> None:
    """Set torch CPU threads (0 = leave torch's default)."""
    if threads > 0:
        torch.set_num_threads(threads)


def distributed() -> tuple[int, int]:
    """``(rank, world_size)``; under torchrun (``WORLD_SIZE > 1``) the process group is created on
    first use (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def is_main_process() -> bool:
    """True on rank 0 (and without torchrun): the process that writes files and logs."""
    return distributed()[0] == 0


def barrier() -> None:
    """Wait for every rank (no-op without torchrun)."""
    if distributed()[1] > 1:
        import torch.distributed as dist

        dist.barrier()


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum ``x`` over torchrun ranks, differentiably (identity in one process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(x)


def all_gather_cat(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Concatenate ``x`` from every torchrun rank along ``dim``, in rank order (not differentiable;
    identity in one process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x)
    return torch.cat(parts, dim)


def cpu_has_native_bf16() -> bool:
    """True if ``/proc/cpuinfo`` lists ``avx512_bf16`` or ``amx_bf16``."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_is_native(device: torch.device) -> bool:
    """bf16 runs natively: a CUDA device that supports it, or a CPU with avx512_bf16 / amx_bf16."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()


def autocast(device: torch.device, precision: str):
    """``torch.autocast`` context for ``fp32`` (disabled) or ``bf16``."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision {precision!r}: choose 'fp32' or 'bf16'")
    return torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16")


def choose_precision(requested: str, device: torch.device, model: nn.Module, get_batch: Callable[[], Any],
                     loss_fn: Callable, trials: int = 3, train: bool = True,
                     flag: str = "--train.precision") -> tuple[str, str]:
    """Decide fp32 or bf16 for a run. Returns ``(precision, reason)``.

    ``auto`` measures ``trials`` passes of each precision on a deep copy of ``model`` and a batch
    from ``get_batch()`` (global RNG state restored afterwards) where bf16 is native; else fp32.
    A pass is ``loss_fn(model, batch)`` plus its backward (``train``) or, for inference
    (``train=False``), ``loss_fn`` alone (its output need not be a loss then), which sets the grad
    mode it runs under (``torch.inference_mode`` or ``torch.no_grad``) as the measured use does:
    bf16 autocast keeps its cast weights only outside ``inference_mode``, and a small model's
    speed in bf16 depends on that.

    Raises:
        ValueError: ``bf16`` requested where bf16 is not native (the message names ``flag``).
    """
    native = bf16_is_native(device)
    if requested == "fp32":
        return "fp32", "requested"
    if requested == "bf16":
        if not native:
            where = ("this GPU does not support bf16" if device.type == "cuda" else "this CPU has no native bf16 "
                     "(no avx512_bf16 or amx_bf16 flag; bf16 runs ~20x slower here)")
            raise ValueError(f"precision 'bf16' requested, but {where}: use {flag} fp32 or auto")
        return "bf16", "requested"
    if not native:
        return "fp32", f"auto: no native bf16 on {device.type}"
    seconds = {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        batch = get_batch()
        probe = copy.deepcopy(model).train(train)
        for precision in ("fp32", "bf16"):
            for i in range(trials + 1):  # the first pass warms up
                if i == 1:
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                if train:
                    with autocast(device, precision):
                        loss, _ = loss_fn(probe, batch)
                    loss.backward()
                    probe.zero_grad(set_to_none=True)
                else:
                    with autocast(device, precision):
                        loss_fn(probe, batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds[precision] = (time.perf_counter() - t0) / trials
    pick = "bf16" if seconds["bf16"] < seconds["fp32"] else "fp32"
    what = "step" if train else "batch"
    return pick, f"auto: measured {seconds['fp32'] * 1e3:.0f} ms fp32 vs {seconds['bf16'] * 1e3:.0f} ms bf16 per {what}"


# ----------------------------------------------------------------------------------------------
# sampling
# ----------------------------------------------------------------------------------------------


@dataclass
class Draw:
    """This rank's share of one global batch: ``positions`` (b,) int64 into the training pool and,
    with augmentation, ``shifts`` (b, 2) int64 random-shift offsets in ``[0, 2 * shift]``."""

    positions: np.ndarray
    shifts: np.ndarray | None = None


class BatchSampler:
    """Global minibatches of ``batch_size`` positions in ``[0, pool_size)``, drawn with replacement
    from ``np.random.default_rng(seed)`` (plus random-shift offsets when ``shift > 0``); each torchrun
    rank keeps rows ``[rank * b, (rank + 1) * b)`` (``rank_world`` overrides the torchrun rank and
    size). ``batch_size=None`` gives the whole pool every step (full batch, no randomness).

    Raises:
        ValueError: ``batch_size`` is not divisible by the number of processes.
    """

    def __init__(self, pool_size: int, batch_size: int | None, seed: int, shift: int = 0,
                 rank_world: tuple[int, int] | None = None):
        if pool_size < 1:
            raise ValueError("nothing to train on: the training pool is empty")
        rank, world = rank_world or distributed()
        if batch_size is not None and batch_size % world:
            raise ValueError(f"batch_size {batch_size} must be divisible by the {world} torchrun processes")
        self.pool_size, self.batch_size, self.shift = pool_size, batch_size, shift
        self.rng = np.random.default_rng(seed)
        b = (batch_size or 0) // world
        self.local = slice(rank * b, (rank + 1) * b)

    def __next__(self) -> Draw:
        if self.batch_size is None:
            return Draw(np.arange(self.pool_size))
        positions = self.rng.integers(0, self.pool_size, self.batch_size)
        shifts = self.rng.integers(0, 2 * self.shift + 1, (self.batch_size, 2)) if self.shift else None
        return Draw(positions[self.local], None if shifts is None else shifts[self.local])

    def state_dict(self) -> dict:
        return {"bit_generator": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["bit_generator"]


# ----------------------------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------------------------


def warmup_cosine(cfg: TrainConfig) -> Callable[[int], float]:
    """LR multiplier: linear warmup to 1 over ``warmup`` steps, cosine decay to ``final_lr_fraction``."""

    def factor(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        p = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
        return cfg.final_lr_fraction + (1 - cfg.final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * p))

    return factor


@dataclass
class FitResult:
    """What :func:`fit` returns: the trained model (unwrapped, eval mode), the global mean loss at
    each logged step, the last validation metrics, the precision used and the step it resumed at."""

    model: nn.Module
    losses: dict[int, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    precision: str = "fp32"
    resumed_at: int = 0


def run_record(model_config: Any, train_cfg: TrainConfig, **inputs) -> dict:
    """What determines a run's result (architecture, optimization, inputs); a resumed run must match."""
    train = {k: v for k, v in jsonable(train_cfg).items() if k not in RUN_ONLY_FIELDS}
    return jsonable({"model": model_config, "train": train, **inputs})


def fit(model: nn.Module, sampler: BatchSampler, make_batch: Callable[[Draw], Any],
        loss_fn: Callable[[nn.Module, Any], tuple[torch.Tensor, dict]], cfg: TrainConfig, *,
        out_dir: str | os.PathLike | None = None, record: dict | None = None, writer=None, tag: str = "train",
        evaluate: Callable[[nn.Module], dict] | None = None, eval_every: int = 0, progress: bool = True,
        ddp: bool = True) -> FitResult:
    """Train ``model`` for ``cfg.steps`` steps; resume from ``out_dir/training_state.pt`` if allowed.

    Args:
        model: already on its device and seeded-initialized (every rank builds the same init).
        sampler: draws this rank's share of each global batch; its state is checkpointed.
        make_batch: ``Draw`` -> the batch on the model's device.
        loss_fn: ``(model, batch) -> (scalar loss (mean over the batch), stats dict of scalars)``;
            ``model`` is the DDP wrapper under torchrun.
        cfg: optimization.
        out_dir: where ``training_state.pt`` lives (None = no checkpoints, no resume).
        record: what determines the result (see :func:`run_record`); stored in the training state
            and compared on resume.
        writer: tensorboard writer (used on rank 0 only); scalars ``train/{tag}_*``, ``charts/``.
        tag: name of the run in logs and scalars (``train/{tag}_loss``).
        evaluate: ``model -> metrics``, run on rank 0 every ``eval_every`` steps (0 = only at the
            end) and at the end; logged as ``val/*``. ``train/*`` stats other than the loss are rank
            0's share of the batch.
        progress: show a tqdm bar (rank 0).
        ddp: wrap the model in DDP under torchrun (False: each process trains its own copy).

    Raises:
        ValueError: a training state made with another ``record`` exists and ``cfg.resume`` is
            ``auto`` (names the fields that differ).
    """
    from tqdm import tqdm

    rank, world = distributed() if ddp else (0, 1)
    main = rank == 0
    device = next(model.parameters()).device
    # --- build ---
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg))
    state_path = Path(out_dir) / STATE_FILE if out_dir is not None else None
    start, precision, metrics = 0, None, {}
    if state_path is not None and cfg.resume == "auto" and state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=True)
        if state["record"] != record:
            old, new = _flatten(state["record"] or {}), _flatten(record or {})
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ValueError(f"{state_path} is the training state of a run with other settings ({', '.join(diff)}); "
                             "start over with resume 'never' (--train.resume never; the quickstart's --overwrite), "
                             "or use the same settings")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
        _set_rng_state(state["rng"])
        start, precision, metrics = state["step"], state["precision"], state["metrics"]
        if main:
            print(f"{tag}: resuming {state_path} at step {start} of {cfg.steps} ({precision})")
    net = model
    if ddp and world > 1:
        # buffers (batch-norm statistics, VQ codebook) are kept equal by their own all-reduces
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                                        broadcast_buffers=False)
    if precision is not None and (cfg.precision != "auto" or (precision == "bf16" and not bf16_is_native(device))):
        precision = None  # an explicit request, or a stored bf16 this device cannot run natively, decides anew
    if precision is None:
        def probe_batch():  # a batch for the measurement; the sampler is rewound afterwards
            state = copy.deepcopy(sampler.state_dict())
            batch = make_batch(next(sampler))
            sampler.load_state_dict(state)
            return batch

        precision, why = choose_precision(cfg.precision, device, model, probe_batch, loss_fn)
        if ddp and world > 1:  # every rank uses rank 0's choice
            import torch.distributed as dist

            flag = torch.tensor([precision == "bf16"], dtype=torch.int32, device=device)
            dist.broadcast(flag, 0)
            precision = "bf16" if flag.item() else "fp32"
        if main and progress:
            print(f"{tag}: precision {precision} ({why})")
    result = FitResult(model, precision=precision, resumed_at=start, metrics=metrics)
    writer = writer if main else None
    if writer is not None and start == 0:
        rows = [f"|{k}|{v}|" for k, v in _flatten(record or {}).items()]
        writer.add_text(f"{tag}/hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(rows))
    # --- loop ---
    model.train()
    t_log, n_log, wait_log = time.perf_counter(), 0, 0.0
    bar = tqdm(range(start, cfg.steps), desc=tag, unit="step", initial=start, total=cfg.steps,
               disable=not (main and progress))
    prefetch = cfg.prefetch == "on" or (cfg.prefetch == "auto" and device.type == "cuda")
    loader = Prefetcher(sampler, make_batch, prefetch)
    for step in bar:
        t_wait = time.perf_counter()
        batch = loader.next(prefetch_another=step + 1 < cfg.steps)
        wait_log += time.perf_counter() - t_wait
        with autocast(device, precision):
            loss, stats = loss_fn(net, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        last = step == cfg.steps - 1
        logging = step % cfg.log_every == 0 or last
        if cfg.grad_clip > 0 or (logging and writer is not None):  # max_norm inf: the norm only (grads × 1.0)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf"))
        opt.step()
        sched.step()
        n_log += cfg.batch_size
        if logging:
            global_loss = all_reduce_sum(loss.detach().float()) / world if ddp else loss.detach().float()
            result.losses[step] = float(global_loss)
            bar.set_postfix(loss=f"{result.losses[step]:.5f}")
            if writer is not None:
                writer.add_scalar(f"train/{tag}_loss", result.losses[step], step)
                for key, value in stats.items():
                    writer.add_scalar(f"train/{key}", float(value), step)
                writer.add_scalar(f"charts/{tag}_learning_rate", sched.get_last_lr()[0], step)
                writer.add_scalar(f"charts/{tag}_grad_norm", float(grad_norm), step)  # before clipping
                now = time.perf_counter()
                writer.add_scalar(f"charts/{tag}_SPS", n_log / max(now - t_log, 1e-9), step)
                writer.add_scalar(f"charts/{tag}_data_wait_fraction", wait_log / max(now - t_log, 1e-9), step)
                t_log, n_log, wait_log = now, 0, 0.0
        if evaluate is not None and ((eval_every and (step + 1) % eval_every == 0) or last):
            if main:
                result.metrics = evaluate(model)
                model.train()
                if writer is not None:
                    for key, value in result.metrics.items():
                        writer.add_scalar(f"val/{key}", value, step)
            if ddp:
                barrier()
        if state_path is not None and cfg.checkpoint_every and ((step + 1) % cfg.checkpoint_every == 0):
            if main:
                _save_state(state_path, step + 1, model, opt, sched, loader.sampler_state(), precision, record,
                            result.metrics)
            if ddp:
                barrier()
    loader.close()
    bar.close()
    model.eval()
    return result


class Prefetcher:
    """Batches for :func:`fit`: draws come from ``sampler`` in the loop's thread (so their order and
    the checkpointed sampler state are those of an unprefetched run); with ``prefetch`` the next
    ``make_batch`` runs in one background thread while the current step computes."""

    def __init__(self, sampler: BatchSampler, make_batch: Callable, prefetch: bool):
        self.sampler, self.make_batch = sampler, make_batch
        self.pool = None
        if prefetch:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(1, thread_name_prefix="prefetch")
        self.pending = None
        self.state = copy.deepcopy(sampler.state_dict())  # before the draws not yet trained on

    def next(self, prefetch_another: bool):
        if self.pending is None:
            batch = self.make_batch(next(self.sampler))
        else:
            batch = self.pending.result()
        self.state = copy.deepcopy(self.sampler.state_dict())
        self.pending = None
        if self.pool is not None and prefetch_another:
            self.pending = self.pool.submit(self.make_batch, next(self.sampler))
        return batch

    def sampler_state(self) -> dict:
        """Sampler state after the draws of the batches handed out so far (not the prefetched one)."""
        return self.state

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def _save_state(path: Path, step: int, model, opt, sched, sampler_state: dict, precision, record, metrics) -> None:
    """Write the training state atomically (temporary name, fsync, rename)."""
    state = {"step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
             "scheduler": sched.state_dict(), "sampler": sampler_state, "rng": _rng_state(),
             "precision": precision, "record": record, "metrics": metrics}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _rng_state() -> dict:
    """torch (CPU and CUDA), numpy-global and python RNG states in types ``weights_only`` loads."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss,
                      "cached_gaussian": cached},
            "python": {"version": version, "internal": list(internal), "gauss": gauss}}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def summary_writer(log_dir: str | os.PathLike | None):
    """A tensorboard ``SummaryWriter`` at ``log_dir`` on rank 0, or None (logging off / other ranks)."""
    if log_dir is None or not is_main_process():
        return None
    from torch.utils.tensorboard import SummaryWriter

    Path(log_dir).mkdir(parents=True, exist_ok=True)
    return SummaryWriter(str(log_dir))


def build_device(cfg: TrainConfig) -> torch.device:
    """Threads, seed and device of a training run (the one device rule: :func:`resolve_device`)."""
    set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    return resolve_device(cfg.device)
