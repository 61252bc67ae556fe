"""A 2D model's per-image outputs, read for :mod:`train.data.cameras.image_projection` (decision 60).

Files (the formats of decisions 58 and 60): under a predictions folder P, the prediction of the image
``<image path>`` (``Camera.image``, relative to the data set's root) is ``P/<image path without its
suffix>.npy`` (H x W integer ids, or H x W x K float probabilities) or ``.png`` (H x W ids: 8- or
16-bit grey or palette indices); optional feature maps under a folder F the same way, ``.npy``
H' x W' x C floats, sampled bilinearly at the point's pixel coordinates scaled to the map
(``x' = (u + 0.5) W' / W - 0.5``, the half-pixel convention of ``align_corners=False``), clamped
at the edges.

The class map (:class:`ClassMap`) takes the 2D model's ids to the data set's train ids 0..K-1 or to
ignore (-1); without a file the ids must be train ids already (the identity on 0..K-1). A
probability map has one channel per 2D id (without a map K' = K; with one, each channel listed),
summed into the train classes they map to, so a 2D class split in two and a train class merged from
several both come out whole. A pixel whose most probable channel (the first of a tie) the map
ignores gives no probabilities (it does not see the point), as the same prediction saved as its
argmax ids does; at other pixels the ignored channels are dropped.

Every bad file is one line naming it, as :class:`ImagePredictionError` (a
:class:`~train.data.validation.BadScanError`, so ``--skip-bad-scans`` skips the scan): an image or
prediction file that is missing, an image whose size is not its calibration's, a prediction of
another size, ids or channels the class map does not list, probabilities of another channel count,
non-finite or negative probabilities, a feature map that is not H' x W' x C. A class map file that
cannot be used is a ValueError line.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .camera import Camera, image_size
from ..validation import BadScanError

PREDICTION_SUFFIXES: tuple[str, ...] = (".npy", ".png")
IGNORED = -1
IGNORE_WORDS = ("ignore", "-1")


class ImagePredictionError(BadScanError):
    """An image, prediction or feature file of a scan's camera that cannot be used."""


@dataclass(frozen=True)
class ClassMap:
    """2D model id -> train id (``IGNORED`` for ignore) for ``num_classes`` train classes;
    ``table`` None is the identity on 0..K-1."""

    num_classes: int
    table: dict[int, int] | None = None

    def lookup(self, ids: np.ndarray, source: Path) -> np.ndarray:
        """Train ids (int64, -1 ignored) of the 2D ``ids``; an id the map does not list is refused
        naming ``source``."""
        ids = np.asarray(ids, dtype=np.int64)
        size = self.num_classes if self.table is None else max(self.table) + 1
        known = (ids >= 0) & (ids < size)
        lut = np.arange(size) if self.table is None else np.array([self.table.get(i, -2) for i in range(size)])
        train = np.where(known, lut[np.clip(ids, 0, size - 1)], -2)
        if (train == -2).any():
            bad = np.unique(ids[train == -2])
            shown = ", ".join(map(str, bad[:10])) + (" ..." if bad.size > 10 else "")
            where = ("the class map" if self.table is not None
                     else f"the train ids 0..{self.num_classes - 1} (give --class-map)")
            raise ImagePredictionError(f"{source}: id(s) {shown} are not in {where}")
        return train

    def matrix(self, channels: int, source: Path) -> np.ndarray:
        """(channels, K) float32: 1 where a probability channel goes into a train class."""
        train = self.lookup(np.arange(channels), source)
        out = np.zeros((channels, self.num_classes), np.float32)
        keep = train >= 0
        out[np.flatnonzero(keep), train[keep]] = 1.0
        return out

    def plain(self) -> dict[str, Any] | None:
        return None if self.table is None else {str(k): ("ignore" if v == IGNORED else v)
                                                for k, v in sorted(self.table.items())}


