"""Serialization (spec A1-A2): test vectors, prefix property, curve continuity, batch bits, depth checks."""
from __future__ import annotations

import pytest
import torch
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


def _t(rows: list[tuple[int, int, int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long)


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
    gen = torch.Generator().manual_seed(seed)
    grid = torch.randint(0, 2**depth, (64, 3), generator=gen)
    batch = torch.randint(0, 5, (64,), generator=gen)
    assert torch.equal(encode(grid >> 1, batch, depth - 1, order), encode(grid, batch, depth, order) >> 3)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_hilbert_is_a_bijection_whose_consecutive_cells_are_face_neighbours(depth: int) -> None:
    side = torch.arange(2**depth)
    grid = torch.stack(torch.meshgrid(side, side, side, indexing="ij"), -1).reshape(-1, 3)
    code = hilbert_encode(grid, depth)
    assert torch.equal(torch.sort(code).values, torch.arange(8**depth))
    walk = grid[torch.argsort(code)]
    assert torch.equal((walk[1:] - walk[:-1]).abs().sum(1), torch.ones(8**depth - 1, dtype=torch.long))


def test_trans_variants_swap_x_and_y() -> None:
    gen = torch.Generator().manual_seed(0)
    grid = torch.randint(0, 64, (100, 3), generator=gen)
    batch = torch.zeros(100, dtype=torch.long)
    swapped = grid[:, [1, 0, 2]]
    for base in ("z", "hilbert"):
        assert torch.equal(encode(grid, batch, 6, base + "-trans"), encode(swapped, batch, 6, base))
    assert not torch.equal(encode(grid, batch, 6, "hilbert"), encode(grid, batch, 6, "hilbert-trans"))


def test_batch_bits_keep_clouds_contiguous_in_every_order() -> None:
    gen = torch.Generator().manual_seed(1)
    grid = torch.randint(0, 32, (300, 3), generator=gen)
    batch = torch.randint(0, 3, (300,), generator=gen)
    depth = serialized_depth(grid, 3)
    code, order, inverse = serialize(grid, batch, depth)
    for row in range(len(ORDERS)):
        assert torch.all(torch.diff(batch[order[row]]) >= 0)
        assert torch.equal(code[row] >> (3 * depth), batch)
        assert torch.equal(order[row][inverse[row]], torch.arange(300))


def test_order_and_inverse_are_inverse_permutations() -> None:
    code = torch.randperm(50)[None].repeat(2, 1)
    order, inverse = order_and_inverse(code)
    assert torch.equal(code[0][order[0]], torch.arange(50))
    assert torch.equal(inverse[0][order[0]], torch.arange(50))


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
        encode(_t([(0, 0, 0)]), torch.zeros(1, dtype=torch.long), 1, "peano")
