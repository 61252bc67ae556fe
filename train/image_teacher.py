"""``python -m train.image_teacher``: the 2D camera teacher of the synthetic demonstration (decision 62).

``train``: a small U-Net (:mod:`train.models.image_segmenter`) trained on the rendered colour and
class images of a split's cameras (:mod:`train.engine.image_training`); with ``--val-split``, its
per-class pixel IoU on that split (:mod:`train.evaluation.image_iou`) is printed and kept in the
checkpoint. ``predict``: its per-image class probabilities (and feature maps) under folders that
mirror the image paths (:mod:`train.prediction.image_maps`), what ``train.image_labels`` reads.
The classes are the preprocessed Waymo layout's (the synthetic set's). This module parses the
options and reports.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Sequence

from train.data.labels import WAYMO_CLASSES

CLASSES = WAYMO_CLASSES  # the class images hold Waymo train ids (the synthetic set's, decision 58)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.image_teacher", description=__doc__.splitlines()[0])
    commands = p.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("train", help="train the network on a split's camera images")
    fit.add_argument("--data-root", required=True, help="root of the synthetic set rendered with cameras")
    fit.add_argument("--split", default="training", help="split of the training images (default training)")
    fit.add_argument("--out", required=True, help="checkpoint file to write")
    fit.add_argument("--val-split", help="split whose pixel IoU is reported after training (default: none)")
    fit.add_argument("--epochs", type=int, default=20, help="passes over the images (default 20)")
    fit.add_argument("--batch-size", type=int, default=8, help="images per step (default 8)")
    fit.add_argument("--lr", type=float, default=5e-3, help="Adam's learning rate (default 5e-3)")
    fit.add_argument("--seed", type=int, default=0, help="seed of the weights, batch order and flips (default 0)")
    run = commands.add_parser("predict", help="write the network's per-image probabilities (and features)")
    run.add_argument("--data-root", required=True, help="root of the data set rendered with cameras")
    run.add_argument("--split", required=True, help="split whose images are segmented")
    run.add_argument("--checkpoint", required=True, help="checkpoint written by the train command")
    run.add_argument("--predictions", required=True, help="folder of the (H, W, K) float16 probability maps")
    run.add_argument("--features", help="folder of the (H', W', C) float16 feature maps (for L_topo)")
    return p


def check_options(args: argparse.Namespace) -> None:
    """ValueError naming the option for anything the options alone rule out."""
    if args.command == "train" and (args.epochs < 1 or args.batch_size < 1 or not args.lr > 0):
        raise ValueError(f"--epochs and --batch-size must be >= 1 and --lr > 0, got {args.epochs}, "
                         f"{args.batch_size}, {args.lr}")


def iou_lines(iou: list[float], present: list[float]) -> list[str]:
    """One line per class present in the labels: its name, pixel IoU and share of the labelled pixels."""
    total = sum(present)
    return [f"  {CLASSES[c]:<18s} IoU {100 * iou[c]:5.1f}  ({100 * n / total:4.1f}% of pixels)"
            for c, n in enumerate(present) if n > 0]


def train_command(args: argparse.Namespace) -> None:
    from train.data.cameras.camera_images import split_images
    from train.engine.image_training import fit, save_image_teacher
    from train.evaluation.image_iou import image_iou

    images = split_images(Path(args.data_root), args.split)
    val_images = split_images(Path(args.data_root), args.val_split) if args.val_split else []
    print(f"train.image_teacher: {len(images)} images of {args.split}", flush=True)
    model, losses = fit(images, len(CLASSES), args.epochs, args.batch_size, args.lr, args.seed,
                        lambda e, loss, acc: print(f"epoch {e + 1}: loss {loss:.4f}, pixel accuracy "
                                                   f"{100 * acc:.1f}%", flush=True))
    extra: dict = {"losses": losses, "images": len(images)}
    if val_images:
        counts = image_iou(model, val_images)
        iou, present = counts.iou(), counts.target_count.tolist()
        extra["validation"] = {"split": args.val_split, "images": len(val_images), "miou": counts.miou(),
                               "accuracy": counts.accuracy(),
                               "iou": [v if n > 0 else math.nan for v, n in zip(iou, present)]}
        print(f"{args.val_split}: {len(val_images)} images, pixel mIoU {100 * counts.miou():.1f}, "
              f"accuracy {100 * counts.accuracy():.1f}%", *iou_lines(iou, present), sep="\n")
    training = {"data_root": str(args.data_root), "split": args.split, "epochs": args.epochs,
                "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed}
    save_image_teacher(Path(args.out), model, args.epochs, training, extra)
    print(f"wrote {args.out}")


def predict_command(args: argparse.Namespace) -> None:
    from train.data.cameras.camera_images import split_images
    from train.engine.image_training import load_image_teacher
    from train.prediction.image_maps import write_image_maps

    model = load_image_teacher(Path(args.checkpoint), len(CLASSES))
    images = split_images(Path(args.data_root), args.split)
    features = Path(args.features) if args.features else None
    count = write_image_maps(model, images, Path(args.predictions), features)
    print(f"train.image_teacher: wrote the maps of {count} images of {args.split} under {args.predictions}"
          + (f" and {args.features}" if features else ""))


def main(argv: Sequence[str] | None = None) -> int:
    from train.runtime.logging_utils import refuse

    args = build_parser().parse_args(argv)
    try:
        check_options(args)
    except ValueError as err:
        return refuse(f"train.image_teacher: error: {err}")
    from train.runtime.checkpoint_errors import CheckpointError

    try:
        (train_command if args.command == "train" else predict_command)(args)
    except (ValueError, FileNotFoundError, CheckpointError) as err:
        return refuse(f"train.image_teacher: error: {err}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
