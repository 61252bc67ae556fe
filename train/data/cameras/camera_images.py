"""The camera images of a split of the preprocessed Waymo layout, as a 2D network reads them (decision 62).

Each frame folder ``<root>/<split>/<segment>/<timestamp>/`` of the split must hold a
``cameras.json`` (:func:`train.data.cameras.camera.read_camera_list`); each camera's colour image is
``<root>/<Camera.image>`` and, in the synthetic set rendered with cameras (decision 58), its
per-pixel classes are the PNG beside it with ``_class`` after the stem (``cameras/NAME.png`` ->
``cameras/NAME_class.png``): uint8 train ids of the data set's classes, :data:`NO_CLASS` (255)
where no surface is seen. :func:`split_images` lists them in (frame, camera) order;
:func:`read_colour` and :func:`read_classes` read one image, checked against its camera's size.
Every refusal is one line naming the file or folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .camera import CAMERA_LIST, Camera, read_camera_list
from ..validation import CorruptFileError, DatasetLayoutError

NO_CLASS = 255  # the class images' value of a pixel that sees no surface (sky): ignored in training
CLASS_SUFFIX = "_class.png"


@dataclass(frozen=True)
class CameraImage:
    """One camera image of a split: its camera, its colour file and its class file (which may not exist)."""

    camera: Camera
    colour: Path
    classes: Path


def class_image_path(colour: Path) -> Path:
    """The per-pixel class image beside the colour image ``colour`` (``NAME.png`` -> ``NAME_class.png``)."""
    return colour.with_name(colour.stem + CLASS_SUFFIX)


def split_images(root: Path, split: str) -> list[CameraImage]:
    """Every camera image of ``<root>/<split>``'s frame folders, sorted by frame, then in
    ``cameras.json``'s order. A frame folder without ``cameras.json``, a split without frames or
    a camera whose colour image is missing is refused."""
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise DatasetLayoutError(f"{split_dir}: no such split folder; point --data-root at a data set rendered "
                                 "with cameras (<root>/<split>/<segment>/<timestamp>/cameras.json)")
    frames = sorted(p for p in split_dir.glob("*/*") if p.is_dir())
    if not frames:
        raise DatasetLayoutError(f"{split_dir}: no <segment>/<timestamp>/ frame folders; point --data-root at a "
                                 "data set rendered with cameras")
    images = []
    for frame in frames:
        cameras = read_camera_list(frame)
        if not cameras:
            raise DatasetLayoutError(f"{frame / CAMERA_LIST}: missing, so this frame has no cameras; render the "
                                     "set with cameras (decision 58) or leave the frame out")
        for camera in cameras:
            colour = Path(root) / camera.image
            if not colour.is_file():
                raise DatasetLayoutError(f"{colour}: camera {camera.name!r} of {frame / CAMERA_LIST} names this "
                                         "image, which does not exist")
            images.append(CameraImage(camera, colour, class_image_path(colour)))
    return images


def _read_image(path: Path, mode: str, camera: Camera, what: str) -> np.ndarray:
    """The image at ``path`` in PIL ``mode``, refused unless it is readable and the camera's size."""
    if not path.is_file():
        raise DatasetLayoutError(f"{path}: the {what} of camera {camera.name!r} is missing")
    try:
        with Image.open(path) as img:
            if img.size != (camera.width, camera.height):
                raise CorruptFileError(f"{path}: {what} is {img.size[0]} x {img.size[1]}, its camera "
                                       f"{camera.name!r} says {camera.width} x {camera.height}")
            if mode == "L" and img.mode not in ("L", "P"):
                raise CorruptFileError(f"{path}: {what} has PIL mode {img.mode}; it must be one 8-bit channel "
                                       "of class ids")
            array = np.array(img if mode == "L" else img.convert(mode))  # "P": the palette's indices are the ids
    except OSError as err:
        raise CorruptFileError(f"{path}: not a readable image ({err})") from None
    return array


def read_colour(image: CameraImage) -> np.ndarray:
    """(H, W, 3) uint8: the colour image, refused unless readable and of the camera's size."""
    return _read_image(image.colour, "RGB", image.camera, "colour image")


def read_classes(image: CameraImage, num_classes: int) -> np.ndarray:
    """(H, W) uint8: the per-pixel train ids of ``image`` (:data:`NO_CLASS` where nothing is seen),
    refused when missing, of another size, or holding an id outside ``0..num_classes-1``."""
    classes = _read_image(image.classes, "L", image.camera, "class image")
    bad = (classes >= num_classes) & (classes != NO_CLASS)
    if bad.any():
        raise CorruptFileError(f"{image.classes}: class ids {sorted(set(classes[bad].tolist()))[:5]} lie outside "
                               f"0..{num_classes - 1} (and {NO_CLASS} = none) of the {num_classes} classes")
    return classes
