"""``python -m train.predict``: segment scans with a trained model, every point of every scan.

Inputs: a split the project reads (``--dataset``, ``--data-root``, ``--split``; unlabelled test
splits included) or scan files (``--input``: files, folders, wildcards; ``.bin``, ``.npy``,
``.npz``, ``.ply``, ``.las``, ``.laz``). The model: a ``model_final.pt`` or ``checkpoint_last.pt``
of ``python -m train.run`` (it names its data set and voxel size; a scan folder's also keeps the
folder's classes, feature and frame) or a Pointcept PTv3 checkpoint
(``--dataset`` and ``--preset`` say what it is), or an ONNX file of ``python -m train.export_onnx``,
run by onnxruntime without importing torch (decision 55). Outputs under ``--out`` in the layout of
``--format`` (:mod:`train.prediction.layouts`). The machinery is :mod:`train.prediction`
(decision 50); this module parses the options and reports.
"""
from __future__ import annotations

import argparse
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train.run: idle OpenMP threads sleep

from train.config import DATASETS  # noqa: E402  (no torch: --help answers at once, decision 38)
from train.option_names import DEFAULT_NUSCENES_VERSION, NUSCENES_VERSIONS, PREDICTION_FORMATS  # noqa: E402

if TYPE_CHECKING:
    from train.prediction.inputs import ScanSource
    from train.prediction.layouts import Layout
    from train.prediction.shards import Shard


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.predict", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="model_final.pt / checkpoint_last.pt of train.run, a "
                   "Pointcept PTv3 checkpoint, or a .onnx file of train.export_onnx (run by onnxruntime, without torch)")
    p.add_argument("--out", required=True, help="output folder; a rerun continues with the scans not yet labelled")
    p.add_argument("--input", nargs="+", action="extend", metavar="PATH",
                   help="scan files, folders (searched recursively) or wildcards; instead of --split")
    p.add_argument("--dataset", choices=DATASETS, help="data set of the scans (default: the checkpoint's; "
                   "required for a Pointcept checkpoint)")
    p.add_argument("--data-root", help="data set root of --split (default data/<dataset>); with --dataset folder "
                   "and --input, the scan folder whose dataset.yaml describes a checkpoint that keeps no description")
    p.add_argument("--split", help="split to label, in the loader's names (waymo/synthetic: training, validation, "
                   "testing; nuscenes: train, val, test, ...; semantic_kitti: train, val, test)")
    p.add_argument("--nuscenes-version", choices=NUSCENES_VERSIONS, default=None,
                   help=f"nuScenes release of a nuScenes --split (v1.0-test for the test split; default "
                   f"{DEFAULT_NUSCENES_VERSION})")
    p.add_argument("--format", choices=PREDICTION_FORMATS, default="npy", help="output layout (default npy)")
    p.add_argument("--save-probs", action="store_true", help="also write <name>.probs.npy (float16 per class)")
    p.add_argument("--tta", action="store_true", help="test-time augmentation as in evaluation (5 views)")
    p.add_argument("--batch-size", type=int, default=1, help="scans per forward pass (default 1)")
    p.add_argument("--num-workers", type=int, help="loader workers reading and voxelising scans (default: as "
                   "training, on CUDA; 0 on a CPU; an .onnx model reads the next batch in one thread instead)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="mixed precision on CUDA")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that exist (default: keep them)")
    p.add_argument("--skip-bad-scans", action="store_true", help="name and skip scans that cannot be read")
    p.add_argument("--preset", help="architecture of a Pointcept checkpoint (default teacher; refused for "
                   "another model, which names its own)")
    p.add_argument("--grid-size", type=float, help="voxel size (m) of a checkpoint that does not name one "
                   "(Pointcept: default 0.05)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--shard", metavar="I/N", help="label shard I of N (the scans I, I+N, I+2N, ...) into the one "
                   "--out, for a process started alone (a SLURM array task; under torchrun each rank takes its own); "
                   "the shard that ends the run writes the whole-split files and the summary")
    p.add_argument("--score", action="store_true", help="score the labels in --out against the labels of --split: "
                   "per-class IoU and mIoU over all its scans, as train.run's evaluation scores them")
    return p


