"""The 2D camera teacher's outputs: a probability map per image, and optionally a feature map
(the 2D model outputs that labelling through the cameras reads, decision 62).

For each image ``<root>/<Camera.image>``, ``<predictions>/<Camera.image minus its suffix>.npy``
holds (H, W, K) float16 class probabilities (a softmax: each pixel's sum is 1 up to float16
rounding) and, with a features folder, ``<features>/<same>.npy`` holds the (H', W', C) float16
features the head reads (:data:`train.models.image_segmenter.FEATURE_STRIDE` image pixels per
feature pixel; the readers scale pixel coordinates to the map's size). Each file is written whole
or not at all (:func:`train.runtime.files.atomic_write`).
"""
from __future__ import annotations

import io
from pathlib import Path, PurePosixPath

import numpy as np

from train.data.cameras.camera_images import CameraImage, read_colour
from train.models.image_segmenter import ImageSegmenter
from train.runtime.files import atomic_write


def mirrored_path(folder: Path, image: str) -> Path:
    """``folder/<image minus suffix>.npy``: where the map of the image at root-relative ``image`` goes."""
    return Path(folder) / PurePosixPath(image).with_suffix(".npy")


def _write_npy(array: np.ndarray, path: Path) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write(buffer.getbuffer(), path)


def write_image_maps(model: ImageSegmenter, images: list[CameraImage], predictions: Path,
                     features: Path | None) -> int:
    """Write every image's probability map (and feature map) as the module docstring says; returns
    the number of images."""
    model.eval()
    for image in images:
        probs, feats = model.segment(read_colour(image))
        _write_npy(probs.astype(np.float16), mirrored_path(predictions, image.camera.image))
        if features is not None:
            _write_npy(feats.astype(np.float16), mirrored_path(features, image.camera.image))
    return len(images)
