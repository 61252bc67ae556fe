"""How the shape reading pairs a synthetic cloud with real ones (decision 96): gradient matching on
explicit clouds without the term and with it under each pairing of
``train.condense.matching.topology_term.PAIRINGS``, and what the clouds end with.

:func:`compare` runs gm on ``classes`` classes of the generated shapes (``size`` clouds a class,
``points`` a cloud) for ``iterations`` outer iterations from ``init`` clouds, once without the
term and once per pairing at ``weight``, and gives for each the shape gaps of the clouds it wrote
(:func:`shape_gaps`: a synthetic cloud's PWCD to the nearest, and the mean over, the diagrams of
every real cloud of its class) and the last iteration's loss.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from train.condense.matching import matching_loops
from train.condense.methods.explicit import distill_explicit
from train.condense.matching.matching_loops import DistillSpec
from train.condense.matching.topology_term import DEFAULT_M, PAIRINGS, RealDiagrams, Term, diagram_distances, shape_term
from train.data.objects import ObjectSet, load_objects
from train.runtime.distributed import DistInfo


def shape_gaps(train: ObjectSet, points: np.ndarray, labels: np.ndarray, m: int = DEFAULT_M) -> dict[str, float]:
    """The mean over synthetic clouds of their PWCD (H0 + H1) to the nearest real diagram of their
    class and the mean over them."""
    kept = RealDiagrams(m)
    nearest, mean = [], []
    for k in np.unique(labels):
        targets = kept(torch.from_numpy(train.points[train.labels == k]).double())
        mine = torch.from_numpy(points[labels == k]).double()
        with torch.no_grad():
            for row in diagram_distances(mine, [targets] * len(mine), m):
                nearest.append(row.min().item())
                mean.append(row.mean().item())
    return {"nearest": float(np.mean(nearest)), "mean": float(np.mean(mean))}


def _term(pairing: str) -> Any:
    def build(reading: str | None, weight: float) -> Term:
        kept = RealDiagrams(DEFAULT_M)
        return lambda net, real, synthetic: weight * shape_term(real[0], synthetic[0], kept, DEFAULT_M, pairing)
    return build


def compare(classes: int, points: int, size: int, iterations: int, weight: float, init: str = "real"
            ) -> dict[str, dict[str, float]]:
    """gm without the term and with it under each pairing: each run's shape gaps and last loss."""
    torch.set_num_threads(1)
    full = load_objects("shapes", split="train", points=points, size=size)
    keep = full.labels < classes
    train = dataclasses.replace(full, points=full.points[keep], labels=full.labels[keep],
                                class_names=full.class_names[:classes])
    info, out = DistInfo(0, 1, 0, torch.device("cpu")), {}
    original = matching_loops.topology_term
    for pairing in ("off", *PAIRINGS):
        topo = None if pairing == "off" else "shape"
        spec = DistillSpec(iterations=iterations, init=init, topo=topo, topo_weight=weight if topo else 0.0)
        matching_loops.topology_term = original if topo is None else _term(pairing)
        try:
            clouds, labels, _, history = distill_explicit(train, 1, 0, spec, info, "gm")
        finally:
            matching_loops.topology_term = original
        out[pairing] = {**shape_gaps(train, clouds, labels), "last_loss": history[-1]}
    return out
