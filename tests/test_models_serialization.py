"""Serialization (spec A1-A2): test vectors, prefix property, curve continuity, batch bits, depth
checks, and bitwise equality with the per-bit formulas the table-driven codes replace (decision 40)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from train.models.serialization import (
    ORDERS,
    encode,
    hilbert_encode,
    order_and_inverse,
    serialize,
    serialized_depth,
    z_order_encode,
)


def _t(rows: list[tuple[int, int, int]]) -> np.ndarray:
    return np.array(rows, dtype=np.int64)


def _per_bit_z_order(grid: np.ndarray, depth: int) -> np.ndarray:
    """The oracle: Morton interleave one bit at a time (bit i of x -> 3i+2, y -> 3i+1, z -> 3i)."""
    out = np.zeros(len(grid), dtype=np.int64)
    for i in range(depth):
        for axis, place in ((0, 2), (1, 1), (2, 0)):
            out |= ((grid[:, axis] >> i) & 1) << (3 * i + place)
    return out


def _per_bit_hilbert(grid: np.ndarray, depth: int) -> np.ndarray:
    """The oracle: Skilling's transpose algorithm written level by level and axis by axis (spec A2)."""
    axes = [grid[:, d].copy() for d in range(3)]
    for level in range(depth):
        bit = depth - 1 - level
        lower = (1 << bit) - 1
        for d in range(3):
            ones = -((axes[d] >> bit) & 1)
            flip = lower & ones
            swap = (axes[0] ^ axes[d]) & lower & ~ones
            axes[0] = axes[0] ^ flip ^ swap
            axes[d] = axes[d] ^ swap
    gray = _per_bit_z_order(np.stack(axes, 1), depth)
    binary = np.zeros_like(gray)
    for i in reversed(range(3 * depth)):  # each output bit is the XOR of all gray bits at and above it
        above = (binary >> (i + 1)) & 1
        binary |= (((gray >> i) & 1) ^ above) << i
    return binary


@given(depth=st.integers(1, 16), seed=st.integers(0, 2**31 - 1))
def test_codes_equal_the_per_bit_formulas_bitwise(depth: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 2**depth, (200, 3))
    grid[0] = 2**depth - 1  # every bit set somewhere
    assert np.array_equal(z_order_encode(grid, depth), _per_bit_z_order(grid, depth))
    assert np.array_equal(hilbert_encode(grid, depth), _per_bit_hilbert(grid, depth))


def test_hilbert_depth1_matches_spec_vectors() -> None:
    grid = _t([(0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 0), (1, 1, 0), (1, 1, 1), (1, 0, 1), (1, 0, 0)])
    assert hilbert_encode(grid, 1).tolist() == list(range(8))


def test_z_order_depth2_matches_spec_vectors() -> None:
    assert z_order_encode(_t([(0, 0, 2), (0, 2, 0)]), 2).tolist() == [8, 16]


def test_hilbert_depth2_matches_spec_vectors() -> None:
    assert hilbert_encode(_t([(0, 0, 1), (0, 1, 0), (0, 2, 0)]), 2).tolist() == [7, 1, 30]


def test_z_order_puts_x_in_the_most_significant_bit_of_each_triplet() -> None:
    assert z_order_encode(_t([(1, 0, 0), (0, 1, 0), (0, 0, 1), (2, 0, 0)]), 2).tolist() == [4, 2, 1, 32]


@given(depth=st.integers(2, 16), seed=st.integers(0, 2**31 - 1), order=st.sampled_from(ORDERS))
def test_prefix_property_code_of_parent_voxel_is_code_shifted_by_three(depth: int, seed: int, order: str) -> None:
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 2**depth, (64, 3))
    batch = rng.integers(0, 5, 64)
    assert np.array_equal(encode(grid >> 1, batch, depth - 1, order), encode(grid, batch, depth, order) >> 3)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_hilbert_is_a_bijection_whose_consecutive_cells_are_face_neighbours(depth: int) -> None:
    side = np.arange(2**depth)
    grid = np.stack(np.meshgrid(side, side, side, indexing="ij"), -1).reshape(-1, 3)
    code = hilbert_encode(grid, depth)
    assert np.array_equal(np.sort(code), np.arange(8**depth))
    walk = grid[np.argsort(code)]
    assert np.array_equal(np.abs(walk[1:] - walk[:-1]).sum(1), np.ones(8**depth - 1))


def test_trans_variants_swap_x_and_y() -> None:
    grid = np.random.default_rng(0).integers(0, 64, (100, 3))
    batch = np.zeros(100, dtype=np.int64)
    swapped = grid[:, [1, 0, 2]]
    for base in ("z", "hilbert"):
        assert np.array_equal(encode(grid, batch, 6, base + "-trans"), encode(swapped, batch, 6, base))
    assert not np.array_equal(encode(grid, batch, 6, "hilbert"), encode(grid, batch, 6, "hilbert-trans"))


def test_batch_bits_keep_clouds_contiguous_in_every_order() -> None:
    rng = np.random.default_rng(1)
    grid = rng.integers(0, 32, (300, 3))
    batch = rng.integers(0, 3, 300)
    depth = serialized_depth(grid, 3)
    code, order, inverse = serialize(grid, batch, depth)
    for row in range(len(ORDERS)):
        assert np.all(np.diff(batch[order[row]]) >= 0)
        assert np.array_equal(code[row] >> (3 * depth), batch)
        assert np.array_equal(order[row][inverse[row]], np.arange(300))


def test_order_and_inverse_are_inverse_permutations() -> None:
    code = np.tile(np.random.default_rng(2).permutation(50), (2, 1))
    order, inverse = order_and_inverse(code)
    assert np.array_equal(code[0][order[0]], np.arange(50))
    assert np.array_equal(inverse[0][order[0]], np.arange(50))


def test_depth_is_bit_length_of_max_plus_one() -> None:
    assert serialized_depth(_t([(0, 0, 0), (1, 0, 0)]), 1) == 2
    assert serialized_depth(_t([(0, 0, 0), (0, 7, 0)]), 1) == 4
    assert serialized_depth(_t([(0, 0, 0), (0, 8, 0)]), 1) == 4


def test_depth_over_sixteen_is_rejected_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="coarser grid"):
        serialized_depth(_t([(0, 0, 2**16)]), 1)


def test_batch_too_large_for_int64_code_is_rejected() -> None:
    with pytest.raises(ValueError, match="smaller batch"):
        serialized_depth(_t([(0, 0, 2**16 - 2)]), 2**16)


def test_negative_voxel_indices_are_rejected() -> None:
    with pytest.raises(ValueError, match="negative"):
        serialized_depth(_t([(0, -1, 0)]), 1)


def test_unknown_order_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown serialization order"):
        encode(_t([(0, 0, 0)]), np.zeros(1, dtype=np.int64), 1, "peano")
