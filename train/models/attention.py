"""Serialized patch attention of PTv3 (spec A5).

Points are gathered in the serialized order of the block's curve and cut, cloud by cloud, into
patches of K points. Padding rule (spec A5): a cloud with n > K is padded to ceil(n/K)*K slots and
the last patch holds the last K points of the cloud's sequence (its first slots repeat points of
the previous patch; only the first occurrence of each point keeps its output). A cloud with
n <= K is one shorter patch of n points; it is never merged with another cloud and K is never
shrunk for the whole batch.

Backends: ``torch.nn.functional.scaled_dot_product_attention`` (every device; full patches in one
call, short clouds in a second call with a key mask), or ``flash_attn`` varlen on CUDA for
fp16/bf16 inputs when the package imports (``backend="auto"``).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from train.models.point import PointLevel, offsets_to_counts


@dataclass(frozen=True)
class PatchLayout:
    """Patches of one level in serialized positions (positions index the serialized sequence).

    ``full`` (P, K): patches of exactly K slots. ``short`` (S, L) with ``short_mask`` (S, L): clouds of
    n <= K points padded to the longest of them (mask False = padding). ``owner`` (N,): for every
    serialized position, the row of its kept output in ``cat(full.flatten(), short.flatten())``.
    """

    full: torch.Tensor
    short: torch.Tensor
    short_mask: torch.Tensor
    owner: torch.Tensor


def build_patch_layout(offset: torch.Tensor, patch_size: int) -> PatchLayout:
    """Patch layout for clouds with END offsets ``offset`` (spec A5 padding rule)."""
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    device = offset.device
    counts = offsets_to_counts(offset).tolist()
    starts = [0] + offset[:-1].tolist()
    full_slots: list[torch.Tensor] = []
    short_clouds: list[tuple[int, int]] = []
    for start, n in zip(starts, counts):
        if n <= patch_size:
            short_clouds.append((start, n))
            continue
        padded = -(-n // patch_size) * patch_size
        j = torch.arange(padded, device=device)
        j = torch.where(j < n, j, j - patch_size)  # last patch = last K points of the cloud
        full_slots.append(start + j)
    full = torch.cat(full_slots).view(-1, patch_size) if full_slots else torch.zeros(0, patch_size, dtype=torch.long, device=device)
    longest = max((n for _, n in short_clouds), default=0)
    short = torch.zeros(len(short_clouds), longest, dtype=torch.long, device=device)
    short_mask = torch.zeros(len(short_clouds), longest, dtype=torch.bool, device=device)
    for row, (start, n) in enumerate(short_clouds):
        short[row, :n] = torch.arange(start, start + n, device=device)
        short_mask[row, :n] = True
    # owner: the first slot holding each position (padding slots come after the real ones).
    total = int(offset[-1])
    slots = torch.cat([full.flatten(), short.flatten()])
    valid = torch.cat([torch.ones(full.numel(), dtype=torch.bool, device=device), short_mask.flatten()])
    slot_ids = torch.arange(slots.numel(), device=device)
    owner = torch.full((total,), slots.numel(), dtype=torch.long, device=device)
    owner.scatter_reduce_(0, slots[valid], slot_ids[valid], reduce="amin")
    return PatchLayout(full, short, short_mask, owner)


def level_patch_layout(level: PointLevel, patch_size: int) -> PatchLayout:
    """The level's cached patch layout (it depends on the cloud sizes only, not on the curve)."""
    key = ("patches", patch_size)
    if key not in level.cache:
        level.cache[key] = build_patch_layout(level.offset, patch_size)
    return level.cache[key]


