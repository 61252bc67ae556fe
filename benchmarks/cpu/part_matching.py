"""The cost of DD3D Eq. (11)'s local matching (part segmentation, decision 81): the shipped
``gradient_match_loss(local=True)``, one forward pass a class and side with a backward pass per
part, against the same distances with a forward pass of their own for every part (the baseline,
Eq. 11 as it reads), run by ``benchmarks/tests/test_bench_distill.py``.

:func:`measure` builds the part segmenter on the generated shapes' part clouds (``points`` a cloud,
``real_batch`` real clouds a class, ``cpc`` synthetic ones), then times, alternating the two so
that a load beside them falls on both, the loss and its gradient with respect to the synthetic
points (what an outer step of gradient matching computes), ``rounds`` times each; it returns the
median milliseconds of each, their ratio and the largest relative difference of the two losses.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fast import gradient_match_distance
from train.condense.matching.matching_loops import IGNORED, fresh_network, gradient_match_loss, task_loss
from train.data.objects import load_objects


def _part_gradients(net: torch.nn.Module, points: torch.Tensor, parts: torch.Tensor, k: int, part: int,
                    create_graph: bool) -> list[torch.Tensor]:
    labels = torch.full((len(points),), k, dtype=torch.long)
    loss = task_loss(net, points, parts.masked_fill(parts != part, IGNORED), labels)
    return list(torch.autograd.grad(loss, list(net.parameters()), create_graph=create_graph))


def per_part_forwards(net: torch.nn.Module, classes: list[int], real: Callable, synthetic: Callable) -> torch.Tensor:
    """The baseline: Eq. 11's local distances, every part's gradients from a forward pass of their own."""
    total = torch.zeros(())
    for k in classes:
        (real_points, real_parts), (points, parts) = real(k), synthetic(k)
        for part in sorted(set(real_parts.unique().tolist()) & set(parts.unique().tolist())):
            target = [g.detach() for g in _part_gradients(net, real_points, real_parts, k, part, False)]
            total = total + gradient_match_distance(_part_gradients(net, points, parts, k, part, True), target)
    return total


def measure(points: int, classes: int, real_batch: int, cpc: int, rounds: int) -> dict[str, Any]:
    """Median milliseconds of the shipped local matching and of the baseline (module docstring)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = load_objects("shapes", split="train", points=points, size=real_batch + 4, task="parts")
    chosen = sorted(int(k) for k in np.unique(data.labels))[:classes]
    real = {k: (torch.from_numpy(data.points[data.labels == k][:real_batch]),
                torch.from_numpy(data.parts[data.labels == k][:real_batch])) for k in chosen}
    synthetic_points = {k: (real[k][0][:cpc] * 0.9).requires_grad_() for k in chosen}
    synthetic = {k: (synthetic_points[k], real[k][1][:cpc]) for k in chosen}
    net = fresh_network(len(data.class_names), torch.device("cpu"), len(data.part_classes))
    runs: dict[str, Callable[[], torch.Tensor]] = {
        "shared_forward": lambda: gradient_match_loss(net, chosen, real.__getitem__, synthetic.__getitem__, True),
        "per_part_forward": lambda: per_part_forwards(net, chosen, real.__getitem__, synthetic.__getitem__)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    losses: dict[str, float] = {}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            loss = run()
            torch.autograd.grad(loss, list(synthetic_points.values()))
            times[name].append(1e3 * (time.perf_counter() - start))
            losses[name] = loss.item()
    ms = {name: float(np.median(t)) for name, t in times.items()}
    parts_per_class = float(np.mean([len(np.unique(real[k][1])) for k in chosen]))
    return {"ms_shared_forward": ms["shared_forward"], "ms_per_part_forward": ms["per_part_forward"],
            "ratio": ms["shared_forward"] / ms["per_part_forward"], "parts_per_class": parts_per_class,
            "loss_rel_diff": abs(losses["shared_forward"] - losses["per_part_forward"]) / abs(losses["per_part_forward"])}
