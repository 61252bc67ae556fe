"""The matching objectives of dataset condensation: DD3D paper Eq. (10)'s distance D and distribution matching.

``gradient_match_distance`` (Eq. 10's ``D``, the layer-wise distance of Dataset Condensation):
each parameter's gradient with two or more dimensions is read as a matrix of output rows,
``(out, -1)``; the distance sums ``1 - <a_r, b_r> / (|a_r| |b_r| + GM_EPS)`` over the rows ``r`` of
every such parameter. Parameters of fewer than two dimensions (biases, norm scales) contribute
nothing. Symmetric in its two arguments; the gradient is returned for ``grads_a`` (the synthetic
side). A zero row gives ``1`` (its cosine counts as 0) and the gradient ``-b_r / GM_EPS`` there, the
norm's subgradient at zero taken as 0 (decision 75).

``distribution_match_loss`` (distribution matching, Zhao and Bilen): the embeddings of each class's
clouds are averaged on both sides, and the loss is the sum over classes of the squared Euclidean
distance between the two means. A class present on one side only is refused (it has no mean to be
matched with); no rows on either side give 0 (decision 75).
"""
from __future__ import annotations

import numpy as np

GM_EPS = 1e-6
"""Added to the product of the row norms in Eq. (10)'s cosine (Dataset Condensation's; decision 75)."""


def check_gradient_pairs(shapes_a: list[tuple[int, ...]], shapes_b: list[tuple[int, ...]]) -> None:
    """ValueError unless the two lists of gradient shapes have the same length and the same shapes."""
    if len(shapes_a) != len(shapes_b) or any(sa != sb for sa, sb in zip(shapes_a, shapes_b)):
        raise ValueError(f"grads_a and grads_b must list the gradients of the same parameters (the same shapes in "
                         f"the same order), got {shapes_a} and {shapes_b}")


def gradient_match_distance(grads_a: list[np.ndarray], grads_b: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
    """Return ``(D, dD/dgrads_a)`` for two lists of gradients of the same parameters."""
    a_list = [np.asarray(g, dtype=np.float64) for g in grads_a]
    b_list = [np.asarray(g, dtype=np.float64) for g in grads_b]
    check_gradient_pairs([a.shape for a in a_list], [b.shape for b in b_list])
    total, grads = 0.0, []
    for a_full, b_full in zip(a_list, b_list):
        if a_full.ndim < 2:
            grads.append(np.zeros_like(a_full))
            continue
        a, b = a_full.reshape(a_full.shape[0], -1), b_full.reshape(b_full.shape[0], -1)
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        den = na * nb + GM_EPS
        dot = np.sum(a * b, axis=1)
        total += float(np.sum(1.0 - dot / den))
        unit_a = a / np.where(na > 0, na, 1.0)[:, None]  # 0 on a zero row (the norm's subgradient there)
        grad = -b / den[:, None] + (dot * nb / den**2)[:, None] * unit_a
        grads.append(grad.reshape(a_full.shape))
    return total, grads


def distribution_match_loss(
    embeddings_a: np.ndarray, labels_a: np.ndarray, embeddings_b: np.ndarray, labels_b: np.ndarray,
) -> tuple[float, np.ndarray]:
    """Return ``(loss, dloss/dembeddings_a)`` for (M, d) and (M', d) embeddings with (M,) and (M',) class ids."""
    ea, eb = (np.asarray(e, dtype=np.float64) for e in (embeddings_a, embeddings_b))
    ya, yb = (np.asarray(y) for y in (labels_a, labels_b))
    for name, e, y in (("a", ea, ya), ("b", eb, yb)):
        if e.ndim != 2 or y.shape != (e.shape[0],) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"embeddings_{name} must be (M, d) with labels_{name} an (M,) integer array, got "
                             f"shapes {e.shape} and {y.shape} ({y.dtype})")
    if ea.shape[1] != eb.shape[1]:
        raise ValueError(f"embeddings_a and embeddings_b must have the same width, got {ea.shape[1]} and {eb.shape[1]}")
    if min(ya.min(initial=0), yb.min(initial=0)) < 0:
        raise ValueError(f"labels must be class ids >= 0, got {min(ya.min(initial=0), yb.min(initial=0))}")
    one_sided = sorted(set(ya.tolist()) ^ set(yb.tolist()))
    if one_sided:
        raise ValueError(f"classes {one_sided[:8]} have clouds on one side only: each class needs a mean on both "
                         "sides (decision 75)")
    loss, grad = 0.0, np.zeros_like(ea)
    for c in np.unique(ya):
        in_a = ya == c
        diff = ea[in_a].mean(axis=0) - eb[yb == c].mean(axis=0)
        loss += float(diff @ diff)
        grad[in_a] = 2.0 * diff / in_a.sum()
    return loss, grad
