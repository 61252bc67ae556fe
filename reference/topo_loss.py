"""Feature-space topological distillation loss and its gradient, paper Algorithm 1.

For one cloud (``topo_loss_cloud``): normalise student and teacher features over the cloud
(decision 13), select ``m`` points by TPS on the normalised teacher (Algorithm 5, decision 14), take
the same indices for the student, build both Euclidean distance matrices, compute the H0/H1 Rips
diagrams, and sum the PWCD of each requested dimension (Eq. 2-3, Algorithm 2, decision 11), or one
of the alternative distances (``distance``: Sinkhorn OT, decision 31; persistence images, decision 32).
The gradient with respect to the RAW student features goes PWCD (Algorithm 4; or the alternative's) -> critical edges
(Theorem 1, Eq. 1, Algorithm 3) -> features (decision 5) -> through the normalisation.
The teacher gets no gradient.

For a batch (``topo_loss``, the twin of ``fast.topo_loss``): clouds concatenated along the rows
with END offsets (the PTv3 layout); cloud ``b`` seeds its TPS start with ``seed + b``; the loss is
the mean over clouds.
A subset of one point (``m = 1``) has no finite pair: its loss and gradient are 0.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from reference.distances import pairwise_distances
from reference.normalize import (
    as_features,
    check_mode,
    cloud_slices,
    normalize_cloud,
    normalize_cloud_backward,
)
from reference.persistence import rips_persistence
from reference.persistence_image import DEFAULT_PI_NORM, check_norm, persistence_image_distance
from reference.pwcd import pwcd
from reference.routing import diagram_grad_to_dist_grad, dist_grad_to_feature_grad
from reference.sinkhorn import DEFAULT_SINKHORN_EPS, check_eps, sinkhorn_distance
from reference.tps import tps_cloud

DEFAULT_M = 1024
"""TPS budget M per cloud (paper; decision 14). The one definition: ``fast.topo_loss`` and the
training configuration (``--topo-m``) take their default from here."""

DISTANCES: tuple[str, ...] = ("pwcd", "sinkhorn", "persistence-image")
"""Distances between teacher and student diagrams (``--topo-distance``): the paper's PWCD (Eq. 2-3),
unbalanced Sinkhorn OT (paper Table 11, decision 31), TopKD's persistence images (decision 32)."""


def check_distance(distance: str, sinkhorn_eps: float, pi_norm: str) -> None:
    """Reject an unknown distance or a bad option of one (whichever distance is chosen)."""
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    check_eps(sinkhorn_eps, "sinkhorn_eps")
    check_norm(pi_norm)


def diagram_distance(teacher_pairs: np.ndarray, student_pairs: np.ndarray, distance: str, eps_w: float,
                     sinkhorn_eps: float, pi_norm: str) -> tuple[float, np.ndarray]:
    """``(loss, grad w.r.t. student_pairs)`` of the chosen distance between two diagrams of one dimension."""
    if distance == "sinkhorn":
        return sinkhorn_distance(teacher_pairs, student_pairs, sinkhorn_eps)
    if distance == "persistence-image":
        return persistence_image_distance(teacher_pairs, student_pairs, pi_norm)
    return pwcd(teacher_pairs, student_pairs, eps_w)


def _check_dims(dims: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(d) for d in dims)
    if not out or len(set(out)) != len(out) or not set(out) <= {0, 1}:
        raise ValueError(f"dims must be a non-empty subset of (0, 1) without repeats, got {dims!r}")
    return out