def read_class_map(path: str | Path, num_classes: int) -> ClassMap:
    """The class map of a YAML or JSON file ``{2D id: train id, or ignore (-1)}``; one ValueError
    line naming the file for anything else (keys that are not ids >= 0, train ids outside 0..K-1)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())  # JSON is YAML
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"class map {path}: cannot be read ({' '.join(str(err).split())})") from err
    if not isinstance(data, dict) or not data:
        raise ValueError(f"class map {path}: must map 2D ids to train ids or ignore, got {json.dumps(data)[:80]}")
    table: dict[int, int] = {}
    for key, value in data.items():
        raw = _integer(key)
        train = IGNORED if str(value).strip().lower() in IGNORE_WORDS else _integer(value)
        if raw is None or raw < 0 or train is None or not IGNORED <= train < num_classes:
            raise ValueError(f"class map {path}: entry {key!r}: {value!r}; it maps 2D ids >= 0 to train ids "
                             f"0..{num_classes - 1} or ignore")
        table[raw] = train
    return ClassMap(num_classes, table)


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def mirrored(folder: Path, image: str, suffix: str) -> Path:
    """``folder/<image without its suffix><suffix>`` (the predictions mirror the image paths)."""
    return folder / Path(image).with_suffix(suffix)


@dataclass(frozen=True)
class FilePrediction:
    """The prediction (and features) of one camera's image, checked against its size
    (:class:`train.data.cameras.image_projection.CameraPrediction`)."""

    path: Path
    probs: np.ndarray | None  # H x W x K' probabilities (memory-mapped), or None for ids
    train_ids: np.ndarray | None  # H x W train ids (-1 ignored), or None for probabilities
    channels: np.ndarray | None  # (K', K) the class map's channel matrix for probabilities
    num_classes: int
    feature_map: np.ndarray | None
    feature_path: Path | None
    width: int
    height: int

    def probabilities(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        if self.train_ids is not None:
            ids = self.train_ids[rows, cols]
            out = np.zeros((ids.size, self.num_classes), np.float32)
            keep = ids >= 0
            out[np.flatnonzero(keep), ids[keep]] = 1.0
            return out
        values = np.asarray(self.probs[rows, cols], dtype=np.float32)
        if not (np.isfinite(values).all() and (values >= 0).all()):
            raise ImagePredictionError(f"{self.path}: probabilities must be finite and >= 0")
        kept = self.channels.any(axis=1)  # the 2D classes the class map does not ignore
        top_kept = kept[values.argmax(axis=1)]
        return (values @ self.channels) * top_kept[:, None]  # an ignored top class: the pixel sees nothing

    @property
    def feature_channels(self) -> int | None:
        return None if self.feature_map is None else int(self.feature_map.shape[2])

    def features(self, uv: np.ndarray) -> np.ndarray | None:
        if self.feature_map is None:
            return None
        fh, fw = self.feature_map.shape[:2]
        x = np.clip((uv[:, 0] + 0.5) * fw / self.width - 0.5, 0, fw - 1)
        y = np.clip((uv[:, 1] + 0.5) * fh / self.height - 0.5, 0, fh - 1)
        x0, y0 = np.minimum(np.floor(x).astype(np.int64), fw - 2 if fw > 1 else 0), \
            np.minimum(np.floor(y).astype(np.int64), fh - 2 if fh > 1 else 0)
        x1, y1 = np.minimum(x0 + 1, fw - 1), np.minimum(y0 + 1, fh - 1)
        ax, ay = (x - x0)[:, None], (y - y0)[:, None]
        f = self.feature_map
        top = np.asarray(f[y0, x0], np.float64) * (1 - ax) + np.asarray(f[y0, x1], np.float64) * ax
        bottom = np.asarray(f[y1, x0], np.float64) * (1 - ax) + np.asarray(f[y1, x1], np.float64) * ax
        values = (top * (1 - ay) + bottom * ay).astype(np.float32)
        if not np.isfinite(values).all():
            raise ImagePredictionError(f"{self.feature_path}: feature values must be finite")
        return values


def read_prediction(camera: Camera, data_root: Path, predictions: Path, features: Path | None,
                    class_map: ClassMap) -> FilePrediction:
    """The checked prediction of ``camera``'s image (see the module docstring for each refusal)."""
    image = data_root / camera.image
    if not image.is_file():
        raise ImagePredictionError(f"image file {image} of camera {camera.name!r} does not exist")
    size = image_size(image)
    if size != (camera.width, camera.height):
        raise ImagePredictionError(f"image file {image} is {size[0]} x {size[1]} pixels; its calibration "
                                   f"(camera {camera.name!r}) says {camera.width} x {camera.height}")
    found = [p for p in (mirrored(predictions, camera.image, s) for s in PREDICTION_SUFFIXES) if p.is_file()]
    if len(found) != 1:
        expected = " or ".join(str(mirrored(predictions, camera.image, s)) for s in PREDICTION_SUFFIXES)
        raise ImagePredictionError(f"prediction file {expected} of image {image}: "
                                   f"{'both exist, keep one' if found else 'does not exist'}")
    path = found[0]
    array = _load_array(path)
    if array.shape[:2] != (camera.height, camera.width) or array.ndim not in (2, 3):
        raise ImagePredictionError(f"prediction file {path} has shape {array.shape}; its image {image} is "
                                   f"{camera.height} x {camera.width} (H x W ids or H x W x K probabilities)")
    feature_map, feature_path = None, None
    if features is not None:
        feature_path = mirrored(features, camera.image, ".npy")
        if not feature_path.is_file():
            raise ImagePredictionError(f"feature file {feature_path} of image {image} does not exist")
        feature_map = _load_array(feature_path)
        if feature_map.ndim != 3 or feature_map.dtype.kind != "f" or min(feature_map.shape) < 1:
            raise ImagePredictionError(f"feature file {feature_path} holds {feature_map.dtype} {feature_map.shape}; "
                                       "it must be H' x W' x C floats")
    common = dict(path=path, num_classes=class_map.num_classes, feature_map=feature_map, feature_path=feature_path,
                  width=camera.width, height=camera.height)
    if array.ndim == 3:
        if array.dtype.kind != "f" or (class_map.table is None and array.shape[2] != class_map.num_classes):
            raise ImagePredictionError(f"prediction file {path}: H x W x K probabilities must be floats with K = "
                                       f"{class_map.num_classes} (the data set's classes; or give --class-map), "
                                       f"got {array.dtype} {array.shape}")
        return FilePrediction(probs=array, train_ids=None, channels=class_map.matrix(array.shape[2], path), **common)
    if array.dtype.kind not in "iu":
        raise ImagePredictionError(f"prediction file {path}: H x W ids must be integers, got {array.dtype}")
    return FilePrediction(probs=None, train_ids=class_map.lookup(array, path), channels=None, **common)


def _load_array(path: Path) -> np.ndarray:
    """A ``.npy`` (memory-mapped, no pickles) or ``.png`` (grey or palette ids) as an array."""
    if path.suffix == ".npy":
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise ImagePredictionError(f"{path} cannot be read as a .npy array ({err})") from err
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I;16", "I"):
                raise ImagePredictionError(f"prediction file {path} is a {img.mode} image; ids are 8- or 16-bit "
                                           "grey (or palette indices)")
            return np.asarray(img)
    except (OSError, UnidentifiedImageError) as err:
        raise ImagePredictionError(f"prediction file {path} cannot be read as a PNG ({err})") from err
