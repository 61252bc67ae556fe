"""Submanifold sparse 3-D convolution in pure PyTorch (spec A3-A4, spec B "submanifold sparse conv").

Output sites equal input sites. For output voxel p and kernel offset o (cross-correlation, the
convention of spconv): ``out[p] = sum_o feat[p + o] @ W[o] (+ bias)``, missing neighbours skipped.

Route (decision 40): the batch plan's neighbour table ``table`` (N, K) (K = k^3 offsets, a missing
neighbour pointing at an appended zero row, ``train.models.plan.neighbour_table``) gathers every
neighbour of every point into one (N, K * C_in) matrix, and one GEMM with the weight as
(K * C_in, C_out) gives the output: three kernels per layer (pad, gather, GEMM with the bias). The
hand-written backward has the same shape: the weight gradient is one GEMM of the re-gathered input
(nothing per offset is stored), and the input gradient is the transposed convolution, which for a
submanifold conv is a convolution over the same table with the mirrored kernel (p + o = q <=>
q - o = p): a gather of the output gradient and one GEMM, no scatter. Above ``GATHER_LIMIT``
gathered elements the points are processed in chunks (bounded memory, one gather + GEMM each).

Weight layout is spconv 2.x's KRSC, ``(C_out, k, k, k, C_in)`` with kernel axes (x, y, z), so a
state dict loads in either implementation; ``weight.view(C_out, K * C_in)`` is the GEMM's matrix
as it is. ``backend="spconv"`` runs spconv on CUDA tensors only: spconv 2.3.8 on CPU returns wrong
outputs with more than one OpenMP thread (found while testing this module against the pure-PyTorch
route), so a CPU tensor with that backend raises.
``backend="auto"`` (the default) picks spconv for CUDA tensors when it imports, this module's
convolution otherwise (decision 39).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from train.models.point import PointLevel

# Largest gathered (N, K * C) matrix built at once, in elements (1 GiB of float32): the paper
# presets (4 x 30,000 points, C <= 64 at full resolution, k = 3) stay in one chunk.
GATHER_LIMIT = 2**28


def _gather(src: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``src[table]`` as an (n, K * C) matrix: one ``index_select`` of the flattened table (on a CPU
    1.5-2x faster than the advanced-indexing gather of the same rows, measured at 5,800-30,000 x 27
    rows of 32-128 channels)."""
    return torch.index_select(src, 0, table.reshape(-1)).view(table.shape[0], -1)


def _gather_matmul(src: torch.Tensor, table: torch.Tensor, weight: torch.Tensor,
                   bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``src[table].view(N, K * C) @ weight`` (+ bias) for a padded ``src`` (M + 1, C), chunked over
    the N rows of ``table`` to keep each gathered block under ``GATHER_LIMIT`` elements."""
    n, k = table.shape
    rows = max(1, GATHER_LIMIT // max(k * src.shape[1], 1))
    if n <= rows:
        gathered = _gather(src, table)
        return gathered @ weight if bias is None else torch.addmm(bias, gathered, weight)
    out = src.new_empty(n, weight.shape[1])
    for start in range(0, n, rows):
        gathered = _gather(src, table[start:start + rows])
        if bias is None:
            torch.mm(gathered, weight, out=out[start:start + rows])
        else:
            torch.addmm(bias, gathered, weight, out=out[start:start + rows])
    return out


def _gathered_t_matmul(grad_out: torch.Tensor, src: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``grad_out.t() @ src[table].view(N, K * C)``, chunked like ``_gather_matmul``."""
    n, k = table.shape
    rows = max(1, GATHER_LIMIT // max(k * src.shape[1], 1))
    if n <= rows:
        return grad_out.t() @ _gather(src, table)
    out = grad_out.new_zeros(grad_out.shape[1], k * src.shape[1])
    for start in range(0, n, rows):
        out.addmm_(grad_out[start:start + rows].t(), _gather(src, table[start:start + rows]))
    return out


class _SubMConvFunction(torch.autograd.Function):
    """Gather-GEMM submanifold conv; the backward re-gathers instead of storing the gathered input."""

    @staticmethod
    def forward(ctx: Any, feat: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                table: torch.Tensor) -> torch.Tensor:
        # weight: (C_out, K * C_in), the KRSC weight viewed as a matrix
        padded = F.pad(feat, (0, 0, 0, 1))  # row N: the zero row of the missing neighbours
        ctx.save_for_backward(padded, weight, table)
        ctx.has_bias = bias is not None
        return _gather_matmul(padded, table, weight.t(), bias)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        padded, weight, table = ctx.saved_tensors
        grad_feat = grad_weight = grad_bias = None
        grad_out = grad_out.contiguous()
        if ctx.needs_input_grad[0]:
            c_out, k = weight.shape[0], table.shape[1]
            # transposed conv = the mirrored kernel over the same table: offset o' reads W[K-1-o']^T
            mirrored = weight.view(c_out, k, -1).flip(1).transpose(0, 1).reshape(k * c_out, -1)
            grad_feat = _gather_matmul(F.pad(grad_out, (0, 0, 0, 1)), table, mirrored)
        if ctx.needs_input_grad[1]:
            grad_weight = _gathered_t_matmul(grad_out, padded, table)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum(0)
        return grad_feat, grad_weight, grad_bias, None


def submanifold_conv(
    feat: torch.Tensor, weight: torch.Tensor, table: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Pure-PyTorch submanifold conv; ``weight`` in KRSC layout (C_out, k, k, k, C_in), ``table``
    the (N, k^3) neighbour table of the points (``train.models.plan.neighbour_table``)."""
    c_out, k = weight.shape[0], weight.shape[1]
    if table.shape != (feat.shape[0], k**3):
        raise ValueError(
            f"neighbour table of shape {tuple(table.shape)} does not match weight kernel {k} / feat "
            f"rows {feat.shape[0]}: build the table on the same level with kernel size {k}"
        )
    if feat.shape[1] != weight.shape[-1]:
        raise ValueError(f"feat has {feat.shape[1]} channels but the conv expects {weight.shape[-1]}")
    w = weight.reshape(c_out, -1)
    device_type = feat.device.type
    if torch.is_autocast_enabled(device_type):
        # A custom autograd Function is not autocast by itself: run it in the autocast dtype so
        # its backward sees one dtype (the casts are differentiable and restore the fp32 grads).
        dtype = torch.get_autocast_dtype(device_type)
        feat, w = feat.to(dtype), w.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    elif feat.dtype != weight.dtype:
        raise ValueError(
            f"feat is {feat.dtype} but the conv weight is {weight.dtype}: cast the input or the model"
        )
    return _SubMConvFunction.apply(feat, w, bias, table)


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
        return submanifold_conv(feat, self.weight, level.plan.neighbours(level.index, self.kernel_size), self.bias)

    def _spconv_forward(self, level: PointLevel, feat: torch.Tensor) -> torch.Tensor:
        if not feat.is_cuda:
            raise ValueError(
                "the spconv backend is for CUDA tensors only (spconv on CPU gives wrong results with "
                "several threads): use backend='torch' for CPU tensors"
            )
        import spconv.pytorch as spconv_torch  # optional accelerator, imported only when asked for

        indices, shape, indice_dict = level.plan.spconv_state(level.index)
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
