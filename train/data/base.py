"""Map-style dataset base shared by the loaders: loading, seeded transforms, epochs (spec C, D).

Reproducible augmentation: sample ``index`` of epoch ``epoch`` is transformed with the generator
``numpy.random.default_rng([seed, epoch, index])``, so the augmented batch depends only on
(seed, epoch, index) and not on the number of DataLoader workers or the order they run in. Call
:meth:`PointCloudDataset.set_epoch` before iterating each epoch (workers receive a fresh copy of the
dataset at the start of every epoch unless ``persistent_workers=True``).

Bad scans (decision 25): a scan whose files cannot be read as a valid scan raises
:class:`~train.data.validation.BadScanError` naming the file. With ``skip_bad_scans`` set (the
training set of ``--skip-bad-scans``) its slot takes the next readable scan of the split instead
(so a batch keeps its size and DDP ranks stay in step), and the sample carries the error in
``"skipped"`` for the training loop to warn about and count. A scan the transform cannot take (no
points; one voxel in training, decision 54) is a bad scan too.

A training set taught by the camera teacher (``camera_teacher``, decision 61) adds each scan's
projected probabilities (and 2D features) to the sample as it is loaded, before the transforms
(:mod:`train.data.cameras.camera_teacher`); a missing or bad file of it is a bad scan of its own.
"""
from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np

from .cameras.camera_teacher import CameraTeacherFiles
from .cameras.camera import Camera
from .validation import BadScanError, model_input

Transform = Callable[[dict, np.random.Generator], dict]


class PointCloudDataset(ABC):
    """Base class: subclasses implement ``__len__``, :meth:`load` and set ``class_names``. A map-style
    data set as torch's DataLoader reads it, without deriving from torch's ``Dataset``: the loaders
    also serve the labelling that never imports torch (decision 55)."""

    class_names: tuple[str, ...] = ()

    def __init__(self, transform: Transform | None = None, seed: int = 0) -> None:
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0
        self.skip_bad_scans = False
        self.camera_teacher: CameraTeacherFiles | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def checkpoint_entries(self) -> dict[str, Any]:
        """What a model trained on these scans keeps beside its weights, as plain values, to read new
        scans as these were read (``extra`` of its checkpoints): nothing for a published set, whose
        name in the run config says it all; a scan folder's description (:mod:`train.data.lidar.folder`)."""
        return {}

    def scan_origin(self, index: int) -> tuple[str, str]:
        """(recording, frame) of scan ``index``, whichever split lists it: the sensor's run it was
        taken in (a Waymo segment, a SemanticKITTI sequence, a nuScenes scene) and the frame within
        it, so two splits holding the same frame or the same run can be told (decision 68). By default
        each scan its own run, under its ``scan_name``."""
        name = self.scan_name(index)
        return name, name

    def unused_labels(self) -> str | None:
        """Labels that a split read without them holds all the same, in words (None: none found, or
        the split is read with its labels); the run says so once and does not read them (decision 57)."""
        return None

    def cameras(self, index: int) -> list[Camera]:
        """The calibrated cameras of scan ``index`` (:mod:`train.data.cameras.camera`, decision 58): none for a
        data set whose scans come without images."""
        return []

    def with_camera_teacher(self, files: CameraTeacherFiles) -> PointCloudDataset:
        """A copy of this data set whose samples carry the camera teacher's rows of ``files``
        (decision 61); the data set itself is left as it is."""
        taught = copy.copy(self)
        taught.camera_teacher = files
        return taught

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` (see the module docstring)."""
        self.epoch = int(epoch)

    @abstractmethod
    def load(self, index: int) -> dict:
        """Read sample ``index`` untransformed: {coord, strength, segment, name}."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of samples."""

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"{type(self).__name__}: index {index} out of range [0, {len(self)})")
        index = index % len(self)
        try:
            return self._sample(index)
        except BadScanError as err:
            if not self.skip_bad_scans:
                raise
            return {**self._next_usable(index, err), "skipped": [str(err)]}

    def _sample(self, index: int) -> dict:
        """Scan ``index`` read and transformed (a scan the transform cannot take, e.g. one of no
        points, is a :class:`~train.data.validation.BadScanError` as an unreadable one is)."""
        sample = self.load(index)
        if self.camera_teacher is not None:
            sample = self.camera_teacher.attach(sample)
        if self.transform is None:
            return sample
        return self.transform(model_input(sample), np.random.default_rng([self.seed, self.epoch, index]))

    def _next_usable(self, bad: int, err: BadScanError) -> dict:
        """The first scan after ``bad`` (cyclically, ``err`` its error) that loads and transforms."""
        for k in range(1, len(self)):
            try:
                return self._sample((bad + k) % len(self))
            except BadScanError:
                continue
        raise BadScanError(f"{type(self).__name__}: none of its {len(self)} scans can be read (--skip-bad-scans "
                           f"needs at least one good scan); the first bad one: {err}")


def label_frequencies(dataset: PointCloudDataset, max_scans: int = 500) -> np.ndarray:
    """Labelled points per class (K,) over the untransformed scans of ``dataset`` (every scan, or
    ``max_scans`` spread evenly over it: class shares of a large split need no full pass)."""
    n = len(dataset)
    if n == 0:
        raise ValueError(f"{type(dataset).__name__} holds no scans to count labels in")
    picks = np.unique(np.linspace(0, n - 1, min(n, max_scans)).round().astype(np.int64))
    counts = np.zeros(dataset.num_classes, dtype=np.float64)
    for i in picks:
        try:
            sample = dataset.load(int(i))
        except BadScanError:
            if not dataset.skip_bad_scans:
                raise
            continue  # training warns about it and counts it when it meets it
        seg = np.asarray(sample["segment"]).reshape(-1)
        seg = seg[(seg >= 0) & (seg < dataset.num_classes)]
        counts += np.bincount(seg, minlength=dataset.num_classes)
    return counts
