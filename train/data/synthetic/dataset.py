"""Write simulated scans in the Waymo preprocessed layout; cache them for the training CLI.

``synthesize_dataset`` draws scene ``i`` from ``numpy.random.default_rng([seed, i])`` and the
sensor noise of its frame ``f`` from ``default_rng([seed, i, f, 1])``, so the output depends only
on the parameters (not on the number of scenes generated before, nor on the worker count). The
split of a scene depends only on its index (see the end of this docstring). Each frame folder holds
``coord.npy`` (n,3) float32 vehicle frame, ``strength.npy`` (n,1) float32 tanh(intensity),
``segment.npy`` (n,) int32 train id (= Waymo raw label - 1, -1 undefined), ``pose.npy`` (4,4)
float64 vehicle -> world and, in validation and testing, ``mask.npy`` (n,) bool, all True (the
layout's mask selects points of the labelled top lidar; every simulated point comes from the one
simulated sensor). The loaders read neither pose nor mask.

Splits are whole scenes, so no scene contributes frames to two splits: the last
``round(scenes * test_fraction)`` scenes form ``testing/`` (held out, labelled, unlike Waymo's own
testing split: choices are made on validation and reported on it), the
``round(scenes * val_fraction)`` scenes before them ``validation/`` and the rest ``training/``. A
positive fraction always gets at least one scene and training keeps at least one.
``unlabelled_scenes`` more scenes, numbered after those (so none is a scene of another split),
form ``unlabelled/``: their frames are written without ``segment.npy`` (decision 57).

With a camera rig (``cameras``, :data:`.camera_rig.RIGS`; none by default) every frame folder also
holds ``cameras.json`` (:func:`train.data.cameras.camera.write_camera_list`, image paths relative to the
root) and, per camera NAME, ``cameras/NAME.png`` (RGB colour), ``cameras/NAME_class.png`` (uint8
train ids, 255 none; not in ``unlabelled/``, whose frames carry no labels) and
``cameras/NAME_depth.npy`` (float32 metres along the optical axis, inf none), rendered from the
frame's scene and ego pose with the colour noise of ``default_rng([seed, i, f, 2])``: the LiDAR's
stream is untouched, so a set's scans are the same with cameras or without (decision 58).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from train.runtime.files import NO_ROOM, NoRoomError

from ..cameras.camera import write_camera_list
from .camera_rig import NO_CAMERAS, RENDERER_VERSION, CameraRig, camera_rig, render_rig
from .scene import DEFAULT_VARIANT, generate_scene, scene_style
from .sensor import SensorConfig, cast_scan

GENERATOR_VERSION = 1
MARKER = "synthetic.json"
FRAME_SPACING = 1.0  # metres the ego advances between frames of one scene (10 m/s at 10 Hz)
_LOG = logging.getLogger(__name__)


SPLIT_DIRS = ("training", "validation", "testing", "unlabelled")


def split_sizes(scenes: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(validation, testing) scene counts; a positive fraction gets >= 1 scene, training >= 1."""
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {frac}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1 (training needs scenes), got "
                         f"{val_fraction} + {test_fraction}")
    n_val, n_test = (max(int(round(scenes * f)), 1 if f > 0 else 0) for f in (val_fraction, test_fraction))
    if scenes - n_val - n_test < 1:
        raise ValueError(f"{scenes} scene(s) cannot hold {n_val} validation and {n_test} test scene(s) and "
                         f"at least one training scene: generate more scenes or lower the fractions")
    return n_val, n_test


def scene_split(index: int, scenes: int, n_val: int, n_test: int) -> str:
    """Split folder of scene ``index``: the last n_test scenes test, the n_val before them validate."""
    if index >= scenes - n_test:
        return "testing"
    return "validation" if index >= scenes - n_test - n_val else "training"


