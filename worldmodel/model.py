"""The world model at inference: tokenizer + MaskGIT dynamics (+ the LAM that names its actions).

A world-model directory holds one checkpoint per part (each ``config.json`` + ``model.safetensors``,
see :mod:`envs.pretrained`)::

    WM_DIR/tokenizer/   wm_tokenizer
    WM_DIR/dynamics/    wm_dynamics
    WM_DIR/lam/         lam (optional: needed to infer actions from video and for action recovery)
    WM_DIR/meta.json    how it was made and what it measured (optional)

:class:`Dream` is the one generation loop (Genie §2.2, inference): a prompt frame is tokenized, then
each :meth:`Dream.step` takes a latent action, samples the next frame's tokens with MaskGIT from
the last ``C`` frames and decodes it. ``lapo wm generate``, ``play`` and ``dream`` all drive it.

Dimension keys: T frames, H W C image (uint8 in [0, 255]), N tokens per frame, C context frames.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from lapo.nets import to_float
from worldmodel.dynamics import Dynamics
from worldmodel.tokenizer import Tokenizer


class WorldModel:
    """Tokenizer + dynamics (+ optional LAM), all on one device.

    Raises:
        ValueError: the dynamics model was built for another vocabulary or token count than the
            tokenizer's, or for another number of latent actions than the LAM's codes.
    """

    def __init__(self, tokenizer: Tokenizer, dynamics: Dynamics, lam=None, meta: dict | None = None):
        t, d = tokenizer.cfg, dynamics.cfg
        if (t.num_codes, t.grid ** 2) != (d.num_codes, d.tokens):
            raise ValueError(f"dynamics expects {d.num_codes} codes × {d.tokens} tokens, the tokenizer gives "
                             f"{t.num_codes} × {t.grid ** 2}: train them together (`lapo wm train`)")
        if lam is not None and lam.quantizer.num_codes ** lam.cfg.groups != d.num_actions:
            raise ValueError(f"dynamics has {d.num_actions} latent actions, the LAM "
                             f"{lam.quantizer.num_codes ** lam.cfg.groups}: use the LAM it was trained with")
        self.tokenizer, self.dynamics, self.lam, self.meta = tokenizer, dynamics, lam, meta or {}
        self.precision = "fp32"
        """Autocast of every :class:`Dream` step: ``fp32`` (none) or ``bf16``; see :meth:`choose_precision`."""

    def choose_precision(self, requested: str = "auto", steps: int = 2) -> str:
        """Set and return :attr:`precision` by the trainer's rule (:func:`lapo.training.choose_precision`):
        ``auto`` picks bf16 only where the device has it natively (AVX-512 bf16 / AMX, a bf16 GPU)
        and a few measured frames at ``steps`` MaskGIT steps are faster, and prints its choice.

        Raises:
            ValueError: ``bf16`` requested where it is not native (the message names the flag).
        """
        from lapo.training import choose_precision

        parts = torch.nn.ModuleDict({"tokenizer": self.tokenizer, "dynamics": self.dynamics})
        prompt = np.zeros((self.image_size, self.image_size, 3), np.uint8)

        def frames(m, p):  # a fp32 WorldModel (choose_precision's autocast applies), under Dream's no_grad
            dream = WorldModel(m["tokenizer"], m["dynamics"]).dream(p, steps)
            return [dream.step(a % dream.wm.num_actions) for a in range(4)]

        self.precision, why = choose_precision(requested, self.device, parts, lambda: prompt, frames,
                                               train=False, flag="--sample.precision")
        if requested == "auto":
            print(f"world model: precision {self.precision} ({why} of 4 frames at {steps} MaskGIT steps)")
        return self.precision

    def autocast(self):
        """bf16 autocast if :attr:`precision` is ``bf16`` and none is active yet, else a no-op.
        :meth:`Dream.step` enters it, so every step honours the precision; a caller generating many
        frames wraps its loop in it too, which keeps autocast's cache of bf16 weights for the whole
        loop instead of recasting them at every step."""
        if self.precision == "bf16" and not torch.is_autocast_enabled(self.device.type):
            return torch.autocast(self.device.type, torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def num_actions(self) -> int:
        """A, the latent actions a player or agent chooses from."""
        return self.dynamics.cfg.num_actions

    @property
    def image_size(self) -> int:
        return self.tokenizer.cfg.image_size

    @property
    def device(self) -> torch.device:
        return next(self.dynamics.parameters()).device

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> "WorldModel":
        """Load ``path/tokenizer``, ``path/dynamics`` and, if present, ``path/lam``.

        Raises:
            FileNotFoundError: ``path`` is not a world-model directory.
        """
        from lapo.lam import LatentActionModel

        path = Path(path)
        if not (path / "dynamics").is_dir():
            raise FileNotFoundError(f"{path} is not a world-model directory (expected tokenizer/ and dynamics/); "
                                    "train one with `lapo wm train` or omit --world-model for the shipped one")
        tok = Tokenizer.from_pretrained(path / "tokenizer", device)
        dyn = Dynamics.from_pretrained(path / "dynamics", device)
        lam = LatentActionModel.from_pretrained(path / "lam", device) if (path / "lam").is_dir() else None
        meta = json.loads((path / "meta.json").read_text()) if (path / "meta.json").is_file() else {}
        return cls(tok.float(), dyn.float(), lam, meta)

    @torch.no_grad()
    def infer_actions(self, frames_THWC: np.ndarray) -> np.ndarray:
        """The LAM's latent action of each transition of a clip: ``(T - 1,)`` int64 (the IDM window
        edge-pads ``o_{t-1}`` at t = 0, as for datasets).

        Raises:
            ValueError: the world model has no LAM.
        """
        if self.lam is None:
            raise ValueError("this world model has no lam/ checkpoint, so it cannot infer latent actions")
        f = np.asarray(frames_THWC)
        prev = np.concatenate([f[:1], f[:-2]])
        windows = np.stack([prev, f[:-1], f[1:]], 1)  # (T-1, 3, H, W, C)
        codes = self.lam.encode(torch.from_numpy(windows).to(self.device)).codes  # (T-1, G)
        return flatten_codes(codes, self.lam.quantizer.num_codes).cpu().numpy()

    def dream(self, prompt_THWC: np.ndarray, steps: int = 8, temperature: float = 1.0, cfg_scale: float = 1.0,
              seed: int = 0) -> "Dream":
        """A :class:`Dream` started from one or more prompt frames (uint8 ``(T, H, W, 3)`` or ``(H, W, 3)``)."""
        return Dream(self, prompt_THWC, steps, temperature, cfg_scale, seed)


def flatten_codes(codes_BG: torch.Tensor, codes_per_group: int) -> torch.Tensor:
    """(B, G) per-group codes → (B,) one action id in ``[0, codes_per_group ** G)`` (mixed radix)."""
    radix = codes_per_group ** torch.arange(codes_BG.shape[1], device=codes_BG.device)
    return (codes_BG * radix).sum(1)


def label_actions(labels, lam) -> np.ndarray:
    """One latent action id per frame from a labels directory made by ``lam``
    (:class:`lapo.label.Labels`): ``(frames,)`` int64 (any value at episodes' last frames)."""
    return flatten_codes(torch.from_numpy(np.array(labels.codes)), lam.quantizer.num_codes).numpy()


class Dream:
    """One generated episode: ``step(action) -> frame``; ``frames`` holds the prompt and every
    generated frame (uint8 ``(H, W, 3)``), ``actions`` the latent actions that conditioned them.

    Raises:
        ValueError: a prompt of the wrong shape, or an action outside ``[0, A)``.
    """

    def __init__(self, wm: WorldModel, prompt_THWC: np.ndarray, steps: int = 8, temperature: float = 1.0,
                 cfg_scale: float = 1.0, seed: int = 0):
        prompt = np.array(prompt_THWC, np.uint8)  # a writable copy (torch.from_numpy below)
        prompt = prompt[None] if prompt.ndim == 3 else prompt
        s = wm.image_size
        if prompt.ndim != 4 or prompt.shape[1:] != (s, s, 3):
            raise ValueError(f"prompt frames must be ({s}, {s}, 3) uint8 (one or a stack), got {prompt_THWC.shape}: "
                             "load images with worldmodel.model.load_prompt")
        self.wm, self.steps, self.temperature, self.cfg_scale = wm, steps, temperature, cfg_scale
        self.generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            tokens = wm.tokenizer.encode(torch.from_numpy(prompt).to(wm.device)).flatten(1)  # (T, N)
        C = wm.dynamics.cfg.context
        null = wm.dynamics.null_action
        # context window: the last C frames' tokens and the action into each (null before the prompt)
        keep = tokens[-C:]
        self.tokens = torch.cat([keep[:1].expand(C - len(keep), -1), keep])  # (C, N) edge-padded
        self.actions = [null] * C
        self.frames = [f for f in prompt]
        self.taken: list[int] = []

    @torch.no_grad()
    def step(self, action: int) -> np.ndarray:
        """Generate the next frame under latent ``action``; returns it, uint8 ``(H, W, 3)``."""
        if not 0 <= int(action) < self.wm.num_actions:
            raise ValueError(f"latent action {action} is outside [0, {self.wm.num_actions}); "
                             f"choose 0..{self.wm.num_actions - 1}")
        actions = torch.tensor([self.actions + [int(action)]], device=self.wm.device)  # (1, C+1)
        generator = self.generator if self.wm.device.type == "cpu" else None
        g = self.wm.tokenizer.cfg.grid
        with self.wm.autocast():
            new = self.wm.dynamics.sample(self.tokens[None], actions, self.steps, self.temperature, self.cfg_scale,
                                          generator)[0]  # (N,)
            frame = self.wm.tokenizer.decode(new.view(1, g, g))[0]  # (3, H, W) in [0, 1]
        frame = (frame.float().permute(1, 2, 0) * 255).round().byte().cpu().numpy()
        self.tokens = torch.cat([self.tokens[1:], new[None]])
        self.actions = self.actions[1:] + [int(action)]
        self.frames.append(frame)
        self.taken.append(int(action))
        return frame


def load_prompt(path: str | os.PathLike, size: int = 64, mode: str = "crop") -> np.ndarray:
    """Any image file (png, jpg, ...; Pillow) → ``(size, size, 3)`` uint8, converted to RGB and
    cropped/letterboxed/resized exactly like ``lapo import-video`` (:func:`envs.video.convert_frame`).

    Raises:
        FileNotFoundError: no such file. ValueError: not an image Pillow can read.
    """
    from PIL import Image, UnidentifiedImageError

    from envs.video import VideoConfig, convert_frame

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt image {path} not found")
    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"), np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path} is not an image Pillow can read ({e}); give a png or jpg") from e
    return convert_frame(rgb, VideoConfig(size=size, mode=mode))


