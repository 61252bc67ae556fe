"""Serialized patch attention (spec A5): padding rule, SDPA path against a direct per-patch softmax."""
from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from train.models.attention import SerializedAttention, patch_attention_sdpa
from train.models.device_plan import on_device
from train.models.plan import BatchPlan, PatchLayout, patch_layout
from train.models.point import PointLevel


def _identity_layout(counts: list[int], k: int) -> PatchLayout:
    """The layout in the order of the points themselves (one curve, the identity)."""
    n = sum(counts)
    identity = np.arange(n)[None]
    return patch_layout(np.cumsum(counts), identity, identity, k)


def test_padding_example_k5_n12_matches_spec() -> None:
    layout = _identity_layout([12], 5)
    assert layout.gather[0].tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 7, 8, 9]]
    assert layout.mask is None
    # Points 7, 8, 9 keep the output of their first occurrence (patch 2), 10 and 11 of patch 3.
    assert layout.scatter[0].tolist() == list(range(12))


def test_short_clouds_are_their_own_patch_and_long_clouds_are_padded_per_cloud() -> None:
    layout = _identity_layout([12, 3, 7, 5], 5)
    assert layout.gather[0].tolist() == [
        [0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 7, 8, 9], [12, 13, 14, 12, 12],
        [15, 16, 17, 18, 19], [20, 21, 17, 18, 19], [22, 23, 24, 25, 26]]
    assert layout.mask.sum(1).tolist() == layout.lengths.tolist() == [5, 5, 5, 3, 5, 5, 5]
    assert layout.mask[3].tolist() == [True, True, True, False, False]
    assert np.array_equal(layout.gather[0].reshape(-1)[layout.scatter[0]], np.arange(27))


def test_clouds_all_short_share_one_row_width_and_equal_ones_need_no_mask() -> None:
    layout = _identity_layout([3, 4], 8)
    assert layout.gather[0].tolist() == [[0, 1, 2, 0], [3, 4, 5, 6]]
    assert layout.mask.tolist() == [[True, True, True, False], [True] * 4]
    assert _identity_layout([4, 4], 8).mask is None


def _sdpa(qkv: torch.Tensor, layout: PatchLayout, heads: int, row: int = 0) -> torch.Tensor:
    mask = None if layout.mask is None else torch.from_numpy(
        np.where(layout.mask, 0.0, -np.inf)[:, None, None, :]).to(qkv.dtype)
    return patch_attention_sdpa(qkv, torch.from_numpy(layout.gather[row]), torch.from_numpy(layout.scatter[row]),
                                mask, heads)


def _patch_members(start: int, n: int, k: int) -> list[list[int]]:
    """The spec's patches of one cloud written out directly: consecutive K-blocks, the last one
    being the last K points; a cloud of n <= K points is one patch."""
    if n <= k:
        return [list(range(start, start + n))]
    patches = [list(range(start + i, start + i + k)) for i in range(0, n - k + 1, k)]
    if n % k:
        patches.append(list(range(start + n - k, start + n)))
    return patches


def _direct_attention(qkv: torch.Tensor, counts: list[int], k: int, heads: int) -> torch.Tensor:
    n, c3 = qkv.shape
    c = c3 // 3
    d = c // heads
    q, kk, v = qkv.view(n, 3, heads, d).unbind(1)
    out = torch.full((n, c), float("nan"), dtype=qkv.dtype)
    start = 0
    for count in counts:
        for members in _patch_members(start, count, k):
            idx = torch.tensor(members)
            scores = torch.einsum("ihd,jhd->hij", q[idx], kk[idx]) / math.sqrt(d)
            o = torch.einsum("hij,jhd->ihd", scores.softmax(-1), v[idx]).reshape(len(members), c)
            for row, point in enumerate(members):
                if torch.isnan(out[point]).all():  # first occurrence wins
                    out[point] = o[row]
        start += count
    return out


@given(counts=st.lists(st.integers(1, 40), min_size=1, max_size=4), k=st.integers(1, 16),
       heads=st.sampled_from([1, 2, 4]), seed=st.integers(0, 2**31 - 1))
