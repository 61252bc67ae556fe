"""Neighbourhood operators of the object backbones, on (B, N, C) batches of equal-sized clouds.

Written once and shared by every backbone of the package (plain PyTorch, CPU and CUDA):

- ``farthest_point_sample``: the greedy k-center rule of ``reference.tps`` (paper Algorithm 5 of
  the distillation paper, Gonzalez 1985) batched: ties to the lowest index, selected points
  excluded, every cloud starting at its index 0 as PointNet++'s sampler does (decision 67); its
  numpy oracle is ``reference.farthest_point_sample``.
- ``knn``: the k nearest points of every query point, nearest first (DGCNN, PCT, PointMLP).
- ``ball_query``: PointNet++'s grouping (Qi et al. 2017b, Sec. 3.2): the first ``nsample`` points
  in index order inside the open ball of radius r, the row padded with its first point.
- ``gather_points``: rows of a (B, N, C) tensor at (B, ...) indices; ``edge_features``, the
  EdgeConv input ``[f_j - f_i, f_i]`` of DGCNN (Wang et al. 2019, Eq. 8) that PCT's neighbour
  embedding also takes.
- ``interpolate``: PointNet++'s feature propagation (Sec. 3.4, Eq. 2): inverse squared distance
  weights over the 3 nearest points.

Distances are squared Euclidean distances ``|a|^2 + |b|^2 - 2 a.b`` (clamped at 0): one matrix
product, where the difference form would hold a (B, M, N, C) tensor (DGCNN's 1,024-point clouds
in 64 feature channels). Sampling and search run without gradient; features flow through
``gather_points`` and ``interpolate``.
"""
from __future__ import annotations

import torch


def check_clouds(points: torch.Tensor, name: str = "points") -> None:
    """Raise ValueError unless ``points`` is a (B, N, 3) floating batch with B, N >= 1 (finiteness
    is the data sets' check: testing it here would synchronise every forward with the host)."""
    if points.dim() != 3 or points.shape[-1] != 3 or not points.is_floating_point():
        raise ValueError(f"{name} must be a (B, N, 3) float tensor, got {tuple(points.shape)} {points.dtype}")
    if points.shape[0] == 0 or points.shape[1] == 0:
        raise ValueError(f"{name} must hold at least one cloud of at least one point, got {tuple(points.shape)}")


def check_category(category: torch.Tensor, points: torch.Tensor, num_categories: int) -> None:
    """Raise ValueError unless ``category`` is a (B, K) batch (the one-hot object categories of the
    part segmenters) matching the (B, N, 3) ``points``."""
    if category.shape != (points.shape[0], num_categories):
        raise ValueError(f"category must be the (B, K) = ({points.shape[0]}, {num_categories}) one-hot "
                         f"object categories, got {tuple(category.shape)}")


