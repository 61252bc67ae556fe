"""The prediction loop through onnxruntime, without torch (decision 55).

The same scans, pipelines, arithmetic and outputs as :func:`train.prediction.run.predict` (decision
50): each scan read once (:class:`train.prediction.inputs.PredictionSet`), voxelised per test-time
view, batched (:func:`train.data.collate.collate_arrays`) and planned on the host
(``train.models.plan.BatchPlan``, the arrays of ``train.models.graph_inputs.plan_feed``); the softmax of
each view's logits, in float32, carried back to every point through grid sampling's ``inverse``
and summed over the views before the argmax. The next batch is read and planned in a thread while
the session runs the current one (onnxruntime and the compiled plan loops release the GIL); files
are written by the writer threads of :func:`train.prediction.summary.write_results`. Nothing here imports torch: the scan readers, the
transforms, the plan and the writers are NumPy and numba.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from train.data.collate import collate_arrays
from train.data.transforms import tta_views
from train.models.graph_inputs import plan_feed
from train.models.plan import BatchPlan
from train.prediction.inputs import PredictionCollate, PredictionSet, ScanSource
from train.prediction.layouts import Layout
from train.prediction.onnx_file import OnnxPredictor
from train.prediction.summary import PredictionSummary, ScanResult, write_results
from train.runner.datasets import eval_pipeline
from train.runtime.logging_utils import progress


def point_probabilities(logits: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """The NumPy twin of :func:`train.evaluation.evaluate.point_probabilities`: the softmax of one
    view's voxel ``logits`` in float32, carried back to every point through ``inverse``."""
    shifted = logits.astype(np.float32) - logits.max(1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(1, keepdims=True)
    return shifted[inverse]


def predict_onnx(predictor: OnnxPredictor, source: ScanSource, indices: Sequence[int], layout: Layout, *, tta: bool,
                 batch_size: int, skip_bad_scans: bool, show_progress: bool) -> PredictionSummary:
    """Label every scan ``indices`` of ``source`` not yet labelled in ``layout`` with the exported model of
    ``predictor`` (module docstring); bad scans as :func:`train.prediction.run.predict` treats them."""
    todo = tuple(i for i in indices if not layout.done(source.scan_name(i)))
    views = tta_views() if tta else [None]
    pipelines = tuple(eval_pipeline(predictor.dataset, predictor.grid_size, view) for view in views)
    scans = PredictionSet(source, pipelines, todo, layout.needs_points)
    batches = [range(k, min(k + batch_size, len(scans))) for k in range(0, len(scans), batch_size)]
    bar = progress(total=len(todo), desc="predict", enabled=show_progress)
    with ThreadPoolExecutor(1) as reader:
        jobs = ((lambda b=b: prepare_batch(predictor, [scans[k] for k in b], len(views))) for b in batches)
        results = ((label_batch(predictor, batch, layout.save_probs), batch["bad"]) for batch in _ahead(reader, jobs))
        return write_results(results, layout, skip_bad_scans=skip_bad_scans, bar=bar,
                             already=len(indices) - len(todo))


def prepare_batch(predictor: OnnxPredictor, items: list[dict[str, Any]], num_views: int) -> dict[str, Any]:
    """``items`` (:class:`PredictionSet` items) grouped as :class:`PredictionCollate` groups them,
    each view of the scans with points batched and planned: ``views`` [{``feed`` the graph's
    inputs, ``inverse``, ``origin_offset`` the scans' END offsets among the points as read}]."""

    def planned(samples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collate_arrays(samples)
        plan = BatchPlan(batch["grid_coord"], batch["offset"], predictor.orders, predictor.items)
        return {"feed": plan_feed(plan, batch["feat"], predictor.inputs), "inverse": batch["inverse"],
                "origin_offset": batch["origin_offset"]}

    return PredictionCollate(planned, num_views)(items)


def label_batch(predictor: OnnxPredictor, batch: dict[str, Any], keep_probs: bool) -> list[ScanResult]:
    """Each scan of a prepared batch labelled: the mean of the views' softmax at every point (a
    scan of no points: no labels, no probabilities)."""
    label_type = np.uint8 if len(predictor.class_names) <= 256 else np.int32
    nothing = np.zeros((0, len(predictor.class_names)), np.float16)
    scans: list[ScanResult] = [(name, np.zeros(0, label_type), nothing if keep_probs else None, pts)
                               for name, pts in batch["empty"]]
    summed: np.ndarray | None = None
    for view in batch["views"]:
        (logits,) = predictor.session.run(["logits"], view["feed"])
        probs = point_probabilities(logits, view["inverse"])
        summed = probs if summed is None else summed + probs
    if summed is None:
        return scans
    labels = summed.argmax(1).astype(label_type)
    mean = (summed / len(batch["views"])).astype(np.float16) if keep_probs else None
    ends = batch["views"][-1]["origin_offset"]
    return scans + [(name, labels[lo:hi], None if mean is None else mean[lo:hi], pts)
                    for (name, pts), lo, hi in zip(batch["scans"], np.concatenate([[0], ends[:-1]]), ends)]


def _ahead(pool: ThreadPoolExecutor, jobs: Iterable[Callable[[], dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """The results of ``jobs`` in order, each started in ``pool`` while the one before is used."""
    running: deque[Future] = deque()
    for job in jobs:
        running.append(pool.submit(job))
        if len(running) > 1:
            yield running.popleft().result()
    while running:
        yield running.popleft().result()