def check_options(args: argparse.Namespace) -> None:
    """ValueError naming the option for anything the options alone rule out, an option that could not
    act in this run too (decision 99)."""
    if (args.input is None) == (args.split is None):
        raise ValueError("give either --input (scan files) or --split (a data set split)")
    if args.nuscenes_version is not None and (args.split is None or args.dataset not in (None, "nuscenes")):
        raise ValueError("--nuscenes-version names the release of a nuScenes --split; "
                         + ("with --input" if args.split is None else f"with --dataset {args.dataset}")
                         + " it would change nothing")
    if args.preset is not None and Path(args.checkpoint).suffix.lower() == ".onnx":
        raise ValueError("--preset names the architecture of a Pointcept checkpoint; an .onnx model holds its own, so "
                         "it would change nothing")
    if args.num_workers is not None and Path(args.checkpoint).suffix.lower() == ".onnx":
        raise ValueError("--num-workers sets torch's loader workers; an .onnx model reads the next batch in one "
                         "thread instead, so it would change nothing")
    if args.input is not None and args.data_root is not None and args.dataset != "folder":
        raise ValueError("--data-root goes with --split, not --input (or names the scan folder of --dataset folder)")
    if args.format == "nuscenes" and (args.split is None or args.dataset not in (None, "nuscenes")):
        raise ValueError("--format nuscenes writes a lidarseg submission of a nuScenes --split (its sample tokens)")
    if args.batch_size < 1 or (args.num_workers is not None and args.num_workers < 0):
        raise ValueError("--batch-size must be >= 1 and --num-workers >= 0")
    if args.score and args.split is None:
        raise ValueError("--score scores a labelled --split against its own labels, not --input files")
    if args.grid_size is not None and not args.grid_size > 0:
        raise ValueError(f"--grid-size must be > 0, got {args.grid_size}")


class RankError(ValueError):
    """An input error of this process alone, not of every rank: printed by it, whatever its rank."""