def simulate_frames(scene_index: int, seed: int, sensor: SensorConfig, frames_per_scene: int = 1,
                    half_length: float = 80.0, variant: str = DEFAULT_VARIANT,
                    rig: CameraRig | None = None) -> list[dict]:
    """All frames of scene ``scene_index`` (the ego moves FRAME_SPACING m along its heading): the
    arrays of :func:`.sensor.cast_scan` and, with a ``rig``, ``"cameras"``: its
    :class:`.camera_rig.RenderedCamera` images of the frame."""
    scene = generate_scene(np.random.default_rng([seed, scene_index]), half_length, variant)
    ex, ey, yaw = scene.ego
    frames = []
    for f in range(frames_per_scene):
        ego = (ex + f * FRAME_SPACING * np.cos(yaw), ey + f * FRAME_SPACING * np.sin(yaw), yaw)
        frame: dict = cast_scan(scene, sensor, np.random.default_rng([seed, scene_index, f, 1]), ego)
        if rig is not None:
            frame["cameras"] = render_rig(scene, rig, ego, np.random.default_rng([seed, scene_index, f, 2]))
        frames.append(frame)
    return frames


def write_frame(root: Path, frame: str, scan: dict, with_mask: bool, labelled: bool = True) -> None:
    """Frame ``frame`` (``<split>/<segment>/<timestamp>``) of ``scan`` under ``root``."""
    frame_dir = root / frame
    frame_dir.mkdir(parents=True, exist_ok=True)
    np.save(frame_dir / "coord.npy", scan["coord"])
    np.save(frame_dir / "strength.npy", scan["strength"])
    if labelled:
        np.save(frame_dir / "segment.npy", scan["segment"].astype(np.int32))
    np.save(frame_dir / "pose.npy", scan["pose"])
    if with_mask:
        np.save(frame_dir / "mask.npy", np.ones(len(scan["coord"]), dtype=bool))
    if "cameras" in scan:
        (frame_dir / "cameras").mkdir(exist_ok=True)
        cameras = []
        for view in scan["cameras"]:
            stem = f"cameras/{view.name}"
            Image.fromarray(view.colour).save(frame_dir / f"{stem}.png")
            if labelled:
                Image.fromarray(view.classes).save(frame_dir / f"{stem}_class.png")
            np.save(frame_dir / f"{stem}_depth.npy", view.depth)
            cameras.append(view.camera(f"{frame}/{stem}.png"))
        write_camera_list(frame_dir, cameras)


def synthesize_dataset(out: str | Path, scenes: int, seed: int = 0,
                       sensor: SensorConfig | None = None, val_fraction: float = 0.2,
                       frames_per_scene: int = 1, half_length: float = 80.0,
                       test_fraction: float = 0.2, variant: str = DEFAULT_VARIANT,
                       unlabelled_scenes: int = 0, cameras: str = NO_CAMERAS) -> Path:
    """Generate ``scenes`` labelled and ``unlabelled_scenes`` unlabelled scenes of style ``variant``
    into ``out`` (Waymo layout, see the module docstring), with the camera rig named ``cameras``."""
    if scenes < 1 or frames_per_scene < 1 or unlabelled_scenes < 0:
        raise ValueError(f"need scenes >= 1, frames_per_scene >= 1 and unlabelled_scenes >= 0, got {scenes}, "
                         f"{frames_per_scene}, {unlabelled_scenes}")
    scene_style(variant)  # an unknown variant fails before anything is written
    rig = camera_rig(cameras)  # so does an unknown rig
    sensor = sensor or SensorConfig()
    out = Path(out)
    n_val, n_test = split_sizes(scenes, val_fraction, test_fraction)
    for i in range(scenes + unlabelled_scenes):
        split = scene_split(i, scenes, n_val, n_test) if i < scenes else "unlabelled"
        for f, scan in enumerate(simulate_frames(i, seed, sensor, frames_per_scene, half_length, variant, rig)):
            frame = f"{split}/segment-synth-{seed}-{i:05d}/{1_600_000_000_000_000 + f * 100_000}"
            write_frame(out, frame, scan, with_mask=split not in ("training", "unlabelled"),
                        labelled=split != "unlabelled")
    return out