def write_clip(frames_THWC, stem: str | os.PathLike, fps: int = 10, scale: int = 4) -> tuple[Path, Path]:
    """Write uint8 frames to ``stem.mp4`` (PyAV) and ``stem.gif``, upscaled ``scale``× (nearest)."""
    from envs.video import write_video
    from lapo.evaluate import save_gif

    stem = Path(stem)
    return (write_video(frames_THWC, stem.with_suffix(".mp4"), fps, scale),
            save_gif(list(frames_THWC), stem.with_suffix(".gif"), fps=fps, scale=scale))


def frame_psnr(pred_THWC: np.ndarray, true_THWC: np.ndarray) -> np.ndarray:
    """PSNR (dB) per frame of uint8 frames: ``(T,)`` float64."""
    from worldmodel.tokenizer import psnr

    p = to_float(torch.from_numpy(np.asarray(pred_THWC))[:, None])
    t = to_float(torch.from_numpy(np.asarray(true_THWC))[:, None])
    return psnr(p, t).double().numpy()


SHIPPED_DIR = Path(__file__).resolve().parent / "pretrained"


def shipped_world_model(name: str = "coinrun") -> Path:
    """Directory of the world model shipped with the package (``cpu`` preset, fp16 weights).

    Raises:
        FileNotFoundError: none is shipped under that name; train one with ``lapo wm train``.
    """
    path = SHIPPED_DIR / name
    if not (path / "dynamics" / "model.safetensors").is_file():
        shipped = sorted(p.name for p in SHIPPED_DIR.glob("*") if (p / "dynamics").is_dir())
        raise FileNotFoundError(f"no shipped world model {name!r} (shipped: {shipped}); train one with `lapo wm train`")
    return path


