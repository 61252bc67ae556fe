"""A prediction run's labelled scans written out, and what the run did in one line (decision 50);
shared by the PyTorch loop (:mod:`train.prediction.run`) and the onnxruntime loop
(:mod:`train.prediction.onnx_run`), which never imports torch (decision 55)."""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from train.data.validation import BadScanError
from train.prediction.layouts import Layout

WRITERS = 2  # threads writing finished scans' files
_WRITES_AHEAD = 8  # batches whose files may be in flight before the loop waits for the oldest
_NAMED = 20  # unreadable scans a summary line names (each is named on stderr when skipped)

ScanResult = tuple[str, np.ndarray, "np.ndarray | None", "np.ndarray | None"]
"""(name, labels, mean probabilities or None, points or None) of one labelled scan."""


@dataclass(frozen=True)
class PredictionSummary:
    """What a run (or one shard of it, decision 77) did: scans labelled now, already labelled
    before (skipped), the unreadable ones skipped as (name, error), points labelled now, and the
    wall time of the labelling."""

    labelled: int
    already: int
    bad: tuple[tuple[str, str], ...]
    points: int
    seconds: float

    def line(self) -> str:
        done = f"labelled {self.labelled} scans ({self.already} already labelled, {len(self.bad)} unreadable skipped)"
        if self.bad:
            names = [name for name, _ in self.bad]
            more = f" and {len(names) - _NAMED} more, named above" if len(names) > _NAMED else ""
            done += f" [unreadable: {', '.join(names[:_NAMED])}{more}]"
        if not self.labelled:
            return done
        return (f"{done} in {self.seconds:.1f} s: {self.labelled / self.seconds:.2f} scans/s, "
                f"{self.points / self.seconds:,.0f} points/s, {1000.0 * self.seconds / self.labelled:.1f} ms per scan")

    def failed(self) -> bool:
        """Whether every scan it was given was unreadable (a run that labels nothing has failed)."""
        return bool(self.bad) and not self.labelled and not self.already


def whole_run(shards: Sequence[PredictionSummary]) -> PredictionSummary:
    """The summary of a run's shards, which ran side by side: their counts and bad scans summed,
    its time the slowest shard's."""
    return PredictionSummary(sum(s.labelled for s in shards), sum(s.already for s in shards),
                             tuple(b for s in shards for b in s.bad), sum(s.points for s in shards),
                             max(s.seconds for s in shards))


def write_results(batches: Iterable[tuple[Sequence[ScanResult], Sequence[tuple[str, str]]]], layout: Layout, *,
                  skip_bad_scans: bool, bar: Any, already: int) -> PredictionSummary:
    """Hand each batch's labelled scans (``batches`` yields them with the batch's bad scans as
    (name, error)) to :data:`WRITERS` writer threads, at most :data:`_WRITES_AHEAD` batches ahead
    of the files on disk; a bad scan stops the run with its :class:`BadScanError` (the scans
    finished before it keep their files) unless ``skip_bad_scans``, which names it on stderr and
    goes on. ``already``: the scans the layout held before; ``bar`` is updated and closed. What
    belongs to the whole split (:meth:`Layout.finish`) is left to the process that ends the run."""
    labelled = points = 0
    bad: list[tuple[str, str]] = []
    pending: list[list[Future]] = []
    start = time.perf_counter()
    with ThreadPoolExecutor(WRITERS) as writers:
        for scans, bad_scans in batches:
            pending.append([writers.submit(layout.write, name, labels, probs, pts)
                            for name, labels, probs, pts in scans])
            for name, error in bad_scans:  # after the batch's readable scans went to the writers
                if not skip_bad_scans:
                    raise BadScanError(error)
                print(f"predict: skipped {name}: {error}", file=sys.stderr, flush=True)
                bad.append((name, error))
            if len(pending) > _WRITES_AHEAD:
                _wait(pending.pop(0))
            labelled += len(scans)
            points += sum(len(labels) for _, labels, _, _ in scans)
            bar.update(len(scans) + len(bad_scans))
        for futures in pending:
            _wait(futures)
    bar.close()
    return PredictionSummary(labelled, already, tuple(bad), points, time.perf_counter() - start)


def _wait(futures: list[Future]) -> None:
    for future in futures:
        future.result()  # a write that failed raises here
