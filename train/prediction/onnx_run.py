"""The prediction loop through onnxruntime, without torch (decision 55).

The same scans, pipelines, arithmetic and outputs as :func:`train.prediction.run.predict` (decision
50): each scan read once (:class:`train.prediction.inputs.PredictionSet`), voxelised per test-time
view, batched (:func:`train.data.collate.collate_arrays`) and planned on the host
(``train.models.plan.BatchPlan``, the arrays of ``train.models.graph_inputs.plan_feed``); the softmax of
each view's logits, in float32, carried back to every point through grid sampling's ``inverse``
and summed over the views before the argmax. The next batch is read and planned in a thread while
the session runs the current one (onnxruntime and the compiled plan loops release the GIL); files
are written by the layout's writer threads. Nothing here imports torch: the scan readers, the
transforms, the plan and the writers are NumPy and numba.
"""
from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from train.data.collate import collate_arrays
from train.data.transforms import tta_views
from train.data.validation import BadScanError
from train.models.graph_inputs import plan_feed
from train.models.plan import BatchPlan
from train.prediction.inputs import PredictionSet, ScanSource
from train.prediction.layouts import Layout
from train.prediction.onnx_file import OnnxPredictor
from train.prediction.summary import PredictionSummary
from train.runner.datasets import eval_pipeline
from train.runtime.logging_utils import progress

WRITERS = 2  # threads writing finished scans' files, as the PyTorch loop
_WRITES_AHEAD = 8  # batches whose files may be in flight before the loop waits for the oldest


def point_probabilities(logits: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """The NumPy twin of :func:`train.evaluation.evaluate.point_probabilities`: the softmax of one
    view's voxel ``logits`` in float32, carried back to every point through ``inverse``."""
    shifted = logits.astype(np.float32) - logits.max(1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(1, keepdims=True)
    return shifted[inverse]


def predict_onnx(predictor: OnnxPredictor, source: ScanSource, layout: Layout, *, tta: bool, batch_size: int,
                 skip_bad_scans: bool, show_progress: bool) -> PredictionSummary:
    """Label every scan of ``source`` not yet labelled in ``layout`` with the exported model of
    ``predictor`` (module docstring); bad scans as :func:`train.prediction.run.predict` treats them."""
    todo = tuple(i for i in range(len(source)) if not layout.done(source.scan_name(i)))
    views = tta_views() if tta else [None]
    pipelines = tuple(eval_pipeline(predictor.dataset, predictor.grid_size, view) for view in views)
    scans = PredictionSet(source, pipelines, todo, layout.needs_points)
    batches = [range(k, min(k + batch_size, len(scans))) for k in range(0, len(scans), batch_size)]
    bar = progress(total=len(todo), desc="predict", enabled=show_progress)
    labelled = bad = points = 0
    pending: list[list[Future]] = []
    start = time.perf_counter()
    with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(WRITERS) as writers:
        jobs = ((lambda b=b: prepare_batch(predictor, [scans[k] for k in b], len(views))) for b in batches)
        for batch in _ahead(reader, jobs):
            results = label_batch(predictor, batch, layout.save_probs)
            pending.append([writers.submit(layout.write, name, labels, probs, pts)
                            for name, labels, probs, pts in results])
            for name, error in batch["bad"]:  # after the batch's readable scans went to the writers
                if not skip_bad_scans:
                    raise BadScanError(error)
                print(f"predict: skipped {name}: {error}", file=sys.stderr, flush=True)
                bad += 1
            if len(pending) > _WRITES_AHEAD:
                _wait(pending.pop(0))
            labelled += len(results)
            points += sum(len(labels) for _, labels, _, _ in results)
            bar.update(len(results) + len(batch["bad"]))
        for futures in pending:
            _wait(futures)
    layout.finish()
    bar.close()
    return PredictionSummary(labelled, len(source) - len(todo), bad, points, time.perf_counter() - start)


def prepare_batch(predictor: OnnxPredictor, items: list[dict[str, Any]], num_views: int) -> dict[str, Any]:
    """The readable scans of ``items`` (:class:`PredictionSet` items) batched and planned per view:
    ``views`` [(the graph's inputs, inverse)], ``ends`` the scans' END offsets among the points as
    read, ``scans`` [(name, points)], ``bad`` [(name, error)]."""
    good = [item for item in items if "error" not in item]
    views, ends = [], None
    for v in range(num_views if good else 0):
        batch = collate_arrays([item["views"][v] for item in good])
        plan = BatchPlan(batch["grid_coord"], batch["offset"], predictor.orders, predictor.items)
        views.append((plan_feed(plan, batch["feat"], predictor.inputs), batch["inverse"]))
        ends = batch["origin_offset"]
    return {"views": views, "ends": ends, "scans": [(item["name"], item["points"]) for item in good],
            "bad": [(item["name"], item["error"]) for item in items if "error" in item]}


def label_batch(predictor: OnnxPredictor, batch: dict[str, Any], keep_probs: bool
                ) -> list[tuple[str, np.ndarray, np.ndarray | None, np.ndarray | None]]:
    """(name, labels, mean probabilities or None, points or None) of each scan of a prepared batch."""
    summed: np.ndarray | None = None
    for feed, inverse in batch["views"]:
        (logits,) = predictor.session.run(["logits"], feed)
        probs = point_probabilities(logits, inverse)
        summed = probs if summed is None else summed + probs
    if summed is None:
        return []
    label_type = np.uint8 if len(predictor.class_names) <= 256 else np.int32
    labels = summed.argmax(1).astype(label_type)
    mean = (summed / len(batch["views"])).astype(np.float16) if keep_probs else None
    ends = batch["ends"]
    return [(name, labels[lo:hi], None if mean is None else mean[lo:hi], pts)
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


def _wait(futures: list[Future]) -> None:
    for future in futures:
        future.result()  # a write that failed raises here
