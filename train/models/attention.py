"""Serialized patch attention of PTv3 (spec A5).

Points are gathered in the serialized order of the block's curve and cut, cloud by cloud, into
patches of K points. Padding rule (spec A5): a cloud with n > K is padded to ceil(n/K)*K slots and
the last patch holds the last K points of the cloud's sequence (its first slots repeat points of
the previous patch; only the first occurrence of each point keeps its output). A cloud with
n <= K is one shorter patch of n points; it is never merged with another cloud and K is never
shrunk for the whole batch. The layout (which point fills which slot, which slot's output each
point keeps) is the batch plan's (``train.models.plan.patch_layout``), computed on the host.

Backends: ``torch.nn.functional.scaled_dot_product_attention`` (every device; one call over every
patch of the layer, short clouds padded with a key mask), or ``flash_attn`` varlen on CUDA for
fp16/bf16 inputs when the package imports (``backend="auto"``).
"""
from __future__ import annotations

import importlib.util
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from train.models.point import PointLevel


def flash_attn_available() -> bool:
    """Whether the optional ``flash_attn`` package is installed."""
    return importlib.util.find_spec("flash_attn") is not None


def uses_flash(backend: str, cuda: bool, half: bool) -> bool:
    """Whether attention of ``backend`` ("auto", "sdpa", "flash") runs flash-attn on inputs that are
    (``cuda``) on a CUDA device and (``half``) fp16/bf16: only then, and only with flash_attn installed."""
    return backend != "sdpa" and cuda and half and flash_attn_available()


def patch_attention_sdpa(
    qkv: torch.Tensor, gather: torch.Tensor, scatter: torch.Tensor, mask: Optional[torch.Tensor], num_heads: int,
) -> torch.Tensor:
    """Attention within patches with one SDPA call; ``qkv`` (N, 3C) -> (N, C).

    ``gather`` (R, L): the point of every patch slot; ``scatter`` (N,): the flat slot whose output
    each point keeps; ``mask`` (R, 1, 1, L): additive key mask, -inf on padding (None: all real).
    """
    c = qkv.shape[1] // 3
    r, length = gather.shape
    q, k, v = qkv[gather].view(r, length, 3, num_heads, c // num_heads).permute(2, 0, 3, 1, 4).unbind(0)
    if mask is not None and torch.onnx.is_in_onnx_export():
        q, k = mask_as_channel(q, k, mask)
        out = F.scaled_dot_product_attention(q, k, v, scale=(c // num_heads) ** -0.5)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(r * length, c)[scatter]


def mask_as_channel(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``q``, ``k`` (R, H, L, D) with one more channel, 1 in ``q`` and the additive key ``mask``
    (R, 1, 1, L) in ``k``, so that ``q' k'^T = q k^T + mask`` (with the scale of D, the mask is
    scaled too: 0 stays 0, -inf stays -inf). How the exported graph masks its patches (decision 55):
    ONNX's attention adds an (R, H, L, L) mask to the scores in one more pass over them (30% of the
    student's time on onnxruntime's CPU); the channel costs 1 / D more of one product."""
    ones = q.new_ones(q.shape[:-1] + (1,))
    column = mask.transpose(-1, -2).to(k.dtype).expand(k.shape[:-1] + (1,))
    return torch.cat([q, ones], -1), torch.cat([k, column], -1)


def patch_attention_flash(
    qkv: torch.Tensor, rows: torch.Tensor, scatter: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
    num_heads: int,
) -> torch.Tensor:
    """The same computation with ``flash_attn_varlen_qkvpacked_func`` (CUDA, fp16/bf16) over the
    patches packed without padding: ``rows`` (T,) the point of every packed slot, ``scatter`` (N,)
    the packed slot each point keeps, ``cu_seqlens`` (R + 1,) int32 patch boundaries."""
    from flash_attn import flash_attn_varlen_qkvpacked_func  # optional accelerator

    c = qkv.shape[1] // 3
    packed = qkv[rows].view(-1, 3, num_heads, c // num_heads)
    out = flash_attn_varlen_qkvpacked_func(packed, cu_seqlens, max_seqlen, softmax_scale=(c // num_heads) ** -0.5)
    return out.reshape(-1, c)[scatter]


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
        ok = uses_flash(self.backend, x.is_cuda, x.dtype in (torch.float16, torch.bfloat16))
        if self.backend == "flash" and not ok:
            raise ValueError(
                "attention backend 'flash' needs CUDA fp16/bf16 inputs and the flash_attn package: "
                "use backend='sdpa' or 'auto'"
            )
        return ok

    def forward(self, level: PointLevel, x: torch.Tensor, order_row: int) -> torch.Tensor:
        qkv = self.qkv(x)
        plan, k = level.plan, self.patch_size
        if self._use_flash(qkv):
            rows, scatter, cu, longest = plan.varlen_patches(level.index, k)
            rows, scatter = level.by_curve(("varlen", k), (rows, scatter))
            out = patch_attention_flash(qkv, rows[order_row], scatter[order_row], cu, longest, self.num_heads)
        else:
            gather, scatter = level.by_curve(("patches", k), plan.patches(level.index, k))
            mask = plan.patch_mask(level.index, k, qkv.dtype)
            out = patch_attention_sdpa(qkv, gather[order_row], scatter[order_row], mask, self.num_heads)
        return self.proj(out)
