"""Atomic file and directory writes (an interrupted run leaves the previous good state), file locks
(processes sharing a run directory) and JSON-ready config records. The lowest layer: ``envs``,
``lapo`` and ``worldmodel`` all write through here."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = True):
    """Yield a temporary directory beside ``path``; on success it replaces ``path`` in one rename.

    On an exception the temporary directory is removed and ``path`` is left as it was.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it or choose "
                              "another output path")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result should look like any mkdir
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class LockBusy(RuntimeError):
    """Another process holds the lock :func:`file_lock` asked for, inside :func:`wait_for_locks(False)
    <wait_for_locks>`. ``path`` is the locked output."""

    def __init__(self, path: Path):
        super().__init__(f"another process is computing {path}")
        self.path = path


_WAIT_FOR_LOCKS = contextvars.ContextVar("wait_for_locks", default=True)


@contextlib.contextmanager
def wait_for_locks(wait: bool):
    """Within the block (this thread), a :func:`file_lock` that another process holds is waited for
    (``True``, the default outside any such block) or raises :class:`LockBusy` at once (``False``): how a
    benchmark worker moves on to work that nobody holds."""
    token = _WAIT_FOR_LOCKS.set(wait)
    try:
        yield
    finally:
        _WAIT_FOR_LOCKS.reset(token)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike | None):
    """Hold an exclusive advisory lock for ``path`` (``fcntl.flock`` on ``.NAME.lock`` beside it) while
    the block runs, so that processes sharing a run directory never compute the same output at once;
    the OS releases it when its holder exits, also on a crash. A lock held by another process (or by
    another open of it in this one) is waited for, or, inside :func:`wait_for_locks(False)
    <wait_for_locks>`, raises :class:`LockBusy`. Under torchrun (``WORLD_SIZE > 1``) it locks nothing:
    the ranks of one job compute each output together; nor does ``path=None`` (an output that is not
    saved). POSIX only (``fcntl``).

    Raises:
        LockBusy: the lock is held elsewhere and waiting is off.
    """
    import fcntl

    if path is None or int(os.environ.get("WORLD_SIZE", 1)) > 1:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not _WAIT_FOR_LOCKS.get():
                raise LockBusy(path) from None
            print(f"waiting for another process that is computing {path}", flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
