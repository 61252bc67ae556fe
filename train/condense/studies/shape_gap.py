"""How far a condensed set's clouds are from the real clouds of their class (Table 7 of the study,
decision 97): two measures of shape beside the scores, so that what the persistence term does to
the clouds can be told from what it does to the accuracy.

- ``chamfer``: each synthetic cloud and each real cloud of its class scaled into the unit sphere
  (:func:`train.condense.methods.dd3d.unit_sphere`, as DD3D's sets are), the symmetric Chamfer distance
  (the mean squared distance to the nearest point of the other cloud, both ways, summed) to the
  nearest real cloud; the mean over the set's clouds. It does not see topology, and the term does
  not optimise it.
- ``diagram``: the PWCD (H0 + H1, Eq. 2-3) of each synthetic cloud's diagram to the nearest real
  diagram of its class, normalised and subsampled as the shape reading's
  (:func:`train.condense.matching.topology_term.diagram_distances`); the mean over the set's clouds. It is what
  the shape reading minimises, here against every real cloud of the class (at most
  :data:`REAL_PER_CLASS`, drawn with seed :data:`SEED`) rather than an iteration's batch; the
  real diagrams are kept by the term's own cache (:class:`train.condense.matching.topology_term.RealDiagrams`),
  which the sets of one study share.

Both are measured in the set's frame (the rotated setting's real clouds rotated by the set's
rotator); the diagrams do not depend on it.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from train.condense.files.condensed_file import CondensedSet
from train.condense.matching.controls import chamfer
from train.condense.methods.dd3d import unit_sphere
from train.condense.matching.topology_term import DEFAULT_M, RealDiagrams, diagram_distances
from train.data.objects.cloud import ObjectSet

REAL_PER_CLASS = 64
SEED = 0
CHUNK = 16  # real clouds a Chamfer call compares at once (memory: CHUNK x N x N floats)


def chamfer_to_nearest(cloud: torch.Tensor, real: torch.Tensor) -> float:
    """The symmetric Chamfer distance of ``cloud`` (N, 3) to its nearest cloud among ``real`` (R, M, 3);
    ValueError when ``real`` holds none."""
    if len(real) == 0:
        raise ValueError("no real cloud to measure the distance to")
    return min(float(chamfer(cloud.expand(len(chunk), -1, -1), chunk).min()) for chunk in real.split(CHUNK))


def shape_gap(cset: CondensedSet, real: ObjectSet, diagrams: RealDiagrams | None = None) -> dict[str, Any]:
    """The set's ``chamfer`` and ``diagram`` gaps to ``real`` (the training split in the set's frame,
    or a held-out split), each the mean over the set's clouds (module docstring); ``diagrams`` the
    real clouds' (None: a fresh cache at the term's M). A class of the set that ``real`` has no
    cloud of (a small test split can lack a rare class) is left out of both means and named under
    ``missing``; ValueError when no class of the set has a real cloud there."""
    diagrams = RealDiagrams(DEFAULT_M) if diagrams is None else diagrams
    rng = np.random.default_rng(SEED)
    chamfers, gaps, missing = [], [], []
    for k in np.unique(cset.labels):
        members = np.flatnonzero(real.labels == k)
        if len(members) == 0:
            missing.append(real.class_names[k])
            continue
        picked = rng.permutation(members)[:REAL_PER_CLASS]
        ours = unit_sphere(torch.from_numpy(np.asarray(cset.points[cset.labels == k], dtype=np.float64)))
        theirs = unit_sphere(torch.from_numpy(np.asarray(real.points[picked], dtype=np.float64)))
        chamfers += [chamfer_to_nearest(cloud, theirs) for cloud in ours]
        targets = diagrams(theirs)
        with torch.no_grad():
            gaps += [float(row.min()) for row in diagram_distances(ours, [targets] * len(ours), diagrams.m)]
    if not chamfers:
        raise ValueError(f"no class of the set has a real cloud in this split of {real.name} "
                         f"(missing: {', '.join(missing)})")
    return {"chamfer": float(np.mean(chamfers)), "diagram": float(np.mean(gaps)), "missing": missing}
