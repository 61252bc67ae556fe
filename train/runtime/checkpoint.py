"""Atomic, verifiable training checkpoints (``--resume``): everything needed to continue a run exactly.

A checkpoint holds the model, optimiser, scheduler and AMP scaler states, the state of every process
of the run in rank order (its random-number states: Python, numpy, torch CPU and every CUDA device;
where its data stream stands: sampler epoch and start, DataLoader seed; gathered by rank 0, which
writes the one file, decision 37), the global step and epoch, the run config, and a
SHA-256 digest of all of it (:func:`content_digest`; ``torch.load`` checks no checksum of tensor
data, so a flipped byte would otherwise load silently).

Writing (:func:`train.runtime.files.atomic_write`): the bytes go to a temporary file in the target directory, are
flushed and fsynced, the file being replaced is kept as the previous checkpoint, and the temporary
file is renamed over the target with ``os.replace`` (atomic on POSIX); then the directory is
fsynced. A process killed at any moment therefore leaves the last complete checkpoint (as the
target, or as the previous one while the rename is in flight) and at most a stray temporary file,
which :func:`remove_stale_temporaries` deletes on resume. A checkpoint that cannot be written (a
full disk) raises :class:`CheckpointWriteError` and leaves the files already there unchanged.

Reading (:func:`load_checkpoint`): ``torch.load(weights_only=True)`` and the digest check; any
unusable file (missing, not a checkpoint, truncated, corrupt, holding code) raises a one-line
:class:`CheckpointError` naming it. :func:`load_latest` picks the newest
readable checkpoint of a run, with a warning naming each file it had to pass over.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import random
import shutil
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from train.runtime.checkpoint_errors import CheckpointError, CheckpointMissingError, CheckpointWriteError, one_line
from train.runtime.files import NO_ROOM, TEMP_SUFFIX, NoRoomError, atomic_write


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


_LOG = logging.getLogger(__name__)


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
        if isinstance(err, NoRoomError):  # what ran out, in numbers (decision 99)
            reason += f" ({_room(target.parent, buffer.getbuffer().nbytes)})"
        fix = "free space on that disk" if err.errno in NO_ROOM else "fix the cause"
        failure = CheckpointWriteError(f"could not write checkpoint {target}: {reason}. The last complete checkpoint "
                                       f"is still in {target.parent}: {fix}, then rerun with --resume to continue "
                                       "from it")
        failure.errno = err.errno
        raise failure from err


def _room(folder: Path, needed: int) -> str:
    """``"<needed> MB needed, <free> MB free there"`` for a checkpoint of ``needed`` bytes in ``folder``."""
    try:
        free = f"{shutil.disk_usage(folder).free / 1e6:,.1f} MB"
    except OSError:
        free = "an unknown amount"
    return f"{needed / 1e6:,.1f} MB needed, {free} free there"


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
    ranks: list[dict[str, Any]] | None = None,
) -> None:
    """Write a full training checkpoint atomically (keeping the file it replaces as ``previous``).

    ``ranks``: the state of each process of the run, in rank order (:func:`rank_state`, gathered
    by the training loop); default: this process's random state alone."""
    state = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "ranks": ranks if ranks is not None else [rank_state()],
        "step": int(step),
        "epoch": int(epoch),
        "config": config or {},
        "extra": extra or {},
    }
    state["digest"] = content_digest(state)
    atomic_save(state, path, previous)


def rank_state(data: dict[str, int] | None = None) -> dict[str, Any]:
    """What one process of a run saves for an exact resume: its random states (:func:`rng_state`)
    and ``data``, where its data stream stands (sampler epoch and start, DataLoader seed)."""
    return {"rng": rng_state(), "data": dict(data or {})}


def _check_ranks(path: Path, state: dict[str, Any]) -> None:
    """A training checkpoint must hold one well-formed state per process (decision 37)."""
    ranks = state.get("ranks")
    keys = {"python", "numpy", "torch"}
    if not isinstance(ranks, list) or not ranks or not all(
            isinstance(r, dict) and isinstance(r.get("rng"), dict) and keys <= set(r["rng"])
            and isinstance(r.get("data"), dict) for r in ranks):
        raise CheckpointError(f"{path} is corrupt or foreign: it lacks the random and data state of each process")