def resolve_world_model(path: str | os.PathLike | None, device: str = "cpu") -> WorldModel:
    """``path`` (a ``lapo wm train`` run directory) or, for None, the shipped CoinRun world model."""
    return WorldModel.load(path if path is not None else shipped_world_model(), device)


def export_world_model(run_dir: str | os.PathLike, out: str | os.PathLike, prompt_HWC: np.ndarray,
                       include_lam: bool = False, **extra) -> Path:
    """Copy a trained world model's tokenizer and dynamics (and optionally its LAM) with **fp16
    weights** (loaded back into fp32 models by :meth:`WorldModel.load`), a ``prompt.png`` and a
    ``meta.json`` (``extra``: the command and the measured metrics). Written atomically.

    Raises:
        FileNotFoundError: ``run_dir`` is not a world-model directory.
    """
    from PIL import Image

    from envs.io import atomic_dir

    wm = WorldModel.load(run_dir)
    parts = {"tokenizer": wm.tokenizer, "dynamics": wm.dynamics, **({"lam": wm.lam} if include_lam else {})}
    with atomic_dir(out) as tmp:
        for name, model in parts.items():
            meta = {k: v for k, v in model.pretrained_meta.items() if k in ("val_metrics", "train_config")}
            half = _clone_half(model)
            half.save_pretrained(tmp / name, storage="fp16", **meta)
        Image.fromarray(np.asarray(prompt_HWC, np.uint8)).save(tmp / "prompt.png")
        (tmp / "meta.json").write_text(json.dumps({"source_run": str(run_dir), **extra}, indent=2, default=str))
    return Path(out)


def _clone_half(model):
    """A copy of ``model`` with floating-point parameters and buffers in fp16 (for storage only)."""
    import copy

    half = copy.deepcopy(model).cpu()
    for t in list(half.parameters()) + list(half.buffers()):
        if t.is_floating_point():
            t.data = t.data.half()
    return half
