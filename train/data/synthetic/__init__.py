"""Synthetic LiDAR simulator: procedural street scenes, a spinning multi-beam ray caster, and a
writer of the Waymo preprocessed layout (the data set built into the project, used by default).

Modules: ``primitives`` (ray/primitive intersection), ``scene`` (scene generator),
``sensor`` (sensor model and ray casting), ``dataset`` (writer and cache).
"""
from .dataset import ensure_synthetic_dataset, simulate_frames, synthesize_dataset
from .scene import Scene, generate_scene
from .sensor import SensorConfig, cast_scan

__all__ = ["Scene", "SensorConfig", "cast_scan", "ensure_synthetic_dataset", "generate_scene",
           "simulate_frames", "synthesize_dataset"]
