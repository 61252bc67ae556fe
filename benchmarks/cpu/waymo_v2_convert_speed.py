"""Frames per second of the Waymo v2 -> per-frame conversion at the real range image sizes (spec F).

Writes one segment of ``--frames`` labelled frames in the official v2 columns: the top lidar's
64 x 2650 range images (both returns, per-pixel pose, labels) and four 200 x 600 short-range
lidars. Hit pixels: 95% (return 1) and 10% (return 2) on the top lidar, 6% and 1% on the others,
about 200k points per frame as in real scans (the ranges are random; the work is per pixel and per
point). ``--unlabelled-per-labelled K`` adds K frames without segmentation labels after each
labelled one (real segments have about 6: 23,691 labelled of about 158k training frames), which
the converter reads past; ``--row-group-rows R`` writes the lidar files in row groups of R rows
(default: one row group, the worst case, as nothing can be skipped undecoded). Then times
``train.data.lidar.waymo_convert.convert_waymo`` with one worker and reports labelled frames written per second.
Run: ``python -m benchmarks.waymo_v2_convert_speed --frames 8 --unlabelled-per-labelled 6``.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from train.data.lidar.waymo_convert import convert_waymo

TOP_SHAPE, SIDE_SHAPE = (64, 2650), (200, 600)
LASERS = {1: TOP_SHAPE, 2: SIDE_SHAPE, 3: SIDE_SHAPE, 4: SIDE_SHAPE, 5: SIDE_SHAPE}


def _put_images(columns: dict, field: str, arrays: list[np.ndarray], value_type: pa.DataType) -> None:
    """Add ``<field>.values`` (flattened lists) and ``<field>.shape`` columns of ``arrays``."""
    flat = [a.reshape(-1) for a in arrays]
    offsets = np.concatenate([[0], np.cumsum([f.size for f in flat])]).astype(np.int32)
    columns[f"{field}.values"] = pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(np.concatenate(flat), type=value_type))
    columns[f"{field}.shape"] = pa.array([list(a.shape) for a in arrays], pa.list_(pa.int32(), 3))


def _range_image(rng: np.random.Generator, shape: tuple[int, int], hit: float) -> np.ndarray:
    image = np.zeros(shape + (4,), np.float32)
    image[..., 0] = np.where(rng.random(shape) < hit, rng.uniform(2, 75, shape), 0)
    image[..., 1] = rng.uniform(0, 2, shape)
    return image


def write_segment(split_dir: Path, segment: str, frames: int, unlabelled_per_labelled: int = 0,
                  row_group_rows: int | None = None, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    times = [1_000_000 + 100_000 * i for i in range(frames * (1 + unlabelled_per_labelled))]
    labelled = times[:: 1 + unlabelled_per_labelled]

    def keys(ts: list[int], lasers: list[int] | None) -> dict:
        out = {"key.segment_context_name": pa.array([segment] * len(ts)),
               "key.frame_timestamp_micros": pa.array(ts, pa.int64())}
        if lasers is not None:
            out["key.laser_name"] = pa.array(lasers, pa.int8())
        return out

    def save(component: str, columns: dict) -> None:
        (split_dir / component).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), split_dir / component / f"{segment}.parquet",
                       row_group_size=row_group_rows)

    def transforms(matrix: np.ndarray, n: int) -> pa.Array:
        return pa.array([matrix.reshape(-1).tolist()] * n, pa.list_(pa.float64(), 16))

    rows = [(t, laser) for t in times for laser in LASERS]
    lidar = keys([t for t, _ in rows], [laser for _, laser in rows])
    for field, top_hit, side_hit in (("range_image_return1", 0.95, 0.06), ("range_image_return2", 0.10, 0.01)):
        _put_images(lidar, f"[LiDARComponent].{field}", [
            _range_image(rng, LASERS[laser], top_hit if laser == 1 else side_hit) for _, laser in rows], pa.float32())
    save("lidar", lidar)
    seg = keys(labelled, [1] * frames)
    for field in ("range_image_return1", "range_image_return2"):
        labels = [np.stack([np.zeros(TOP_SHAPE), rng.integers(0, 23, TOP_SHAPE)], -1).astype(np.int32)
                  for _ in labelled]
        _put_images(seg, f"[LiDARSegmentationLabelComponent].{field}", labels, pa.int32())
    save("lidar_segmentation", seg)
    pixel_pose = np.zeros(TOP_SHAPE + (6,), np.float32)
    pixel_pose[..., 2] = np.linspace(0.3, 0.31, TOP_SHAPE[1])
    pixel_pose[..., 3:] = (1000.0, 2000.0, 5.0)
    pose = keys(times, [1] * len(times))
    _put_images(pose, "[LiDARPoseComponent].range_image_return1", [pixel_pose] * len(times), pa.float32())
    save("lidar_pose", pose)
    frame_pose = np.eye(4)
    frame_pose[:3, 3] = (1000.0, 2000.0, 5.0)
    save("vehicle_pose", {**keys(times, None),
                          "[VehiclePoseComponent].world_from_vehicle.transform": transforms(frame_pose, len(times))})
    lasers = list(LASERS)
    prefix = "[LiDARCalibrationComponent]"
    save("lidar_calibration", {
        "key.segment_context_name": pa.array([segment] * len(lasers)), "key.laser_name": pa.array(lasers, pa.int8()),
        f"{prefix}.extrinsic.transform": transforms(np.eye(4), len(lasers)),
        f"{prefix}.beam_inclination.min": pa.array([-0.31] + [-1.57] * 4, pa.float64()),
        f"{prefix}.beam_inclination.max": pa.array([0.04] + [0.52] * 4, pa.float64()),
        f"{prefix}.beam_inclination.values": pa.array([np.sort(rng.uniform(-0.31, 0.04, 64)).tolist()] + [None] * 4,
                                                      pa.list_(pa.float64())),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=8, help="labelled frames")
    parser.add_argument("--unlabelled-per-labelled", type=int, default=0)
    parser.add_argument("--row-group-rows", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "src", Path(tmp) / "dst"
        write_segment(src / "training", "bench_segment", args.frames, args.unlabelled_per_labelled, args.row_group_rows)
        start = time.perf_counter()
        summary = convert_waymo(src, dst, workers=1, show_progress=False)
        seconds = time.perf_counter() - start
    print(f"{summary['frames']} frames, {summary['points'] / summary['frames']:.0f} points/frame, "
          f"{seconds:.2f} s: {summary['frames'] / seconds:.2f} labelled frames/s (one worker; "
          f"{args.unlabelled_per_labelled} unlabelled per labelled, row groups of {args.row_group_rows or 'all'} rows)")


if __name__ == "__main__":
    main()
