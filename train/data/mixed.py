"""A training split with the scans of an unlabelled split mixed in (``--unlabelled-split``, decision 57).

:class:`MixedSplit` is the training set of a ``kd`` or ``distill`` stage that reads an unlabelled
split: epoch ``e`` lists every labelled scan once, in the seeded order ``default_rng([seed, e])``,
and ``M = round(ratio * labelled)`` (at least 1) unlabelled ones, interleaved evenly (position k is
labelled where ``ceil((k + 1) L / T) > ceil(k L / T)``, ``L`` labelled and ``T = L + M`` entries): for
a whole ratio every ``1 + ratio`` consecutive entries hold one labelled scan, so a batch of that size
holds the ratio. The unlabelled entries walk through the unlabelled split in cycles: draw ``q`` (counted from
the first epoch on, ``e * R + j`` for the epoch's j-th, ``R`` the unlabelled entries an epoch reads)
is scan ``perm_c[q mod U]`` of the cycle ``c = q div U``'s permutation ``default_rng([seed, c, 57])``
of its ``U`` scans, so every unlabelled scan is read once before any is read again, and the epochs
go on where the last one stopped. An epoch reads its list's first ``read_per_epoch`` entries
(``--iters-per-epoch`` times the batch; all ``T`` without it), so ``R`` counts the unlabelled ones
among them: draws past them are never read and the next epoch takes them up (decision 68). The
list is a function of (seed, epoch) alone: the sampler deals it out unshuffled (``shuffle=False``)
and a resume, a preemption or a resume on another number of processes finds it as it was
(decisions 37, 46); a resume also finds the unlabelled scans it was written with (their count and
names' digest in the checkpoint).

A labelled scan is augmented as in its own split (``set_epoch(e)`` of the labelled set); an
unlabelled one with its split's pipeline under ``set_epoch(c)``, so its every draw is augmented
afresh. Its sample carries ``unlabelled: True`` (collated into the batch's ``unlabelled`` list)
and ``segment`` all -1, read without any label file.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from .base import PointCloudDataset
from .cameras.camera_teacher import CameraTeacherFiles

CYCLE_STREAM = 57  # the third word of an unlabelled cycle's seed: apart from the labelled order's


class MixedSplit(Dataset):
    """The labelled training scans of ``labelled`` with ``ratio`` unlabelled scans of ``unlabelled``
    (split ``split``) per labelled one; an epoch reads the first ``read_per_epoch`` entries of its
    list (None: all; see the module docstring)."""

    def __init__(self, labelled: PointCloudDataset, unlabelled: PointCloudDataset, split: str, ratio: float,
                 seed: int, read_per_epoch: int | None = None) -> None:
        if len(labelled) == 0 or len(unlabelled) == 0:
            raise ValueError(f"a mixed split needs labelled and unlabelled scans, got {len(labelled)} and "
                             f"{len(unlabelled)}")
        self.labelled_set, self.unlabelled_set = labelled, unlabelled
        self.split, self.ratio, self.seed = split, float(ratio), int(seed)
        self.per_epoch = max(1, round(self.ratio * len(labelled)))
        self.read_per_epoch = len(self) if read_per_epoch is None else min(int(read_per_epoch), len(self))
        self.epoch = 0

    def checkpoint_entries(self) -> dict[str, Any]:
        """The labelled set's entries, plus the unlabelled split, its size, the SHA-256 of its scan
        names (one per line) and the ratio: a resume compares the scans."""
        names = "\n".join(self.unlabelled_set.scan_name(i) for i in range(len(self.unlabelled_set)))
        return {**self.labelled_set.checkpoint_entries(),
                "unlabelled": {"split": self.split, "ratio": self.ratio, "scans": len(self.unlabelled_set),
                               "scans_sha256": hashlib.sha256(names.encode()).hexdigest()}}

    @property
    def camera_teacher(self) -> CameraTeacherFiles | None:
        """The camera teacher's files of the labelled set (the unlabelled set reads the same folder)."""
        return self.labelled_set.camera_teacher

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.labelled_set) + self.per_epoch

    def epoch_list(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(unlabelled?, index in its split, cycle) of every entry of epoch ``epoch``'s list, in
        order (the cycle of a labelled entry: its epoch)."""
        return _epoch_list(len(self.labelled_set), self.per_epoch, len(self.unlabelled_set), self.seed,
                           self.read_per_epoch, int(epoch))

    def __getitem__(self, position: int) -> dict:
        unlabelled, index, cycle = self.epoch_list(self.epoch)
        if not unlabelled[position]:
            self.labelled_set.set_epoch(self.epoch)
            return self.labelled_set[int(index[position])]
        self.unlabelled_set.set_epoch(int(cycle[position]))
        return {**self.unlabelled_set[int(index[position])], "unlabelled": True}

    def reads(self, epochs: int, steps: int, batch_size: int, processes: int) -> tuple[int, int]:
        """(unlabelled entries read, distinct unlabelled scans among them) by a stage of ``epochs``
        epochs of ``steps`` steps of ``batch_size`` scans over ``processes`` processes: each epoch
        reads the first ``min(steps * batch_size / processes, ceil(T / processes)) * processes``
        entries of its list, padded for the processes by repeating its first entries as the
        sampler pads it."""
        per_process = batch_size // processes
        read, seen = 0, set()
        for epoch in range(epochs):
            unlabelled, index, _ = self.epoch_list(epoch)
            padded = -(-len(index) // processes) * processes
            used = np.arange(min(steps * per_process, padded // processes) * processes) % len(index)
            read += int(np.count_nonzero(unlabelled[used]))
            seen.update(index[used][unlabelled[used]].tolist())
        return read, len(seen)


@lru_cache(maxsize=4)
def _epoch_list(labelled: int, per_epoch: int, unlabelled: int, seed: int, read: int,
                epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    total = labelled + per_epoch
    k = np.arange(total, dtype=np.int64)
    is_labelled = -(-(k + 1) * labelled // total) > -(-k * labelled // total)
    index = np.empty(total, dtype=np.int64)
    cycle = np.full(total, epoch, dtype=np.int64)
    index[is_labelled] = np.random.default_rng([seed, epoch]).permutation(labelled)
    draws = epoch * np.count_nonzero(~is_labelled[:read]) + np.arange(per_epoch, dtype=np.int64)
    cycles = draws // unlabelled
    cycle[~is_labelled] = cycles
    picks = np.empty(per_epoch, dtype=np.int64)
    for c in np.unique(cycles):  # an epoch's draws span a few cycles: one permutation each
        here = cycles == c
        picks[here] = _cycle(unlabelled, seed, int(c))[draws[here] % unlabelled]
    index[~is_labelled] = picks
    return ~is_labelled, index, cycle


@lru_cache(maxsize=8)
def _cycle(unlabelled: int, seed: int, cycle: int) -> np.ndarray:
    return np.random.default_rng([seed, cycle, CYCLE_STREAM]).permutation(unlabelled)
