"""DD3D's released settings by task, setting and data set (decision 92): what its code runs where the
paper's tables of hyper-parameters (its Tables 8 and 9) are empty.

Classification is the released ``gm_inr.py``, part segmentation ``seg_inr.py``; the inner loop is
Dataset Condensation's (Zhao et al. 2021, ``main.py``). Per data set family:

- (outer, inner) loops by CPC: ModelNet40 aligned (10, 1), (20, 1), (40, 5) and ScanObjectNN aligned
  (10, 1), (20, 10), (30, 5) at CPC 1, 10, 50; both rotated (their ``--pca`` runs) (5, 5),
  (20, 10), (40, 5); part segmentation (10, 1), (10, 2) at CPC 1, 10. A CPC not listed takes the
  loops of the largest listed one below it (the smallest's below CPC 1's).
- Outer iterations: ModelNet40 400, ScanObjectNN 200, part segmentation 400.
- An inner loop is ``inner`` epochs over the whole synthetic set in shuffled batches of 256 clouds
  (part segmentation: 32), the network's SGD; for classification its learning rate is cut by 10
  after ``(outer * inner) // 2`` epochs of an iteration (``gm_inr.py``'s StepLR; ``seg_inr.py``
  builds one and never steps it).
- The synthetic parameters' learning rate: for classification cut by 10 at half the iterations
  (``gm_inr.py``'s StepLR), for part segmentation never (``seg_inr.py`` never steps its StepLR).
  The generator's Adam: classification lr 1e-3, weight decay 5e-4; part segmentation lr 5e-4,
  weight decay 1e-5.

This project's own sets take a family each (:data:`FAMILIES`): ``shapes`` (whole sampled surfaces
of generated objects) ModelNet40's, ``lidar_objects`` and ``semantic_kitti_objects`` (partial
objects cut from LiDAR scans) ScanObjectNN's. ``rotated_raw`` (rotated, not projected) takes the
rotated loops, as the setting its test clouds share.
"""
from __future__ import annotations

from dataclasses import dataclass

from train.data.objects import ObjectSet

LoopTable = dict[int, tuple[int, int]]  # CPC -> (outer, inner)

ROTATED_LOOPS: LoopTable = {1: (5, 5), 10: (20, 10), 50: (40, 5)}  # gm_inr.py with --pca, both data sets
CLASSIFICATION_LOOPS: dict[str, dict[str, LoopTable]] = {
    "modelnet40": {"aligned": {1: (10, 1), 10: (20, 1), 50: (40, 5)}, "rotated": ROTATED_LOOPS},
    "scanobjectnn": {"aligned": {1: (10, 1), 10: (20, 10), 50: (30, 5)}, "rotated": ROTATED_LOOPS},
}
PART_LOOPS: LoopTable = {1: (10, 1), 10: (10, 2)}  # seg_inr.py
ITERATIONS = {"modelnet40": 400, "scanobjectnn": 200, "parts": 400}
FAMILIES = {"modelnet40": "modelnet40", "shapes": "modelnet40", "scanobjectnn": "scanobjectnn",
            "scanobjectnn_obj_only": "scanobjectnn", "scanobjectnn_pb_t50_rs": "scanobjectnn",
            "lidar_objects": "scanobjectnn", "semantic_kitti_objects": "scanobjectnn", "shapenet_part": "modelnet40"}
INNER_BATCH = {"classification": 256, "parts": 32}  # Dataset Condensation's batch_train; seg_inr.py's default
GENERATOR_ADAM = {"classification": (1e-3, 5e-4), "parts": (5e-4, 1e-5)}  # lr, weight decay


@dataclass(frozen=True)
class Loops:
    """Gradient matching's loops (module docstring): ``outer`` steps of the synthetic parameters an
    iteration, ``inner`` epochs of the network over the synthetic set between two of them in batches
    of ``batch``, the network's learning rate cut after half its epochs (``net_decay``) and the
    synthetic parameters' at half the iterations (``decay``)."""

    outer: int
    inner: int
    batch: int
    net_decay: bool
    decay: bool


@dataclass(frozen=True)
class GeneratorAdam:
    """The generator's optimiser: Adam's ``lr`` and ``weight_decay``."""

    lr: float
    weight_decay: float


def _task(task: str) -> str:
    if task not in INNER_BATCH:
        raise ValueError(f"task {task!r} is not one of {', '.join(INNER_BATCH)}")
    return task


def family(dataset: str) -> str:
    """The released data set whose settings ``dataset`` takes (:data:`FAMILIES`)."""
    if dataset not in FAMILIES:
        raise ValueError(f"data set {dataset!r} has no released settings (one of {', '.join(FAMILIES)})")
    return FAMILIES[dataset]


def _by_cpc(table: LoopTable, cpc: int) -> tuple[int, int]:
    listed = [c for c in table if c <= cpc]
    return table[max(listed) if listed else min(table)]


def loops_for(dataset: str, setting: str, task: str, cpc: int) -> Loops:
    """The released loops of ``dataset`` in ``setting`` for ``task`` at ``cpc`` clouds per class."""
    if _task(task) == "parts":
        table = PART_LOOPS
    else:
        table = CLASSIFICATION_LOOPS[family(dataset)]["aligned" if setting == "aligned" else "rotated"]
    outer, inner = _by_cpc(table, cpc)
    classification = task == "classification"
    return Loops(outer, inner, INNER_BATCH[task], net_decay=classification, decay=classification)


def iterations_for(dataset: str, task: str) -> int:
    """The released outer iterations of ``dataset`` for ``task``."""
    return ITERATIONS["parts" if _task(task) == "parts" else family(dataset)]


def generator_adam(task: str) -> GeneratorAdam:
    """The released generator optimiser of ``task``."""
    return GeneratorAdam(*GENERATOR_ADAM[_task(task)])


def task_of(train: ObjectSet) -> str:
    """``parts`` for a part segmentation split, else ``classification``."""
    return "classification" if train.parts is None else "parts"


def loops_of(train: ObjectSet, cpc: int) -> Loops:
    """The released loops of the ``train`` split's data set, setting and task at ``cpc``."""
    return loops_for(train.name, train.setting, task_of(train), cpc)
