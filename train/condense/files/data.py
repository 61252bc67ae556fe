"""Which object data a condensation or an evaluation reads (:class:`DataSpec`), and the sets as
:class:`train.condense.evaluation.training.Clouds`: an ``ObjectSet`` split or a condensed-set file.

Condensation and the full-set upper bound read the ``train`` split (the standard training split
less the validation clouds, decision 66), the choices of the protocol are made on ``val`` and the
reported scores on ``test`` (decision 73). A condensed set is evaluated on the data its file names,
in the frame its file names (:func:`in_frame`, decision 86).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import lru_cache

import numpy as np

from train.condense.files.condensed_file import CondensedFileError, CondensedSet
from train.condense.files.rotator import Rotator, to_frame
from train.condense.evaluation.training import Clouds
from train.data.objects import ObjectSet, load_objects
from train.data.objects.load import GENERATED_SETS


@dataclass(frozen=True)
class DataSpec:
    """The arguments of :func:`train.data.objects.load_objects` but the split; ``data_seed`` its seed."""

    dataset: str
    root: str | None = None
    setting: str = "aligned"
    task: str = "classification"
    data_seed: int = 0
    size: int | None = None
    points: int | None = None

    def load(self, split: str) -> ObjectSet:
        """``split`` of the data; a generated set's made once a process (:func:`_generated`)."""
        if self.dataset in GENERATED_SETS and self.root is None:
            return _generated(self, split)
        return load_objects(self.dataset, self.root, split, points=self.points, setting=self.setting,
                            task=self.task, seed=self.data_seed, size=self.size)

    def key(self) -> dict[str, object]:
        """What identifies the data (its folder left out: the same download may move)."""
        return {k: v for k, v in asdict(self).items() if k != "root"}


def _generated(spec: DataSpec, split: str) -> ObjectSet:
    """A generated set's split, made once a process (:func:`_made`) and handed out as a copy, so no
    caller can change what the next one reads."""
    made = _made(spec, split)
    return replace(made, points=made.points.copy(), labels=made.labels.copy(),
                   parts=None if made.parts is None else made.parts.copy())


@lru_cache(maxsize=8)
def _made(spec: DataSpec, split: str) -> ObjectSet:
    """A generated set's split: its content follows from its arguments alone, and a study reads the
    same split in every unit (2,000 ``lidar_objects`` scenes take about two minutes of one
    core to make)."""
    return load_objects(spec.dataset, None, split, points=spec.points, setting=spec.setting, task=spec.task,
                        seed=spec.data_seed, size=spec.size)


def file_data(cset: CondensedSet, root: str | None) -> DataSpec:
    """The data a condensed set was made from, at the set's resolution (``root``: the download's folder)."""
    prov = cset.provenance
    return DataSpec(prov["dataset"], root, prov["setting"], prov["task"], prov["data_seed"], prov["size"],
                    cset.points.shape[1])


def clouds_of(objects: ObjectSet) -> Clouds:
    """An object set's clouds, labels and parts."""
    return Clouds(objects.points, objects.labels, len(objects.class_names), objects.parts, objects.part_classes)


def condensed_clouds(cset: CondensedSet, test: ObjectSet, source: str) -> Clouds:
    """A condensed set as training clouds for ``test``'s data set; CondensedFileError naming
    ``source`` when its classes or parts are not the test set's or its clouds have another size."""
    prov = cset.provenance
    if tuple(prov["class_names"]) != test.class_names:
        raise CondensedFileError(f"{source}: its classes {prov['class_names']} are not those of {test.name} "
                                 f"{list(test.class_names)}")
    if prov["part_names"] is not None and tuple(prov["part_names"]) != test.part_names:
        raise CondensedFileError(f"{source}: its part names are not those of {test.name}")
    if cset.points.shape[1] != test.points.shape[1]:
        raise CondensedFileError(f"{source}: its clouds have {cset.points.shape[1]} points, the test split "
                                 f"{test.points.shape[1]}")
    return Clouds(cset.points, cset.labels, len(test.class_names), cset.parts, test.part_classes)


def pick(objects: ObjectSet, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The points, labels and parts of ``objects``' clouds at ``index``."""
    parts = None if objects.parts is None else objects.parts[index]
    return objects.points[index], objects.labels[index], parts


def in_frame(objects: ObjectSet, rotator: Rotator) -> ObjectSet:
    """``objects`` with every cloud in ``rotator``'s frame (:func:`train.condense.files.rotator.to_frame`)."""
    return replace(objects, points=to_frame(objects.points, rotator))
