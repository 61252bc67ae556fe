"""Submanifold sparse 3-D convolution in pure PyTorch (spec A3-A4, spec B "submanifold sparse conv").

Output sites equal input sites. For output voxel p and kernel offset o (cross-correlation, the
convention of spconv): ``out[p] = sum_o feat[p + o] @ W[o] (+ bias)``, missing neighbours skipped.

Route (spec B): int64 voxel keys (batch, x, y, z) in mixed radix, sorted once; for every kernel
offset the neighbour of each site is looked up with ``searchsorted``; the convolution is
gather -> matmul -> ``index_add_``. The neighbour map depends only on the level's voxels and the
kernel size, so it is built once per level and shared by every block of the level (encoder and
decoder). Hand-written autograd (``_SubMConvFunction``) so the backward recomputes the gathers
instead of storing one gathered copy of the input per kernel offset.

Weight layout is spconv 2.x's KRSC, ``(C_out, k, k, k, C_in)`` with kernel axes (x, y, z), so a
state dict loads in either implementation. ``backend="spconv"`` runs spconv on CUDA tensors only:
spconv 2.3.8 on CPU returns wrong outputs with more than one OpenMP thread (found while testing
this module against the pure-PyTorch route), so a CPU tensor with that backend raises.
``backend="auto"`` (the default) picks spconv for CUDA tensors when it imports, this module's
convolution otherwise (decision 39).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from train.models.point import PointLevel


@dataclass(frozen=True)
class NeighbourMap:
    """Per kernel offset o: ``in_idx[o]``, ``out_idx[o]`` with ``feat[in_idx]`` feeding ``out[out_idx]``.

    The centre offset is the identity and is stored as ``None``.
    """

    kernel_size: int
    num_points: int
    in_idx: tuple[Optional[torch.Tensor], ...]
    out_idx: tuple[Optional[torch.Tensor], ...]


def build_neighbour_map(grid: torch.Tensor, batch: torch.Tensor, kernel_size: int) -> NeighbourMap:
    """Neighbour map of a submanifold conv over voxels (batch, grid) (spec B).

    Raises ValueError on duplicate voxels (a submanifold conv needs one site per voxel: grid-sample
    the cloud first) or on an even kernel size.
    """
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd for a submanifold conv, got {kernel_size}")
    r = kernel_size // 2
    n = grid.shape[0]
    num_clouds = int(batch.max()) + 1 if n else 1
    side = int(grid.max()) + 1 + 2 * r if n else 1
    if num_clouds * side**3 >= 2**62:
        raise ValueError(f"voxel key overflow: {num_clouds} clouds x side {side}^3 does not fit int64")
    shifted = grid + r
    keys = ((batch * side + shifted[:, 0]) * side + shifted[:, 1]) * side + shifted[:, 2]
    sorted_keys, perm = torch.sort(keys)
    if n > 1 and bool((sorted_keys[1:] == sorted_keys[:-1]).any()):
        raise ValueError(
            "grid_coord holds duplicate voxels inside a cloud: the submanifold convolution needs "
            "one point per voxel (apply grid sampling before the model)"
        )
    k3 = kernel_size**3
    centre = k3 // 2
    in_idx: list[Optional[torch.Tensor]] = [None] * k3
    out_idx: list[Optional[torch.Tensor]] = [None] * k3
    # One binary search per (dx, dy) column of the kernel: z is the last mixed-radix digit, so
    # stepping dz by one adds 1 to the query key, and with unique sorted keys the insertion point of
    # key + 1 is the insertion point of key plus one if key was found. Queries in sorted order keep
    # the searches cache-friendly. Only offsets before the centre are searched (see the mirror).
    for col in range(kernel_size * kernel_size // 2 + 1):
        i0, i1 = divmod(col, kernel_size)
        query = sorted_keys + (((i0 - r) * side + (i1 - r)) * side - r)
        pos = torch.searchsorted(sorted_keys, query)
        for i2 in range(kernel_size):
            k = col * kernel_size + i2
            if k >= centre:
                break
            found = sorted_keys[pos.clamp(max=max(n - 1, 0))] == query
            dst = perm[found]
            src = perm[pos[found]]
            in_idx[k], out_idx[k] = src, dst
            # Submanifold symmetry: p + o = q  <=>  q - o = p, so the mirrored offset swaps the roles.
            in_idx[k3 - 1 - k], out_idx[k3 - 1 - k] = dst, src
            pos = pos + found
            query = query + 1
    return NeighbourMap(kernel_size, n, tuple(in_idx), tuple(out_idx))


def level_neighbour_map(level: PointLevel, kernel_size: int) -> NeighbourMap:
    """The level's cached neighbour map for ``kernel_size`` (built on first use)."""
    key = ("neighbour_map", kernel_size)
    if key not in level.cache:
        level.cache[key] = build_neighbour_map(level.grid_coord, level.batch, kernel_size)
    return level.cache[key]


