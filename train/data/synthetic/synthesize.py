"""Command line: write a synthetic LiDAR data set in the Waymo preprocessed layout
(``train.data.synthetic``).

    python -m train.data.synthesize --out DIR --scenes N --seed S [--beams 32] [--azimuth-steps 560]
        [--fov-up 2.4] [--fov-down -17.6] [--max-range 75] [--range-noise 0.02] [--dropout 0.03]
        [--val-fraction 0.2] [--frames-per-scene 1] [--cameras none|ring]

Same seed and parameters -> byte-identical arrays. Read it back with
``train.data.WaymoDataset(DIR, "training")``.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from .camera_rig import NO_CAMERAS, RIGS
from .dataset import synthesize_dataset
from .sensor import SensorConfig


def main(argv: Sequence[str] | None = None) -> None:
    d = SensorConfig()
    p = argparse.ArgumentParser(prog="python -m train.data.synthesize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (Waymo layout root)")
    p.add_argument("--scenes", type=int, required=True, help="number of scenes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--beams", type=int, default=d.beams)
    p.add_argument("--azimuth-steps", type=int, default=d.azimuth_steps, help="rays per beam per turn")
    p.add_argument("--fov-up", type=float, default=d.fov_up, help="degrees")
    p.add_argument("--fov-down", type=float, default=d.fov_down, help="degrees")
    p.add_argument("--height", type=float, default=d.height, help="sensor height, m")
    p.add_argument("--max-range", type=float, default=d.max_range, help="m")
    p.add_argument("--range-noise", type=float, default=d.range_noise, help="sigma, m")
    p.add_argument("--dropout", type=float, default=d.dropout, help="random return loss")
    p.add_argument("--val-fraction", "--split-fraction", dest="val_fraction", type=float, default=0.2,
                   help="fraction of scenes written to validation/")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="fraction of scenes written to testing/ (held out, labelled)")
    p.add_argument("--frames-per-scene", type=int, default=1)
    p.add_argument("--cameras", choices=(NO_CAMERAS, *RIGS), default=NO_CAMERAS,
                   help="camera rig rendered with every frame (colour, class, depth, cameras.json)")
    a = p.parse_args(argv)
    sensor = SensorConfig(beams=a.beams, azimuth_steps=a.azimuth_steps, fov_up=a.fov_up,
                          fov_down=a.fov_down, height=a.height, max_range=a.max_range,
                          range_noise=a.range_noise, dropout=a.dropout)
    start = time.perf_counter()
    synthesize_dataset(a.out, a.scenes, a.seed, sensor, a.val_fraction, a.frames_per_scene,
                       test_fraction=a.test_fraction, cameras=a.cameras)
    print(f"wrote {a.scenes * a.frames_per_scene} scans to {a.out} in "
          f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
