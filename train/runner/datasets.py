"""Training, validation and (where labelled) test splits of the chosen dataset (spec C and D).

Builds the loaders of ``train.data`` with the PTv3 transform pipelines (training augmentation,
deterministic evaluation pipeline), and for test-time augmentation one evaluation dataset per
fixed view (:func:`train.data.transforms.tta_views`) inserted before grid sampling. ``--dataset synthetic``
generates the simulated scans first (rank 0 only, the others wait) unless they are cached;
``--dataset waymo`` on a v2 parquet root converts it once into ``<--out>/waymo_v2_converted``
(spec F6). A real dataset whose files are missing fails here, before any model is built, with the
loader's message (where it looked, the expected layout, ``--data-root``). With the camera teacher
(``--teacher images``, decision 61) the training scans (and the unlabelled split's) read their
files of ``--image-predictions``; a scan without one is refused here in one line (with
``--skip-bad-scans``: counted, and skipped when training meets it), and how many points per scan a
camera sees is counted once.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from train.config import MIXED_STAGES, RunConfig
from train.data.cameras.camera_teacher import CameraTeacherFiles
from train.data.transforms import tta_views

if TYPE_CHECKING:  # torch is imported where processes meet; the loaders and pipelines serve decision 55 without it
    from train.runtime.distributed import DistInfo

# (training, validation, labelled test split or None) folder names of each dataset. The official
# test splits of Waymo, nuScenes and SemanticKITTI carry no labels; the synthetic set holds out
# labelled test scenes (train.data.synthetic), so choices made on validation are reported on test.
SPLITS: dict[str, tuple[str, str, str | None]] = {
    "waymo": ("training", "validation", None),
    "synthetic": ("training", "validation", "testing"),
    "nuscenes": ("train", "val", None),
    "semantic_kitti": ("train", "val", None),
    "folder": ("train", "val", "test"),  # test only where dataset.yaml names it (train.data.lidar.folder)
}
EVAL_SPLITS: tuple[str, ...] = ("val", "test")


@dataclass
class SplitData:
    train: Any
    eval_factory: Callable[[str, Any], Any]
    collate: Callable
    class_names: tuple[str, ...]
    has_test: bool
    unlabelled: Any = None  # the --unlabelled-split scans, with the training pipeline (None: none)
    camera: dict[str, Any] | None = None  # the camera teacher's folder and its coverage (decision 61)
    camera_files: CameraTeacherFiles | None = None  # the files it reads
    _views: dict[tuple[str, bool], list[Any]] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def training_set(self, cfg: RunConfig, stage: str) -> Any:
        """The training scans of ``stage``: with an unlabelled split (``cfg.unlabelled_split``, opened
        by :func:`prepare_splits`), those of a stage that distils (kd, distill) get its scans mixed in
        (:class:`train.data.mixed.MixedSplit`, decision 57); with the camera teacher, that stage's
        scans read its files (decision 61; the CE student's do not)."""
        train, unlabelled = self.train, self.unlabelled
        if self.camera_files is not None and stage in MIXED_STAGES:
            train = train.with_camera_teacher(self.camera_files)
            unlabelled = None if unlabelled is None else unlabelled.with_camera_teacher(self.camera_files)
        if unlabelled is None or cfg.unlabelled_split is None or stage not in MIXED_STAGES:
            return train
        from train.data.mixed import MixedSplit

        read = None if cfg.iters_per_epoch is None else cfg.iters_per_epoch * cfg.batch_size  # an epoch's reads
        return MixedSplit(train, unlabelled, cfg.unlabelled_split, cfg.unlabelled_ratio, cfg.seed, read)

    def eval_views(self, split: str, tta: bool) -> list[Any]:
        """Evaluation datasets of ``split`` ("val" or "test"): one (no TTA) or one per fixed view."""
        if split not in EVAL_SPLITS or (split == "test" and not self.has_test):
            raise ValueError(f"no labelled {split!r} split in this dataset (labelled: "
                             f"{'val, test' if self.has_test else 'val'})")
        if (split, tta) not in self._views:
            views = tta_views() if tta else [None]
            self._views[(split, tta)] = [self.eval_factory(split, v) for v in views]
        return self._views[(split, tta)]

    def val_views(self, tta: bool) -> list[Any]:
        """Validation datasets: one (no TTA) or one per fixed test-time view."""
        return self.eval_views("val", tta)


def dataset_class(name: str) -> type:
    """The loader class of dataset ``name`` (``synthetic`` is read as Waymo)."""
    if name in ("waymo", "synthetic"):
        from train.data.lidar.waymo import WaymoDataset

        return WaymoDataset
    if name == "nuscenes":
        from train.data.lidar.nuscenes import NuScenesDataset

        return NuScenesDataset
    if name == "folder":
        from train.data.lidar.folder import FolderDataset

        return FolderDataset
    from train.data.lidar.semantic_kitti import SemanticKITTIDataset

    return SemanticKITTIDataset


def class_count(cfg: RunConfig) -> int:
    """Number of classes the models of a run of ``cfg`` predict (a scan folder's: its dataset.yaml's)."""
    if cfg.dataset == "folder":
        from train.data.lidar.folder import read_folder_spec

        return len(read_folder_spec(cfg.data_root).description.classes)
    return len(dataset_class(cfg.dataset).class_names)


def eval_pipeline(dataset: str, grid_size: float, view: Any = None) -> Any:
    """The deterministic evaluation pipeline of ``dataset``, with the test-time ``view``
    (:class:`train.data.transforms.FixedView`) inserted before grid sampling when given."""
    from train.data.transforms import Compose, GridSample, build_transforms

    pipeline = build_transforms(dataset, train=False, grid_size=grid_size)
    if view is None:
        return pipeline
    steps = list(pipeline.transforms)
    at = next(i for i, t in enumerate(steps) if isinstance(t, GridSample))
    return Compose(steps[:at] + [view] + steps[at:])


def ensure_synthetic(cfg: RunConfig, info: DistInfo) -> None:
    from train.runtime.distributed import barrier

    if info.is_main:
        from train.data.synthetic import ensure_synthetic_dataset

        sensor = {k: v for k, v in (("beams", cfg.synthetic_beams), ("azimuth_steps", cfg.synthetic_azimuth_steps))
                  if v is not None}
        ensure_synthetic_dataset(Path(cfg.data_root), scenes=cfg.synthetic_scenes, seed=cfg.synthetic_seed,
                                 val_fraction=cfg.synthetic_val_fraction,
                                 test_fraction=cfg.synthetic_test_fraction, variant=cfg.synthetic_variant,
                                 unlabelled_scenes=cfg.synthetic_unlabelled_scenes, cameras=cfg.synthetic_cameras,
                                 **sensor)
    barrier()


def prepare_splits(cfg: RunConfig, info: DistInfo) -> SplitData:
    """Datasets, collate function and class names of ``cfg.dataset``."""
    from train.data.collate import collate
    from train.data.transforms import build_transforms

    if cfg.dataset == "synthetic":
        ensure_synthetic(cfg, info)
    cls = dataset_class(cfg.dataset)
    train_split, val_split, test_split = SPLITS[cfg.dataset]
    if cfg.dataset == "synthetic" and cfg.synthetic_test_fraction == 0:
        test_split = None
    root = Path(cfg.data_root)
    if cfg.dataset == "waymo":  # a v2 parquet root is converted once under --out (train.data.lidar.waymo_convert)
        from train.data.lidar.waymo_convert import DEFAULT_WORKERS, prepare_waymo_root

        root = prepare_waymo_root(root, Path(cfg.out), info.world_size, DEFAULT_WORKERS,
                                  unlabelled=cfg.unlabelled_split is not None)
    # nuScenes: the version picks the tables and what "train"/"val" stand for (train.data.lidar.nuscenes)
    version = {"version": cfg.nuscenes_version} if cfg.dataset == "nuscenes" else {}
    train = cls(root, train_split, transform=build_transforms(cfg.dataset, train=True, grid_size=cfg.grid_size),
                seed=cfg.seed, **version)
    train.skip_bad_scans = cfg.skip_bad_scans
    if cfg.dataset == "folder" and "test" not in train.spec.splits:
        test_split = None

    def eval_factory(split: str, view: Any) -> Any:
        pipeline = eval_pipeline(cfg.dataset, cfg.grid_size, view)
        if split == "test":  # only the synthetic set and a scan folder have a labelled test split (SPLITS)
            labelled = {"labelled": True} if cfg.dataset == "synthetic" else {}
            return cls(root, test_split, transform=pipeline, seed=cfg.seed, **labelled)
        return cls(root, val_split, transform=pipeline, seed=cfg.seed, **version)

    data = SplitData(train=train, eval_factory=eval_factory, collate=collate, class_names=tuple(train.class_names),
                     has_test=test_split is not None)
    data.val_views(False)  # open the validation split now: a missing one fails before training
    if len(train) == 0 or len(data.val_views(False)[0]) == 0:
        raise FileNotFoundError(
            f"{cfg.dataset} at {root} has {len(train)} {train_split} and {len(data.val_views(False)[0])} "
            f"{val_split} scans; both splits need at least one (check --data-root)"
        )
    if cfg.unlabelled_split is not None:
        data.unlabelled = _unlabelled_split(cfg, cls, root, data, info, **version)
    if cfg.teacher == "images":
        data.camera_files, data.camera = _camera_teacher(cfg, data, info)
    return data


def _camera_teacher(cfg: RunConfig, data: SplitData, info: DistInfo) -> tuple[CameraTeacherFiles, dict[str, Any]]:
    """The camera teacher's files of the training scans and the unlabelled split's (the 2D features
    too when a stage computes L_topo), with a missing file refused in one line, or with
    ``--skip-bad-scans`` said in one line (rank 0); and the checkpoint entry of the folder with the
    points per scan a camera sees, on average (decision 61)."""
    from train.data.cameras.camera_teacher import coverage, missing_files, open_camera_teacher, scans_of

    topo = any(cfg.stage_terms(stage)["topo"] for stage in cfg.stages() if stage in MIXED_STAGES)
    files = open_camera_teacher(cfg.image_predictions, data.num_classes, features=topo)
    if files.classes is not None and files.classes != data.class_names:
        at = next((i for i, pair in enumerate(zip(files.classes, data.class_names)) if pair[0] != pair[1]),
                  min(len(files.classes), data.num_classes))
        there, here = (names[at] if at < len(names) else "none" for names in (files.classes, data.class_names))
        raise ValueError(f"--image-predictions {cfg.image_predictions} was labelled for other classes than "
                         f"{cfg.dataset}'s at {cfg.data_root} (class {at}: {there!r} there, {here!r} here): its "
                         "probability columns would teach other classes; label the splits for this data set")
    sets = [data.train] + ([data.unlabelled] if data.unlabelled is not None else [])
    scans = scans_of(sets)
    missing = missing_files(files, scans)
    if missing:
        what = (f"--image-predictions {cfg.image_predictions}: {len(missing)} file(s) of the {len(scans)} training "
                f"scans are missing (first: {missing[0]})")
        if not cfg.skip_bad_scans:
            raise FileNotFoundError(f"{what}; write them with python -m train.image_labels --probs"
                                    f"{' --features F (L_topo reads them; or pass --no-topo)' if topo else ''} for "
                                    "each training split, or pass --skip-bad-scans to train without those scans")
        if info.is_main:
            print(f"{what}: those scans are skipped and counted when training meets them (--skip-bad-scans)",
                  file=sys.stderr, flush=True)
    seen, points, counted = coverage(files, scans)
    if info.is_main:
        print(f"--teacher images: a camera sees {seen:.0f} of {points:.0f} points per scan on average "
              f"({100 * seen / max(points, 1):.1f}%), over {counted} training scans of {files.folder}",
              file=sys.stderr, flush=True)
    return files, {**files.checkpoint_entry(), "seen_per_scan": seen, "points_per_scan": points,
                   "scans_counted": counted}


def _unlabelled_split(cfg: RunConfig, cls: type, root: Path, data: SplitData, info: DistInfo,
                      **version: str) -> Any:
    """The scans of ``--unlabelled-split``, read without labels through the training pipeline; a
    split with no scans, sharing a frame with the training, validation or test split, or a recording
    (segment, sequence, scene) with the validation or test split, is refused in one line (decisions
    57, 68), and labels found in it are said once (rank 0) and not read (decision 57)."""
    from train.data.transforms import build_transforms

    name = cfg.unlabelled_split
    pipeline = build_transforms(cfg.dataset, train=True, grid_size=cfg.grid_size)
    options = version if cfg.dataset == "nuscenes" else {"labelled": False}
    unlabelled = cls(root, name, transform=pipeline, seed=cfg.seed, **options)
    unlabelled.skip_bad_scans = cfg.skip_bad_scans
    if len(unlabelled) == 0:
        raise FileNotFoundError(f"--unlabelled-split {name}: {cfg.dataset} at {root} has no scans in it")
    recordings, frames = (set(kind) for kind in zip(*(unlabelled.scan_origin(i) for i in range(len(unlabelled)))))
    others = [("training", data.train)] + [(split, data.eval_views(split, False)[0])
                                           for split in EVAL_SPLITS if split == "val" or data.has_test]
    for split, dataset in others:
        theirs = [dataset.scan_origin(i) for i in range(len(dataset))]
        shared = sorted(frames & {frame for _, frame in theirs})
        if shared:
            raise ValueError(f"--unlabelled-split {name} shares {len(shared)} frame(s) with the {split} split "
                             f"(first: {shared[0]}); an unlabelled split must hold other scans")
        runs = sorted(recordings & {recording for recording, _ in theirs}) if split != "training" else []
        if runs:
            raise ValueError(f"--unlabelled-split {name} holds frames of {len(runs)} recording(s) of the {split} "
                             f"split (first: {runs[0]}): training on them would see the scenes it is evaluated on; "
                             "an unlabelled split must hold other recordings")
    found = unlabelled.unused_labels()
    if found and info.is_main:
        print(f"--unlabelled-split {name}: {found}; they are not read (the split is trained on without labels)",
              file=sys.stderr, flush=True)
    return unlabelled
