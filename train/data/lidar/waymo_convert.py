"""Convert a Waymo Open Dataset v2 (parquet) download once into the per-frame layout (spec F6).

``python -m train.data.convert waymo --src SRC --dst DST --workers N`` writes
``DST/{training,validation}/<segment>/<timestamp>/{coord,strength,segment,pose}.npy`` (the layout
:class:`train.data.lidar.waymo.WaymoDataset` reads, spec C1) from the labelled frames of every segment that
has a ``lidar_segmentation`` file. With ``--unlabelled`` it also writes
``DST/unlabelled/<segment>/<timestamp>/{coord,strength,pose}.npy``: every frame of the training
segments that has no segmentation labels (the segmentation component is not read for them; a
segment without one gives all its frames), the split ``--unlabelled-split unlabelled`` reads
(decision 57). Segments are converted in parallel and independently: each is
written under ``DST/.incomplete/`` and moved into place, then its done marker
``<segment>/.converted.json`` is written atomically, last. A killed conversion resumes where it
stopped: segments with a marker are skipped, a segment folder without one is converted again.
A segment with ``camera_image`` and ``camera_calibration`` files also gets each frame's camera
images, ``<timestamp>/cameras/NAME.jpg``, and ``cameras.json`` (:mod:`train.data.lidar.waymo_v2_cameras`).

``train.run --dataset waymo`` calls :func:`prepare_waymo_root`: a v2 root is converted into
``<--out>/waymo_v2_converted`` (once; later runs with the same ``--out`` reuse it; the unlabelled
frames too when the run reads them), a v1 TFRecord
root is refused with what to do, and any other root is left to the loader.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from train.runtime.logging_utils import progress

from ..validation import DatasetLayoutError
from .waymo_source import LABELLED_SPLITS as SPLITS
from .waymo_source import WaymoV1Error, detect_waymo_source, v1_error
from .waymo_v2 import (LIDAR, SEGMENTATION, component_path, frame_count, frame_timestamps, labelled_timestamps,
                       read_segment_frames)
from .waymo_v2_cameras import convert_frame_cameras

CONVERTED_DIRNAME = "waymo_v2_converted"
MARKER = ".converted.json"
INCOMPLETE = ".incomplete"
DEFAULT_WORKERS = min(8, os.cpu_count() or 1)
# bump when the output of a segment changes, so old markers are not trusted (2: camera images, decision 59;
# 3: the lens distortion in cameras.json, decision 63; 4: the rolling shutter in cameras.json, decision 64)
FORMAT_VERSION = 4
UNLABELLED = "unlabelled"  # DST/unlabelled/: the frames of the training segments without labels
UNLABELLED_SOURCE = "training"


def labelled_segments(src: Path, split: str) -> list[str]:
    """Segments of ``split`` with a ``lidar_segmentation`` file (the only ones with labels)."""
    folder = Path(src) / split / SEGMENTATION
    if not folder.is_dir():
        raise DatasetLayoutError(
            f"waymo v2 split {str(Path(src) / split)!r} has no {SEGMENTATION}/ folder; semantic "
            f"segmentation needs the lidar_segmentation component: download it with lidar, "
            f"lidar_calibration, lidar_pose and vehicle_pose"
        )
    return sorted(p.stem for p in folder.glob("*.parquet"))


def unlabelled_segments(src: Path) -> list[str]:
    """The training segments (those with a ``lidar`` file), whose frames without labels form the
    unlabelled split."""
    return sorted(p.stem for p in (Path(src) / UNLABELLED_SOURCE / LIDAR).glob("*.parquet"))


def _unlabelled_timestamps(split_dir: Path, segment: str) -> list[int]:
    """The frames of ``segment`` that carry no segmentation labels (all of them without the component)."""
    labelled = (set(labelled_timestamps(split_dir, segment))
                if component_path(split_dir, SEGMENTATION, segment).is_file() else set())
    return [t for t in frame_timestamps(split_dir, segment) if t not in labelled]


def _marker_ok(segment_dir: Path) -> bool:
    marker = segment_dir / MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("format_version") == FORMAT_VERSION
    except (OSError, ValueError):
        return False


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def convert_segment(src: Path, dst: Path, split: str, segment: str) -> dict:
    """Convert one segment into ``DST/<split>`` (see the module docstring); ``split`` "unlabelled"
    takes the frames of the training segment that have no labels. Returns its marker's content."""
    final = Path(dst) / split / segment
    labelled = split != UNLABELLED
    split_dir = Path(src) / (split if labelled else UNLABELLED_SOURCE)
    work = Path(dst) / INCOMPLETE / split / segment
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    timestamps = labelled_timestamps(split_dir, segment) if labelled else _unlabelled_timestamps(split_dir, segment)
    points, poses = 0, {}
    for frame in read_segment_frames(split_dir, segment, timestamps, labelled):
        frame_dir = work / str(frame.timestamp)
        frame_dir.mkdir()
        np.save(frame_dir / "coord.npy", frame.coord)
        np.save(frame_dir / "strength.npy", frame.strength)
        if labelled:
            np.save(frame_dir / "segment.npy", frame.segment)
        np.save(frame_dir / "pose.npy", frame.pose)
        points += frame.coord.shape[0]
        poses[frame.timestamp] = frame.pose
    images = convert_frame_cameras(split_dir, segment, poses, lambda ts: work / str(ts), f"{split}/{segment}")
    shutil.rmtree(final, ignore_errors=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(work, final)
    skipped = "unlabelled_frames_skipped" if labelled else "labelled_frames_skipped"
    info = {"format_version": FORMAT_VERSION, "segment": segment, "split": split,
            "frames": len(timestamps), skipped: frame_count(split_dir, segment) - len(timestamps), "points": points,
            "camera_images": images}
    _write_json_atomic(final / MARKER, info)
    return info


def _segments(src: Path, unlabelled: bool) -> list[tuple[str, str]]:
    """(output split, segment) pairs a conversion of ``src`` writes (with ``unlabelled``: those too)."""
    pairs = [(split, seg) for split in SPLITS if (Path(src) / split).is_dir() for seg in labelled_segments(src, split)]
    return pairs + ([(UNLABELLED, seg) for seg in unlabelled_segments(src)] if unlabelled else [])


def pending_segments(src: Path, dst: Path, unlabelled: bool = False) -> list[tuple[str, str]]:
    """(split, segment) pairs of ``src`` not yet converted into ``dst``."""
    return [(split, seg) for split, seg in _segments(src, unlabelled) if not _marker_ok(Path(dst) / split / seg)]


def convert_waymo(src: str | Path, dst: str | Path, workers: int = DEFAULT_WORKERS, show_progress: bool = True,
                  unlabelled: bool = False) -> dict:
    """Convert every labelled segment of the training and validation splits of ``src`` into ``dst``
    (with ``unlabelled``, also the frames without labels of the training segments).

    Returns a summary: segments converted now and before, frames and points written now.
    """
    src, dst = Path(src), Path(dst)
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    kind = detect_waymo_source(src)
    if kind == "v1":
        raise v1_error(src)
    if kind != "v2":
        raise DatasetLayoutError(
            f"--src {str(src)!r} is not a Waymo v2 download: expected <src>/training/lidar/*.parquet "
            f"and/or <src>/validation/lidar/*.parquet (with the lidar_calibration, lidar_pose, "
            f"vehicle_pose and lidar_segmentation folders beside lidar/)"
        )
    total = len(_segments(src, unlabelled))
    todo = pending_segments(src, dst, unlabelled)
    summary = {"segments_done_before": total - len(todo), "segments_converted": 0, "frames": 0, "points": 0}
    bar = progress(total=total, desc="waymo v2 -> per-frame", enabled=show_progress, initial=total - len(todo))

    def record(info: dict) -> None:
        summary["segments_converted"] += 1
        summary["frames"] += info["frames"]
        summary["points"] += info["points"]
        bar.update(1)
        bar.set_postfix(frames=summary["frames"])

    try:
        if workers == 1:
            for split, seg in todo:
                record(convert_segment(src, dst, split, seg))
        else:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = [pool.submit(convert_segment, src, dst, split, seg) for split, seg in todo]
                try:
                    for fut in as_completed(futures):
                        record(fut.result())
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
    finally:
        bar.close()
    shutil.rmtree(dst / INCOMPLETE, ignore_errors=True)
    return summary


def prepare_waymo_root(root: Path, out: Path, world_size: int, workers: int, unlabelled: bool = False) -> Path:
    """The per-frame root a ``--dataset waymo`` run reads (module docstring); converts a v2 root once.

    A distributed run does not convert (its other processes would wait past the process group's
    timeout): it reads a finished conversion or asks for ``python -m train.data.convert`` first.
    """
    root = Path(root)
    kind = detect_waymo_source(root)
    if kind == "v1":
        raise v1_error(root)
    if kind != "v2":
        return root
    dst = Path(out) / CONVERTED_DIRNAME
    if not pending_segments(root, dst, unlabelled):
        return dst
    if world_size > 1:
        raise DatasetLayoutError(
            f"waymo root {str(root)!r} is a v2 parquet download not yet converted into {str(dst)!r}; a "
            f"distributed run does not convert. Run once: python -m train.data.convert waymo --src "
            f"{root} --dst {dst} --workers {workers}{' --unlabelled' if unlabelled else ''}, then start this run again"
        )
    convert_waymo(root, dst, workers, unlabelled=unlabelled)
    return dst


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.data.convert", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="dataset", required=True)
    w = sub.add_parser("waymo", help="Waymo Open Dataset v2 parquet -> per-frame .npy layout")
    w.add_argument("--src", required=True, help="v2 download root (holds training/ and validation/)")
    w.add_argument("--dst", required=True, help="output root of the per-frame layout")
    w.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="segments converted in parallel")
    w.add_argument("--unlabelled", action="store_true",
                   help="also write DST/unlabelled/: the frames of the training segments without labels "
                   "(--unlabelled-split unlabelled; docs/decisions.md decision 57)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = convert_waymo(args.src, args.dst, args.workers, unlabelled=args.unlabelled)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
