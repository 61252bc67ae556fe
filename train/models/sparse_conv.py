"""Submanifold sparse 3-D convolution in pure PyTorch (spec A3-A4, spec B "submanifold sparse conv").

Output sites equal input sites. For output voxel p and kernel offset o (cross-correlation, the
convention of spconv): ``out[p] = sum_o feat[p + o] @ W[o] (+ bias)``, missing neighbours skipped.

Route (decision 45): the batch plan's rulebook (``train.models.plan.conv_rulebooks``) lists the
neighbour pairs that exist, grouped by kernel offset into groups of equal size. The forward gathers
every pair's input row at once (one ``index_select``), multiplies each group by its offset's
weight in one batched GEMM (``bmm``), and adds the products into the outputs with one
``index_add_``; the backward has the same shape (the input gradient is the transposed convolution
over the same pairs: gather the output gradient, ``bmm`` with the transposed weights, ``index_add_``
into the inputs; the weight gradient is one ``bmm`` of the re-gathered inputs and one
``index_add_`` over the groups). About eight kernels per layer forward and a dozen backward, and
only the multiply-adds of pairs that exist (the dense gather of decision 40 multiplied every kernel
slot: on LiDAR-like surfaces three to four times as many). Above ``GATHER_LIMIT`` gathered
elements the groups are processed in chunks (bounded memory). ``index_add_`` on CUDA accumulates
with atomics (rounding order varies between runs) unless ``torch.use_deterministic_algorithms``
is on, where PyTorch switches it to a deterministic algorithm; on a CPU it is sequential.

Weight layout is spconv 2.x's KRSC, ``(C_out, k, k, k, C_in)`` with kernel axes (x, y, z), so a
state dict loads in either implementation; viewed as (C_out, K, C_in) and permuted it gives each
offset's (C_in, C_out) matrix without a copy. ``backend="spconv"`` runs spconv on CUDA tensors only: spconv 2.3.8 on CPU returns wrong
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

from train.models.device_plan import DeviceRulebook
from train.models.point import PointLevel

# Largest gathered (P, C) block built at once, in elements (1 GiB of float32): the paper presets
# (4 x 30,000 points, C <= 64 at full resolution, k = 3) stay in one chunk.
GATHER_LIMIT = 2**28


def _chunks(book: DeviceRulebook, channels: int) -> list[tuple[slice, slice]]:
    """(group slice, pair slice) chunks of the rulebook, each gathering <= GATHER_LIMIT elements."""
    groups = book.group_offset.shape[0]
    per = max(1, GATHER_LIMIT // max(book.rows * channels, 1))
    return [(slice(g, min(g + per, groups)), slice(g * book.rows, min(g + per, groups) * book.rows))
            for g in range(0, groups, per)]


def _pair_products(src: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``src[index]`` in one group of rows per weight, each group times its (C_in, C_out) weight."""
    gathered = torch.index_select(src, 0, index).view(weights.shape[0], -1, src.shape[1])
    return torch.bmm(gathered, weights).view(-1, weights.shape[2])


class _SubMConvFunction(torch.autograd.Function):
    """Rulebook submanifold conv; the backward re-gathers instead of storing the gathered input."""

    @staticmethod
    def forward(ctx: Any, feat: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                book: DeviceRulebook) -> torch.Tensor:
        # weight: (K, C_in, C_out), one matrix per kernel offset
        padded = F.pad(feat, (0, 0, 0, 1))  # row N: the zero row that padding pairs read
        out = padded.new_zeros(padded.shape[0], weight.shape[2]) if bias is None else \
            bias.expand(padded.shape[0], -1).contiguous()
        for groups, pairs in _chunks(book, feat.shape[1]):
            weights = torch.index_select(weight, 0, book.group_offset[groups])
            out.index_add_(0, book.scatter[pairs], _pair_products(padded, book.gather[pairs], weights))
        ctx.save_for_backward(padded, weight)
        ctx.book = book
        ctx.has_bias = bias is not None
        return out[:-1]  # row N collected the padding pairs

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        padded, weight = ctx.saved_tensors
        book: DeviceRulebook = ctx.book
        grad_padded = torch.zeros_like(padded) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        grad_rows = F.pad(grad_out.contiguous(), (0, 0, 0, 1))
        for groups, pairs in _chunks(book, max(padded.shape[1], weight.shape[2])):
            offsets = book.group_offset[groups]
            if grad_padded is not None:
                # transposed conv over the same pairs: out-row gradients through W[o]^T into the in-rows
                weights_t = torch.index_select(weight, 0, offsets).transpose(1, 2)
                grad_padded.index_add_(
                    0, book.gather[pairs], _pair_products(grad_rows, book.scatter[pairs], weights_t))
            if grad_weight is not None:
                inputs = torch.index_select(padded, 0, book.gather[pairs]).view(-1, book.rows, padded.shape[1])
                grads = torch.index_select(grad_rows, 0, book.scatter[pairs]).view(-1, book.rows, weight.shape[2])
                grad_weight.index_add_(0, offsets, torch.bmm(inputs.transpose(1, 2), grads))
        grad_feat = None if grad_padded is None else grad_padded[:-1]
        grad_bias = grad_out.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_feat, grad_weight, grad_bias, None


