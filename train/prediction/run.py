"""The prediction loop: scans in, labels at every point of every scan out (decision 50).

Scans are read and voxelised by DataLoader workers, which also plan each batch
(:mod:`train.prediction.inputs`); batches of ``batch_size`` scans go to the device ahead of the
batch being computed (:func:`train.engine.input_pipeline.device_batches`: on CUDA a side stream copies
from pinned memory while the GPU works), and the model runs under AMP on CUDA. As in
:func:`train.evaluation.evaluate.evaluate`, the softmax of each view's logits is carried back to every point
of the scan as read through grid sampling's ``inverse`` and summed over the test-time views before
the argmax, so the labels written for a labelled split score exactly what ``train.evaluation.evaluate``
scores. Files are written by a small thread pool while the next batch is computed
(:mod:`train.prediction.layouts`); scans already labelled in ``out`` are not read again.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from train.data.collate import collate as collate_scans
from train.runner.datasets import eval_pipeline
from train.data.transforms import tta_views
from train.evaluation.evaluate import point_probabilities
from train.engine.input_pipeline import device_batches, planned_collate
from train.runtime.logging_utils import progress
from train.prediction.inputs import PredictionCollate, PredictionSet, ScanSource
from train.prediction.layouts import Layout
from train.prediction.model import Predictor
from train.prediction.summary import PredictionSummary, ScanResult, write_results
from train.engine.steps import model_inputs

PREFETCH = 4  # batches each loader worker prepares ahead


def predict(predictor: Predictor, source: ScanSource, indices: Sequence[int], layout: Layout, device: torch.device,
            *, tta: bool, batch_size: int, num_workers: int, amp: bool, skip_bad_scans: bool, show_progress: bool
            ) -> PredictionSummary:
    """Label every scan ``indices`` of ``source`` (this process's shard, decision 77) not yet
    labelled in ``layout`` (module docstring). A scan
    that cannot be read stops the run with its :class:`BadScanError` (the scans finished before it
    keep their files) unless ``skip_bad_scans``, which names it on stderr and goes on."""
    todo = tuple(i for i in indices if not layout.done(source.scan_name(i)))
    views = tta_views() if tta else [None]
    pipelines = tuple(eval_pipeline(predictor.dataset, predictor.grid_size, view) for view in views)
    scans = PredictionSet(source, pipelines, todo, layout.needs_points)
    collate = PredictionCollate(planned_collate(collate_scans, [predictor.model], device), len(views))
    cuda = device.type == "cuda"
    loader = DataLoader(scans, batch_size=batch_size, collate_fn=collate, num_workers=num_workers, pin_memory=cuda,
                        prefetch_factor=PREFETCH if num_workers else None)
    bar = progress(total=len(todo), desc="predict", enabled=show_progress)
    with torch.no_grad():
        results = _scan_results(predictor, device_batches(_view_batches(loader), device), amp and cuda,
                                layout.save_probs)
        return write_results(results, layout, skip_bad_scans=skip_bad_scans, bar=bar,
                             already=len(indices) - len(todo))


def _view_batches(loader: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The view batches of every loader batch in turn, the last view of each (or, when the batch
    holds no scan with points, an empty batch) carrying the batch's ``scans``, ``empty`` and ``bad``
    lists."""
    for item in loader:
        views = item["views"]
        for v, batch in enumerate(views):
            batch["view"] = v
            if v == len(views) - 1:
                batch.update(scans=item["scans"], empty=item["empty"], bad=item["bad"])
            yield batch
        if not views:
            yield {"view": -1, "scans": [], "empty": item["empty"], "bad": item["bad"]}


def _scan_results(predictor: Predictor, batches: Iterable[dict[str, Any]], amp: bool,
                  keep_probs: bool) -> Iterator[tuple[list[ScanResult], list[tuple[str, str]]]]:
    """Per loader batch: its scans as (name, labels, probabilities or None, points or None) on the
    host, and its bad scans as (name, error). The probabilities of every point (``keep_probs``) are the mean of the views'
    softmax. A scan of no points gets no labels (and no probabilities): every point is labelled."""
    summed: torch.Tensor | None = None
    for batch in batches:
        if batch["view"] >= 0:
            with torch.autocast(batch["coord"].device.type, enabled=amp):
                logits = predictor.model(model_inputs(batch)).logits
            probs = point_probabilities(logits, batch["inverse"])
            summed = probs if batch["view"] == 0 else summed + probs
        if "scans" not in batch:
            continue
        # the ids leave the device in the narrowest type that holds them (uint8: up to 256 classes)
        label_type = torch.uint8 if len(predictor.class_names) <= 256 else torch.int32
        nothing = torch.zeros((0, len(predictor.class_names)), dtype=torch.float16)
        scans = [(name, nothing.argmax(1).to(label_type).numpy(), nothing.numpy() if keep_probs else None, pts)
                 for name, pts in batch["empty"]]
        if batch["scans"]:
            assert summed is not None
            labels = summed.argmax(1).to(label_type).cpu().numpy()
            mean = (summed / (batch["view"] + 1)).half().cpu().numpy() if keep_probs else None
            ends = batch["origin_offset"].cpu().numpy()
            for (name, pts), lo, hi in zip(batch["scans"], np.concatenate([[0], ends[:-1]]), ends):
                scans.append((name, labels[lo:hi], None if mean is None else mean[lo:hi], pts))
        yield scans, batch["bad"]
        summed = None