def _check_options(normalize: str, tie_tol: float, eps_w: float, eps_dist: float) -> None:
    """Reject bad scalar options up front (before any cloud is processed)."""
    check_mode(normalize)
    for name, value, low in (("tie_tol", tie_tol, 0.0), ("eps_w", eps_w, None), ("eps_dist", eps_dist, None)):
        ok = np.isfinite(value) and (value >= low if low is not None else value > 0)
        if not ok:
            bound = ">= 0" if low is not None else "> 0"
            raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def _check_pair(student_feats: np.ndarray, teacher_feats: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    S = as_features(student_feats, "student_feats")
    T = as_features(teacher_feats, "teacher_feats")
    if S.shape[0] != T.shape[0]:
        raise ValueError(
            f"student_feats has {S.shape[0]} points but teacher_feats has {T.shape[0]}; both must "
            "hold the same points in the same order"
        )
    if isinstance(m, bool) or int(m) != m or m < 1:
        raise ValueError(f"TPS budget m must be an integer >= 1, got {m!r}")
    return S, T


def _single(
    S: np.ndarray,
    T: np.ndarray,
    m: int,
    seed: int,
    normalize: str,
    tie_tol: float,
    eps_w: float,
    eps_dist: float,
    dims: tuple[int, ...],
    distance: str,
    sinkhorn_eps: float,
    pi_norm: str,
) -> tuple[float, np.ndarray]:
    """Algorithm 1 body for one validated cloud."""
    if S.shape[0] < 2:
        raise ValueError(f"a cloud needs at least 2 points for a topological loss, got {S.shape[0]}")
    S_n = normalize_cloud(S, normalize)
    T_n = normalize_cloud(T, normalize)
    idx = tps_cloud(T_n, m, seed)
    grad = np.zeros_like(S)
    if idx.size < 2:
        return 0.0, grad
    S_sub, T_sub = S_n[idx], T_n[idx]
    D_S, D_T = pairwise_distances(S_sub), pairwise_distances(T_sub)
    maxdim = max(dims)
    dg_S = rips_persistence(D_S, maxdim=maxdim)
    dg_T = rips_persistence(D_T, maxdim=maxdim)
    loss = 0.0
    pair_grads = [np.zeros((len(dg.pairs), 2)) for dg in dg_S]
    for d in dims:
        loss_d, pair_grads[d] = diagram_distance(dg_T[d].pairs, dg_S[d].pairs, distance, eps_w, sinkhorn_eps, pi_norm)
        loss += loss_d
    G = diagram_grad_to_dist_grad(D_S, dg_S, pair_grads, tie_tol=tie_tol)
    grad_sub = dist_grad_to_feature_grad(S_sub, G, eps_dist=eps_dist)
    grad_n = np.zeros_like(S_n)
    grad_n[idx] = grad_sub  # TPS indices are unique
    return loss, normalize_cloud_backward(S, grad_n, normalize)


def topo_loss_cloud(
    student_feats: np.ndarray,
    teacher_feats: np.ndarray,
    m: int = DEFAULT_M,
    seed: int = 0,
    normalize: str = "scale",
    tie_tol: float = 0.0,
    eps_w: float = 1e-8,
    eps_dist: float = 1e-12,
    dims: Sequence[int] = (0, 1),
    distance: str = "pwcd",
    sinkhorn_eps: float = DEFAULT_SINKHORN_EPS,
    pi_norm: str = DEFAULT_PI_NORM,
) -> tuple[float, np.ndarray]:
    """Topological loss of one cloud and its gradient w.r.t. the raw (N, Cs) ``student_feats``.

    ``teacher_feats`` is (N, Ct) for the same N points. ``distance`` compares the diagrams of each
    dimension (:data:`DISTANCES`; ``sinkhorn_eps`` and ``pi_norm`` are the options of the two
    alternatives). Returns ``(loss, grad)`` with ``grad`` of the shape of ``student_feats``.
    """
    S, T = _check_pair(student_feats, teacher_feats, m)
    _check_options(normalize, tie_tol, eps_w, eps_dist)
    check_distance(distance, sinkhorn_eps, pi_norm)
    return _single(S, T, m, seed, normalize, tie_tol, eps_w, eps_dist, _check_dims(dims), distance, sinkhorn_eps,
                   pi_norm)


def topo_loss(
    student_feats: np.ndarray,
    teacher_feats: np.ndarray,
    offsets: Sequence[int] | np.ndarray,
    m: int = DEFAULT_M,
    seed: int = 0,
    normalize: str = "scale",
    tie_tol: float = 0.0,
    eps_w: float = 1e-8,
    eps_dist: float = 1e-12,
    dims: Sequence[int] = (0, 1),
    distance: str = "pwcd",
    sinkhorn_eps: float = DEFAULT_SINKHORN_EPS,
    pi_norm: str = DEFAULT_PI_NORM,
) -> tuple[float, np.ndarray]:
    """Mean of ``topo_loss_cloud`` over concatenated clouds given by END ``offsets``; cloud b uses ``seed + b``.

    Every input is validated before any cloud is processed.
    """
    S, T = _check_pair(student_feats, teacher_feats, m)
    _check_options(normalize, tie_tol, eps_w, eps_dist)
    check_distance(distance, sinkhorn_eps, pi_norm)
    clouds = cloud_slices(offsets, S.shape[0])
    dims_t = _check_dims(dims)
    sizes = np.array([rows.stop - rows.start for rows in clouds])
    if np.any(sizes < 2):
        raise ValueError(f"every cloud needs at least 2 points for a topological loss; cloud sizes are {sizes}")
    B = len(clouds)
    loss = 0.0
    grad = np.zeros_like(S)
    for b, rows in enumerate(clouds):
        loss_b, grad_b = _single(S[rows], T[rows], m, seed + b, normalize, tie_tol, eps_w, eps_dist, dims_t,
                                 distance, sinkhorn_eps, pi_norm)
        loss += loss_b / B
        grad[rows] = grad_b / B
    return loss, grad
