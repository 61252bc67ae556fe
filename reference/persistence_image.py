"""TopKD's persistence-image distance between two persistence diagrams, and its gradient (decision 32).

TopKD (Kim et al., "topology distillation with persistence images") compares the persistence
images of teacher and student embeddings. Its image of a diagram, as decision 32 fixes it:

- each pair (b, d) becomes the point u = (x, y) = (b, d - b) (birth, persistence);
- u carries the weight ``w(x, y) = 10 (tanh(y) + ln(100 x + 1))`` and a Gaussian of standard
  deviation ``sigma`` around it; pixel (r, c) holds the integral of ``sum_u w(u) g_u`` over the
  pixel, which for a Gaussian is a product of two differences of ``erf``;
- the image is ``PI_RESOLUTION x PI_RESOLUTION`` pixels over the square domain
  ``[b_lo, b_lo + L] x [0, L]``, with ``b_lo`` the teacher's smallest birth and ``L`` the larger of
  the teacher's birth range and its largest persistence (from the student if the teacher diagram
  is empty; 1 if that is 0); ``sigma = PI_SIGMA * L``. The domain is a constant of the loss.

The distance is the mean over pixels of ``(I_T - I_S)^2`` (``norm="l2"``) or ``|I_T - I_S|``
(``norm="l1"``). Unlike TopKD, which learns a RipsNet to approximate the images, both images are
computed exactly from the diagrams, and the gradient reaches the student's features through the
critical edges of its pairs (``reference.topo_loss``).
"""
from __future__ import annotations

import numpy as np

from reference.pwcd import _as_pairs

PI_RESOLUTION = 20
"""Pixels per side of a persistence image (TopKD: a 20 x 20 grid)."""
PI_SIGMA = 0.05
"""Standard deviation of the Gaussian kernel as a fraction of the domain side L (one pixel)."""
PI_NORMS: tuple[str, ...] = ("l2", "l1")
DEFAULT_PI_NORM = "l2"
"""TopKD's distance between images. The one definition: ``--pi-norm`` and ``fast`` use it."""


def check_norm(norm: str) -> str:
    if norm not in PI_NORMS:
        raise ValueError(f"norm (persistence-image distance) must be one of {PI_NORMS}, got {norm!r}")
    return norm


def check_births(pairs: np.ndarray, name: str) -> None:
    if np.any(pairs[:, 0] < 0):
        raise ValueError(f"{name} has negative births; the persistence-image weight ln(100 b + 1) needs "
                         "births >= 0 (Rips diagrams have them)")


def image_domain(P: np.ndarray, Q: np.ndarray) -> tuple[float, float]:
    """``(b_lo, L)`` of the square domain: from the teacher ``P``, or the student ``Q`` if ``P`` is empty."""
    ref = P if len(P) else Q
    b_lo = float(ref[:, 0].min())
    side = max(float(ref[:, 0].max()) - b_lo, float((ref[:, 1] - ref[:, 0]).max()))
    return b_lo, side if side > 0 else 1.0


def _axis(centres: np.ndarray, lo: float, side: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian mass in each pixel along one axis (K, R) and its derivative in the centre."""
    edges = lo + side * np.linspace(0.0, 1.0, PI_RESOLUTION + 1)
    s = PI_SIGMA * side * np.sqrt(2.0)
    z = (edges[None, :] - centres[:, None]) / s  # (K, R + 1)
    from scipy.special import erf  # imported on use: importing reference stays numpy-only (decision 38)

    mass = 0.5 * np.diff(erf(z), axis=1)
    dens = np.exp(-z * z) / (np.sqrt(np.pi) * s)
    return mass, -np.diff(dens, axis=1)


def persistence_image(pairs: np.ndarray, b_lo: float, side: float) -> tuple[np.ndarray, tuple]:
    """(R, R) image (rows: persistence, columns: birth) of ``pairs`` on the domain, and what its VJP needs."""
    x, y = pairs[:, 0], pairs[:, 1] - pairs[:, 0]
    w = 10.0 * (np.tanh(y) + np.log1p(100.0 * x))
    fx, dfx = _axis(x, b_lo, side)
    fy, dfy = _axis(y, 0.0, side)
    image = np.einsum("k,kr,kc->rc", w, fy, fx)
    return image, (x, y, w, fx, dfx, fy, dfy)


def persistence_image_backward(parts: tuple, grad_image: np.ndarray) -> np.ndarray:
    """(K, 2) gradient w.r.t. the (birth, death) pairs of ``sum(grad_image * image)``."""
    x, y, w, fx, dfx, fy, dfy = parts
    gx_of = np.einsum("rc,kr,kc->k", grad_image, fy, fx)  # d/dw
    g_ux = (1000.0 / (100.0 * x + 1.0)) * gx_of + w * np.einsum("rc,kr,kc->k", grad_image, fy, dfx)
    g_uy = 10.0 * (1.0 - np.tanh(y) ** 2) * gx_of + w * np.einsum("rc,kr,kc->k", grad_image, dfy, fx)
    return np.stack([g_ux - g_uy, g_uy], axis=1)  # (x, y) = (b, d - b)


def persistence_image_distance(
    teacher_pairs: np.ndarray, student_pairs: np.ndarray, norm: str = DEFAULT_PI_NORM
) -> tuple[float, np.ndarray]:
    """TopKD distance between the persistence images of two diagrams, and its gradient.

    Args:
        teacher_pairs: (M, 2) teacher (birth, death) pairs, births >= 0 (constants).
        student_pairs: (K, 2) student pairs, births >= 0.
        norm: ``l2`` (mean squared pixel difference) or ``l1`` (mean absolute difference).

    Returns:
        ``(loss, grad)`` with ``grad`` the (K, 2) gradient w.r.t. ``student_pairs`` (the domain is a
        constant). Both diagrams empty: ``(0, zeros)``.
    """
    P = _as_pairs(teacher_pairs, "teacher_pairs")
    Q = _as_pairs(student_pairs, "student_pairs")
    check_norm(norm)
    check_births(P, "teacher_pairs")
    check_births(Q, "student_pairs")
    grad = np.zeros((len(Q), 2))
    if len(P) == 0 and len(Q) == 0:
        return 0.0, grad
    b_lo, side = image_domain(P, Q)
    image_t, _ = persistence_image(P, b_lo, side)
    image_s, parts = persistence_image(Q, b_lo, side)
    diff = image_s - image_t
    pixels = PI_RESOLUTION * PI_RESOLUTION
    if norm == "l2":
        loss, grad_image = float(np.sum(diff * diff)) / pixels, 2.0 * diff / pixels
    else:
        loss, grad_image = float(np.sum(np.abs(diff))) / pixels, np.sign(diff) / pixels
    if len(Q):
        grad = persistence_image_backward(parts, grad_image)
    return loss, grad
