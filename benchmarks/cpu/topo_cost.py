"""The persistence term's share of a gradient-matching outer iteration (decision 96),
run by ``benchmarks/tests/test_bench_topo_cost.py``.

:func:`measure` reads ``classes`` classes of the generated shapes (``size`` clouds a class, ``points``
a cloud), warms the persistence worker pool, runs ``iterations`` outer iterations of ``method``
with ``--topo reading`` and returns the seconds per iteration and the seconds spent in the term's
calls (TPS, diagrams in the pool, the waits for them and the PWCD forward; the term's backward
runs inside the matching's and is counted on the matching's side), and their ratio, the share.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import torch

from fast.persistence import default_pool
from train.condense.matching import matching_loops
from train.condense.methods.dd3d import distill_dd3d
from train.condense.methods.explicit import distill_explicit
from train.condense.matching.matching_loops import DistillSpec
from train.condense.files.rotator import Rotator
from train.condense.matching.topology_term import Term, target_diagrams, topology_term
from train.data.objects import load_objects
from train.runtime.distributed import DistInfo


def measure(method: str, cpc: int, points: int, classes: int, size: int, iterations: int, reading: str = "shape",
            task: str = "classification") -> dict[str, Any]:
    """One run of ``method`` ("gm" or "dd3d") with the term on, on ``task`` (``parts``: the per-part
    shape reading); seconds per iteration, in the term, its share."""
    torch.set_num_threads(1)
    full = load_objects("shapes", split="train", points=points, size=size, task=task)
    keep = full.labels < classes
    train = dataclasses.replace(full, points=full.points[keep], labels=full.labels[keep],
                                class_names=full.class_names[:classes],
                                parts=None if full.parts is None else full.parts[keep])
    target_diagrams([np.random.default_rng(0).normal(size=(8, 3))], 8, default_pool())  # the pool started, warm
    spent = [0.0]

    def timed(reading_: str | None, weight: float) -> Term | None:
        term = topology_term(reading_, weight)

        def call(*args: Any) -> torch.Tensor:
            start = time.perf_counter()
            value = term(*args)
            spent[0] += time.perf_counter() - start
            return value
        return call

    spec, info = DistillSpec(iterations=iterations, topo=reading, topo_weight=1.0), DistInfo(0, 1, 0,
                                                                                           torch.device("cpu"))
    original = matching_loops.topology_term
    matching_loops.topology_term = timed
    try:
        start = time.perf_counter()
        with TemporaryDirectory() as folder:
            if method == "dd3d":
                _, _, _, history = distill_dd3d(train, cpc, 0, spec, info, Path(folder), Rotator("fixed"))
            else:
                _, _, _, history = distill_explicit(train, cpc, 0, spec, info, method)
        seconds = time.perf_counter() - start
    finally:
        matching_loops.topology_term = original
    return {"status": "ok", "s_per_iteration": seconds / iterations, "term_s_per_iteration": spent[0] / iterations,
            "share": spent[0] / seconds, "finite": bool(np.isfinite(history).all())}
