"""``python -m train.image_labels``: label a split's LiDAR points from a 2D model's predictions on its
camera images (decision 60).

Each point takes the prediction of the pixel it projects to in a camera that sees it (depth above
``--min-depth``, inside the image, not behind a nearer point of the scan: the depth test); a point
several cameras see takes their probabilities' average weighted by 1 / depth (``--camera-rule``).
Predictions are files under ``--predictions`` mirroring the image paths (``.npy`` ids or
probabilities, ``.png`` ids), mapped to the data set's train ids by ``--class-map``. Outputs:
``<scan>.npy`` train ids (-1 unseen), with ``--probs`` ``<scan>.probs.npy``, with ``--features``
``<scan>.features.npy``, and ``image_labels.json``; with ``--folder-split`` the output folder is
also a scan folder that ``--dataset folder`` trains on (:mod:`train.data.lidar.image_label_files`). Every
file is written whole; a file of ``--out`` that no run of this command wrote (no ``image_labels.json``
there) is replaced only with ``--overwrite``, refused before any work (decision 99). The
machinery: :mod:`train.prediction.image_labels`; this module parses the options and reports.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from train.config import DATASETS
from train.data.cameras.camera import DEFAULT_MIN_DEPTH
from train.data.lidar.folder import FOLDER_SPLITS
from train.data.cameras.image_projection import CAMERA_RULES, DEFAULT_CAMERA_RULE, DEFAULT_DEPTH_TEST
from train.option_names import DEFAULT_NUSCENES_VERSION, NUSCENES_VERSIONS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.image_labels", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--data-root", help="data set root (default data/<dataset>); image paths are relative to it")
    p.add_argument("--nuscenes-version", choices=NUSCENES_VERSIONS, default=None,
                   help=f"nuScenes release of --split (--dataset nuscenes; default {DEFAULT_NUSCENES_VERSION})")
    p.add_argument("--split", required=True, help="split to label, in the loader's names")
    p.add_argument("--predictions", required=True, help="folder of the 2D predictions, mirroring the image paths")
    p.add_argument("--out", required=True, help="output folder (its files that no run of this command wrote: "
                   "replaced only with --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace files of --out that no run of this command "
                   "wrote (a folder without image_labels.json)")
    p.add_argument("--probs", action="store_true", help="also write <scan>.probs.npy (float16 per class)")
    p.add_argument("--features", help="folder of 2D feature maps (H' x W' x C .npy) mirroring the image paths")
    p.add_argument("--class-map", help="YAML/JSON {2D id: train id or ignore}; without it the ids are train ids")
    p.add_argument("--skip-bad-scans", action="store_true", help="name, count and skip scans whose image, "
                   "prediction or calibration files cannot be used")
    p.add_argument("--min-depth", type=float, default=DEFAULT_MIN_DEPTH,
                   help=f"metres: nearer points are not seen (default {DEFAULT_MIN_DEPTH:g})")
    p.add_argument("--camera-rule", choices=CAMERA_RULES, default=DEFAULT_CAMERA_RULE,
                   help="a point seen by several cameras takes: the average of their probabilities weighted by "
                   "1 / depth (default), the nearest camera's prediction, or the first camera's")
    p.add_argument("--depth-test", action=argparse.BooleanOptionalAction, default=True,
                   help="hide points behind a nearer point of the scan in the image (default on)")
    p.add_argument("--depth-block", type=int, help="the depth test's z-buffer block, pixels (default: the mean "
                   "spacing of a camera's seen points)")
    p.add_argument("--folder-split", choices=FOLDER_SPLITS, help="also write the scans as <scan>.npz and list "
                   "them as this split of <out>/dataset.yaml, a scan folder (--dataset folder) with these labels")
    return p


def check_options(args: argparse.Namespace) -> None:
    """ValueError naming the option for anything the options alone rule out, an option that could not
    act in this run too (decision 99); fills in ``--nuscenes-version``'s default."""
    if args.nuscenes_version is not None and args.dataset != "nuscenes":
        raise ValueError(f"--nuscenes-version names a nuScenes release; with --dataset {args.dataset} it would change "
                         "nothing")
    args.nuscenes_version = args.nuscenes_version or DEFAULT_NUSCENES_VERSION
    if args.depth_block is not None and not args.depth_test:
        raise ValueError("--depth-block sizes the depth test's blocks; with --no-depth-test it would change nothing")
    if not args.min_depth >= 0:
        raise ValueError(f"--min-depth must be >= 0 metres, got {args.min_depth}")
    if args.depth_block is not None and args.depth_block < 1:
        raise ValueError(f"--depth-block must be >= 1 pixel, got {args.depth_block}")
    for option, folder in (("--predictions", args.predictions), ("--features", args.features)):
        if folder is not None and not Path(folder).is_dir():
            raise ValueError(f"{option} {folder}: no such folder")
    if args.class_map is not None and not Path(args.class_map).is_file():
        raise ValueError(f"--class-map {args.class_map}: no such file")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a file: pass a folder for the labels")


