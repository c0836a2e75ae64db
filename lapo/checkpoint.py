"""Checkpoints are data, not code: ``config.json`` + ``model.safetensors`` in one directory.

``config.json`` holds ``{"kind": ..., "config": {...dataclass fields...}, ...extra}``; a later
stage rebuilds the model from that config, never from CLI flags that could disagree.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch.nn as nn
from safetensors.torch import load_model, save_model

from lapo.io import atomic_dir


def jsonable(value: Any) -> Any:
    """Dataclasses, paths and tuples as JSON-ready dicts, strings and lists."""
    if dataclasses.is_dataclass(value):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def save_checkpoint(path: str | os.PathLike, kind: str, config: Any, model: nn.Module, **extra) -> Path:
    """Atomically write ``config.json`` (kind, dataclass config, extra) + ``model.safetensors``."""
    with atomic_dir(path) as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        meta = {"kind": kind, "config": jsonable(config), **jsonable(extra)}
        (tmp / "config.json").write_text(json.dumps(meta, indent=2))
    return Path(path)


def read_config(path: str | os.PathLike, kind: str) -> dict:
    """Read ``config.json`` of a checkpoint of ``kind``.

    Raises:
        FileNotFoundError: the directory or one of its two files is missing.
        ValueError: the checkpoint is of another kind.
    """
    path = Path(path)
    for name in ("config.json", "model.safetensors"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name} not found: {path} is not a {kind} checkpoint "
                                    "(expected config.json + model.safetensors)")
    meta = json.loads((path / "config.json").read_text())
    if meta.get("kind") != kind:
        raise ValueError(f"{path} holds a {meta.get('kind')!r} checkpoint, but a {kind!r} checkpoint "
                         "is needed here; pass the right directory")
    return meta


def load_weights(path: str | os.PathLike, model: nn.Module) -> nn.Module:
    """Load ``model.safetensors`` into ``model`` strictly (a shape or key mismatch raises)."""
    try:
        load_model(model, str(Path(path) / "model.safetensors"), strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}/model.safetensors does not match the model its config.json "
                         f"describes: {e}") from e
    return model
