"""Critical-edge gradient routing: paper Theorem 1, Eq. (1) and Algorithm 3.

``diagram_grad_to_dist_grad`` turns gradients with respect to diagram coordinates
``(dL/db_k, dL/dd_k)`` into ``G = dL/dD`` (Eq. 1; Algorithm 3 lines 2-28): an H0 birth (always 0)
routes nowhere, an H0 death to its merging edge, an H1 birth to its birth edge, and an H1 death is
split uniformly over the edges of the death triangle whose length is within ``tie_tol`` of the
triangle's maximum (a Clarke subgradient at ties, decisions 4).

``dist_grad_to_feature_grad`` applies the second half of Theorem 1 (Algorithm 3 lines 29-38):
for each ``i < j``, ``dL/dh_i += G_ij (h_i - h_j) / (D_ij + eps_dist)`` and ``dL/dh_j -= ...``
(decisions 5: ``eps_dist`` only prevents 0/0, so duplicated points get a zero gradient, never NaN).

``edge_lengths`` and ``edge_lengths_backward`` are the same routing seen from a list of critical
edges, the form of the twin ``fast.edge_lengths`` (``fast/routing.py``): the lengths
``||h_i - h_j||`` of the edges, and the feature gradient given one gradient per edge (an edge
listed several times accumulates), computed through ``dist_grad_to_feature_grad``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from reference.distances import check_finite_matrix, pairwise_distances
from reference.persistence import Diagram, validate_distance_matrix


def _route_edges(out: np.ndarray, edges: np.ndarray, values: np.ndarray) -> None:
    """Accumulate ``values[k]`` on the undirected edge ``edges[k]`` (both triangles of ``out``)."""
    np.add.at(out, (edges[:, 0], edges[:, 1]), values)
    np.add.at(out, (edges[:, 1], edges[:, 0]), values)


def diagram_grad_to_dist_grad(
    dist: np.ndarray,
    diagrams: Sequence[Diagram],
    grads: Sequence[np.ndarray],
    tie_tol: float = 0.0,
) -> np.ndarray:
    """Gradient of the loss with respect to the distance matrix (Eq. 1, Algorithm 3).

    Args:
        dist: (N, N) distance matrix the diagrams were computed from.
        diagrams: diagrams from ``rips_persistence(dist)`` (any subset of dimensions 0 and 1).
        grads: one (K_d, 2) array per diagram, row k = ``(dL/db_k, dL/dd_k)``.
        tie_tol: H1 death edges within ``tie_tol`` of the death triangle's longest edge share the
            death gradient uniformly (0: exact ties only).

    Returns:
        (N, N) float64 symmetric ``G`` with ``G[i, j] == G[j, i] == dL/dD_ij`` (i < j) and a zero
        diagonal.

    Raises:
        ValueError: invalid ``dist``, mismatched list lengths or gradient shapes, non-finite
            gradients, negative/NaN ``tie_tol``, or critical simplices outside ``dist``.
    """
    d = validate_distance_matrix(dist)
    n = d.shape[0]
    if len(diagrams) != len(grads):
        raise ValueError(
            f"got {len(diagrams)} diagrams but {len(grads)} gradient arrays; pass one (K_d, 2) "
            "gradient array per diagram, in the same order"
        )
    tie_tol = float(tie_tol)
    if not tie_tol >= 0:
        raise ValueError(f"tie_tol must be a finite number >= 0, got {tie_tol!r}")
    out = np.zeros((n, n), dtype=np.float64)
    for idx, (diagram, grad) in enumerate(zip(diagrams, grads)):
        g = np.asarray(grad, dtype=np.float64)
        if g.shape != (len(diagram), 2):
            raise ValueError(
                f"grads[{idx}] has shape {g.shape} but diagram {idx} (H{diagram.dim}) has "
                f"{len(diagram)} pairs; pass a ({len(diagram)}, 2) array of (dL/db, dL/dd)"
            )
        check_finite_matrix(g, f"grads[{idx}]")
        if len(diagram) and int(diagram.death_simplices.max()) >= n:
            raise ValueError(
                f"diagram {idx} refers to vertex {int(diagram.death_simplices.max())} but dist "
                f"has N={n}; pass the distance matrix the diagram was computed from"
            )
        if diagram.dim == 0:
            _route_edges(out, diagram.death_edges, g[:, 1])
        elif diagram.dim == 1:
            _route_edges(out, diagram.birth_edges, g[:, 0])
            tri = diagram.death_simplices
            tri_edges = np.stack([tri[:, [0, 1]], tri[:, [0, 2]], tri[:, [1, 2]]], axis=1)
            lengths = d[tri_edges[..., 0], tri_edges[..., 1]]  # (K, 3)
            tied = np.abs(lengths - lengths.max(axis=1, keepdims=True)) <= tie_tol
            share = g[:, 1:2] / tied.sum(axis=1, keepdims=True)
            k_idx, e_idx = np.nonzero(tied)
            _route_edges(out, tri_edges[k_idx, e_idx], share[k_idx, 0])
        else:
            raise ValueError(f"diagram {idx} has dim {diagram.dim}; only H0 and H1 are routed")
    return out


def dist_grad_to_feature_grad(
    feats: np.ndarray, dist_grad: np.ndarray, eps_dist: float = 1e-12
) -> np.ndarray:
    """Back-propagate ``G = dL/dD`` through ``D_ij = ||h_i - h_j||`` (Theorem 1, decisions 5).

    Args:
        feats: (N, C) features the distances were computed from.
        dist_grad: (N, N) symmetric ``G`` (as returned by ``diagram_grad_to_dist_grad``); each
            undirected edge's ``G_ij`` is counted once.
        eps_dist: stabiliser added to ``D_ij`` in the denominator (> 0).

    Returns:
        (N, C) float64 ``dL/dh`` with ``dL/dh_i = sum_{j != i} G_ij (h_i - h_j) / (D_ij + eps)``.
        Duplicated points (``D_ij = 0``) contribute exactly zero.

    Raises:
        ValueError: bad shapes, NaN/Inf, an asymmetric ``G``, or ``eps_dist <= 0``.
    """
    dist = pairwise_distances(feats)  # validates feats
    h = np.asarray(feats, dtype=np.float64)
    g = np.asarray(dist_grad, dtype=np.float64)
    n = h.shape[0]
    if g.shape != (n, n):
        raise ValueError(
            f"dist_grad has shape {g.shape} but feats has N={n} rows; pass the (N, N) gradient "
            "of the distance matrix of these features"
        )
    check_finite_matrix(g, "dist_grad")
    if not np.array_equal(g, g.T):
        raise ValueError(
            "dist_grad is not symmetric; Theorem 1 gives G_ij == G_ji for the undirected edge "
            "{i, j}: pass G + G.T if only the upper triangle was filled"
        )
    eps_dist = float(eps_dist)
    if not eps_dist > 0:
        raise ValueError(f"eps_dist must be > 0 (it only prevents division by zero), got {eps_dist!r}")
    # Algorithm 3 lines 31-36 over the undirected edges with G_ij != 0 (O(N) of them for
    # routed diagram gradients), with explicit differences h_i - h_j: a matrix form
    # (row sums of G/D times h minus (G/D) h) would cancel catastrophically when D_ij ~ eps.
    out = np.zeros_like(h)
    rows, cols = np.nonzero(np.triu(g, 1))
    chunk = max(1, (1 << 20) // max(1, h.shape[1]))
    for start in range(0, rows.size, chunk):
        i, j = rows[start : start + chunk], cols[start : start + chunk]
        step = (g[i, j] / (dist[i, j] + eps_dist))[:, None] * (h[i] - h[j])
        np.add.at(out, i, step)
        np.add.at(out, j, -step)
    return out


def _as_edges(edges: np.ndarray, n: int) -> np.ndarray:
    """``edges`` as an (E, 2) int64 array of indices below ``n``, or ValueError."""
    e = np.asarray(edges)
    if e.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if e.ndim != 2 or e.shape[1] != 2 or not np.issubdtype(e.dtype, np.integer):
        raise ValueError(f"edges must be an (E, 2) integer array of point indices, got shape {e.shape} dtype {e.dtype}")
    if e.min() < 0 or e.max() >= n:
        raise ValueError(f"edges refer to points outside 0..{n - 1}; pass indices into the rows of feats")
    return e.astype(np.int64)


def edge_lengths(feats: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Lengths (E,) float64 ``||feats[i] - feats[j]||`` of the (E, 2) ``edges`` rows ``(i, j)``."""
    dist = pairwise_distances(feats)  # validates feats
    e = _as_edges(edges, dist.shape[0])
    return dist[e[:, 0], e[:, 1]]


def edge_lengths_backward(
    feats: np.ndarray, edges: np.ndarray, grad_lengths: np.ndarray, eps_dist: float = 1e-12
) -> np.ndarray:
    """Vector-Jacobian product of ``edge_lengths`` with the decision-5 stabiliser (Algorithm 3 lines 29-38).

    ``grad_lengths`` (E,) holds ``dL/dlength`` of each edge; returns the (N, C) ``dL/dfeats``.
    """
    n = pairwise_distances(feats).shape[0]  # validates feats
    e = _as_edges(edges, n)
    g = np.asarray(grad_lengths, dtype=np.float64)
    if g.shape != (len(e),):
        raise ValueError(f"grad_lengths has shape {g.shape} but there are {len(e)} edges; pass one value per edge")
    check_finite_matrix(g, "grad_lengths")
    dist_grad = np.zeros((n, n), dtype=np.float64)
    # Rows as (min, max): both triangles then receive the same sums in the same order (exactly symmetric).
    _route_edges(dist_grad, np.sort(e, axis=1), g)
    return dist_grad_to_feature_grad(feats, dist_grad, eps_dist)
