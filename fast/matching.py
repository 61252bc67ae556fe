"""The matching objectives of dataset condensation in PyTorch: DD3D paper Eq. (10)'s D and distribution matching.

Twins of ``reference.gradient_match_distance`` and ``reference.distribution_match_loss`` (the
definitions, the zero rows and the one-sided classes: that module and decision 75). Each returns a
scalar tensor differentiable with respect to both arguments (the synthetic side's gradients and
embeddings carry the graph of the clouds they come from: call them on ``torch.autograd.grad(...,
create_graph=True)`` outputs). ``distribution_match_loss`` averages each class with one
``index_add_`` per side; its checks of the class ids are two host reads.
"""
from __future__ import annotations

import torch

from reference.matching import GM_EPS, check_gradient_pairs


def gradient_match_distance(grads_a: list[torch.Tensor], grads_b: list[torch.Tensor]) -> torch.Tensor:
    """Eq. (10)'s ``D``: summed ``1 - cosine`` of the output rows of every gradient of two or more dimensions."""
    check_gradient_pairs([tuple(a.shape) for a in grads_a], [tuple(b.shape) for b in grads_b])
    terms = []
    for a_full, b_full in zip(grads_a, grads_b):
        if a_full.ndim < 2:
            continue
        a, b = a_full.reshape(a_full.shape[0], -1), b_full.reshape(b_full.shape[0], -1)
        den = torch.linalg.vector_norm(a, dim=1) * torch.linalg.vector_norm(b, dim=1) + GM_EPS
        terms.append((1.0 - (a * b).sum(dim=1) / den).sum())
    if not terms:
        dtype = torch.promote_types(grads_a[0].dtype, torch.float32) if grads_a else torch.float32
        return torch.zeros((), dtype=dtype, device=grads_a[0].device if grads_a else None)
    return torch.stack(terms).sum()


def distribution_match_loss(
    embeddings_a: torch.Tensor, labels_a: torch.Tensor, embeddings_b: torch.Tensor, labels_b: torch.Tensor,
) -> torch.Tensor:
    """Sum over classes of ``|mean_a(class) - mean_b(class)|^2`` for (M, d) and (M', d) embeddings."""
    for name, e, y in (("a", embeddings_a, labels_a), ("b", embeddings_b, labels_b)):
        if e.ndim != 2 or tuple(y.shape) != (e.shape[0],) or y.dtype.is_floating_point or y.dtype == torch.bool:
            raise ValueError(f"embeddings_{name} must be (M, d) with labels_{name} an (M,) integer tensor, got "
                             f"shapes {tuple(e.shape)} and {tuple(y.shape)} ({y.dtype})")
    if embeddings_a.shape[1] != embeddings_b.shape[1]:
        raise ValueError(f"embeddings_a and embeddings_b must have the same width, got {embeddings_a.shape[1]} "
                         f"and {embeddings_b.shape[1]}")
    ya, yb = labels_a.to(embeddings_a.device), labels_b.to(embeddings_a.device)
    both = torch.cat([ya, yb])
    low, high = torch.stack([both.min(), both.max()]).tolist() if both.numel() else (0, -1)  # one host read
    if low < 0:
        raise ValueError(f"labels must be class ids >= 0, got {low}")
    means, present = [], []
    for e, y in ((embeddings_a, ya), (embeddings_b, yb)):
        count = torch.bincount(y, minlength=high + 1).to(e.dtype)
        total = torch.zeros(high + 1, e.shape[1], dtype=e.dtype, device=e.device).index_add_(0, y, e)
        means.append(total / count.clamp_min(1.0)[:, None])
        present.append(count > 0)
    one_sided = torch.nonzero(present[0] != present[1]).flatten().tolist()  # the second host read
    if one_sided:
        raise ValueError(f"classes {one_sided[:8]} have clouds on one side only: each class needs a mean on both "
                         "sides (decision 75)")
    diff = means[0] - means[1].to(means[0].dtype)  # a class on neither side: two zero means
    return (diff * diff).sum()
