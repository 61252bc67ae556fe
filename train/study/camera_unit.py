"""The camera teacher unit of ``python -m train.study --table cameras`` (decisions 57-62).

The rows of a camera study distil from a 2D model's predictions carried onto the points through
the cameras (decision 61), so its "teacher" is a pipeline, made once, under ``<out>/camera/``:

1. the synthetic set rendered with the ``ring`` rig (decision 58; the study's base config, the
   label-scarce regime of ``train.study.budget.LABEL_SCARCE`` by default);
2. the 2D teacher (decision 62) trained on the colour and class images of the **labelled training
   scenes only**, at the study's first seed: the unlabelled scenes are rendered without class
   images, and the validation and test scenes are never shown to it, so a row's test mIoU
   measures a student whose every label came from the training scenes;
3. its class probabilities for every image of the training, unlabelled, validation and test
   splits, and its feature maps for the first two (L_topo reads them);
4. ``train.image_labels``' projection (decision 60, its default rules: depth test, several cameras
   averaged by 1 / depth) onto the training and unlabelled scans with ``--probs --features``, into
   ``labels/``, the folder the rows read as ``--image-predictions``; and ids only onto the
   validation and test scans, into ``eval-labels/<split>/``, to score the teacher;
5. the scores a reader needs to judge the teacher handed to the students: the 2D teacher's pixel
   mIoU and accuracy on the validation images; per split, the share of points a camera sees and,
   where the split is labelled, the camera labels' point accuracy and per-class IoU against the
   LiDAR labels **over the seen points**.

Its result, ``<out>/camera/result.json``, has the fields a study report reads of a teacher (``val``
and ``test`` evaluations over the seen points, ``wall_s``, ``parameters``) and ``kind`` "camera"
with the scores above; a finished unit is read, not made again. :func:`camera_lines` writes its
paragraph of the report.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from train.config import RunConfig
from train.data.cameras.camera_images import split_images
from train.data.cameras.camera import DEFAULT_MIN_DEPTH
from train.data.cameras.image_predictions import ClassMap
from train.data.cameras.image_projection import DEFAULT_CAMERA_RULE, DEFAULT_DEPTH_TEST
from train.data.labels import WAYMO_CLASSES
from train.data.lidar.waymo import WaymoDataset
from train.engine.image_training import fit, save_image_teacher
from train.evaluation.evaluate import stage_result
from train.evaluation.image_iou import image_iou
from train.evaluation.metrics import IoUAccumulator
from train.prediction.image_labels import ImageLabelRun, label_split
from train.prediction.image_maps import write_image_maps
from train.runner.datasets import ensure_synthetic
from train.runtime.distributed import DistInfo, barrier
from train.runtime.files import atomic_write

CAMERA_TABLE = "cameras"
UNIT = "camera"  # the unit's folder under the study's
LABELS = "labels"  # the rows' --image-predictions folder, under the unit's
# split roles -> the synthetic set's folder names (the loader's split names)
TRAINING, UNLABELLED, VALIDATION, TESTING = "training", "unlabelled", "validation", "testing"
DEFAULT_IMAGE_EPOCHS = 40  # decision 62's measured budget (40 epochs: pixel mIoU 40.8 on 12 scenes)
IMAGE_BATCH = 8
IMAGE_LR = 5e-3
RESULT = "result.json"


def camera_labels_folder(out: Path) -> Path:
    """The folder the rows of a camera study read as ``--image-predictions``."""
    return out / UNIT / LABELS


def camera_data_options(out: Path) -> dict[str, Any]:
    """The options that open the camera teacher's files with the study's data (L_topo's features
    too: no stage of the study computes the saliency term, decision 61)."""
    return {"teacher": "images", "image_predictions": str(camera_labels_folder(out)), "grad": False}


def check_camera_base(base: RunConfig) -> None:
    """A camera study needs the synthetic set rendered with cameras (its 2D teacher learns the
    rendered class images); one line naming the option otherwise."""
    if base.dataset != "synthetic":
        raise ValueError(f"--table {CAMERA_TABLE} trains its 2D teacher on the synthetic set's rendered class images; "
                         f"--dataset {base.dataset} has none (label its scans with python -m train.image_labels and "
                         "train with --teacher images instead)")
    if base.synthetic_cameras == "none":
        raise ValueError(f"--table {CAMERA_TABLE} needs the synthetic set rendered with cameras: leave "
                         "--synthetic-cameras out (ring by default) or name a rig")


def _split_points(root: Path, split: str, labels: Path, labelled: bool) -> tuple[dict[str, Any], IoUAccumulator]:
    """Coverage (and, for a labelled split, the camera labels' point accuracy) of ``split`` from the
    projected ids under ``labels``, with the IoU counts over the seen, labelled points."""
    data = WaymoDataset(root, split, labelled=labelled)
    acc = IoUAccumulator(data.num_classes)
    points = seen = 0
    for i in range(len(data)):
        ids = np.load(labels / f"{data.scan_name(i)}.npy", allow_pickle=False).astype(np.int64)
        points, seen = points + ids.size, seen + int((ids >= 0).sum())
        if labelled:
            truth = data.load(i)["segment"]
            keep = (ids >= 0) & (truth >= 0)
            acc.update(torch.from_numpy(ids[keep]), torch.from_numpy(truth[keep]))
    summary: dict[str, Any] = {"scans": len(data), "points": points, "seen": seen, "seen_share": seen / max(points, 1)}
    if labelled:
        summary.update(accuracy=acc.accuracy(), miou=acc.miou())
    return summary, acc


def _project(root: Path, split: str, predictions: Path, features: Path | None, out: Path, probs: bool) -> None:
    """``python -m train.image_labels`` with its default rules on one split (decision 60)."""
    run = ImageLabelRun(root, predictions, features, out, ClassMap(len(WAYMO_CLASSES)), DEFAULT_CAMERA_RULE,
                        DEFAULT_MIN_DEPTH, DEFAULT_DEPTH_TEST, probs, False, None)
    label_split(WaymoDataset(root, split, labelled=False), split, run,
                {"dataset": "synthetic", "data_root": str(root), "predictions": str(predictions)})


def make_camera_unit(base: RunConfig, out: Path, seed: int, image_epochs: int,
                     say: Callable[[str], None]) -> dict[str, Any]:
    """Steps 1-5 of the module docstring into ``out / UNIT``; returns the unit's result; ``say``
    reports each step."""
    t0 = time.perf_counter()
    unit = out / UNIT
    root = Path(base.data_root)
    images = split_images(root, TRAINING)
    t_image = time.perf_counter()
    model, losses = fit(images, len(WAYMO_CLASSES), image_epochs, IMAGE_BATCH, IMAGE_LR, seed,
                        lambda e, loss, acc: say(f"2D teacher epoch {e + 1}: loss {loss:.4f}, pixel accuracy "
                                                 f"{100 * acc:.1f}%"))
    pixels = image_iou(model, split_images(root, VALIDATION))
    image = {"images": len(images), "epochs": image_epochs, "seed": seed, "fit_s": time.perf_counter() - t_image,
             "val_pixel_miou": pixels.miou(), "val_pixel_accuracy": pixels.accuracy(), "last_loss": losses[-1],
             "parameters": sum(p.numel() for p in model.parameters())}
    save_image_teacher(unit / "image_teacher.pt", model, image_epochs,
                       {"data_root": str(root), "split": TRAINING, "epochs": image_epochs, "batch_size": IMAGE_BATCH,
                        "lr": IMAGE_LR, "seed": seed}, {"losses": losses, "validation": image})
    say(f"2D teacher: validation pixel mIoU {100 * image['val_pixel_miou']:.1f}")
    for split in (TRAINING, UNLABELLED, VALIDATION, TESTING):
        say(f"predictions and projection: {split}")
        taught = split in (TRAINING, UNLABELLED)
        write_image_maps(model, split_images(root, split), unit / "predictions", unit / "features" if taught else None)
        _project(root, split, unit / "predictions", unit / "features" if taught else None,
                 unit / LABELS if taught else unit / "eval-labels" / split, probs=taught)
    splits: dict[str, Any] = {}
    evaluations: dict[str, Any] = {}
    for split, role in ((TRAINING, None), (UNLABELLED, None), (VALIDATION, "val"), (TESTING, "test")):
        labels = unit / (LABELS if role is None else f"eval-labels/{split}")
        splits[split], acc = _split_points(root, split, labels, labelled=split != UNLABELLED)
        if role is not None:
            evaluations[role] = stage_result(acc, image["parameters"])
    result = {"kind": "camera", "seed": seed, "wall_s": time.perf_counter() - t0, "image_teacher": image,
              "points": splits, "labels": str(unit / LABELS), **evaluations}
    atomic_write(json.dumps(result, indent=1, allow_nan=True).encode(), unit / RESULT)
    return result


def camera_unit(base: RunConfig, out: Path, seed: int, image_epochs: int, info: DistInfo,
                train: bool = True) -> dict[str, Any]:
    """The camera unit's result: read if it finished, else made (rank 0, its steps said with
    ``--progress``; with ``train`` False, ``--report-only``, an unfinished unit is an error)."""
    done = out / UNIT / RESULT
    if not done.is_file():
        if not train:
            raise ValueError(f"--report-only: {done.parent} has not finished (no {RESULT}); the rows depend on it, "
                             "so run the study without --report-only first")
        ensure_synthetic(base, info)
        if info.is_main:
            make_camera_unit(base, out, seed, image_epochs,
                             lambda text: print(f"[camera] {text}", flush=True) if base.progress else None)
        barrier()
    return json.loads(done.read_text())


def camera_lines(teacher: dict[str, Any], split: str) -> list[str]:
    """The report's paragraph on the camera teacher (``teacher``: the unit's result)."""
    image, points = teacher["image_teacher"], teacher["points"]

    def seen(name: str) -> str:
        return f"{100 * points[name]['seen_share']:.1f}%"

    train = points[TRAINING]
    return [f"Teacher: the camera pipeline (`train/study/camera_unit.py`). A 2D U-Net of {image['parameters']:,} "
            f"parameters trained {image['epochs']} epochs on the {image['images']} images of the labelled training "
            f"scenes only: pixel mIoU {100 * image['val_pixel_miou']:.1f}, accuracy "
            f"{100 * image['val_pixel_accuracy']:.1f}% on the validation images. A camera sees {seen(TRAINING)} of "
            f"the training scans' points, {seen(UNLABELLED)} of the unlabelled, {seen(VALIDATION)} of the "
            f"validation and {seen(TESTING)} of the test scans'. The camera labels on the training scans' seen "
            f"points: accuracy {100 * train['accuracy']:.1f}%, mIoU {100 * train['miou']:.1f} against the LiDAR "
            f"labels; on the {split} scans' seen points mIoU {100 * teacher[split]['miou']:.1f} (validation "
            f"{100 * teacher['val']['miou']:.1f}): the teacher column of the per-class table counts the seen "
            f"points only, the rows every point. Made in {teacher['wall_s'] / 60:.1f} min.", ""]
