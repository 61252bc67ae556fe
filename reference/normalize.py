"""Per-cloud feature normalisation (paper Algorithm 1, Step 1) and its vector-Jacobian product.

Decision 13 (``docs/decisions.md``): one normalisation per cloud, applied to teacher and
student features before TPS and the distance matrices.

- ``scale`` (default): ``(h_i - mean) / (rms + eps)`` with ``rms = sqrt(mean_i ||h_i - mean||^2)``
  over the whole cloud; distances inside the cloud keep their geometry and share a common scale
  between teacher and student whatever their channel counts.
- ``l2``: every feature vector to unit length, ``h_i / (||h_i|| + eps)``.
- ``none``: identity.

``normalize`` takes a batch of concatenated clouds with END offsets, like its twin
``fast.normalize``; ``normalize_cloud`` is the same for one cloud. ``normalize_backward`` and
``normalize_cloud_backward`` are their exact vector-Jacobian products (used to bring the
topological gradient back to the raw student features). ``as_features`` and
``check_end_offsets`` are the shared input checks of the reference functions that take feature
matrices and batched clouds, and ``cloud_slices`` turns validated END offsets into row slices.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from reference.distances import check_finite_matrix

MODES = ("scale", "l2", "none")


def as_features(feats: np.ndarray, name: str) -> np.ndarray:
    """Return ``feats`` as a finite float64 (N, C) array or raise ValueError naming ``name``."""
    arr = np.asarray(feats, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, C) feature matrix, got shape {arr.shape}")
    check_finite_matrix(arr, name)
    return arr


def check_end_offsets(offsets: Sequence[int] | np.ndarray, total: int, name: str) -> np.ndarray:
    """Validate END offsets of concatenated clouds: 1-D ints, strictly increasing, last == total."""
    off = np.asarray(offsets)
    if off.ndim != 1 or off.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of END offsets, got shape {off.shape}")
    if not np.issubdtype(off.dtype, np.integer):
        raise ValueError(f"{name} must hold integers (an int array of END offsets), got dtype {off.dtype}")
    off = off.astype(np.int64)
    if off[0] <= 0 or np.any(np.diff(off) <= 0):
        raise ValueError(
            f"{name} must be strictly increasing positive END offsets (every cloud non-empty), got {off}"
        )
    if off[-1] != total:
        raise ValueError(f"{name} must end at the number of rows {total}, but ends at {off[-1]}")
    return off


def check_mode(mode: str, eps: float = 1e-12) -> None:
    """Raise ValueError unless ``mode`` is one of MODES and ``eps`` is finite and >= 0."""
    if mode not in MODES:
        raise ValueError(f"normalize mode must be one of {MODES}, got {mode!r}")
    if not (np.isfinite(eps) and eps >= 0):
        raise ValueError(f"normalize eps must be finite and >= 0, got {eps}")


def normalize_cloud(feats: np.ndarray, mode: str = "scale", eps: float = 1e-12) -> np.ndarray:
    """Normalise one cloud's (N, C) features with ``mode`` in ``scale`` | ``l2`` | ``none``."""
    check_mode(mode, eps)
    h = as_features(feats, "feats")
    if mode == "none":
        return h.copy()
    if mode == "l2":
        return h / (np.linalg.norm(h, axis=1, keepdims=True) + eps)
    c = h - h.mean(axis=0)
    rms = np.sqrt(np.mean(np.sum(c * c, axis=1)))
    return c / (rms + eps)


def normalize_cloud_backward(
    feats: np.ndarray, grad_out: np.ndarray, mode: str = "scale", eps: float = 1e-12
) -> np.ndarray:
    """Vector-Jacobian product: ``dL/dfeats`` given ``grad_out = dL/dnormalize_cloud(feats)``.

    Where the norm is exactly 0 (``l2`` on a zero vector, ``scale`` on a cloud of identical points)
    the derivative of the norm is taken as 0, so the result stays finite.
    """
    check_mode(mode, eps)
    h = as_features(feats, "feats")
    g = as_features(grad_out, "grad_out")
    if g.shape != h.shape:
        raise ValueError(f"grad_out has shape {g.shape}, feats has {h.shape}; they must match")
    if mode == "none":
        return g.copy()
    if mode == "l2":
        n = np.linalg.norm(h, axis=1, keepdims=True)
        den = n + eps
        gh = np.sum(g * h, axis=1, keepdims=True)
        safe_n = np.where(n > 0, n, 1.0)
        return g / den - np.where(n > 0, gh / den**2 / safe_n, 0.0) * h
    N = h.shape[0]
    c = h - h.mean(axis=0)
    rms = np.sqrt(np.mean(np.sum(c * c, axis=1)))
    den = rms + eps
    # out = c / den, den = rms(c) + eps, d rms / d c = c / (N * rms).
    g_c = g / den
    if rms > 0:
        g_c = g_c - (np.sum(g * c) / den**2) * c / (N * rms)
    return g_c - g_c.mean(axis=0)


def cloud_slices(offsets: Sequence[int] | np.ndarray, rows: int) -> list[slice]:
    """Row slices of the clouds given by validated END ``offsets``."""
    ends = check_end_offsets(offsets, rows, "offsets")
    return [slice(int(lo), int(hi)) for lo, hi in zip(np.concatenate([[0], ends[:-1]]), ends)]


def normalize(
    feats: np.ndarray, offsets: Sequence[int] | np.ndarray, mode: str = "scale", eps: float = 1e-12
) -> np.ndarray:
    """``normalize_cloud`` applied to every cloud of the concatenated (sumN, C) ``feats`` with END ``offsets``."""
    check_mode(mode, eps)
    h = as_features(feats, "feats")
    out = np.empty_like(h)
    for rows in cloud_slices(offsets, h.shape[0]):
        out[rows] = normalize_cloud(h[rows], mode, eps)
    return out


def normalize_backward(
    feats: np.ndarray, offsets: Sequence[int] | np.ndarray, grad_out: np.ndarray, mode: str = "scale",
    eps: float = 1e-12,
) -> np.ndarray:
    """Vector-Jacobian product of ``normalize``: ``normalize_cloud_backward`` per cloud."""
    check_mode(mode, eps)
    h = as_features(feats, "feats")
    g = as_features(grad_out, "grad_out")
    if g.shape != h.shape:
        raise ValueError(f"grad_out has shape {g.shape}, feats has {h.shape}; they must match")
    out = np.empty_like(h)
    for rows in cloud_slices(offsets, h.shape[0]):
        out[rows] = normalize_cloud_backward(h[rows], g[rows], mode, eps)
    return out
