"""Pixel IoU of the 2D camera teacher on a split's rendered class images (decision 62).

Every labelled pixel of every image counts once (:data:`~train.data.cameras.camera_images.NO_CLASS` is
ignored); intersection and union per class are summed over the split and divided at the end, as
for points (:class:`train.evaluation.metrics.IoUAccumulator`): a class absent from the labels is
left out of the mean.
"""
from __future__ import annotations

import torch

from train.data.cameras.camera_images import NO_CLASS, CameraImage, read_classes, read_colour
from train.evaluation.metrics import IoUAccumulator
from train.models.image_segmenter import ImageSegmenter


def image_iou(model: ImageSegmenter, images: list[CameraImage]) -> IoUAccumulator:
    """The per-class pixel counts of ``model``'s argmax against the class images of ``images``."""
    counts = IoUAccumulator(model.num_classes, ignore_index=NO_CLASS)
    model.eval()
    for image in images:
        target = read_classes(image, model.num_classes)
        probs, _ = model.segment(read_colour(image))
        counts.update(torch.from_numpy(probs.argmax(-1)), torch.from_numpy(target.astype("int64")))
    return counts
