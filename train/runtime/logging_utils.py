"""Training logs: CSV rows and TensorBoard scalars of every loss term and of the validation passes
made during training, and progress: tqdm bars on a terminal, plain lines in a log file.

A logger holds one CSV table per kind of row, ``<table>_log.csv`` (``train``: one row per step;
``val``: one row per validation pass of ``--eval-every-epochs``), and one TensorBoard writer whose
tags are ``<table>/<column>``. In a DistributedDataParallel run only rank 0 writes or draws; other
ranks get no-op objects. A table's CSV header is fixed by its first row; later rows with new keys
are rejected so a column never silently shifts. A fresh run replaces the old tables; a run resumed
at step ``s`` (``resume_step=s``) continues them after dropping the rows of steps > ``s`` (logged by
the killed run after its last checkpoint, and logged again as they are redone), in every CSV and
in TensorBoard (``purge_step``). A row is appended whole or not at all: a full disk cuts the
table back to the rows before it and raises :class:`train.runtime.files.NoRoomError`, one line
(decision 99). Also the one-line refusal a command prints (:func:`refuse`).
torch is imported where a step's tensors are read, so that the progress lines and refusals serve
the labelling that never imports torch (decision 55).
"""
from __future__ import annotations

import csv
import io
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from tqdm import tqdm

from train.runtime.files import NO_ROOM, atomic_write, no_room

if TYPE_CHECKING:
    import torch


def refuse(message: str) -> int:
    """Print a refusal on stderr, once: under torchrun every rank runs the same checks, and only
    rank 0 prints. Returns the exit status 2."""
    if os.environ.get("RANK", "0") == "0":
        print(message, file=sys.stderr, flush=True)
    return 2


def read_scalars(logs: dict[str, torch.Tensor]) -> dict[str, float]:
    """A step's logged 0-d tensors as floats, read together: one host synchronisation per logged
    step instead of one per term (decision 39). Tensors on the CPU join the device's."""
    import torch

    if not logs:
        return {}
    device = next((v.device for v in logs.values() if v.device.type != "cpu"), torch.device("cpu"))
    values = torch.stack([v.detach().reshape(()).to(device, torch.float64) for v in logs.values()]).tolist()
    return dict(zip(logs, values))


def log_path(out_dir: str | os.PathLike[str], table: str) -> Path:
    """The CSV file of ``table`` in a stage folder."""
    return Path(out_dir) / f"{table}_log.csv"


class MetricLogger:
    """Append-only CSV tables + optional TensorBoard writer of scalar metrics keyed by global step."""

    def __init__(self, out_dir: str | os.PathLike[str], enabled: bool = True, tensorboard: bool = True,
                 tables: Sequence[str] = ("train",), resume_step: int | None = None) -> None:
        self.enabled = enabled
        self._fields: dict[str, list[str] | None] = {}
        self._tb = None
        if not enabled:
            return
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        for table in tables:
            path = log_path(self.dir, table)
            if resume_step is None:
                path.unlink(missing_ok=True)
                self._fields[table] = None
            else:  # a resumed run appends under the existing header
                self._fields[table] = _keep_rows_up_to(path, resume_step) if path.exists() else None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self._tb = SummaryWriter(log_dir=str(self.dir / "tensorboard"), purge_step=purge)

    def log(self, step: int, values: dict[str, float], table: str = "train") -> None:
        if not self.enabled:
            return
        if table not in self._fields:
            raise ValueError(f"MetricLogger: no table {table!r}; this logger writes {sorted(self._fields)}")
        path = log_path(self.dir, table)
        row = {"step": step, **{k: float(v) for k, v in values.items()}}
        fields = self._fields[table]
        text = io.StringIO(newline="")
        if fields is None:
            fields = list(row)
            csv.writer(text).writerow(fields)
        missing = set(row) - set(fields)
        if missing:
            raise ValueError(f"MetricLogger: new column(s) {sorted(missing)} after the header {fields} of {path}")
        csv.DictWriter(text, fieldnames=fields, restval="").writerow(row)
        _append_whole(path, text.getvalue().encode())
        self._fields[table] = fields
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(f"{table}/{k}", float(v), step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _append_whole(path: Path, data: bytes) -> None:
    """Append ``data`` (whole CSV rows) to ``path``, all of it or none: a write that fails (a full
    disk) cuts the file back to the rows it held, and a full disk is the one-line
    :class:`train.runtime.files.NoRoomError` (decision 99)."""
    with path.open("ab", buffering=0) as fh:
        start = fh.seek(0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[fh.write(view):]
        except OSError as err:
            fh.truncate(start)
            if err.errno in NO_ROOM:
                raise no_room(err, path.parent, len(data)) from err
            raise


def _keep_rows_up_to(path: Path, step: int) -> list[str] | None:
    """Rewrite the CSV at ``path`` without the rows of steps after ``step``; returns its header."""
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return None
    text = io.StringIO(newline="")
    csv.writer(text).writerows([rows[0], *(r for r in rows[1:] if r and int(r[0]) <= step)])
    atomic_write(text.getvalue().encode(), path)
    return rows[0]


# Bars are drawn by one process (rank 0): tqdm's default lock, a multiprocessing semaphore that a
# killed rank would leave behind (the resource tracker then warns), is replaced by a thread lock.
tqdm.set_lock(threading.RLock())


def progress(iterable: Iterable[Any] | None = None, total: int | None = None, desc: str = "",
             enabled: bool = True, initial: int = 0, every_steps: int = 0,
             every_seconds: float = 30.0) -> tqdm | LineProgress:
    """A tqdm bar with elapsed time and ETA on a terminal; written to a file or a pipe, a
    :class:`LineProgress` instead (tqdm redraws its bar with carriage returns, which a log file
    keeps: hundreds of kilobytes of them). Disabled (no output) off rank 0 or when asked."""
    if enabled and iterable is None and not sys.stderr.isatty():
        return LineProgress(total or 0, desc, initial, every_steps, every_seconds)
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, initial=initial, dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]")


class LineProgress:
    """Progress for log files: one plain line on stderr every ``every_steps`` steps or
    ``every_seconds`` seconds (0: not by that measure) and at the last step, each with the count,
    the values of the latest :meth:`set_postfix`, the steps per second of this process and the
    time left; never a carriage return. The same methods as the tqdm bar it stands in for."""

    def __init__(self, total: int, desc: str, initial: int, every_steps: int, every_seconds: float) -> None:
        self.total, self.desc, self.n = total, desc.strip(), initial
        self.every_steps, self.every_seconds = every_steps, every_seconds
        self.postfix: dict[str, Any] = {}
        self._start_n, self._start = initial, time.monotonic()
        self._written_n, self._written_at = initial, self._start

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        by_steps = self.every_steps and self.n % self.every_steps == 0
        by_time = self.every_seconds and now - self._written_at >= self.every_seconds
        if by_steps or by_time or self.n == self.total:
            self._write(now)

    def close(self) -> None:
        if self.n != self._written_n:
            self._write(time.monotonic())

    def _write(self, now: float) -> None:
        rate = (self.n - self._start_n) / max(now - self._start, 1e-9)
        left = f"{_clock((self.total - self.n) / rate)}" if rate > 0 and self.total >= self.n else "?"
        values = "".join(f" {k}={v}" for k, v in self.postfix.items())
        print(f"{self.desc} {self.n}/{self.total}{values} {rate:.2f} it/s elapsed {_clock(now - self._start)} "
              f"left {left}", file=sys.stderr, flush=True)
        self._written_n, self._written_at = self.n, now


def _clock(seconds: float) -> str:
    """``seconds`` as H:MM:SS."""
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