def generator_params(scenes: int, seed: int, sensor: SensorConfig, val_fraction: float,
                     frames_per_scene: int, half_length: float, test_fraction: float,
                     variant: str = DEFAULT_VARIANT, unlabelled_scenes: int = 0,
                     cameras: str = NO_CAMERAS) -> dict:
    """Everything the output depends on; stored in the marker file. The variant, the unlabelled
    scenes and the cameras (the rig's name, its every field and the renderer's version) are
    recorded only when they are not the demo's, so the demo's sets cached before they existed
    stay valid."""
    params = {"generator_version": GENERATOR_VERSION, "scenes": scenes, "seed": seed,
              "sensor": sensor.as_dict(), "val_fraction": val_fraction, "test_fraction": test_fraction,
              "frames_per_scene": frames_per_scene, "half_length": half_length}
    if variant != DEFAULT_VARIANT:
        params["variant"] = variant
    if unlabelled_scenes:
        params["unlabelled_scenes"] = unlabelled_scenes
    rig = camera_rig(cameras)
    if rig is not None:
        params["cameras"] = {"rig": cameras, "renderer_version": RENDERER_VERSION, **rig.as_dict()}
    return params


def ensure_synthetic_dataset(root: str | Path, scenes: int = 120, seed: int = 0,
                             sensor: SensorConfig | None = None, val_fraction: float = 0.2,
                             frames_per_scene: int = 1, half_length: float = 80.0,
                             test_fraction: float = 0.2, variant: str = DEFAULT_VARIANT,
                             unlabelled_scenes: int = 0, cameras: str = NO_CAMERAS,
                             **sensor_overrides: float) -> Path:
    """Return ``root`` holding the synthetic set for these parameters, generating it if needed.

    ``root/synthetic.json`` records the parameters; a matching complete marker means the cached
    set is reused, a different or incomplete one means the split folders are deleted and
    regenerated. A non-empty ``root`` without the marker is refused (it is not ours).
    ``sensor_overrides`` replace fields of the sensor config (e.g. ``beams=64``); ``variant`` picks the scene style
    (``scene.STYLES``); ``unlabelled_scenes`` adds the unlabelled split; ``cameras`` names the
    camera rig (``camera_rig.RIGS``, ``"none"``: no images). The default
    sensor (32 beams x 560 azimuths, Waymo top-lidar vertical field of view) gives about 16k
    points per scan, a CPU-demo size.
    """
    sensor = replace(sensor or SensorConfig(), **sensor_overrides)
    root = Path(root)
    split_sizes(scenes, val_fraction, test_fraction)  # bad fractions fail before anything is deleted
    scene_style(variant)  # so does an unknown variant
    params = generator_params(scenes, seed, sensor, val_fraction, frames_per_scene, half_length, test_fraction,
                              variant, unlabelled_scenes, cameras)  # and an unknown rig
    marker = root / MARKER
    if marker.is_file():
        try:
            recorded = json.loads(marker.read_text())
        except json.JSONDecodeError:
            recorded = {}
        if recorded.get("complete") and recorded.get("params") == params:
            return root
        _LOG.info("synthetic set at %s was made with other parameters or is incomplete; "
                  "regenerating", root)
        for split in SPLIT_DIRS:
            shutil.rmtree(root / split, ignore_errors=True)
    elif root.exists() and any(root.iterdir()):
        raise FileExistsError(
            f"{str(root)!r} is not empty and has no {MARKER}; it is not a synthetic data set made "
            f"here. Choose an empty or new folder for the synthetic data (or delete this one)."
        )
    root.mkdir(parents=True, exist_ok=True)
    try:
        marker.write_text(json.dumps({"complete": False, "params": params}, indent=1))
        _LOG.info("generating %d synthetic scenes into %s", scenes, root)
        synthesize_dataset(root, scenes, seed, sensor, val_fraction, frames_per_scene, half_length, test_fraction,
                           variant, unlabelled_scenes, cameras)
        marker.write_text(json.dumps({"complete": True, "params": params}, indent=1))
    except OSError as err:
        if err.errno not in NO_ROOM:
            raise
        raise _no_room_for_the_set(err.errno, root) from err
    return root


def _no_room_for_the_set(number: int, root: Path) -> NoRoomError:
    """The one-line :class:`NoRoomError` of a full disk while the set is generated into ``root``
    (decision 99); its marker still says incomplete, so the next run generates it again."""
    try:
        free = f"{shutil.disk_usage(root).free / 1e6:,.1f} MB"
    except OSError:
        free = "an unknown amount"
    return NoRoomError(number, f"no room to generate the synthetic set in {root} ({os.strerror(number)}; {free} "
                       "free there): free space there or give another --data-root, and run again (the set is "
                       "generated again from its start)")
