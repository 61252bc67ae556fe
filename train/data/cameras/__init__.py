"""Cameras: what a calibrated camera sees of a scan, and the camera teacher built on it (decisions 58-64).

``camera`` (the pinhole camera with its lens distortion and the camera list of a scan, decisions
58 and 63) on ``rolling_shutter`` (the pixel a moving camera saw a point at, decision 64);
``camera_images`` (the images of a split as a 2D network reads them, decision 62);
``image_predictions`` (a 2D model's per-image outputs) and ``image_projection`` (those outputs
carried onto a scan's points, decision 60); ``camera_teacher`` (the teacher's files beside the
scans, ``--teacher images``, decision 61). The data sets read their own cameras
(``train.data.lidar.nuscenes_cameras``, ``waymo_v2_cameras``) into :class:`~.camera.Camera`.

Imports only ``train.data``'s checks (``validation``); the samples, the data sets and the
simulator import it. The package also answers the names of the former module ``train.data.cameras``
(now :mod:`.camera`), so ``from train.data.cameras import Camera`` and pickles naming it still work.
"""
from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    if name.startswith("_"):
        raise AttributeError(f"module 'train.data.cameras' has no attribute {name!r}")
    return getattr(importlib.import_module(".camera", __name__), name)
