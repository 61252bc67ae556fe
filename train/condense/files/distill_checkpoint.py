"""Checkpoints of a distillation run and its exact resumption (decision 80).

A distillation loop (:mod:`train.condense.matching.matching_loops`, :mod:`train.condense.methods.trajectory`) saves
after its first iteration, every ``every`` iterations, after its ``last`` and after any iteration
that ends :data:`SAVE_MINUTES` or more after the last save (so a stop, :mod:`train.condense.cli.stop`,
loses minutes, not the run), into one file (``<out>/distill.pt``, written atomically): the iterations
done, the loss history, every parameter its optimisers hold and their states, torch's global
random state (the fresh networks are drawn from it), the run's own generator of draws and the
seconds the run has taken (:class:`RunSeconds`: those of the segments before, as saved, and this
one's since its checkpoint was made; what a stopped segment ran after its last save is done again,
so it is not counted). A run
started with ``resume`` reads it and goes on from there, drawing what the uninterrupted run draws,
so it writes the same file (when it saves changes nothing it draws). The checkpoint carries the
JSON key of what produced it (method, data, CPC, seed, settings); another key is refused in one
line, or, with ``resume`` :data:`RESUME_MATCHING` (the study's units), starts the run afresh. With several processes only rank 0
writes it; every rank holds the same state, which is one process's (decision 84), so a run of any
number of processes resumes from it.
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from train.runtime.distributed import is_main
from train.runtime.files import atomic_write
from train.runtime.preemption import CheckpointClock

CHECKPOINT_NAME = "distill.pt"
SAVE_MINUTES = 5.0  # a save at least this often (decision 80)
RESUME_MATCHING = "matching"  # resume: only from a checkpoint of this run, else start afresh


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from (its message names the file)."""


def _parameters(optimizers: list[torch.optim.Optimizer]) -> list[torch.Tensor]:
    return [p for opt in optimizers for group in opt.param_groups for p in group["params"]]


class RunSeconds:
    """The seconds a run has taken over its segments: those saved by the checkpoint it resumed from
    (None where that checkpoint predates the count: then unknown) plus this segment's since it began."""

    def __init__(self) -> None:
        self.before: float | None = 0.0
        self.start = time.perf_counter()

    def total(self) -> float | None:
        return None if self.before is None else self.before + time.perf_counter() - self.start


@dataclass(frozen=True)
class Checkpoint:
    """Where and how often a run is saved (also after iteration ``last``, its final one, when
    given), what identifies it, and whether it resumes (True, False or :data:`RESUME_MATCHING`);
    ``clock`` the time since the last save, ``seconds`` the run's seconds (this segment's from
    when the checkpoint is made)."""

    path: Path
    key: str
    every: int
    resume: bool | str
    last: int | None = None
    clock: CheckpointClock = field(default_factory=lambda: CheckpointClock(SAVE_MINUTES))
    seconds: RunSeconds = field(default_factory=RunSeconds)

    def restore(self, optimizers: list[torch.optim.Optimizer], draws: torch.Generator) -> tuple[int, list[float]]:
        """The iterations done and the history: (0, []) for a fresh run, else the saved state put back."""
        if not self.resume or (self.resume == RESUME_MATCHING and saved_key(self.path) != self.key):
            return 0, []
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise CheckpointError(f"{self.path}: no checkpoint to resume from (a run keeps its first after its first "
                                  "iteration): start the run without --resume") from None
        except Exception as err:  # torch raises many kinds for a damaged file
            raise CheckpointError(f"{self.path}: not a readable checkpoint ({type(err).__name__})") from None
        if saved.get("key") != self.key:
            raise CheckpointError(f"{self.path}: written by another run (method, data, CPC, seed or settings differ)")
        with torch.no_grad():
            for p, value in zip(_parameters(optimizers), saved["parameters"], strict=True):
                p.copy_(value)
        for opt, state in zip(optimizers, saved["optimizers"], strict=True):
            opt.load_state_dict(state)
        torch.set_rng_state(saved["torch_rng"])
        draws.set_state(saved["draws"])
        self.seconds.before = saved.get("seconds")
        return saved["iteration"], list(saved["history"])

    def save_if_due(self, iteration: int, optimizers: list[torch.optim.Optimizer], draws: torch.Generator,
                    history: list[float]) -> None:
        """Save after ``iteration`` iterations when it is the first, the ``last``, a multiple of
        ``every`` or :data:`SAVE_MINUTES` after the last save (rank 0 only)."""
        if (iteration % self.every and iteration not in (1, self.last) and not self.clock.due()) or not is_main():
            return
        buffer = io.BytesIO()
        torch.save({"key": self.key, "iteration": iteration, "history": history,
                    "parameters": [p.detach().cpu() for p in _parameters(optimizers)],
                    "optimizers": [opt.state_dict() for opt in optimizers], "torch_rng": torch.get_rng_state(),
                    "draws": draws.get_state(), "seconds": self.seconds.total()}, buffer)
        atomic_write(buffer.getbuffer(), self.path)
        self.clock.restart()


def _saved(path: Path) -> dict | None:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # missing, or damaged in any of torch's ways
        return None


def saved_key(path: Path) -> str | None:
    """The key of the checkpoint at ``path`` (None: none readable there)."""
    saved = _saved(path)
    return None if saved is None else saved.get("key")


def saved_iteration(path: Path) -> int | None:
    """The iterations done of the checkpoint at ``path`` (None: none readable there)."""
    saved = _saved(path)
    return None if saved is None else saved.get("iteration")


def saved_seconds(path: Path) -> float | None:
    """The seconds the run of the checkpoint at ``path`` had taken when it was saved (:class:`RunSeconds`;
    None: none readable there, or one that predates the count)."""
    saved = _saved(path)
    return None if saved is None else saved.get("seconds")
