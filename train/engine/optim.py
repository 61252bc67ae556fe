"""Optimiser and schedule of the PTv3 recipe (spec D; paper App. C.2 "Training Protocol").

AdamW (lr 0.002, weight decay 0.005) with two parameter groups: parameters of the transformer
blocks (their names contain ``block_keyword``) train at ``block_lr_scale`` (0.1) times the base
learning rate, everything else at the base rate. ``torch.optim.lr_scheduler.OneCycleLR`` with one
max_lr per group (pct_start 0.04, cosine annealing, div_factor 10, final_div_factor 100) is stepped
once per iteration, so ``total_steps`` is epochs x iterations per epoch.
"""
from __future__ import annotations

import torch
from torch import nn


def param_groups(
    model: nn.Module, lr: float, weight_decay: float, block_keyword: str = "block", block_lr_scale: float = 0.1
) -> list[dict]:
    """Split trainable parameters into [other, transformer blocks]; raise if no block is found."""
    blocks, other = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (blocks if block_keyword in name else other).append(p)
    if not blocks:
        raise ValueError(
            f"no parameter name contains block_keyword {block_keyword!r}, so the 10x lower learning rate of the "
            "transformer blocks would silently not apply; set --block-keyword to the blocks' name"
        )
    groups = [{"params": blocks, "lr": lr * block_lr_scale, "weight_decay": weight_decay, "name": "blocks"}]
    if other:
        groups.insert(0, {"params": other, "lr": lr, "weight_decay": weight_decay, "name": "other"})
    return groups


def build_optimizer(
    model: nn.Module,
    lr: float = 0.002,
    weight_decay: float = 0.005,
    block_keyword: str = "block",
    block_lr_scale: float = 0.1,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`, fused (decision 39): one multi-tensor kernel per step
    instead of ~12 per parameter tensor, with the step counts kept on the device (the for-loop and
    foreach forms read each one on the host) and GradScaler's overflow flag taken on the device."""
    return torch.optim.AdamW(param_groups(model, lr, weight_decay, block_keyword, block_lr_scale), fused=True)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    pct_start: float = 0.04,
    div_factor: float = 10.0,
    final_div_factor: float = 100.0,
) -> torch.optim.lr_scheduler.OneCycleLR:
    """OneCycleLR peaking at each group's own lr (so blocks keep their 10x lower rate), per iteration."""
    if total_steps < 1:
        raise ValueError(f"OneCycleLR needs total_steps >= 1, got {total_steps}; check --epochs and the data size")
    max_lr = [g["lr"] for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=total_steps,
        pct_start=pct_start,
        anneal_strategy="cos",
        div_factor=div_factor,
        final_div_factor=final_div_factor,
    )
