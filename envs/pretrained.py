"""One model interface and one device rule for every model of the toolkit.

Checkpoints are data, not code: a directory with ``config.json`` (``{"kind", "config", ...extra}``)
and ``model.safetensors``. :class:`Pretrained` gives a model ``save_pretrained(dir)`` and
``from_pretrained(dir, device=...)``: the architecture is rebuilt from ``config.json`` alone, then
the weights are loaded strictly. It lives here, in the lowest layer, because the demonstrator (in
``envs``) uses it as well as every model in ``lapo`` and ``worldmodel``.

:func:`resolve_device` is the one place that turns a device request into a ``torch.device``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn as nn

from envs.io import atomic_dir, jsonable


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU. Under torchrun a bare ``cuda`` (or ``auto``) is
    ``cuda:LOCAL_RANK``, one GPU per process.

    Raises:
        ValueError: a CUDA device is requested but CUDA is not available, or an unknown name.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"device {device!r} is not a device name; use auto, cpu or cuda[:N]") from e


def save_checkpoint(path: str | os.PathLike, kind: str, config: Any, model: nn.Module, **extra) -> Path:
    """Atomically write ``config.json`` (kind, config, extra) + ``model.safetensors``; the directory
    is replaced in one rename, so a reader sees the old checkpoint or the new one, never a mix."""
    import copy

    from safetensors.torch import save_model

    if not all(t.is_contiguous() for t in model.state_dict().values()):  # safetensors stores the
        model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)  # default layout only
    with atomic_dir(path) as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        meta = {"kind": kind, "config": jsonable(config), **jsonable(extra)}
        (tmp / "config.json").write_text(json.dumps(meta, indent=2))
    return Path(path)


def read_config(path: str | os.PathLike, kind: str) -> dict:
    """Read ``config.json`` of a checkpoint of ``kind``.

    Raises:
        FileNotFoundError: the directory or one of its two files is missing.
        ValueError: the checkpoint is of another kind, or its config.json is not JSON.
    """
    path = Path(path)
    for name in ("config.json", "model.safetensors"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name} not found: {path} is not a {kind} checkpoint "
                                    "(expected config.json + model.safetensors)")
    try:
        meta = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}/config.json is not valid JSON ({e}); the checkpoint is damaged") from e
    if meta.get("kind") != kind:
        raise ValueError(f"{path} holds a {meta.get('kind')!r} checkpoint, but a {kind!r} checkpoint "
                         "is needed here; pass the right directory")
    return meta


def load_weights(path: str | os.PathLike, model: nn.Module) -> nn.Module:
    """Load ``model.safetensors`` into ``model`` strictly.

    Raises:
        ValueError: the file is truncated or not safetensors (named as such), or its keys/shapes do
            not match the model its config.json describes.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    file = Path(path) / "model.safetensors"
    try:
        load_model(model, str(file), strict=True)
    except SafetensorError as e:
        raise ValueError(f"{file} is truncated or not a safetensors file ({e}); the checkpoint is "
                         "damaged: re-run the stage that wrote it") from e
    except RuntimeError as e:
        raise ValueError(f"{file} does not match the model its config.json describes: {e}") from e
    return model


class Pretrained:
    """Mixin: ``save_pretrained(dir, **extra)`` / ``from_pretrained(dir, device=...)``.

    A subclass sets ``kind`` (the ``config.json`` kind) and either ``config_class`` (a dataclass; the
    model is ``cls(config_class(**config))`` and keeps it as ``self.cfg``) or overrides
    :meth:`to_config` / :meth:`from_config` for composite models. ``from_pretrained`` returns the
    model in eval mode on the resolved device; ``extra`` fields of ``config.json`` are available as
    ``model.pretrained_meta``.
    """

    kind: ClassVar[str]
    config_class: ClassVar[type | None] = None

    def to_config(self) -> Any:
        """The config that rebuilds this model (JSON-ready or a dataclass)."""
        return self.cfg

    @classmethod
    def from_config(cls, config: dict):
        """A freshly initialized model from a ``config.json`` ``config`` entry."""
        return cls(cls.config_class(**config))

    def _weights_module(self) -> nn.Module:
        """The module whose state is saved (the model itself by default)."""
        return self

    def save_pretrained(self, path: str | os.PathLike, **extra) -> Path:
        """Atomically write ``config.json`` + ``model.safetensors`` (``extra`` goes into config.json)."""
        return save_checkpoint(path, self.kind, self.to_config(), self._weights_module(), **extra)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu"):
        """Rebuild from ``config.json`` and load the weights, in eval mode on ``device``.

        Raises:
            FileNotFoundError: missing files; ValueError: another kind of checkpoint, a config the
                model rejects, or damaged / mismatched weights (see :func:`load_weights`).
        """
        meta = read_config(path, cls.kind)
        # a flat config.json (the shipped demonstrators) holds the config beside "kind"
        config = meta["config"] if "config" in meta else {k: v for k, v in meta.items() if k != "kind"}
        try:
            model = cls.from_config(config)
        except (TypeError, KeyError) as e:
            raise ValueError(f"{path}/config.json does not describe a {cls.kind} of this version ({e!r}); "
                             "retrain it with this version") from e
        load_weights(path, model._weights_module())
        model.pretrained_meta = {k: v for k, v in meta.items() if k not in ("kind", "config")}
        model.checkpoint_path = str(path)
        return model.to(resolve_device(device)).eval()
