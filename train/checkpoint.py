"""Atomic, verifiable training checkpoints (``--resume``): everything needed to continue a run exactly.

A checkpoint holds the model, optimiser, scheduler and AMP scaler states, the random-number states
(Python, numpy, torch CPU and every CUDA device), the global step and epoch, the run config, and a
SHA-256 digest of all of it (:func:`content_digest`; ``torch.load`` checks no checksum of tensor
data, so a flipped byte would otherwise load silently).

Writing (:func:`atomic_write`): the bytes go to a temporary file in the target directory, are
flushed and fsynced, the file being replaced is kept as the previous checkpoint, and the temporary
file is renamed over the target with ``os.replace`` (atomic on POSIX); then the directory is
fsynced. A process killed at any moment therefore leaves the last complete checkpoint (as the
target, or as the previous one while the rename is in flight) and at most a stray temporary file,
which :func:`remove_stale_temporaries` deletes on resume. A checkpoint that cannot be written (a
full disk) raises :class:`CheckpointWriteError` and leaves the files already there unchanged.

Reading (:func:`load_checkpoint`): ``torch.load(weights_only=True)`` and the digest check; any
unreadable file raises :class:`CheckpointError` naming it. :func:`load_latest` picks the newest
readable checkpoint of a run, with a warning naming each file it had to pass over.
"""
from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return model.module if hasattr(model, "module") else model


def rng_state() -> dict[str, Any]:
    """Current states of every random generator training touches, as tensors and plain Python
    values only (so the checkpoint loads with ``torch.load(weights_only=True)``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states saved by :func:`rng_state`."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


TEMP_SUFFIX = ".tmp"
_LOG = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: truncated, corrupt, foreign, or holding code."""


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed (disk full, no permission); the files already there are intact."""


def atomic_write(data: bytes | memoryview, path: str | os.PathLike[str], previous: str | os.PathLike[str] | None = None
                 ) -> None:
    """Write ``data`` to ``path`` atomically (see the module docstring); an existing ``path`` is
    first renamed to ``previous`` when given. On an error no temporary file is left behind."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=TEMP_SUFFIX, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if previous is not None and target.exists():
            os.replace(target, previous)
        os.replace(tmp, target)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # makes the renames themselves survive a power loss
        finally:
            os.close(dir_fd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: str | os.PathLike[str], previous: str | os.PathLike[str] | None = None) -> None:
    """``torch.save`` of ``obj`` written with :func:`atomic_write`; an OS error (a full disk) becomes a
    :class:`CheckpointWriteError` saying what to do. The bytes are serialised in memory first:
    torch's own file writer reports a failed write as a bare ``RuntimeError`` without the OS's reason."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    target = Path(path)
    try:
        atomic_write(buffer.getbuffer(), target, previous)
    except OSError as err:
        reason = os.strerror(err.errno) if err.errno else str(err)
        fix = "free space on that disk" if err.errno == errno.ENOSPC else "fix the cause"
        failure = CheckpointWriteError(f"could not write checkpoint {target}: {reason}. The last complete checkpoint "
                                       f"is still in {target.parent}: {fix}, then rerun with --resume to continue "
                                       "from it")
        failure.errno = err.errno
        raise failure from err


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files a killed :func:`atomic_write` to ``path`` left behind; returns them."""
    target = Path(path)
    stale = sorted(target.parent.glob(target.name + ".*" + TEMP_SUFFIX))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def content_digest(state: dict[str, Any]) -> str:
    """SHA-256 over every entry of ``state`` but ``"digest"``: tensors by dtype, shape and bytes,
    containers in their order, other values by ``repr``."""
    h = hashlib.sha256()

    def visit(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"tensor {t.dtype} {tuple(t.shape)};".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())
        elif isinstance(value, dict):
            h.update(f"dict {len(value)};".encode())
            for k, v in value.items():
                visit(k)
                visit(v)
        elif isinstance(value, (list, tuple)):
            h.update(f"{type(value).__name__} {len(value)};".encode())
            for v in value:
                visit(v)
        else:
            h.update(f"{type(value).__name__} {value!r};".encode())

    visit({k: v for k, v in state.items() if k != "digest"})
    return h.hexdigest()


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    scaler: Any | None,
    step: int,
    epoch: int,
    config: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    previous: str | os.PathLike[str] | None = None,
) -> None:
    """Write a full training checkpoint atomically (keeping the file it replaces as ``previous``)."""
    state = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state(),
        "step": int(step),
        "epoch": int(epoch),
        "config": config or {},
        "extra": extra or {},
    }
    state["digest"] = content_digest(state)
    atomic_save(state, path, previous)


