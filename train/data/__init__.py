"""Data: LiDAR loaders (Waymo, nuScenes, SemanticKITTI, a folder of one's own scans and the scan
files it reads), transforms, collate and the synthetic simulator (spec sections C and D of
``docs/ptv3-and-datasets.md``; ``docs/own-data.md``)."""
from .base import PointCloudDataset
from .collate import collate
from .folder import FolderDataset
from .labels import IGNORE_INDEX, class_names
from .nuscenes import NuScenesDataset
from .semantic_kitti import SemanticKITTIDataset
from .synthetic import SensorConfig, ensure_synthetic_dataset, synthesize_dataset
from .transforms import build_transforms
from .validation import (BadScanError, CorruptFileError, DatasetLayoutError, LabelCountError, NonFiniteCoordinateError,
                         TooFewPointsError)
from .waymo import WaymoDataset

__all__ = [
    "IGNORE_INDEX", "BadScanError", "CorruptFileError", "DatasetLayoutError", "FolderDataset", "LabelCountError",
    "NonFiniteCoordinateError", "NuScenesDataset", "PointCloudDataset", "SemanticKITTIDataset",
    "SensorConfig", "TooFewPointsError", "WaymoDataset",
    "build_transforms", "class_names", "collate", "ensure_synthetic_dataset", "synthesize_dataset",
]