def square_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, M, N) squared distances between the rows of (B, M, C) ``a`` and (B, N, C) ``b``."""
    d = (a * a).sum(-1, keepdim=True) + (b * b).sum(-1).unsqueeze(1) - 2.0 * a @ b.transpose(1, 2)
    return d.clamp_min_(0.0)


@torch.no_grad()
def farthest_point_sample(points: torch.Tensor, m: int) -> torch.Tensor:
    """(B, m) int64 farthest-point indices of the (B, N, C) ``points``, in selection order.

    Cloud ``b`` starts at index 0; every next index maximises the distance to the selected set,
    ties going to the lowest index, selected points excluded (so duplicated points never repeat an
    index); ``1 <= m <= N``. The same indices as ``reference.farthest_point_sample``.
    """
    B, N, _ = points.shape
    if isinstance(m, bool) or int(m) != m or not 1 <= m <= N:
        raise ValueError(f"farthest-point sample size m must be an integer in [1, N = {N}], got {m!r}")
    rows = torch.arange(B, device=points.device)
    idx = torch.zeros(B, int(m), dtype=torch.int64, device=points.device)
    d_min = torch.full((B, N), float("inf"), dtype=points.dtype, device=points.device)
    last = idx[:, 0]
    for k in range(1, int(m)):
        d = ((points - points[rows, last].unsqueeze(1)) ** 2).sum(-1)  # the difference form: exact ties
        d_min = torch.minimum(d_min, d)
        d_min[rows, last] = -float("inf")
        last = d_min.argmax(dim=1)  # argmax returns the first maximiser
        idx[:, k] = last
    return idx


@torch.no_grad()
def knn(query: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """(B, M, k) int64 indices of the ``k`` points of (B, N, C) ``points`` nearest to each row of
    (B, M, C) ``query``, nearest first (a query point of ``points`` is its own first neighbour);
    the order among exactly tied distances is unspecified."""
    n = points.shape[1]
    if isinstance(k, bool) or int(k) != k or not 1 <= k <= n:
        raise ValueError(f"k nearest neighbours needs an integer k in [1, N = {n}], got {k!r}")
    return square_distances(query, points).topk(int(k), dim=-1, largest=False, sorted=True).indices


@torch.no_grad()
def ball_query(query: torch.Tensor, points: torch.Tensor, radius: float, nsample: int) -> torch.Tensor:
    """(B, M, nsample) int64 indices: for each row of (B, M, 3) ``query`` the first ``nsample``
    points of (B, N, 3) ``points`` (in index order) at distance < ``radius``; a row with fewer
    (always so when nsample > N) is padded with its first index, and a query with none takes its
    nearest point."""
    n = points.shape[1]
    if isinstance(nsample, bool) or int(nsample) != nsample or nsample < 1:
        raise ValueError(f"ball query needs an integer nsample >= 1, got {nsample!r}")
    if not radius > 0:
        raise ValueError(f"ball query radius must be > 0, got {radius!r}")
    d = square_distances(query, points)
    order = torch.arange(n, device=points.device).expand_as(d)
    key = torch.where(d < radius * radius, order, torch.full_like(order, n))
    idx = key.topk(min(int(nsample), n), dim=-1, largest=False, sorted=True).values  # valid keys are distinct
    idx = torch.cat([idx, torch.full_like(idx[..., :1], n).expand(*idx.shape[:-1], int(nsample) - idx.shape[-1])], -1)
    first = torch.where(idx[..., :1] == n, d.argmin(dim=-1, keepdim=True), idx[..., :1])
    return torch.where(idx == n, first, idx)


def gather_points(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows of (B, N, C) ``x`` at the (B, ...) indices ``idx``: (B, ..., C)."""
    rows = torch.arange(x.shape[0], device=x.device).view(-1, *([1] * (idx.dim() - 1)))
    return x[rows, idx]


def edge_features(feats: torch.Tensor, centre_feats: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, M, k, 2C) ``[f_j - f_i, f_i]`` for the (B, M, k) neighbours ``j`` (rows of (B, N, C)
    ``feats``) of every centre ``i`` (rows of (B, M, C) ``centre_feats``)."""
    neighbours = gather_points(feats, idx)
    centre = centre_feats.unsqueeze(2).expand_as(neighbours)
    return torch.cat([neighbours - centre, centre], -1)


def interpolate(xyz: torch.Tensor, known_xyz: torch.Tensor, known_feats: torch.Tensor) -> torch.Tensor:
    """Features (B, N, C) at the (B, N, 3) ``xyz`` from (B, M, C) ``known_feats`` at (B, M, 3)
    ``known_xyz``: weights ``1 / (d^2 + 1e-8)`` over the 3 nearest known points (all of them when
    M < 3), normalised to sum 1 (PointNet++ Eq. 2 with p = 2, k = 3)."""
    k = min(3, known_xyz.shape[1])
    with torch.no_grad():
        d = square_distances(xyz, known_xyz).topk(k, dim=-1, largest=False, sorted=True)
    w = 1.0 / (d.values + 1e-8)
    w = w / w.sum(-1, keepdim=True)
    return (gather_points(known_feats, d.indices) * w.unsqueeze(-1)).sum(2)
