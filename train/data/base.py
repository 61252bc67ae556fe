"""Map-style dataset base shared by the loaders: loading, seeded transforms, epochs (spec C, D).

Reproducible augmentation: sample ``index`` of epoch ``epoch`` is transformed with the generator
``numpy.random.default_rng([seed, epoch, index])``, so the augmented batch depends only on
(seed, epoch, index) and not on the number of DataLoader workers or the order they run in. Call
:meth:`PointCloudDataset.set_epoch` before iterating each epoch (workers receive a fresh copy of the
dataset at the start of every epoch unless ``persistent_workers=True``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
from torch.utils.data import Dataset

Transform = Callable[[dict, np.random.Generator], dict]


class PointCloudDataset(Dataset, ABC):
    """Base class: subclasses implement ``__len__``, :meth:`load` and set ``class_names``."""

    class_names: tuple[str, ...] = ()

    def __init__(self, transform: Transform | None = None, seed: int = 0) -> None:
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

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
        sample = self.load(index)
        if self.transform is None:
            return sample
        return self.transform(sample, np.random.default_rng([self.seed, self.epoch, index]))


def label_frequencies(dataset: PointCloudDataset, max_scans: int = 500) -> np.ndarray:
    """Labelled points per class (K,) over the untransformed scans of ``dataset`` (every scan, or
    ``max_scans`` spread evenly over it: class shares of a large split need no full pass)."""
    n = len(dataset)
    if n == 0:
        raise ValueError(f"{type(dataset).__name__} holds no scans to count labels in")
    picks = np.unique(np.linspace(0, n - 1, min(n, max_scans)).round().astype(np.int64))
    counts = np.zeros(dataset.num_classes, dtype=np.float64)
    for i in picks:
        seg = np.asarray(dataset.load(int(i))["segment"]).reshape(-1)
        seg = seg[(seg >= 0) & (seg < dataset.num_classes)]
        counts += np.bincount(seg, minlength=dataset.num_classes)
    return counts
