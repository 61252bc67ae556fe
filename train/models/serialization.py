"""Space-filling-curve serialization of voxel coordinates (PTv3 spec A1-A2), on the host.

Implements, for integer voxel coordinates ``grid`` (N, 3) = (x, y, z) held in NumPy int64 arrays
(the batch plan computes every code once per batch on the host, decision 40):

- ``z``: Morton order; bit i of x goes to code bit 3i+2, of y to 3i+1, of z to 3i. Each coordinate's
  bits are spread with five shift-and-mask steps (magic numbers), not one step per bit.
- ``hilbert``: Skilling's transpose algorithm in 3-D, dimension 0 = x (spec A2 steps 1-5), run as a
  finite-state machine over the Morton triplets: the algorithm's work on the bits below a level is
  a signed permutation of the three axes (48 states), so a table maps (state, 4 levels of input
  triplets) to (4 levels of Gray triplets, next state); a depth-16 code takes 4 table look-ups.
  Then Gray-to-binary by a prefix XOR in log2(3 * depth) shifts.
- ``z-trans`` / ``hilbert-trans``: the same curves after swapping x and y.
- batch bits: the final code is ``(batch << 3*depth) | code`` so sorting keeps clouds contiguous.

Both curves have the prefix property ``code(g >> 1, depth - 1) == code(g, depth) >> 3`` that
pooling (spec A6) relies on. ``serialized_depth`` applies the spec A1 range checks.
"""
from __future__ import annotations

import numpy as np

ORDERS: tuple[str, ...] = ("z", "z-trans", "hilbert", "hilbert-trans")
MAX_DEPTH = 16
_TABLE_LEVELS = 4  # levels per Hilbert table look-up: 48 states x 8^4 inputs


def serialized_depth(grid_coord: np.ndarray, num_clouds: int) -> int:
    """Curve depth for a batch: ``bit_length(max(grid_coord) + 1)`` (spec A1).

    Raises ValueError when the depth exceeds 16 or the code (3*depth bits plus the batch bits)
    would not fit in a signed int64.
    """
    if grid_coord.size == 0:
        raise ValueError("grid_coord is empty: the batch must contain at least one point")
    if int(grid_coord.min()) < 0:
        raise ValueError(
            "grid_coord has negative entries: voxel indices must be >= 0 "
            "(grid sampling subtracts the per-cloud minimum)"
        )
    depth = (int(grid_coord.max()) + 1).bit_length()
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


def _spread_bits(v: np.ndarray, depth: int) -> np.ndarray:
    """Place bit i (< depth <= 16) of ``v`` at bit 3i (the Morton interleave of one coordinate)."""
    v = v & ((1 << depth) - 1)
    v = (v | (v << 16)) & 0x0000FF0000FF
    v = (v | (v << 8)) & 0x00F00F00F00F
    v = (v | (v << 4)) & 0x0C30C30C30C3
    return (v | (v << 2)) & 0x249249249249


def _interleave(x: np.ndarray, y: np.ndarray, z: np.ndarray, depth: int) -> np.ndarray:
    return (_spread_bits(x, depth) << 2) | (_spread_bits(y, depth) << 1) | _spread_bits(z, depth)


def z_order_encode(grid: np.ndarray, depth: int) -> np.ndarray:
    """Morton code of (N, 3) int64 coordinates; x is the most significant bit of each triplet."""
    return _interleave(grid[:, 0], grid[:, 1], grid[:, 2], depth)


def _hilbert_level_table() -> tuple[np.ndarray, np.ndarray]:
    """One level of Skilling's step 2 as a state machine.

    A state is a signed permutation (perm, flip): the transformed axis i below the current level is
    original axis ``perm[i]`` XOR ``flip[i]``. From a state and the original level triplet u (x in
    bit 2), the transformed triplet t is the level's Gray output; then for d = 0, 1, 2: t_d = 1
    inverts axis 0 below the level, t_d = 0 exchanges axes 0 and d below it. Returns
    ``out[state, u]`` (t, x in bit 2) and ``nxt[state, u]``; state 0 is the identity.
    """
    states = [(p, f) for p in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))
              for f in ((a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1))]
    index = {s: i for i, s in enumerate(states)}
    out = np.zeros((len(states), 8), dtype=np.int64)
    nxt = np.zeros((len(states), 8), dtype=np.int64)
    for s, (perm, flip) in enumerate(states):
        for u in range(8):
            bits = [(u >> (2 - a)) & 1 for a in range(3)]
            t = [bits[perm[i]] ^ flip[i] for i in range(3)]
            axes = [[perm[i], flip[i]] for i in range(3)]
            for d in range(3):
                if t[d]:
                    axes[0][1] ^= 1
                else:
                    axes[0], axes[d] = axes[d], axes[0]
            out[s, u] = (t[0] << 2) | (t[1] << 1) | t[2]
            nxt[s, u] = index[(tuple(a[0] for a in axes), tuple(a[1] for a in axes))]
    return out, nxt


