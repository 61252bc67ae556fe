"""``python -m train.export_onnx --checkpoint MODEL --out FILE.onnx [--half]``: a trained model as an
ONNX file that ``train.predict`` (through onnxruntime, without torch), onnxruntime, TensorRT or a
C++ port can run (decision 55, ``docs/deploy.md``).

MODEL is anything ``train.predict`` reads: a ``model_final.pt`` or ``checkpoint_last.pt`` of
``python -m train.run`` (teacher or student, whatever convolution backend trained it) or a
Pointcept PTv3 checkpoint (``--dataset`` and ``--preset`` say what it is). The graph takes the
point features and the batch plan's arrays, every size dynamic; the file's metadata holds the
classes, voxel size, feature, label map and the plan's settings. The machinery is
:mod:`train.prediction.export`; this module parses the options and reports.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from train.config import DATASETS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.export_onnx", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="model_final.pt / checkpoint_last.pt of train.run, or a "
                   "Pointcept PTv3 checkpoint")
    p.add_argument("--out", required=True, help="the .onnx file to write (written whole, never over an existing "
                   "file unless --overwrite)")
    p.add_argument("--half", action="store_true", help="the network in float16 (inputs and logits stay float32)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--dataset", choices=DATASETS, help="data set of a Pointcept checkpoint (default: the checkpoint's)")
    p.add_argument("--preset", help="architecture of a Pointcept checkpoint (default teacher; refused for "
                   "another model, which names its own)")
    p.add_argument("--grid-size", type=float, help="voxel size (m) of a checkpoint that does not name one "
                   "(Pointcept: default 0.05)")
    p.add_argument("--data-root", help="with --dataset folder, the scan folder whose dataset.yaml describes a "
                   "checkpoint that keeps no description")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from train.runtime.logging_utils import refuse

    args = build_parser().parse_args(argv)
    if args.grid_size is not None and not args.grid_size > 0:
        return refuse(f"train.export_onnx: error: --grid-size must be > 0, got {args.grid_size}")
    try:
        import onnx  # noqa: F401  (the deploy extra)
    except ImportError:
        return refuse("train.export_onnx: error: the onnx package is not installed: pip install -e '.[deploy]'")
    from train.prediction.export import export_checkpoint
    from train.runtime.checkpoint_errors import CheckpointError
    from train.runtime.files import NoRoomError

    try:
        size = export_checkpoint(args.checkpoint, args.out, half=args.half, overwrite=args.overwrite,
                                 dataset=args.dataset, preset=args.preset, grid_size=args.grid_size,
                                 data_root=args.data_root)
    except (ValueError, FileNotFoundError, CheckpointError, NoRoomError) as err:
        return refuse(f"train.export_onnx: error: {err}")
    print(f"train.export_onnx: wrote {args.out} ({size / 1e6:.1f} MB, {'float16' if args.half else 'float32'}); "
          f"label scans with python -m train.predict --checkpoint {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