def load_model(args: argparse.Namespace) -> tuple[Any, Any]:
    """The model of ``--checkpoint`` and the torch device it runs on (under torchrun, GPU
    LOCAL_RANK); for an exported ``.onnx`` model, its onnxruntime session on the execution
    provider of ``--device`` (GPU LOCAL_RANK) and None: that path never imports torch (decision
    55). ValueError / CheckpointError in one line; :class:`RankError` for a GPU rank without a GPU."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if Path(args.checkpoint).suffix.lower() == ".onnx":
        from train.prediction.onnx_file import load_onnx_predictor

        try:
            import onnxruntime
        except ImportError:
            raise ValueError("an .onnx model runs through onnxruntime, which is not installed: pip install "
                             "onnxruntime (onnxruntime-gpu for CUDA; a machine without torch: docs/deploy.md)") from None
        cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        if args.device == "cuda" and not cuda:
            raise ValueError("--device cuda, but the installed onnxruntime has no CUDA execution provider "
                             "(onnxruntime-gpu has)")
        providers = ([("CUDAExecutionProvider", {"device_id": local_rank})] if cuda and args.device != "cpu" else []
                     ) + ["CPUExecutionProvider"]
        return load_onnx_predictor(args.checkpoint, providers, dataset=args.dataset, grid_size=args.grid_size), None
    import torch

    from train.prediction.model import load_predictor

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but torch sees no CUDA device here")
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if cuda and local_rank >= torch.cuda.device_count():
        raise RankError(f"local rank {local_rank} has no GPU of its own ({torch.cuda.device_count()} here): start at "
                        "most that many processes a machine (torchrun --nproc_per_node), or give --device cpu")
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return load_predictor(args.checkpoint, device, args.dataset, args.preset, args.grid_size, args.data_root), device


def _workers(args: argparse.Namespace, cuda: bool) -> int:
    if args.num_workers is not None:
        return args.num_workers
    from train.options.defaults import loader_workers, ranks_per_node

    return loader_workers(cuda, ranks=ranks_per_node(1))


def main(argv: Sequence[str] | None = None) -> int:
    from train.runtime.logging_utils import refuse

    args = build_parser().parse_args(argv)
    from train.prediction.shards import process_shard  # after --help, which imports nothing more (decision 38)

    try:
        check_options(args)
        shard = process_shard(args.shard, os.environ)
    except ValueError as err:
        return refuse(f"train.predict: error: {err}")

    from train.runtime.checkpoint_errors import CheckpointError
    from train.data.lidar.scan_files import check_packages
    from train.prediction.inputs import FileSource, list_scan_files, open_split
    from train.prediction.layouts import build_layout
    from train.data.labels import class_names

    try:
        predictor, device = load_model(args)
        if predictor.in_channels != 4:
            raise ValueError(f"{args.checkpoint} reads {predictor.in_channels} input channels; scans give xyz and "
                             "the strength (4)")
        if args.format in ("semantic_kitti", "nuscenes") and predictor.class_names != tuple(class_names(args.format)):
            raise ValueError(f"--format {args.format} needs a model of {args.format}'s classes; {args.checkpoint} "
                             f"predicts {predictor.dataset}'s")
        if args.split is not None:
            if args.nuscenes_version is not None and predictor.dataset != "nuscenes":
                raise ValueError(f"--nuscenes-version names the release of a nuScenes --split; {args.checkpoint} "
                                 f"labels {predictor.dataset} scans, where it would change nothing")
            root = args.data_root or str(Path("data") / predictor.dataset)
            source = open_split(predictor.dataset, root, args.split, args.nuscenes_version or DEFAULT_NUSCENES_VERSION,
                                predictor.folder, labelled=args.score)
        else:
            source = FileSource(*list_scan_files(args.input, Path(args.out)), predictor.dataset, predictor.folder)
            check_packages([path.suffix for path in source.paths])
        check_packages([".ply"] if args.format == "ply" else [])
        layout = build_layout(args.format, Path(args.out), args.save_probs, args.overwrite, len(predictor.class_names),
                              args.split)
        if args.score and len(source):  # a split without its labels is refused now, not once it is labelled
            _check_labels(source, args.split)
        names = [source.scan_name(i) for i in range(len(source))]
        for name in names:
            layout.label_file(name)  # a scan the layout has no place for is refused now
    except RankError as err:
        return _refuse_here(f"train.predict: shard {shard}: error: {err}")
    except (ValueError, FileNotFoundError, ImportError, CheckpointError) as err:
        return refuse(f"train.predict: error: {err}")
    return _label_shard(args, shard, predictor, device, source, names, layout)


def _check_labels(source: ScanSource, split: str) -> None:
    """ValueError in one line when the first scan of ``split`` has no labels to score against."""
    from train.data.validation import DatasetLayoutError

    try:
        source.load(0)
    except DatasetLayoutError as err:
        missing = str(err).partition(". Expected layout")[0]
        raise ValueError(f"--score needs the labels of --split {split}: {missing}") from None


def _label_shard(args: argparse.Namespace, shard: Shard, predictor: Any, device: Any, source: ScanSource,
                 names: list[str], layout: Layout) -> int:
    """Label this process's shard of ``source`` into ``layout`` (decision 77); the process whose
    shard ends the run writes the whole-split files and prints the run's summary. Errors of this
    process are printed by it, whatever its rank."""
    import numpy as np

    from train.data.validation import BadScanError
    from train.prediction.score import score_lines, score_scans
    from train.runtime.files import NoRoomError
    from train.prediction.shards import ShardRecord, claim, record_and_collect, scans_digest
    from train.prediction.summary import whole_run

    here = f"train.predict: shard {shard}:" if shard.count > 1 else "train.predict:"
    indices = shard.indices(len(source))
    shown = args.progress and os.environ.get("LOCAL_RANK", "0") == "0"  # one bar a machine: its first rank's shard
    with ExitStack() as held:
        try:
            folder = held.enter_context(claim(Path(args.out), shard))
        except ValueError as err:
            return _refuse_here(f"{here} error: {err}")
        except OSError as err:
            return _refuse_here(f"{here} error: cannot write --out {args.out}: {err.strerror or err}")
        try:
            if device is None:  # an exported model, through onnxruntime (decision 55)
                from train.prediction.onnx_run import predict_onnx

                summary = predict_onnx(predictor, source, indices, layout, tta=args.tta, batch_size=args.batch_size,
                                       skip_bad_scans=args.skip_bad_scans, show_progress=shown)
            else:
                from train.prediction.run import predict

                summary = predict(predictor, source, indices, layout, device, tta=args.tta,
                                  batch_size=args.batch_size, num_workers=_workers(args, device.type == "cuda"),
                                  amp=args.amp, skip_bad_scans=args.skip_bad_scans, show_progress=shown)
            score = score_scans(layout, source, indices, len(predictor.class_names)) if args.score else None
        except BadScanError as err:
            return _refuse_here(f"{here} error: {err} (the scans labelled before it are kept; --skip-bad-scans "
                                "goes on)")
        except NoRoomError as err:
            return _refuse_here(f"{here} error: {err} (the scans labelled before it are kept; a rerun goes on)")
        record = ShardRecord(scans_digest(names), summary, None if score is None else score.tolist())
        try:
            records = record_and_collect(folder, shard, record)
            if shard.count > 1:
                print(f"{here} {summary.line()}", flush=True)
            if records is None:  # another shard ends the run
                return 0
            layout.finish()
        except NoRoomError as err:
            return _refuse_here(f"{here} error: {err} (the labels are written; a rerun writes what is missing)")
        whole = whole_run([r.summary for r in records])
        total = np.sum([r.score for r in records], axis=0) if args.score else None
    ends = f"train.predict: all {shard.count} shards:" if shard.count > 1 else "train.predict:"
    print(f"{ends} {whole.line()}; outputs in {args.out}", flush=True)
    for line in score_lines(total, predictor.class_names) if total is not None else []:
        print(f"train.predict: {line}", flush=True)
    if whole.failed():  # a run that labels nothing has failed
        return _refuse_here(f"train.predict: error: no scan could be labelled: all {len(whole.bad)} were bad "
                            "(named above)")
    return 0


def _refuse_here(message: str) -> int:
    """A refusal this process prints whatever its rank (``refuse`` prints rank 0's only): exit status 2."""
    print(message, file=sys.stderr, flush=True)
    return 2


if __name__ == "__main__":
    sys.exit(main())
