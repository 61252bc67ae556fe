"""Synthetic LiDAR simulator: procedural street scenes, a spinning multi-beam ray caster, pinhole
cameras on the same vehicle, and a writer of the Waymo preprocessed layout (the data set built into
the project, used by default).

Modules: ``primitives`` (ray/primitive intersection), ``scene`` (scene generator), ``raycast``
(the nearest hit along rays, shared by the sensors), ``sensor`` (LiDAR model and scan),
``camera_rig`` (camera rigs and their renderer), ``dataset`` (writer and cache).
"""
from .camera_rig import RIGS, CameraMount, CameraRig, render_rig
from .dataset import ensure_synthetic_dataset, simulate_frames, synthesize_dataset
from .scene import Scene, generate_scene
from .sensor import SensorConfig, cast_scan

__all__ = ["RIGS", "CameraMount", "CameraRig", "Scene", "SensorConfig", "cast_scan", "ensure_synthetic_dataset",
           "generate_scene", "render_rig", "simulate_frames", "synthesize_dataset"]