class RefusedObject:
    """Inert stand-in for a pickled object that ``weights_only`` loading refuses (see
    :func:`read_weights`): it accepts and discards whatever the pickle passes, runs nothing else."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def _refused_attribute(*args: Any) -> type[RefusedObject]:
    return RefusedObject


def read_weights(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> tuple[Any, list[str]]:
    """Read an untrusted ``torch.save`` file with ``torch.load(weights_only=True)``.

    Returns (object, refused): when the file also names globals that ``weights_only`` refuses (a
    foreign trainer's scheduler, say), each such global is bound to :class:`RefusedObject` instead,
    so no code from the file runs, and ``refused`` lists their names; the tensors and plain
    containers are read as usual. Callers decide whether the entries they need are intact.
    A missing file raises FileNotFoundError, a truncated or mangled one :class:`CheckpointError`."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} does not exist; check the path (or train that stage first)")
    try:
        return torch.load(p, map_location=map_location, weights_only=True), []
    except pickle.UnpicklingError as err:
        first_line = str(err).splitlines()[0]
    except Exception as err:  # torch reports a truncated or mangled archive as RuntimeError, EOFError, KeyError, ...
        detail = str(err).split("\n")[0].split(". ")[0] or "no detail"  # torch's first sentence
        raise CheckpointError(f"{p} is truncated or corrupt and cannot be read ({type(err).__name__}: {detail})") from None
    try:
        refused = torch.serialization.get_unsafe_globals_in_checkpoint(p)
    except Exception:  # not the zip format, or a mangled archive: its globals cannot be listed without unpickling
        refused = []
    if not refused:
        raise CheckpointError(f"{p} could not be read with weights_only=True ({first_line}): it is corrupt, or "
                              "not in torch.save's current (zip) format")
    # getattr(obj, name)(...) is how a pickle calls a method: the attribute becomes the stand-in class.
    stand_ins = [(_refused_attribute if name == "builtins.getattr" else RefusedObject, name) for name in refused]
    with torch.serialization.safe_globals([RefusedObject, *stand_ins]):
        return torch.load(p, map_location=map_location, weights_only=True), refused


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; clear error if it is missing, unreadable
    or foreign (:class:`CheckpointError`, naming the file)."""
    return native_checkpoint(path, *read_weights(path, map_location))


def native_checkpoint(path: str | os.PathLike[str], state: Any, refused: list[str]) -> dict[str, Any]:
    """``state`` read from ``path`` by :func:`read_weights`, checked to be one of our checkpoints.

    Checkpoints are untrusted input (``--teacher-checkpoint`` files come from elsewhere): a pickle
    that names any object other than tensors and plain containers (the way a crafted file runs code
    on load) is refused, not executed. Files carrying a digest (every file this package writes)
    must match it."""
    if refused:
        raise CheckpointError(f"{path} holds objects other than tensors and plain containers ({', '.join(refused)}), "
                              "so it was not loaded (it could run code). Pass a checkpoint written by this package.")
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a topodistill checkpoint (no 'model' entry)")
    if "digest" in state and state["digest"] != content_digest(state):
        raise CheckpointError(f"{path} is corrupt: its content does not match the SHA-256 digest stored in it")
    return state


def load_latest(candidates: Sequence[str | os.PathLike[str]], map_location: str | torch.device = "cpu"
                ) -> tuple[dict[str, Any], Path] | None:
    """The first readable checkpoint of ``candidates`` (newest first) and its path; ``None`` when
    none of the files exists. A file that exists but cannot be read is passed over with a warning
    naming it and the file used instead; if no existing file can be read, :class:`CheckpointError`
    lists them all."""
    problems: list[str] = []
    for path in map(Path, candidates):
        if not path.is_file():
            continue
        try:
            state = load_checkpoint(path, map_location)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        if problems:
            _LOG.warning("resuming from %s instead: %s", path, "; ".join(problems))
        return state, path
    if problems:
        raise CheckpointError("no readable checkpoint to resume from: " + "; ".join(problems)
                              + ". Delete these files to start the stage afresh, or restore one from a backup.")
    return None


def restore_training_state(
    state: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    scaler: Any | None,
) -> tuple[int, int]:
    """Load every saved state into the live objects; returns (step, epoch)."""
    unwrap(model).load_state_dict(state["model"])
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return int(state["step"]), int(state["epoch"])
