"""Object clouds: the returned set, the raw clouds a reader hands over, the splits and the
pre-processing of DD3D (paper Sec. 5 "Data Preparation" and App. C; decision 66).

Pre-processing of one cloud (:func:`preprocess`): N points (a random subset, or all points and
random repeats when the cloud has fewer), in the ``rotated`` and ``rotated_raw`` settings a
uniformly random rotation in SO(3), then centred on the mean and, in the ``rotated`` setting,
projected onto the principal axes (paper Eq. 4, ``P U`` with the eigenvectors ordered by
decreasing variance; ``rotated_raw`` keeps the rotated cloud, the first row of the paper's Table
5), and scaled so that the farthest point lies on the unit sphere. The random stream of a cloud is
``default_rng([seed, *key])``, its key being its place in the data set (of a file's cloud: the
split code and its position in the standard split's file).

Splits (:data:`SPLITS`): ``trainval`` the data set's standard training split, ``val`` every tenth
cloud of each class of it (rank r in its class with r % 10 == 9), ``train`` the rest, ``test``
the standard test split; a data set with an official validation list uses its lists instead.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..validation import CorruptFileError, NonFiniteCoordinateError

SPLITS = ("train", "val", "trainval", "test")
SETTINGS = ("aligned", "rotated", "rotated_raw")
ROTATED = ("rotated", "rotated_raw")  # the settings whose clouds are rotated at random
TASKS = ("classification", "parts")
DEFAULT_POINTS = {"classification": 1024, "parts": 2048}
VAL_EVERY = 10  # the validation split holds every VAL_EVERY-th cloud of each class
SPLIT_CODES = {"trainval": 0, "test": 1, "train": 2, "val": 3}  # the first key of a cloud's random stream

# One cloud as read: points (M, 3) float and per-point part ids (M,) int or None.
RawCloud = tuple[np.ndarray, "np.ndarray | None"]


@dataclass(frozen=True)
class RawClouds:
    """The clouds of one standard split before pre-processing, read lazily.

    ``labels`` (S,) int64 class ids, ``keys`` (S, 2) int64 the key of each cloud's random stream
    (of a file's cloud: the split code and its position in the split's file; of a LiDAR object:
    its scan and its place in it), ``sources`` what to name in a message about
    cloud i (a file, or a file and a row), ``load(i)`` the cloud's :data:`RawCloud`.
    """

    labels: np.ndarray
    keys: np.ndarray
    sources: Sequence[str]
    load: Callable[[int], RawCloud]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> RawClouds:
        """The clouds at ``index`` (their keys and sources kept)."""
        index = np.asarray(index, dtype=np.int64)
        return RawClouds(self.labels[index], self.keys[index], [self.sources[i] for i in index],
                         lambda i: self.load(int(index[i])))

    @staticmethod
    def concat(parts: Sequence[RawClouds]) -> RawClouds:
        """The clouds of ``parts`` one after the other."""
        starts = np.cumsum([0] + [len(p) for p in parts])

        def load(i: int) -> RawCloud:
            k = int(np.searchsorted(starts, i, side="right")) - 1
            return parts[k].load(i - int(starts[k]))

        return RawClouds(np.concatenate([p.labels for p in parts]), np.concatenate([p.keys for p in parts]),
                         [s for p in parts for s in p.sources], load)


@dataclass(frozen=True)
class ObjectSet:
    """A pre-processed split of an object data set.

    ``points`` (S, N, 3) float32 centred in the unit sphere, ``labels`` (S,) int64 class ids into
    ``class_names``; for part segmentation ``parts`` (S, N) int64 part ids into ``part_names``
    (``"Class/part"``) and ``part_classes`` (P,) int64 the class each part id belongs to (None
    otherwise); ``name``, ``split`` and ``setting`` as asked.
    """

    points: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    name: str
    split: str
    setting: str
    parts: np.ndarray | None = None
    part_names: tuple[str, ...] | None = None
    part_classes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


class EmptySplitError(ValueError):
    """A split that holds no clouds (e.g. the validation split of a set with fewer than
    :data:`VAL_EVERY` training clouds a class)."""


def held_out(trainval: RawClouds, split: str) -> RawClouds:
    """``train`` or ``val`` of a standard training split (the module docstring's rule)."""
    rank = np.zeros(len(trainval), dtype=np.int64)
    for label in np.unique(trainval.labels):
        members = np.flatnonzero(trainval.labels == label)
        rank[members] = np.arange(len(members))
    is_val = rank % VAL_EVERY == VAL_EVERY - 1
    return trainval.subset(np.flatnonzero(is_val if split == "val" else ~is_val))


def standard_split(split: str, read: Callable[[str], RawClouds]) -> RawClouds:
    """``split`` of a data set whose files hold ``trainval`` and ``test``: ``read`` reads one of those."""
    if split in ("trainval", "test"):
        return read(split)
    return held_out(read("trainval"), split)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A (3, 3) rotation uniform in SO(3): QR of a Gaussian matrix with R's diagonal made positive."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def principal_axes(points: np.ndarray) -> np.ndarray:
    """(3, 3) eigenvectors of the covariance of centred ``points`` as columns, variances decreasing."""
    _, vectors = np.linalg.eigh(points.T @ points / len(points))
    return vectors[:, ::-1]


def preprocess(points: np.ndarray, parts: np.ndarray | None, n: int, setting: str,
               rng: np.random.Generator, source: str) -> tuple[np.ndarray, np.ndarray | None]:
    """One cloud (M, 3) (and its parts (M,)) as N points in the unit sphere (module docstring)."""
    with np.errstate(invalid="ignore"):  # a NaN of damaged bytes: refused below, in the file's terms
        points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        raise CorruptFileError(f"{source}: a cloud must be (M, 3) points with M >= 1, got {points.shape}")
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        raise NonFiniteCoordinateError(f"{source}: {int(bad.sum())} point(s) with NaN or infinite coordinates (the "
                                       f"first is point {int(np.flatnonzero(bad)[0])}): the file is damaged; "
                                       "re-download or re-extract it")
    m = len(points)
    if m > n:
        keep = rng.choice(m, n, replace=False)
    elif m < n:
        keep = np.concatenate([np.arange(m), rng.choice(m, n - m, replace=True)])
    else:
        keep = np.arange(m)
    points = points[keep]
    if setting in ROTATED:
        points = points @ random_rotation(rng).T
    points = points - points.mean(axis=0)
    if setting == "rotated":
        points = points @ principal_axes(points)
    radius = np.sqrt((points ** 2).sum(axis=1)).max()
    if radius == 0:
        raise CorruptFileError(f"{source}: all {n} points of the cloud coincide; it has no shape")
    return (points / radius).astype(np.float32), None if parts is None else np.asarray(parts, np.int64)[keep]


def build_set(raw: RawClouds, *, name: str, split: str, class_names: Sequence[str], points: int, setting: str,
              seed: int, part_names: Sequence[str] | None = None,
              part_classes: np.ndarray | None = None) -> ObjectSet:
    """Pre-process every cloud of ``raw``; ``part_names`` given: the clouds' parts are kept."""
    if len(raw) == 0:
        why = (f": it holds every {VAL_EVERY}th training cloud of each class, and no class has {VAL_EVERY}; use the "
               "test split, or more training clouds (a generated set: a larger size)" if split == "val" else "")
        raise EmptySplitError(f"{name}: the {split!r} split holds no clouds{why}")
    bad = (raw.labels < 0) | (raw.labels >= len(class_names))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CorruptFileError(f"{raw.sources[i]}: class id {int(raw.labels[i])} is outside the "
                               f"{len(class_names)} classes of {name}")
    clouds = np.empty((len(raw), points, 3), dtype=np.float32)
    parts = np.empty((len(raw), points), dtype=np.int64) if part_names is not None else None
    for i in range(len(raw)):
        cloud, cloud_parts = raw.load(i)
        if parts is not None and cloud_parts is None:
            raise ValueError(f"{name}: {raw.sources[i]} has no part labels")
        rng = np.random.default_rng([seed, *(int(k) for k in raw.keys[i])])
        clouds[i], kept = preprocess(cloud, cloud_parts if parts is not None else None, points, setting, rng,
                                     raw.sources[i])
        if parts is not None:
            parts[i] = kept
    return ObjectSet(clouds, raw.labels.astype(np.int64), tuple(class_names), name, split, setting, parts,
                     None if part_names is None else tuple(part_names),
                     None if part_classes is None else np.asarray(part_classes, dtype=np.int64))
