"""Serialized patch attention (spec A5): padding rule, SDPA path against a direct per-patch softmax."""
from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from train.models.attention import SerializedAttention, build_patch_layout, patch_attention_sdpa
from train.models.point import PointLevel


def test_padding_example_k5_n12_matches_spec() -> None:
    layout = build_patch_layout(torch.tensor([12]), 5)
    assert layout.full.tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 7, 8, 9]]
    assert layout.short.numel() == 0
    # Points 7, 8, 9 keep the output of their first occurrence (patch 2), 10 and 11 of patch 3.
    assert layout.owner.tolist() == list(range(12))


def test_short_clouds_are_their_own_patch_and_long_clouds_are_padded_per_cloud() -> None:
    layout = build_patch_layout(torch.tensor([12, 15, 22, 27]), 5)
    assert layout.full.tolist() == [
        [0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 7, 8, 9], [15, 16, 17, 18, 19], [20, 21, 17, 18, 19]]
    assert layout.short.tolist() == [[12, 13, 14, 0, 0], [22, 23, 24, 25, 26]]
    assert layout.short_mask.sum(1).tolist() == [3, 5]
    slots = torch.cat([layout.full.flatten(), layout.short.flatten()])
    assert torch.equal(slots[layout.owner], torch.arange(27))


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
    offset = torch.cumsum(torch.tensor(counts), 0)
    fast = patch_attention_sdpa(qkv, build_patch_layout(offset, k), heads)
    torch.testing.assert_close(fast, _direct_attention(qkv, counts, k, heads), rtol=1e-10, atol=1e-10)


def _level(n: int, offset: list[int], seed: int) -> PointLevel:
    gen = torch.Generator().manual_seed(seed)
    order = torch.stack([torch.randperm(n, generator=gen) for _ in range(2)])
    # Keep clouds contiguous in serialized order: sort each row's permutation by cloud id.
    batch = torch.repeat_interleave(torch.arange(len(offset)), torch.diff(torch.tensor([0] + offset)))
    order = torch.stack([row[torch.argsort(batch[row], stable=True)] for row in order])
    inverse = torch.argsort(order, dim=1)
    return PointLevel(
        feat=torch.randn(n, 8, generator=gen, dtype=torch.float64), coord=torch.zeros(n, 3),
        grid_coord=torch.zeros(n, 3, dtype=torch.long), batch=batch, offset=torch.tensor(offset),
        code=torch.zeros(2, n, dtype=torch.long), order=order, inverse=inverse, depth=1,
    )


def test_attention_layer_is_proj_of_patch_attention_in_serialized_order_mapped_back() -> None:
    level = _level(30, [17, 30], seed=1)
    attn = SerializedAttention(8, 2, patch_size=6, backend="sdpa").double()
    for row in (0, 1):
        out = attn(level, level.feat, row)
        order = level.order[row]
        qkv = attn.qkv(level.feat)[order]
        seq = _direct_attention(qkv, [17, 13], 6, 2)
        expected = torch.empty_like(seq)
        expected[order] = seq
        torch.testing.assert_close(out, attn.proj(expected), rtol=1e-10, atol=1e-10)


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
    gen = torch.Generator().manual_seed(4)
    counts = [23, 4, 9, 17]
    qkv = torch.randn(sum(counts), 3 * 8, generator=gen, dtype=torch.float64)
    layout = build_patch_layout(torch.cumsum(torch.tensor(counts), 0), 8)
    order = torch.randperm(sum(counts), generator=gen)
    inverse = torch.argsort(order)
    for args in ((), (order, inverse)):
        torch.testing.assert_close(patch_attention_flash(qkv, layout, 2, *args),
                                   patch_attention_sdpa(qkv, layout, 2, *args), rtol=1e-12, atol=1e-12)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("flash_attn") is None,
                    reason="needs CUDA and flash_attn")
def test_flash_attn_varlen_equals_sdpa_in_bf16() -> None:
    from train.models.attention import patch_attention_flash

    gen = torch.Generator().manual_seed(0)
    counts = [3000, 700, 1500]
    qkv = torch.randn(sum(counts), 3 * 64, generator=gen).cuda().bfloat16()
    layout = build_patch_layout(torch.cumsum(torch.tensor(counts), 0).cuda(), 1024)
    ref = patch_attention_sdpa(qkv.float(), layout, 4)
    torch.testing.assert_close(patch_attention_flash(qkv, layout, 4).float(), ref, rtol=2e-2, atol=2e-2)
