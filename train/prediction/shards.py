"""One prediction run on several processes: which scans each labels, and how they meet in ``--out``
(decision 77).

A process labels shard ``I/N`` of the scans: the scans whose index in the run's list (the split's
order, or the files' as :func:`train.prediction.inputs.list_scan_files` sorts them) is ``I`` modulo
``N``. Under torchrun ``I/N`` is the process's RANK and WORLD_SIZE; alone, ``--shard I/N`` (a SLURM
array task, one of a list of machines); neither: ``0/1``, every scan.

The processes never talk to each other: they meet in ``<out>/.predict/`` (:data:`RUN_FOLDER`), on
any file system the ranks share:

- ``shard-I-of-N.lock``: held (``flock``) by the live process labelling shard I/N, released by the
  kernel when it exits however it exits. A second process for a shard held, or one of another
  ``N`` while any shard of the first is held, is refused in one line: two runs by mistake into one
  ``--out`` never label side by side.
- ``shard-I-of-N.json``: what shard I/N did (:class:`ShardRecord`), written whole once its files are.
  The process whose record completes the N records of one scan list (the same ``scans`` digest)
  writes what belongs to the whole split (:meth:`train.prediction.layouts.Layout.finish`), prints
  the one summary (every shard's unreadable scans named) and removes the records, the locks, the
  temporary files of writes a killed process left anywhere under ``--out`` and the folder: the
  run's life is over, and ``--out`` holds the outputs alone.
  Records of another N left by a dead run are removed by the next run of any N that finds their
  locks free (their scans are labelled again only where files are missing).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from train.prediction.summary import PredictionSummary
from train.runtime.files import atomic_write, remove_temporaries
from train.runtime.lock_files import holder, try_hold, try_lock

RUN_FOLDER = ".predict"  # <out>/.predict/: the shards' locks and records while a run lives
_SHARD_FILE = re.compile(r"^shard-(\d+)-of-(\d+)\.(lock|json)$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: the scans whose index is ``index`` modulo ``count``."""

    index: int
    count: int

    def indices(self, scans: int) -> tuple[int, ...]:
        return tuple(range(self.index, scans, self.count))

    def file(self, suffix: str) -> str:
        return f"shard-{self.index}-of-{self.count}.{suffix}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def process_shard(option: str | None, env: Mapping[str, str]) -> Shard:
    """This process's shard: ``--shard I/N`` (``option``), torchrun's RANK/WORLD_SIZE in ``env``,
    or 0/1. ValueError in one line for a malformed or out-of-range ``--shard`` and for both."""
    launched = int(env.get("WORLD_SIZE", "1")) > 1
    if option is None:
        return Shard(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")))
    if launched:
        raise ValueError("--shard is for a process started alone; under torchrun the ranks share the scans")
    match = re.fullmatch(r"(\d+)/(\d+)", option.strip())
    if match is None:
        raise ValueError(f"--shard {option!r}: give I/N, shard I (0 .. N-1) of N, e.g. --shard 0/4")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise ValueError(f"--shard {option}: I must lie in 0 .. N-1 and N be >= 1")
    return Shard(index, count)


def scans_digest(names: Sequence[str]) -> str:
    """Which scan list a record belongs to: the SHA-256 of the scan names in the run's order."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


@dataclass(frozen=True)
class ShardRecord:
    """What one shard did (its :class:`PredictionSummary`) and the IoU counts of ``--score``
    (:func:`train.prediction.score.score_scans`, else None), for the scan list ``scans``."""

    scans: str
    summary: PredictionSummary
    score: list[list[int]] | None


@contextmanager
def claim(out: Path, shard: Shard) -> Iterator[Path]:
    """Hold shard ``shard`` of ``out`` while the body labels it (module docstring); yields the run
    folder. ValueError in one line when another live process holds it or holds a shard of another
    count; OSError when ``out`` cannot be written."""
    folder = out / RUN_FOLDER
    fh, other = try_hold(folder, shard.file("lock"))
    with fh:
        if other is not None:
            raise ValueError(f"shard {shard} of --out {out} is being labelled by another process ({other}); "
                             "wait for it or give another --out")
        _clear_other_counts(folder, out, shard.count)
        yield folder


def _clear_other_counts(folder: Path, out: Path, count: int) -> None:
    """Refuse while a process of another shard count holds a lock in ``folder``; remove the locks
    and records of other counts that no process holds (a dead run's)."""
    others = [(p, m) for p in sorted(folder.iterdir()) if (m := _SHARD_FILE.match(p.name)) and int(m.group(2)) != count]
    for path, match in others:
        if match.group(3) != "lock":
            continue
        with open(path, "a+") as fh:
            if not try_lock(fh.fileno()):
                raise ValueError(f"--out {out} is being labelled by a run of {match.group(2)} processes "
                                 f"({holder(fh)}), this one has {count}: wait for it, or give every process of one "
                                 "run the same count (--shard I/N, torchrun's --nproc_per_node x --nnodes)")
    for path, _ in others:
        path.unlink(missing_ok=True)


def record_and_collect(folder: Path, shard: Shard, record: ShardRecord) -> list[ShardRecord] | None:
    """Write ``record`` as shard ``shard``'s; when it completes the ``shard.count`` records of its
    scan list, remove them and return them all (this process ends the run), else None. Under a
    lock of its own, so two shards ending together cannot both end it; a shard that finds its own
    record taken (the run has ended meanwhile) helps remove the folder."""
    atomic_write(json.dumps(asdict(record)).encode(), folder / shard.file("json"))
    try:
        fh = open(folder / "finish.lock", "a+")
    except FileNotFoundError:
        return None  # the shard that ended the run has removed the folder since
    with fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        paths = [folder / Shard(i, shard.count).file("json") for i in range(shard.count)]
        records = [_read_record(path) for path in paths]
        if records[shard.index] is not None and any(r is None or r.scans != record.scans for r in records):
            return None  # a shard of this run has not ended yet
        if records[shard.index] is not None:
            for path in paths + [folder / Shard(i, shard.count).file("lock") for i in range(shard.count)]:
                path.unlink(missing_ok=True)  # a lock still held is only by a shard that has ended its work
            remove_temporaries(folder.parent)  # every writer of the run has ended: what is left, a killed one left
        (folder / "finish.lock").unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # a shard of this run has yet to leave, or a process of another run has just come
    return None if records[shard.index] is None else records  # type: ignore[return-value]


def _read_record(path: Path) -> ShardRecord | None:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    summary = PredictionSummary(**{**doc["summary"], "bad": tuple(tuple(b) for b in doc["summary"]["bad"])})
    return ShardRecord(doc["scans"], summary, doc["score"])
