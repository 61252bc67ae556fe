"""What an H1 backend must do, and what the persistence step returns per cloud.

The interface of the "Ripser" / "DiffRipser" steps of paper Algorithm 1 (lines 12-13) and of the
pairing map Pi of Algorithm 3: one function, a distance matrix in, the critical edges of every H1
pair out (decision 3), the engine swappable behind it (see ``docs/design.md``).

* :data:`H1Engine` is the whole contract an H1 backend has to meet: a plain module-level function
  ``engine(dist, deadline) -> (birth_edges, death_edges) | None``. ``fast.persistence`` ships two
  (``giotto`` and ``native``, its default) and accepts any other function with that signature.
* :class:`CloudPersistence` is what the front door returns for each cloud: H0 by our own dense
  Prim, H1 by the engine, values read from our own float64 distances (decision 6a),
  zero-persistence pairs dropped (decision 2).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

H1Engine = Callable[[np.ndarray, Optional[float]], Optional[tuple[np.ndarray, np.ndarray]]]
"""The H1 backend contract.

``engine(dist, deadline)``:

* ``dist``: (M, M) float64 C-contiguous Euclidean distance matrix, symmetric, zero diagonal,
  M >= 1. The engine must treat it as the Vietoris-Rips filtration of decision 1 (no threshold).
* ``deadline``: ``None``, or an absolute ``time.monotonic()`` value (system-wide, so the same in
  every process; made from the cloud's time budget when its H1 starts, by
  ``fast.persistence.deadline_after``). An
  engine that can stop early returns ``None`` once it has passed; one that cannot may ignore it
  (the pool then kills its worker at the deadline).

Returns ``(birth_edges, death_edges)``, both (K, 2) int64 with ``i < j`` per row, one row per
finite H1 pair: the birth edge creates the cycle, the death edge is the longest edge of the
triangle that fills it (decision 3). Pairs may come in any order, and zero-persistence pairs may
be included (the caller drops them with its own float64 distances). Or ``None`` when the deadline
passed. The function must be defined at module level (it is pickled by name to the workers).
"""


@dataclass(frozen=True)
class CloudPersistence:
    """H0 and H1 diagrams of one cloud with their critical edges (indices into its M points).

    Attributes:
        h0_pairs: (K0, 2) float64 (0, death) pairs, death = length of the H0 death edge.
        h0_death_edges: (K0, 2) int64 minimum-spanning-tree edges (i < j).
        h1_pairs: (K1, 2) float64 (birth, death) values read from our float64 distances.
        h1_birth_edges: (K1, 2) int64 edge creating each cycle (i < j).
        h1_death_edges: (K1, 2) int64 longest edge of each filling triangle (i < j).
        h1_over_budget: True when H1 missed the time budget; the H1 arrays are then empty and
            the cloud contributes H0 only (decision 6c).

    Zero-persistence pairs are dropped; pairs of each dimension are ordered by (death, birth).
    """

    h0_pairs: np.ndarray
    h0_death_edges: np.ndarray
    h1_pairs: np.ndarray
    h1_birth_edges: np.ndarray
    h1_death_edges: np.ndarray
    h1_over_budget: bool
