"""Data, in rooms by purpose (decision 82), each importing only from the rooms above it in this list:

- the checks every loader shares and the class lists: ``validation``, ``labels``,
  ``restricted_pickle`` (spec section C);
- ``cameras``: the calibrated camera and its rolling shutter, the camera images a 2D network reads,
  its predictions carried onto the points, the camera teacher's files (decisions 58-64);
- the samples every data set yields: ``base`` (the map-style data set), ``transforms`` (spec
  section D), ``collate`` (spec A1), ``mixed`` (unlabelled scans mixed in, decision 57);
- ``lidar``: the LiDAR data sets as they are downloaded, one module per data set and its files
  (``nuscenes*``, ``waymo*`` with the v2 converter ``waymo_convert``, ``semantic_kitti``, ``folder``
  with the ``scan_files`` it reads and the ``image_label_files`` it is written as; ``docs/own-data.md``);
- ``synthetic``: the simulator of the built-in data set and its command ``synthesize``;
- ``objects``: the object data sets of shape classification and part segmentation (decision 66).

Modules that moved into the rooms keep their old import paths (``train.data.nuscenes`` is
``train.data.lidar.nuscenes``; the table :data:`MOVED`, through ``train.runtime.moved_modules``),
so a user's script, a saved checkpoint and ``python -m train.data.convert`` still work; the
repository itself names only the new paths (``tests/test_train_layout.py``).

The names below are resolved on first access (PEP 562), so that importing one module of the
package does not import the others: the scan readers, the loaders and the transforms import
without torch, which labelling through onnxruntime never imports (decision 55).
"""
from __future__ import annotations

import importlib
from typing import Any

from train.runtime.moved_modules import alias_moved_modules

# Public name -> defining submodule.
_EXPORTS: dict[str, str] = {
    "PointCloudDataset": ".base", "collate": ".collate", "FolderDataset": ".lidar.folder",
    "IGNORE_INDEX": ".labels", "class_names": ".labels", "NuScenesDataset": ".lidar.nuscenes",
    "SemanticKITTIDataset": ".lidar.semantic_kitti", "SensorConfig": ".synthetic",
    "ensure_synthetic_dataset": ".synthetic", "synthesize_dataset": ".synthetic", "build_transforms": ".transforms",
    "BadScanError": ".validation", "CorruptFileError": ".validation", "DatasetLayoutError": ".validation",
    "LabelCountError": ".validation", "NonFiniteCoordinateError": ".validation", "TooFewPointsError": ".validation",
    "WaymoDataset": ".lidar.waymo",
}

__all__ = sorted(_EXPORTS)

# Old module -> where it moved into the rooms: the old paths keep importing the moved modules. The old
# ``train.data.cameras`` module is now the ``cameras`` room, whose package answers its names.
MOVED: dict[str, str] = {
    "train.data.rolling_shutter": "train.data.cameras.rolling_shutter",
    "train.data.camera_images": "train.data.cameras.camera_images",
    "train.data.camera_teacher": "train.data.cameras.camera_teacher",
    "train.data.image_projection": "train.data.cameras.image_projection",
    "train.data.image_predictions": "train.data.cameras.image_predictions",
    "train.data.nuscenes": "train.data.lidar.nuscenes",
    "train.data.nuscenes_index": "train.data.lidar.nuscenes_index",
    "train.data.nuscenes_cameras": "train.data.lidar.nuscenes_cameras",
    "train.data.waymo": "train.data.lidar.waymo",
    "train.data.waymo_source": "train.data.lidar.waymo_source",
    "train.data.waymo_v2": "train.data.lidar.waymo_v2",
    "train.data.waymo_v2_cameras": "train.data.lidar.waymo_v2_cameras",
    "train.data.semantic_kitti": "train.data.lidar.semantic_kitti",
    "train.data.folder": "train.data.lidar.folder",
    "train.data.scan_files": "train.data.lidar.scan_files",
    "train.data.image_label_files": "train.data.lidar.image_label_files",
    "train.data.convert": "train.data.lidar.waymo_convert",
    "train.data.synthesize": "train.data.synthetic.synthesize",
}
alias_moved_modules(MOVED)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'train.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
