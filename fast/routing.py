"""Critical-edge gradient routing: paper Theorem 1 / Eq. 1, Algorithm 3 lines 29-37.

Torch twin of ``reference.routing`` (``reference.edge_lengths`` with its vector-Jacobian product
``reference.edge_lengths_backward``). The persistence diagram enters the loss here: every birth and
death value the loss uses is the length ``D_ij = ||h_i - h_j||`` of one critical edge (decision 3).
:class:`EdgeLengths` computes those lengths for a list of edges, and its backward is Algorithm 3's
feature step with decision 5, ``dL/dh_i += g_ij (h_i - h_j) / (D_ij + eps_dist)``,
``dL/dh_j -= ...``, done with two ``index_add`` scatters (an edge listed several times
accumulates, like the reference's G).
Only the critical edges (about 3M of the M^2/2) are ever touched, and duplicated points give a
zero gradient instead of the NaN that autograd through ``sqrt`` would give.
"""
from __future__ import annotations

from typing import Any

import torch


class EdgeLengths(torch.autograd.Function):
    """``lengths[e] = ||x[edges[e, 0]] - x[edges[e, 1]]||`` with the decision-5 backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, edges: torch.Tensor, eps_dist: float) -> torch.Tensor:
        diff = x[edges[:, 0]] - x[edges[:, 1]]
        lengths = (diff * diff).sum(dim=1).sqrt()
        ctx.save_for_backward(diff, lengths, edges)
        ctx.eps_dist = eps_dist
        ctx.num_rows = x.shape[0]
        return lengths

    @staticmethod
    def backward(ctx: Any, grad_lengths: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        diff, lengths, edges = ctx.saved_tensors
        step = diff * (grad_lengths / (lengths + ctx.eps_dist))[:, None]
        grad_x = diff.new_zeros(ctx.num_rows, diff.shape[1])
        grad_x.index_add_(0, edges[:, 0], step)
        grad_x.index_add_(0, edges[:, 1], -step)
        return grad_x, None, None


def edge_lengths(feats: torch.Tensor, edges: torch.Tensor, eps_dist: float = 1e-12) -> torch.Tensor:
    """Lengths (E,) of the ``edges`` (E, 2) int64 rows of ``feats`` (R, C); see :class:`EdgeLengths`."""
    if edges.ndim != 2 or edges.shape[1] != 2:
        raise ValueError(f"edges must be an (E, 2) index tensor, got shape {tuple(edges.shape)}")
    return EdgeLengths.apply(feats, edges.to(device=feats.device, dtype=torch.int64), float(eps_dist))
