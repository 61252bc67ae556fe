"""Validation at full resolution (spec D "Validation" and "Test-time
augmentation", ``docs/ptv3-and-datasets.md``).

Each scan is voxelised by the evaluation pipeline; the model's class probabilities on the kept
points are carried back to *every* original point through the grid-sampling ``inverse`` map, and
intersection/union are counted per scan and summed over the whole split (:class:`train.evaluation.metrics.ScanIoU`,
which keeps each scan's counts), across processes by all-reduce. With test-time augmentation the softmax of several deterministic
views of the same scan (rotations about z and flips, each voxelised on its own) is summed per
original point before the argmax. Reports are written as JSON and markdown.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from train.engine.input_pipeline import planned_collate
from train.engine.steps import model_inputs, to_device
from train.evaluation.metrics import IoUAccumulator, ScanIoU
from train.runtime.distributed import all_reduce_sum, current
from train.runtime.whole_files import write_text


class _Shard(torch.utils.data.Sampler[int]):
    """Indices rank, rank + world, ... of a split: no padding, so no scan is counted twice."""

    def __init__(self, n: int, rank: int, world: int, limit: int | None) -> None:
        self.indices = list(range(min(n, limit) if limit else n))[rank::world]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


@torch.no_grad()
def point_probabilities(logits: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """The softmax of one view's voxel ``logits`` (in float32) carried back to every point of the
    scan as read through grid sampling's ``inverse``: what the test-time views sum before the
    argmax, here and in ``train.prediction.run`` (so predictions score as evaluation does)."""
    return torch.softmax(logits.float(), dim=1)[inverse]


def evaluate(
    model: nn.Module,
    views: Sequence[Dataset],
    num_classes: int,
    device: torch.device,
    collate_fn: Any,
    max_scans: int | None = None,
    num_workers: int = 0,
    progress_bar: Any = None,
) -> ScanIoU:
    """IoU over the split, with each scan's own counts. ``views``: one dataset per test-time view
    (one for no TTA), same scans.

    The model runs in eval mode with a fixed serialization order; its previous mode is restored.
    """
    if not views:
        raise ValueError("evaluate needs at least one validation dataset view")
    n = len(views[0])
    if any(len(v) != n for v in views):
        raise ValueError(f"evaluate: the TTA views must hold the same scans, got sizes {[len(v) for v in views]}")
    info = current()
    was_training = model.training
    inner = model.module if hasattr(model, "module") else model
    old_det = getattr(inner, "deterministic", None)
    model.eval()
    if old_det is not None:
        inner.deterministic = True
    sampler = _Shard(n, info.rank, info.world_size, max_scans)
    # one row per scan of the split, filled by the rank that evaluates it; the all-reduce joins them
    scans = torch.zeros(min(n, max_scans) if max_scans else n, 3, num_classes, dtype=torch.float64)
    planned = planned_collate(collate_fn, [inner], device)  # each scan planned where it is collated (decision 47)
    loaders = [DataLoader(v, batch_size=1, sampler=sampler, collate_fn=planned, num_workers=num_workers)
               for v in views]
    try:
        for index, batches in zip(sampler.indices, zip(*loaders)):
            probs_sum: torch.Tensor | None = None
            for batch in batches:
                batch = to_device(batch, device)
                probs = point_probabilities(inner(model_inputs(batch)).logits, batch["inverse"])
                probs_sum = probs if probs_sum is None else probs_sum + probs
            assert probs_sum is not None
            scan = IoUAccumulator(num_classes)
            scan.update(probs_sum.argmax(1), batches[0]["origin_segment"])
            scans[index] = scan.state()
            if progress_bar is not None:
                progress_bar.update(1)
    finally:
        if old_det is not None:
            inner.deterministic = old_det
        model.train(was_training)
    return ScanIoU(all_reduce_sum(scans.to(device)))


@torch.no_grad()
def inference_latency_ms(
    models: dict[str, nn.Module], dataset: Dataset, device: torch.device, collate_fn: Any, runs: int = 10
) -> dict[str, float]:
    """Median wall time (ms) of one forward pass on a single validation scan, per model.

    Each model first runs one warm-up pass; then the models take turns on the same scans
    (round-robin, the order rotated every round so no model is always first after another), so a
    change of machine load during the measurement affects all of them alike instead of skewing
    whichever model happened to be timed at that moment.
    """
    inners = {k: (m.module if hasattr(m, "module") else m) for k, m in models.items()}
    modes = {k: m.training for k, m in inners.items()}
    scans = [to_device(collate_fn([dataset[i % len(dataset)]]), device) for i in range(runs + 1)]
    times: dict[str, list[float]] = {k: [] for k in inners}
    try:
        for m in inners.values():
            m.eval()
        names = list(inners)
        for i, batch in enumerate(scans):
            for name in names[i % len(names):] + names[:i % len(names)]:
                m = inners[name]
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                m(model_inputs(batch))
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i > 0:
                    times[name].append(time.perf_counter() - t0)
    finally:
        for name, m in inners.items():
            m.train(modes[name])
    return {k: 1000.0 * float(np.median(v)) for k, v in times.items()}


def class_frequencies(acc: IoUAccumulator) -> list[float]:
    """Share of labelled validation points per class."""
    total = float(acc.target_count.sum())
    return [float(c) / total if total > 0 else math.nan for c in acc.target_count.tolist()]


def _fmt(v: float, scale: float = 100.0, digits: int = 1) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * scale:.{digits}f}"


def results_table(results: dict[str, dict[str, Any]], class_names: Sequence[str]) -> str:
    """One markdown table: a row per class (its share of validation points, IoU per model), then
    mIoU, parameters and latency; a column per model in the order given."""
    models = list(results)
    freq = next(iter(results.values()))["class_frequency"] if results else []
    head = "| class | val points % | " + " | ".join(models) + " |"
    lines = [head, "|" + "---|" * (len(models) + 2)]
    for c, name in enumerate(class_names):
        if freq and (math.isnan(freq[c]) or freq[c] == 0.0):
            continue  # absent from the validation labels: no IoU to report
        cells = [_fmt(results[m]["iou"][c]) for m in models]
        lines.append(f"| {name} | {_fmt(freq[c], digits=2)} | " + " | ".join(cells) + " |")
    lines.append("| **mIoU** | | " + " | ".join(f"**{_fmt(results[m]['miou'])}**" for m in models) + " |")
    if any("miou_vs_ce" in results[m] for m in models):
        lines.append("| mIoU vs CE student | | " + " | ".join(
            f"{results[m]['miou_vs_ce'] * 100:+.1f}" if "miou_vs_ce" in results[m] else "-" for m in models) + " |")
    lines.append("| parameters | | " + " | ".join(f"{results[m]['parameters']:,}" for m in models) + " |")
    lines.append("| latency ms/scan | | " + " | ".join(f"{results[m]['latency_ms']:.1f}" for m in models) + " |")
    return "\n".join(lines)


def stage_result(acc: IoUAccumulator, parameters: int, latency_ms: float = math.nan) -> dict[str, Any]:
    return {
        "miou": acc.miou(),
        "iou": acc.iou(),
        "accuracy": acc.accuracy(),
        "class_frequency": class_frequencies(acc),
        "parameters": parameters,
        "latency_ms": latency_ms,
    }


def write_report(path_stem: str | os.PathLike[str], results: dict[str, dict[str, Any]],
                 class_names: Sequence[str], header: str = "", footer: str = "") -> str:
    """Write ``<stem>.json`` and ``<stem>.md`` (``footer`` after its table), each whole (decision 99);
    returns the markdown table."""
    stem = Path(path_stem)
    payload = {"class_names": list(class_names), "results": results}
    write_text(stem.with_suffix(".json"), json.dumps(payload, indent=2, allow_nan=True))
    table = results_table(results, class_names)
    write_text(stem.with_suffix(".md"), (header + "\n\n" if header else "") + table + "\n" + footer)
    return table