def _flash_attn_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def patch_attention_sdpa(
    qkv: torch.Tensor, layout: PatchLayout, num_heads: int, order: Optional[torch.Tensor] = None,
    inverse: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Attention within patches with SDPA; ``qkv`` (N, 3C) -> (N, C).

    Without ``order``/``inverse`` the rows of ``qkv`` are already in serialized order. With them,
    rows are points, ``order`` (N,) lists the points in serialized order and ``inverse`` is its
    inverse; the two gathers to and from serialized order are then fused into the patch gathers.
    """
    n, c3 = qkv.shape
    c = c3 // 3
    d = c // num_heads
    outputs = []
    for slots, mask in ((layout.full, None), (layout.short, layout.short_mask)):
        if slots.numel() == 0:
            continue
        p, k = slots.shape
        rows = slots if order is None else order[slots]
        q_, k_, v_ = qkv[rows].view(p, k, 3, num_heads, d).permute(2, 0, 3, 1, 4).unbind(0)
        attn_mask = None if mask is None or bool(mask.all()) else mask[:, None, None, :]
        o = F.scaled_dot_product_attention(q_, k_, v_, attn_mask=attn_mask)
        outputs.append(o.transpose(1, 2).reshape(p * k, c))
    owner = layout.owner if inverse is None else layout.owner[inverse]
    return torch.cat(outputs)[owner]


def patch_attention_flash(
    qkv: torch.Tensor, layout: PatchLayout, num_heads: int, order: Optional[torch.Tensor] = None,
    inverse: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The same computation with ``flash_attn_varlen_qkvpacked_func`` (CUDA, fp16/bf16)."""
    from flash_attn import flash_attn_varlen_qkvpacked_func  # optional accelerator

    n, c3 = qkv.shape
    c = c3 // 3
    lengths = layout.short_mask.sum(1)
    slots = torch.cat([layout.full.flatten(), layout.short[layout.short_mask]])
    rows = slots if order is None else order[slots]
    seqlens = torch.cat([torch.full((layout.full.shape[0],), layout.full.shape[1], device=qkv.device), lengths])
    cu = F.pad(torch.cumsum(seqlens, 0), (1, 0)).to(torch.int32)
    packed = qkv[rows].view(-1, 3, num_heads, c // num_heads)
    out = flash_attn_varlen_qkvpacked_func(packed, cu, int(seqlens.max()), softmax_scale=(c // num_heads) ** -0.5)
    out = out.reshape(-1, c)
    # owner indexes the padded short layout; translate it to the packed (unpadded) layout.
    valid = torch.cat([torch.ones(layout.full.numel(), dtype=torch.long, device=qkv.device),
                       layout.short_mask.flatten().long()])
    packed_pos = torch.cumsum(valid, 0) - 1
    owner = layout.owner if inverse is None else layout.owner[inverse]
    return out[packed_pos[owner]]


class SerializedAttention(nn.Module):
    """Multi-head attention inside serialized patches (spec A5); relative position encoding off."""

    def __init__(self, channels: int, num_heads: int, patch_size: int, backend: str = "auto"):
        super().__init__()
        if channels % num_heads != 0:
            raise ValueError(f"channels {channels} must be divisible by num_heads {num_heads}")
        if backend not in ("auto", "sdpa", "flash"):
            raise ValueError(f"unknown attention backend {backend!r}: use 'auto', 'sdpa' or 'flash'")
        self.num_heads = num_heads
        self.patch_size = patch_size
        self.backend = backend
        self.qkv = nn.Linear(channels, 3 * channels, bias=True)
        self.proj = nn.Linear(channels, channels)

    def _use_flash(self, x: torch.Tensor) -> bool:
        if self.backend == "sdpa":
            return False
        ok = x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and _flash_attn_available()
        if self.backend == "flash" and not ok:
            raise ValueError(
                "attention backend 'flash' needs CUDA fp16/bf16 inputs and the flash_attn package: "
                "use backend='sdpa' or 'auto'"
            )
        return ok

    def forward(self, level: PointLevel, x: torch.Tensor, order_row: int) -> torch.Tensor:
        qkv = self.qkv(x)
        layout = level_patch_layout(level, self.patch_size)
        attend = patch_attention_flash if self._use_flash(qkv) else patch_attention_sdpa
        out = attend(qkv, layout, self.num_heads, level.order[order_row], level.inverse[order_row])
        return self.proj(out)