class _SubMConvFunction(torch.autograd.Function):
    """Gather-matmul-index_add submanifold conv with a backward that re-gathers (saves memory)."""

    @staticmethod
    def forward(ctx: Any, feat: torch.Tensor, weight: torch.Tensor, nmap: NeighbourMap) -> torch.Tensor:
        # weight: (K^3, C_in, C_out)
        centre = weight.shape[0] // 2
        out = feat @ weight[centre]
        for k, (src, dst) in enumerate(zip(nmap.in_idx, nmap.out_idx)):
            if src is None or src.numel() == 0:
                continue
            out.index_add_(0, dst, feat[src] @ weight[k])
        ctx.save_for_backward(feat, weight)
        ctx.nmap = nmap
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor], None]:
        feat, weight = ctx.saved_tensors
        nmap: NeighbourMap = ctx.nmap
        centre = weight.shape[0] // 2
        grad_feat = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_feat = grad_out @ weight[centre].t()
        if ctx.needs_input_grad[1]:
            grad_weight = torch.zeros_like(weight)
            grad_weight[centre] = feat.t() @ grad_out
        for k, (src, dst) in enumerate(zip(nmap.in_idx, nmap.out_idx)):
            if src is None or src.numel() == 0:
                continue
            g = grad_out[dst]
            if grad_feat is not None:
                grad_feat.index_add_(0, src, g @ weight[k].t())
            if grad_weight is not None:
                grad_weight[k] = feat[src].t() @ g
        return grad_feat, grad_weight, None


def submanifold_conv(
    feat: torch.Tensor, weight: torch.Tensor, nmap: NeighbourMap, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Pure-PyTorch submanifold conv; ``weight`` in KRSC layout (C_out, k, k, k, C_in)."""
    c_out, k = weight.shape[0], weight.shape[1]
    if k != nmap.kernel_size or feat.shape[0] != nmap.num_points:
        raise ValueError(
            f"neighbour map (kernel {nmap.kernel_size}, {nmap.num_points} points) does not match "
            f"weight kernel {k} / feat rows {feat.shape[0]}: build the map on the same level"
        )
    if feat.shape[1] != weight.shape[-1]:
        raise ValueError(f"feat has {feat.shape[1]} channels but the conv expects {weight.shape[-1]}")
    w = weight.reshape(c_out, k**3, weight.shape[-1]).permute(1, 2, 0)
    device_type = feat.device.type
    if torch.is_autocast_enabled(device_type):
        # A custom autograd Function is not autocast by itself: run it in the autocast dtype so
        # its backward sees one dtype (the casts are differentiable and restore the fp32 grads).
        dtype = torch.get_autocast_dtype(device_type)
        feat, w = feat.to(dtype), w.to(dtype)
    elif feat.dtype != weight.dtype:
        raise ValueError(
            f"feat is {feat.dtype} but the conv weight is {weight.dtype}: cast the input or the model"
        )
    out = _SubMConvFunction.apply(feat, w, nmap)
    return out if bias is None else out + bias


@functools.cache
def spconv_imports() -> bool:
    """Whether the optional ``spconv`` package imports here (a wheel built for another CUDA fails)."""
    try:
        import spconv.pytorch  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


class SubMConv3d(nn.Module):
    """Submanifold conv layer over a ``PointLevel`` (spec A3 stem k=5, spec A4 CPE k=3).

    ``backend``: ``"auto"`` (default: spconv for CUDA tensors when it imports, else ``"torch"``),
    ``"torch"`` (every device) or ``"spconv"`` (CUDA tensors only, needs the optional ``spconv``
    package; it keeps its own rulebook cache per level).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool, backend: str = "auto"):
        super().__init__()
        if backend not in ("auto", "torch", "spconv"):
            raise ValueError(f"unknown sparse conv backend {backend!r}: use 'auto', 'torch' or 'spconv'")
        self.kernel_size = kernel_size
        self.backend = backend
        self.weight = nn.Parameter(torch.empty(out_channels, kernel_size, kernel_size, kernel_size, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        fan_in = in_channels * kernel_size**3
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, level: PointLevel, feat: torch.Tensor) -> torch.Tensor:
        if self.backend == "spconv" or (self.backend == "auto" and feat.is_cuda and spconv_imports()):
            return self._spconv_forward(level, feat)
        return submanifold_conv(feat, self.weight, level_neighbour_map(level, self.kernel_size), self.bias)

    def _spconv_forward(self, level: PointLevel, feat: torch.Tensor) -> torch.Tensor:
        if not feat.is_cuda:
            raise ValueError(
                "the spconv backend is for CUDA tensors only (spconv on CPU gives wrong results with "
                "several threads): use backend='torch' for CPU tensors"
            )
        import spconv.pytorch as spconv_torch  # optional accelerator, imported only when asked for

        if "spconv" not in level.cache:
            indices = torch.cat([level.batch[:, None], level.grid_coord], 1).int().contiguous()
            shape = (level.grid_coord.max(0).values + 1).tolist()
            level.cache["spconv"] = (indices, shape, {})
        indices, shape, indice_dict = level.cache["spconv"]
        layer = self.__dict__.get("_spconv_layer")  # kept out of the module tree: owns no parameter
        if layer is None:
            layer = spconv_torch.SubMConv3d(
                feat.shape[1], self.weight.shape[0], self.kernel_size, padding=self.kernel_size // 2,
                bias=False, indice_key=f"subm{self.kernel_size}",
            ).to(feat.device)
            if tuple(layer.weight.shape) != tuple(self.weight.shape):
                raise RuntimeError(
                    f"installed spconv uses weight shape {tuple(layer.weight.shape)}, expected KRSC "
                    f"{tuple(self.weight.shape)}: use backend='torch'"
                )
            self.__dict__["_spconv_layer"] = layer
        layer.weight = self.weight  # the module's own parameter, shared with the spconv layer
        tensor = spconv_torch.SparseConvTensor(feat, indices, shape, level.num_clouds)
        tensor.indice_dict = indice_dict  # rulebook shared by all convs of this level
        out = layer(tensor).features
        return out if self.bias is None else out + self.bias