class RefusedObject:
    """Inert stand-in for a pickled object that ``weights_only`` loading refuses (see
    :func:`read_weights`): it accepts and discards whatever the pickle passes, runs nothing else."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def _refused_attribute(*args: Any) -> type[RefusedObject]:
    return RefusedObject


ZIP_MAGIC = b"PK\x03\x04"  # a zip archive's first local header: torch.save's format since torch 1.6
# torch.save's legacy format starts with the pickled magic number 0x1950a86a20f9469cfc6c (protocol 2)
LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."


def _not_a_checkpoint(head: bytes) -> str | None:
    """Why a file starting with ``head`` is no ``torch.save`` file (None when it may be one)."""
    if head.startswith(ZIP_MAGIC) or head.startswith(LEGACY_MAGIC):
        return None
    if not head:
        return "it is empty (a write that never finished?)"
    if head[:1] == b"\x80":
        return "it is a plain pickle, not a torch.save file (plain pickles are never loaded: they can run code)"
    return "it is not a torch.save file"


def read_weights(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> tuple[Any, list[str]]:
    """Read an untrusted ``torch.save`` file with ``torch.load(weights_only=True)``.

    Returns (object, refused): when the file also names globals that ``weights_only`` refuses (a
    foreign trainer's scheduler, say), each such global is bound to :class:`RefusedObject` instead,
    so no code from the file runs, and ``refused`` lists their names; the tensors and plain
    containers are read as usual. Callers decide whether the entries they need are intact.
    Every refusal is a one-line :class:`CheckpointError` naming the file: missing
    (:class:`CheckpointMissingError`), not a ``torch.save`` file, truncated or corrupt, or naming a
    global that cannot even be stood in for (``os.system``: torch blocks its module outright)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointMissingError(f"checkpoint {p} does not exist; check the path (or train that stage first)")
    with p.open("rb") as fh:
        reason = _not_a_checkpoint(fh.read(len(LEGACY_MAGIC)))
    if reason is not None:
        raise CheckpointError(f"{p} is not a checkpoint: {reason}")
    refused: list[str] = []
    try:
        with p.open("rb") as fh:
            if fh.read(len(ZIP_MAGIC)) == ZIP_MAGIC:
                refused = torch.serialization.get_unsafe_globals_in_checkpoint(p)
        # getattr(obj, name)(...) is how a pickle calls a method: the attribute becomes the stand-in class.
        stand_ins = [(_refused_attribute if name == "builtins.getattr" else RefusedObject, name) for name in refused]
        with warnings.catch_warnings(), torch.serialization.safe_globals([RefusedObject, *stand_ins]):
            warnings.simplefilter("ignore")  # torch's warnings about the format advise unsafe loading
            return torch.load(p, map_location=map_location, weights_only=True), refused
    except pickle.UnpicklingError:  # torch's message advises weights_only=False: never repeated
        if refused:
            raise CheckpointError(f"{p} names {', '.join(refused)}, which cannot be read without running code from "
                                  "the file; it was refused and nothing from it ran. Pass a checkpoint of tensors and "
                                  "plain containers") from None
        raise CheckpointError(f"{p} is truncated or corrupt and cannot be read (its pickle names objects other "
                              "than tensors and plain containers, or is damaged); nothing from it ran") from None
    except Exception as err:  # torch reports a truncated or mangled archive as RuntimeError, EOFError, KeyError, ...
        detail = one_line(str(err)).split(". ")[0] or "no detail"  # torch's first sentence
        raise CheckpointError(f"{p} is truncated or corrupt and cannot be read ({type(err).__name__}: {detail})") from None


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
                              "so it was refused and nothing from it ran. Pass a checkpoint written by this package.")
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a topodistill checkpoint (no 'model' entry)")
    if "digest" in state and state["digest"] != content_digest(state):
        raise CheckpointError(f"{path} is corrupt: its content does not match the SHA-256 digest stored in it")
    return state


def load_latest(candidates: Sequence[str | os.PathLike[str]], map_location: str | torch.device = "cpu",
                warn: bool = True) -> tuple[dict[str, Any], Path] | None:
    """The first usable training checkpoint of ``candidates`` (newest first) and its path; ``None``
    when none of the files exists. A file that exists but cannot be used (unreadable, or lacking
    a process's state) is passed over with a warning naming it and the file used instead (only
    when ``warn``: one process of a run says it); if no existing file can be used,
    :class:`CheckpointError` lists them all."""
    problems: list[str] = []
    for path in map(Path, candidates):
        if not path.is_file():
            continue
        try:
            state = load_checkpoint(path, map_location)
            _check_ranks(path, state)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        if problems and warn:
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
    rank: dict[str, Any],
) -> tuple[int, int]:
    """Load every saved state into the live objects, with this process's random states from
    ``rank`` (its entry of ``state["ranks"]``); returns (step, epoch)."""
    unwrap(model).load_state_dict(state["model"])
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(rank["rng"])
    return int(state["step"]), int(state["epoch"])