def submanifold_conv(
    feat: torch.Tensor, weight: torch.Tensor, book: DeviceRulebook, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Pure-PyTorch submanifold conv; ``weight`` in KRSC layout (C_out, k, k, k, C_in), ``book``
    the rulebook of the points (``train.models.device_plan.DevicePlan.rulebook``)."""
    c_out, k = weight.shape[0], weight.shape[1]
    if book.offsets != k**3:
        raise ValueError(
            f"rulebook of a {book.offsets}-offset kernel does not match the weight's kernel {k}: build "
            f"it with kernel size {k}"
        )
    if feat.shape[1] != weight.shape[-1]:
        raise ValueError(f"feat has {feat.shape[1]} channels but the conv expects {weight.shape[-1]}")
    w = weight.reshape(c_out, k**3, -1).permute(1, 2, 0)  # (K, C_in, C_out), a view
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
    return _SubMConvFunction.apply(feat, w, bias, book)


class _OffsetConv(torch.autograd.Function):
    """A rulebook's products added into float32 sums ``out`` (N + 1, C_out), kernel offset after
    kernel offset: ``padded`` (N + 1, C_in) the features and a zero row, ``weight`` (K, C_in, C_out),
    ``gather`` / ``scatter`` the real pairs, offset after offset, ``counts`` (K,) the pairs of each, K = ``offsets``.
    In an ONNX graph each offset is one Gather of its input rows, one MatMul with its own weight and
    one ScatterND with reduction "add" (decision 55).

    An offset's pairs write distinct outputs, so no ScatterND adds two rows into one output, and
    the graph is right in runtimes that scatter with several threads: onnxruntime's CPU ScatterND
    adds the rows of duplicate indices from several threads without atomics (wrong sums in 7 of 10
    runs at 2 threads with 300,000 rows into 30,000 outputs), and torch's own export of
    ``index_add`` writes a ScatterElements without reduction, which keeps one row instead of the
    sum. Each offset multiplies its own weight: no per-group copy of the weights, the cost of the
    groups of :func:`submanifold_conv` in a graph (40% of the teacher's time on onnxruntime)."""

    @staticmethod
    def forward(ctx: Any, out: torch.Tensor, padded: torch.Tensor, weight: torch.Tensor, gather: torch.Tensor,
                scatter: torch.Tensor, counts: torch.Tensor, offsets: int) -> torch.Tensor:
        start = 0
        for o, count in enumerate(counts.tolist()):
            pairs = slice(start, start + count)
            out = out.index_add(0, scatter[pairs], (padded[gather[pairs]] @ weight[o]).to(out.dtype))
            start += count
        return out

    @staticmethod
    def symbolic(g: Any, out: Any, padded: Any, weight: Any, gather: Any, scatter: Any, counts: Any,
                 offsets: int) -> Any:
        column = g.op("Unsqueeze", scatter, g.op("Constant", value_t=torch.tensor([1])))
        gathers = g.op("Split", gather, counts, axis_i=0, outputs=offsets)
        scatters = g.op("Split", column, counts, axis_i=0, outputs=offsets)
        for o in range(offsets):
            w = g.op("Gather", weight, g.op("Constant", value_t=torch.tensor(o)), axis_i=0)  # folded: a constant
            rows = g.op("MatMul", g.op("Gather", padded, gathers[o], axis_i=0), w)
            out = g.op("ScatterND", out, scatters[o], g.op("Cast", rows, to_i=1), reduction_s="add")  # float32 sums
        return out


def exported_conv(feat: torch.Tensor, weight: torch.Tensor, book: DeviceRulebook,
                  bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The submanifold convolution as traced into an ONNX graph (decision 55): the sums of
    :func:`submanifold_conv`, one kernel offset at a time (:class:`_OffsetConv`), in float32 (also
    for float16 features); ``book`` holds the real pairs only, offset after offset, and the pairs of
    each offset in ``counts`` (``train.models.graph_inputs.rulebook_pairs``)."""
    c_out, k = weight.shape[0], weight.shape[1]
    w = weight.reshape(c_out, k**3, -1).permute(1, 2, 0)  # (K, C_in, C_out)
    padded = F.pad(feat, (0, 0, 0, 1))
    out = padded.new_zeros(padded.shape[0], c_out, dtype=torch.float32) if bias is None else \
        bias.float().expand(padded.shape[0], -1).contiguous()
    sums = _OffsetConv.apply(out, padded, w, book.gather, book.scatter, book.counts, book.offsets)
    return sums[:-1].to(feat.dtype)  # row N: the zero row's, never written


@functools.cache
def spconv_imports() -> bool:
    """Whether the optional ``spconv`` package imports here (a wheel built for another CUDA fails)."""
    try:
        import spconv.pytorch  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def uses_spconv(backend: str, cuda: bool) -> bool:
    """Whether a convolution of ``backend`` runs spconv on tensors that are (``cuda``) or are not on
    a CUDA device: always for "spconv", for "auto" on CUDA where spconv imports, never for "torch"."""
    return backend == "spconv" or (backend == "auto" and cuda and spconv_imports())


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
        if torch.onnx.is_in_onnx_export():  # the exported graph's convolution, whatever the backend (decision 55)
            return exported_conv(feat, self.weight, level.plan.rulebook(level.index, self.kernel_size), self.bias)
        if uses_spconv(self.backend, feat.is_cuda):
            return self._spconv_forward(level, feat)
        return submanifold_conv(feat, self.weight, level.plan.rulebook(level.index, self.kernel_size), self.bias)

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
