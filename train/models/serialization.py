"""Space-filling-curve serialization of voxel coordinates (PTv3 spec A1-A2).

Implements, for integer voxel coordinates ``grid`` (N, 3) = (x, y, z):

- ``z``: Morton order; bit i of x goes to code bit 3i+2, of y to 3i+1, of z to 3i.
- ``hilbert``: Skilling's transpose algorithm in 3-D, dimension 0 = x (spec A2 steps 1-5).
- ``z-trans`` / ``hilbert-trans``: the same curves after swapping x and y.
- batch bits: the final code is ``(batch << 3*depth) | code`` so sorting keeps clouds contiguous.

Both curves have the prefix property ``code(g >> 1, depth - 1) == code(g, depth) >> 3`` that
pooling (spec A6) relies on. ``serialized_depth`` applies the spec A1 range checks.
"""
from __future__ import annotations

import torch

ORDERS: tuple[str, ...] = ("z", "z-trans", "hilbert", "hilbert-trans")
MAX_DEPTH = 16


def serialized_depth(grid_coord: torch.Tensor, num_clouds: int) -> int:
    """Curve depth for a batch: ``bit_length(max(grid_coord) + 1)`` (spec A1).

    Raises ValueError when the depth exceeds 16 or the code (3*depth bits plus the batch bits)
    would not fit in a signed int64.
    """
    if grid_coord.numel() == 0:
        raise ValueError("grid_coord is empty: the batch must contain at least one point")
    if int(grid_coord.min()) < 0:
        raise ValueError(
            "grid_coord has negative entries: voxel indices must be >= 0 "
            "(grid sampling subtracts the per-cloud minimum)"
        )
    depth = int(grid_coord.max() + 1).bit_length()
    if depth > MAX_DEPTH:
        raise ValueError(
            f"grid_coord spans {int(grid_coord.max()) + 1} voxels (depth {depth} > {MAX_DEPTH}): "
            "use a coarser grid size or crop the cloud"
        )
    if 3 * depth + int(num_clouds).bit_length() > 63:
        raise ValueError(
            f"{num_clouds} clouds at depth {depth} do not fit in an int64 code "
            "(3*depth + bit_length(B) must be <= 63): use a smaller batch"
        )
    return depth


def _spread_bits(v: torch.Tensor, depth: int) -> torch.Tensor:
    """Place bit i of ``v`` at bit 3i (the Morton interleave of one coordinate)."""
    out = torch.zeros_like(v)
    for i in range(depth):
        out |= ((v >> i) & 1) << (3 * i)
    return out


def _interleave(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, depth: int) -> torch.Tensor:
    return (_spread_bits(x, depth) << 2) | (_spread_bits(y, depth) << 1) | _spread_bits(z, depth)


def z_order_encode(grid: torch.Tensor, depth: int) -> torch.Tensor:
    """Morton code of (N, 3) int64 coordinates; x is the most significant bit of each triplet."""
    return _interleave(grid[:, 0], grid[:, 1], grid[:, 2], depth)


def hilbert_encode(grid: torch.Tensor, depth: int) -> torch.Tensor:
    """3-D Hilbert code (Skilling's algorithm, spec A2) of (N, 3) int64 coordinates."""
    axes = [grid[:, d].clone() for d in range(3)]
    # Step 2: from the top bit level down, undo the excess work of each level.
    for level in range(depth):
        bit = depth - 1 - level
        lower = (1 << bit) - 1
        for d in range(3):
            ones = -((axes[d] >> bit) & 1)  # all bits set where the level bit m is 1, else 0
            flip = lower & ones  # m = 1: invert the lower bits of x
            swap = (axes[0] ^ axes[d]) & lower & ~ones  # m = 0: exchange lower bits of x and axis d
            axes[0] = axes[0] ^ flip ^ swap
            axes[d] = axes[d] ^ swap
    # Step 3: level-major interleave, x first within each level (the Morton layout).
    gray = _interleave(axes[0], axes[1], axes[2], depth)
    # Step 4: Gray-to-binary, each output bit is the XOR of all bits above and at it.
    binary = gray.clone()
    shift = 1
    while shift < 3 * depth:
        binary ^= binary >> shift
        shift *= 2
    return binary


def encode(grid: torch.Tensor, batch: torch.Tensor, depth: int, order: str) -> torch.Tensor:
    """Serialization code of one curve with the batch id in the high bits (spec A2).

    ``grid`` (N, 3) int64 voxel coordinates, ``batch`` (N,) int64 cloud ids.
    """
    if order not in ORDERS:
        raise ValueError(f"unknown serialization order {order!r}: choose one of {ORDERS}")
    if grid.dtype != torch.int64 or batch.dtype != torch.int64:
        raise ValueError("grid and batch must be int64 tensors for serialization")
    if order.endswith("-trans"):
        grid = grid[:, [1, 0, 2]]
    code = z_order_encode(grid, depth) if order.startswith("z") else hilbert_encode(grid, depth)
    return (batch << (3 * depth)) | code


def serialize(
    grid: torch.Tensor, batch: torch.Tensor, depth: int, orders: tuple[str, ...] = ORDERS
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes (k, N), ``order = argsort(code)`` and ``inverse`` with ``inverse[order] = arange``."""
    code = torch.stack([encode(grid, batch, depth, o) for o in orders])
    order, inverse = order_and_inverse(code)
    return code, order, inverse


def order_and_inverse(code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorting permutation of every code row and its inverse permutation."""
    order = torch.argsort(code, dim=1)
    inverse = torch.empty_like(order)
    inverse.scatter_(1, order, torch.arange(code.shape[1], device=code.device).expand_as(order))
    return order, inverse