def _hilbert_tables(levels: int) -> list[np.ndarray]:
    """``tables[m-1]``: m levels at once, flat over ``(state << 3m) | u`` (input 3m bits, top level
    first), each entry ``(out << 6) | nxt`` (out: 3m Gray bits; nxt < 48)."""
    out1, nxt1 = _hilbert_level_table()
    tables = [(out1, nxt1)]
    for _ in range(1, levels):
        out_m, nxt_m = tables[-1]
        # m + 1 levels = the top level by the one-level table, then m levels from its next state.
        u = np.arange(8 ** (len(tables) + 1))
        top, rest = u >> (3 * len(tables)), u & ((1 << (3 * len(tables))) - 1)
        mid = nxt1[:, top]
        tables.append(((out1[:, top] << (3 * len(tables))) | out_m[mid, rest], nxt_m[mid, rest]))
    return [((out << 6) | nxt).reshape(-1) for out, nxt in tables]


_HILBERT_TABLES = _hilbert_tables(_TABLE_LEVELS)


def hilbert_encode(grid: np.ndarray, depth: int) -> np.ndarray:
    """3-D Hilbert code (Skilling's algorithm, spec A2) of (N, 3) int64 coordinates."""
    morton = z_order_encode(grid, depth)
    state = np.zeros(len(morton), dtype=np.int64)
    gray = np.zeros(len(morton), dtype=np.int64)
    level = depth  # levels still to do (the lowest ``level`` ones)
    while level > 0:
        m = level % _TABLE_LEVELS or _TABLE_LEVELS
        level -= m
        width = 3 * m
        # one flat look-up per step: entry (state << width) | u holds (gray bits << 6) | next state
        entry = _HILBERT_TABLES[m - 1][(state << width) | ((morton >> (3 * level)) & ((1 << width) - 1))]
        gray |= (entry >> 6) << (3 * level)
        state = entry & 63
    # Step 4: Gray-to-binary, each output bit is the XOR of all bits above and at it.
    shift = 1
    while shift < 3 * depth:
        gray ^= gray >> shift
        shift *= 2
    return gray


def encode(grid: np.ndarray, batch: np.ndarray, depth: int, order: str) -> np.ndarray:
    """Serialization code of one curve with the batch id in the high bits (spec A2).

    ``grid`` (N, 3) int64 voxel coordinates, ``batch`` (N,) int64 cloud ids.
    """
    if order not in ORDERS:
        raise ValueError(f"unknown serialization order {order!r}: choose one of {ORDERS}")
    if grid.dtype != np.int64 or batch.dtype != np.int64:
        raise ValueError("grid and batch must be int64 arrays for serialization")
    if order.endswith("-trans"):
        grid = grid[:, [1, 0, 2]]
    code = z_order_encode(grid, depth) if order.startswith("z") else hilbert_encode(grid, depth)
    return (batch << (3 * depth)) | code


def serialize(
    grid: np.ndarray, batch: np.ndarray, depth: int, orders: tuple[str, ...] = ORDERS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes (k, N), ``order = argsort(code)`` and ``inverse`` with ``inverse[order] = arange``."""
    code = np.stack([encode(grid, batch, depth, o) for o in orders])
    order, inverse = order_and_inverse(code)
    return code, order, inverse


def order_and_inverse(code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorting permutation of every code row and its inverse permutation."""
    order = np.argsort(code, axis=1)
    return order, inverse_permutation(order)


def inverse_permutation(order: np.ndarray) -> np.ndarray:
    """``inverse`` with ``inverse[..., order[..., j]] = j`` for every row of ``order``."""
    inverse = np.empty_like(order)
    np.put_along_axis(inverse, order, np.broadcast_to(np.arange(order.shape[-1]), order.shape), axis=-1)
    return inverse
