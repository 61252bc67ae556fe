"""A pathological H1 engine for the time-budget tests (decision 6c): it never finishes on some clouds.

Kept in its own small module because the persistence workers import an engine by its module name.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import numpy as np

from fast.persistence import native_h1


def stalls_on_some_clouds(dist: np.ndarray, deadline: Optional[float]) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """The native engine, except on clouds of at least 16 points (the training's clouds, not the
    warm-up's) whose first point is farther from its second point than from its third (about half
    of them, deterministically): there it ignores the deadline and stalls, as an exact engine can
    on an adversarial cloud, until the pool stops it."""
    if dist.shape[0] >= 16 and dist[0, 1] > dist[0, 2]:
        time.sleep(600.0)
    return native_h1(dist, deadline)


def takes_a_fifth_of_a_second(dist: np.ndarray, deadline: Optional[float]) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """The native engine after 0.2 s of sleep: a cloud whose H1 takes a known, load-independent time."""
    time.sleep(0.2)
    return native_h1(dist, deadline)


def marks_and_stalls(dist: np.ndarray, deadline: Optional[float]) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Writes its process id to the file named by ``STALL_MARK`` as its H1 starts, then stalls on
    every cloud: a worker known to be in the middle of a cloud."""
    Path(os.environ["STALL_MARK"]).write_text(str(os.getpid()))
    time.sleep(600.0)
    return native_h1(dist, deadline)
