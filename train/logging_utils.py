"""Training logs: a CSV row and TensorBoard scalars for every loss term, and tqdm progress bars.

In a DistributedDataParallel run only rank 0 writes or draws; other ranks get no-op objects. The CSV
header is fixed by the first row; later rows with new keys are rejected so a column never silently
shifts. A fresh run replaces an old log; a run resumed at step ``s`` (``resume_step=s``) continues it
after dropping the rows of steps > ``s`` (logged by the killed run after its last checkpoint, and
logged again as they are redone), in the CSV and in TensorBoard (``purge_step``).
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Iterable

from tqdm import tqdm

from train.checkpoint import atomic_write


class MetricLogger:
    """Append-only CSV + optional TensorBoard writer of scalar metrics keyed by global step."""

    def __init__(self, out_dir: str | os.PathLike[str], enabled: bool = True, tensorboard: bool = True,
                 filename: str = "train_log.csv", resume_step: int | None = None) -> None:
        self.enabled = enabled
        self._fields: list[str] | None = None
        self._tb = None
        if not enabled:
            return
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.dir / filename
        if resume_step is None and self.csv_path.exists():
            self.csv_path.unlink()
        if self.csv_path.exists():  # a resumed run appends under the existing header
            self._fields = self._keep_rows_up_to(resume_step)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self._tb = SummaryWriter(log_dir=str(self.dir / "tensorboard"), purge_step=purge)

    def _keep_rows_up_to(self, step: int) -> list[str] | None:
        """Rewrite the CSV without the rows of steps after ``step``; returns its header."""
        with self.csv_path.open(newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            return None
        text = io.StringIO(newline="")
        csv.writer(text).writerows([rows[0], *(r for r in rows[1:] if r and int(r[0]) <= step)])
        atomic_write(text.getvalue().encode(), self.csv_path)
        return rows[0]

    def log(self, step: int, values: dict[str, float], prefix: str = "train") -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: float(v) for k, v in values.items()}}
        if self._fields is None:
            self._fields = list(row)
            with self.csv_path.open("w", newline="") as fh:
                csv.writer(fh).writerow(self._fields)
        missing = set(row) - set(self._fields)
        if missing:
            raise ValueError(f"MetricLogger: new column(s) {sorted(missing)} after the CSV header {self._fields}")
        with self.csv_path.open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self._fields, restval="").writerow(row)
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(f"{prefix}/{k}", float(v), step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def progress(iterable: Iterable[Any] | None = None, total: int | None = None, desc: str = "",
             enabled: bool = True, initial: int = 0) -> tqdm:
    """A tqdm bar with elapsed time and ETA; disabled (no output) off rank 0 or when asked."""
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, initial=initial, dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]")
