"""AdamW parameter groups and the OneCycleLR schedule of spec D (train/engine/optim.py)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from train.models import build_model
from train.engine.optim import build_optimizer, build_scheduler, param_groups


def test_transformer_block_parameters_train_at_a_tenth_of_the_learning_rate() -> None:
    model = build_model("student-demo", 22)
    groups = param_groups(model, lr=0.002, weight_decay=0.005)
    by_name = {g["name"]: g for g in groups}
    assert by_name["other"]["lr"] == 0.002 and by_name["blocks"]["lr"] == pytest.approx(0.0002)
    assert all(g["weight_decay"] == 0.005 for g in groups)
    block_ids = {id(p) for p in by_name["blocks"]["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in block_ids) == ("block" in name), name
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    # the attention weights are block parameters, the stem and the head are not
    assert any("attn" in n and "block" in n for n, _ in model.named_parameters())


def test_missing_block_parameters_is_an_error_not_a_silent_uniform_lr() -> None:
    with pytest.raises(ValueError, match="block_keyword 'block'"):
        param_groups(nn.Linear(3, 3), lr=0.1, weight_decay=0.0)


def test_one_cycle_schedule_follows_spec_d_per_iteration() -> None:
    model = build_model("student-demo", 22)
    opt = build_optimizer(model, lr=0.002, weight_decay=0.005)
    total = 200
    sched = build_scheduler(opt, total_steps=total, pct_start=0.04, div_factor=10.0, final_div_factor=100.0)
    lrs = []
    for _ in range(total):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    other, blocks = zip(*lrs)
    assert other[0] == pytest.approx(0.002 / 10) and blocks[0] == pytest.approx(0.0002 / 10)
    peak = max(range(total), key=lambda i: other[i])
    assert peak == round(0.04 * total) - 1 and other[peak] == pytest.approx(0.002)
    assert other[-1] == pytest.approx(0.002 / 10 / 100, rel=1e-2)
    assert all(b == pytest.approx(o / 10) for o, b in zip(other, blocks))  # the ratio holds all along
    # cosine annealing: halfway through the decay the lr is the mean of the peak and the end
    mid = peak + (total - 1 - peak) // 2
    assert other[mid] == pytest.approx((0.002 + 0.002 / 1000) / 2, rel=0.05)
    assert isinstance(opt, torch.optim.AdamW) and not math.isnan(other[-1])