def test_sdpa_patch_attention_equals_direct_softmax_per_patch(counts: list[int], k: int, heads: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(sum(counts), 3 * 4 * heads, generator=gen, dtype=torch.float64)
    fast = _sdpa(qkv, _identity_layout(counts, k), heads)
    torch.testing.assert_close(fast, _direct_attention(qkv, counts, k, heads), rtol=1e-10, atol=1e-10)


def _level(counts: list[int], seed: int) -> PointLevel:
    """Level 0 of the plan of random voxels (one cloud per count), random features."""
    rng = np.random.default_rng(seed)
    grid = np.concatenate([np.stack(np.unravel_index(rng.permutation(512)[:n], (8, 8, 8)), 1) for n in counts])
    plan = BatchPlan(grid, np.cumsum(counts))
    gen = torch.Generator().manual_seed(seed)
    return PointLevel(torch.randn(sum(counts), 8, generator=gen, dtype=torch.float64), on_device(plan, "cpu"))


def test_attention_layer_is_proj_of_patch_attention_in_serialized_order_mapped_back() -> None:
    level = _level([17, 13], seed=1)
    attn = SerializedAttention(8, 2, patch_size=6, backend="sdpa").double()
    for row in range(4):
        out = attn(level, level.feat, row)
        order = torch.from_numpy(level.plan.host.level(0).order[row])
        qkv = attn.qkv(level.feat)[order]
        seq = _direct_attention(qkv, [17, 13], 6, 2)
        expected = torch.empty_like(seq)
        expected[order] = seq
        torch.testing.assert_close(out, attn.proj(expected), rtol=1e-10, atol=1e-10)


def test_a_curve_permutation_makes_block_row_i_read_curve_perm_i() -> None:
    level = _level([40, 9], seed=2)
    attn = SerializedAttention(8, 2, patch_size=16, backend="sdpa").double()
    permuted = PointLevel(level.feat, level.plan, perm=torch.tensor([2, 0, 3, 1]))
    for row, curve in enumerate([2, 0, 3, 1]):
        torch.testing.assert_close(attn(permuted, level.feat, row), attn(level, level.feat, curve), rtol=0, atol=0)


def test_bad_head_count_and_backend_are_rejected() -> None:
    with pytest.raises(ValueError, match="divisible"):
        SerializedAttention(10, 3, 16)
    with pytest.raises(ValueError, match="unknown attention backend"):
        SerializedAttention(8, 2, 16, backend="xformers")


def _reference_varlen_kernel(qkv: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
                             softmax_scale: float) -> torch.Tensor:
    """What flash_attn_varlen_qkvpacked_func computes: softmax attention inside each cu_seqlens segment."""
    assert cu_seqlens.dtype == torch.int32 and int(cu_seqlens[0]) == 0 and int(cu_seqlens[-1]) == qkv.shape[0]
    out = torch.empty(qkv.shape[0], qkv.shape[2], qkv.shape[3], dtype=qkv.dtype)
    bounds = cu_seqlens.tolist()
    assert max_seqlen == max(b - a for a, b in zip(bounds[:-1], bounds[1:]))
    for a, b in zip(bounds[:-1], bounds[1:]):
        q, k, v = qkv[a:b].unbind(1)
        scores = torch.einsum("ihd,jhd->hij", q, k) * softmax_scale
        out[a:b] = torch.einsum("hij,jhd->ihd", scores.softmax(-1), v)
    return out


def test_flash_varlen_packing_equals_the_sdpa_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CUDA-only flash path's packing (slots, cu_seqlens, unpadding) checked on CPU against a
    # reference varlen kernel standing in for flash_attn.
    import sys
    import types

    from train.models.attention import patch_attention_flash

    fake = types.ModuleType("flash_attn")
    fake.flash_attn_varlen_qkvpacked_func = _reference_varlen_kernel
    monkeypatch.setitem(sys.modules, "flash_attn", fake)
    level = _level([23, 4, 9, 17], seed=4)
    gen = torch.Generator().manual_seed(4)
    qkv = torch.randn(53, 3 * 8, generator=gen, dtype=torch.float64)
    rows, packed_scatter, cu, longest = level.plan.varlen_patches(0, 8)
    gather, scatter = level.plan.patches(0, 8)
    mask = level.plan.patch_mask(0, 8, torch.float64)
    for curve in range(4):
        torch.testing.assert_close(
            patch_attention_flash(qkv, rows[curve], packed_scatter[curve], cu, longest, 2),
            patch_attention_sdpa(qkv, gather[curve], scatter[curve], mask, 2), rtol=1e-12, atol=1e-12)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("flash_attn") is None,
                    reason="needs CUDA and flash_attn")
def test_flash_attn_varlen_equals_sdpa_in_bf16() -> None:
    from train.models.attention import patch_attention_flash

    gen = torch.Generator().manual_seed(0)
    counts = [3000, 700, 1500]
    rng = np.random.default_rng(0)
    grid = np.concatenate([np.stack(np.unravel_index(rng.permutation(32**3)[:n], (32,) * 3), 1) for n in counts])
    plan = on_device(BatchPlan(grid, np.cumsum(counts)), "cuda")
    qkv = torch.randn(sum(counts), 3 * 64, generator=gen).cuda().bfloat16()
    gather, scatter = plan.patches(0, 1024)
    ref = patch_attention_sdpa(qkv.float(), gather[0], scatter[0], plan.patch_mask(0, 1024, torch.float32), 4)
    rows, packed_scatter, cu, longest = plan.varlen_patches(0, 1024)
    out = patch_attention_flash(qkv, rows[0], packed_scatter[0], cu, longest, 4)
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)
