"""Training logs: CSV rows and TensorBoard scalars of every loss term and of the validation passes
made during training, and tqdm progress bars.

A logger holds one CSV table per kind of row, ``<table>_log.csv`` (``train``: one row per step;
``val``: one row per validation pass of ``--eval-every-epochs``), and one TensorBoard writer whose
tags are ``<table>/<column>``. In a DistributedDataParallel run only rank 0 writes or draws; other
ranks get no-op objects. A table's CSV header is fixed by its first row; later rows with new keys
are rejected so a column never silently shifts. A fresh run replaces the old tables; a run resumed
at step ``s`` (``resume_step=s``) continues them after dropping the rows of steps > ``s`` (logged by
the killed run after its last checkpoint, and logged again as they are redone), in every CSV and
in TensorBoard (``purge_step``).
"""
from __future__ import annotations

import csv
import io
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from tqdm import tqdm

from train.checkpoint import atomic_write


def read_scalars(logs: dict[str, torch.Tensor]) -> dict[str, float]:
    """A step's logged 0-d tensors as floats, read together: one host synchronisation per logged
    step instead of one per term (decision 39). Tensors on the CPU join the device's."""
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
        if fields is None:
            fields = self._fields[table] = list(row)
            with path.open("w", newline="") as fh:
                csv.writer(fh).writerow(fields)
        missing = set(row) - set(fields)
        if missing:
            raise ValueError(f"MetricLogger: new column(s) {sorted(missing)} after the header {fields} of {path}")
        with path.open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=fields, restval="").writerow(row)
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(f"{table}/{k}", float(v), step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


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
             enabled: bool = True, initial: int = 0) -> tqdm:
    """A tqdm bar with elapsed time and ETA; disabled (no output) off rank 0 or when asked."""
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, initial=initial, dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]")
