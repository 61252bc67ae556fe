"""Data: LiDAR loaders (Waymo, nuScenes, SemanticKITTI, a folder of one's own scans and the scan
files it reads), transforms, collate and the synthetic simulator (spec sections C and D of
``docs/ptv3-and-datasets.md``; ``docs/own-data.md``).

The names below are resolved on first access (PEP 562), so that importing one module of the
package does not import the others: the scan readers, the loaders and the transforms import
without torch, which labelling through onnxruntime never imports (decision 55).
"""
from __future__ import annotations

import importlib
from typing import Any

# Public name -> defining submodule.
_EXPORTS: dict[str, str] = {
    "PointCloudDataset": ".base", "collate": ".collate", "FolderDataset": ".folder",
    "IGNORE_INDEX": ".labels", "class_names": ".labels", "NuScenesDataset": ".nuscenes",
    "SemanticKITTIDataset": ".semantic_kitti", "SensorConfig": ".synthetic",
    "ensure_synthetic_dataset": ".synthetic", "synthesize_dataset": ".synthetic", "build_transforms": ".transforms",
    "BadScanError": ".validation", "CorruptFileError": ".validation", "DatasetLayoutError": ".validation",
    "LabelCountError": ".validation", "NonFiniteCoordinateError": ".validation", "TooFewPointsError": ".validation",
    "WaymoDataset": ".waymo",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'train.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
