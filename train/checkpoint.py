"""Atomic training checkpoints (``--resume``): everything needed to continue a run exactly.

A checkpoint holds the model, optimiser, scheduler and AMP scaler states, the random-number states
(Python, numpy, torch CPU and every CUDA device), the global step and epoch, and the run config.
It is written to a temporary file in the target directory, flushed to disk, then moved over the
target with ``os.replace`` (atomic on POSIX), so a run killed mid-write leaves the previous
checkpoint intact.
"""
from __future__ import annotations

import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any

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


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to a temp file next to ``path``, fsync, then ``os.replace`` onto ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
) -> None:
    """Write a full training checkpoint atomically."""
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
    atomic_save(state, path)


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
    containers are read as usual. Callers decide whether the entries they need are intact."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} does not exist; check the path (or train that stage first)")
    try:
        return torch.load(p, map_location=map_location, weights_only=True), []
    except pickle.UnpicklingError as err:
        first_line = str(err).splitlines()[0]
    try:
        refused = torch.serialization.get_unsafe_globals_in_checkpoint(p)
    except Exception:  # not the zip format: its globals cannot be listed without unpickling
        refused = []
    if not refused:
        raise ValueError(f"{p} could not be read with weights_only=True ({first_line}); "
                         "re-save it with torch.save in the current (zip) format")
    # getattr(obj, name)(...) is how a pickle calls a method: the attribute becomes the stand-in class.
    stand_ins = [(_refused_attribute if name == "builtins.getattr" else RefusedObject, name) for name in refused]
    with torch.serialization.safe_globals([RefusedObject, *stand_ins]):
        return torch.load(p, map_location=map_location, weights_only=True), refused


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; clear error if it is missing or foreign."""
    return native_checkpoint(path, *read_weights(path, map_location))


def native_checkpoint(path: str | os.PathLike[str], state: Any, refused: list[str]) -> dict[str, Any]:
    """``state`` read from ``path`` by :func:`read_weights`, checked to be one of our checkpoints.

    Checkpoints are untrusted input (``--teacher-checkpoint`` files come from elsewhere): a pickle
    that names any object other than tensors and plain containers (the way a crafted file runs code
    on load) is refused, not executed."""
    if refused:
        raise ValueError(f"{path} holds objects other than tensors and plain containers ({', '.join(refused)}), "
                         "so it was not loaded (it could run code). Pass a checkpoint written by this package.")
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} is not a topodistill checkpoint (no 'model' entry)")
    return state


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