def check_out(args: argparse.Namespace, scans: list[str]) -> None:
    """ValueError in one line, before any work, for an ``image_labels.json`` in ``--out`` that is
    not this command's summary, and for a file of ``--out`` the run would replace that no run of
    this command wrote, without ``--overwrite``."""
    from train.data.lidar.image_label_files import SUMMARY_FILE, foreign_output, read_summaries

    out = Path(args.out)
    read_summaries(out)  # CorruptFileError, a ValueError, for one that is not
    found = None if args.overwrite else foreign_output(out, scans, args.probs, args.features is not None,
                                                       args.folder_split is not None)
    if found is not None:
        raise ValueError(f"--out {out} holds {found}, which this run would replace, and no {SUMMARY_FILE} of an "
                         "earlier run of train.image_labels: pass --overwrite to replace such files (a run stopped "
                         "before its end leaves its files without one), or choose another --out")


def main(argv: Sequence[str] | None = None) -> int:
    from train.runtime.logging_utils import refuse

    args = build_parser().parse_args(argv)
    try:
        check_options(args)
    except ValueError as err:
        return refuse(f"train.image_labels: error: {err}")

    from train.data.cameras.camera import CalibrationError
    from train.data.cameras.image_predictions import ClassMap, read_class_map
    from train.data.cameras.image_projection import DepthTest
    from train.data.validation import BadScanError
    from train.prediction.image_labels import ImageLabelRun, label_split
    from train.prediction.inputs import open_split
    from train.runtime.files import NoRoomError

    root = Path(args.data_root or Path("data") / args.dataset)
    try:
        source = open_split(args.dataset, root, args.split, args.nuscenes_version, None)
        class_map = (read_class_map(args.class_map, source.num_classes) if args.class_map is not None
                     else ClassMap(source.num_classes))
        check_out(args, [source.scan_name(i) for i in range(len(source))])
    except (ValueError, FileNotFoundError) as err:
        return refuse(f"train.image_labels: error: {err}")
    depth_test = DepthTest(args.depth_block, DEFAULT_DEPTH_TEST.relative, DEFAULT_DEPTH_TEST.absolute) \
        if args.depth_test else None
    run = ImageLabelRun(root, Path(args.predictions), Path(args.features) if args.features else None, Path(args.out),
                        class_map, args.camera_rule, args.min_depth, depth_test, args.probs, args.skip_bad_scans,
                        args.folder_split)
    provenance = {"dataset": args.dataset, "data_root": str(root),
                  "nuscenes_version": args.nuscenes_version if args.dataset == "nuscenes" else None,
                  "predictions": args.predictions}
    try:
        summary = label_split(source, args.split, run, provenance)
    except (BadScanError, CalibrationError) as err:
        return refuse(f"train.image_labels: error: {err} (--skip-bad-scans skips such scans)")
    except ValueError as err:  # an output folder whose dataset.yaml does not fit this run
        return refuse(f"train.image_labels: error: {err}")
    except NoRoomError as err:
        return refuse(f"train.image_labels: error: {err} (the scans labelled before it are kept)")
    counts = summary["counts"]
    print(f"train.image_labels: {counts['labelled_scans']} of {counts['scans']} scans labelled "
          f"({counts['seen_points']} of {counts['points']} points seen by a camera, "
          f"{len(counts['skipped_scans'])} skipped, {counts['scans_without_cameras']} without cameras, "
          f"{counts['unsolved_point_camera_pairs']} point-camera pairs a rolling shutter left unsolved); "
          f"outputs in {args.out}", flush=True)
    if counts["scans"] and counts["scans_without_cameras"] == counts["labelled_scans"]:
        return refuse(f"train.image_labels: error: no scan of split {args.split!r} of {root} could be labelled "
                      "from a camera" + (" (all were bad, named above)" if counts["skipped_scans"] else
                                         " (none has cameras)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
