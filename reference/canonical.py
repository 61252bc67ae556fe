"""The rotator's canonical frame of a point cloud, DD3D paper Eq. (4) (PCA) and the fixed sign step.

``pca_canonical`` (Eq. 4): each cloud centred and written on the eigenvectors of its covariance
``C = (1/n) (P - P_bar)^T (P - P_bar)``, columns in order of decreasing variance. The eigenvectors'
signs are arbitrary (Eq. 4's sign ambiguity); to make the output a function of its input, each
eigenvector is turned so that its entry of largest magnitude is positive (the first such entry on
an exact tie). That convention is not rotation-invariant: ``sign_canonical`` is what removes the
ambiguity.

``sign_canonical``: the rotator's sign step with a fixed decoder (the paper's Eq. 5-6 with the
learnable vector ``w`` left out, as the released code runs it): axis ``j`` of a cloud is flipped
when ``m_j = mean over points of sin(w0 x_j)`` is negative. ``sin`` is odd, so flipping an axis
flips the sign of its ``m_j``, and after the step every ``m_j >= 0``: composed with
``pca_canonical`` it gives the same cloud for any rotation, reflection or translation of a cloud
whose non-zero principal variances are distinct and whose ``m_j`` are not zero.

Ill-posed clouds (decision 74):

- ``pca_canonical`` refuses (ValueError naming the clouds) a cloud with two principal variances
  within ``PCA_MIN_GAP * lambda_1`` of each other unless both are themselves below
  ``PCA_MIN_GAP * lambda_1``: its frame can be turned freely in their plane, so no frame is
  canonical. Variances that are (near) zero are allowed: the cloud's coordinates on them are zero,
  whatever basis is taken (a collinear or planar cloud, a single point: all zeros).
- ``sign_canonical`` keeps an axis whose ``m_j`` is exactly zero (sign +1, never 0): such an axis
  is left as it is rather than flipped or erased. Near zero the choice follows the rounding of
  ``m_j``; the tests keep their clouds away from it by a stated margin.

Clouds are (B, N, D) arrays (D = 3 for point clouds), N >= 1 points each.
"""
from __future__ import annotations

import numpy as np

PCA_MIN_GAP = 1e-6
"""Two principal variances closer than this fraction of the largest are taken as equal (decision 74)."""


def check_clouds(points: np.ndarray) -> np.ndarray:
    """``points`` as a float64 (B, N, D) array with N >= 1 and D >= 1; ValueError otherwise."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 3 or p.shape[1] < 1 or p.shape[2] < 1:
        raise ValueError(f"points must be a (B, N, D) array of clouds with N >= 1 and D >= 1, got shape {p.shape}")
    return p


def check_w0(w0: float) -> float:
    """``w0`` as a float; ValueError unless it is a finite number > 0."""
    if isinstance(w0, bool) or not isinstance(w0, (int, float)) or not np.isfinite(w0) or w0 <= 0:
        raise ValueError(f"w0 (the frequency of the sine) must be a finite number > 0, got {w0!r}")
    return float(w0)


def degenerate_clouds(variances: np.ndarray) -> np.ndarray:
    """Indices of the clouds whose (B, D) decreasing principal ``variances`` have an ill-posed frame.

    Two neighbouring variances ``l_i >= l_{i+1}`` are ill-posed when ``l_i - l_{i+1} <= g`` while
    ``l_i > g``, with ``g = PCA_MIN_GAP * l_1`` (decision 74).
    """
    lam = np.asarray(variances, dtype=np.float64)
    g = PCA_MIN_GAP * lam[:, :1]
    bad = (lam[:, :-1] - lam[:, 1:] <= g) & (lam[:, :-1] > g)
    return np.flatnonzero(bad.any(axis=1))


def refuse_degenerate(bad: np.ndarray) -> None:
    """ValueError naming the clouds ``bad`` (indices) whose principal axes are not determined."""
    if len(bad):
        raise ValueError(
            f"{len(bad)} cloud(s) have two equal non-zero principal variances (within {PCA_MIN_GAP} of the "
            f"largest), so no principal frame is canonical (decision 74): clouds {bad[:8].tolist()}")


def pca_canonical(points: np.ndarray) -> np.ndarray:
    """Return each (B, N, D) cloud centred, on its principal axes in order of decreasing variance."""
    p = check_clouds(points)
    if not np.all(np.isfinite(p)):
        raise ValueError("points contain NaN/Inf; coordinates must be finite")
    x = p - p.mean(axis=1, keepdims=True)
    cov = np.einsum("bni,bnj->bij", x, x) / p.shape[1]
    lam, u = np.linalg.eigh(cov)  # increasing
    lam, u = lam[:, ::-1], u[:, :, ::-1]
    refuse_degenerate(degenerate_clouds(lam))
    largest = np.argmax(np.abs(u), axis=1)  # (B, D): the row of each column's largest entry
    sign = np.where(np.take_along_axis(u, largest[:, None, :], axis=1) < 0, -1.0, 1.0)
    return np.einsum("bni,bij->bnj", x, u * sign)


def sign_canonical(points: np.ndarray, w0: float = 1.0) -> np.ndarray:
    """Return each (B, N, D) cloud with axis ``j`` negated where ``mean_n sin(w0 x_nj) < 0``."""
    p = check_clouds(points)
    m = np.sin(check_w0(w0) * p).mean(axis=1, keepdims=True)
    return p * np.where(m < 0, -1.0, 1.0)
