"""``python -m train.export_pointcept CKPT OUT.pth [--overwrite]``: our trained PTv3 in Pointcept's layout (spec H).

Reads a ``model_final.pt`` written by ``python -m train.run`` (teacher or student) and writes
``OUT.pth`` holding ``{"state_dict": ...}`` with Pointcept's DefaultSegmentorV2 key names
(``backbone.*``, ``seg_head.*``; what Pointcept's ``weight=`` option and its tester read), then
prints the Pointcept model config that rebuilds the architecture. A model trained here feeds the
first block after each unpooling the refreshed features (spec A7 note); Pointcept's PTv3 does not,
so there its outputs differ unless the model was trained with ``upstream_unpool_cpe=True``.
``OUT.pth`` is written whole; an existing file is replaced only with ``--overwrite`` (decision 99),
refused before the checkpoint is read.
"""
from __future__ import annotations

import argparse
import io
import pprint
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from train.engine.loop import load_frozen_teacher
from train.models import to_pointcept
from train.models.pointcept import pointcept_config
from train.runtime.files import atomic_write


def export(checkpoint: str | Path, out: str | Path) -> dict[str, Any]:
    """Write ``checkpoint``'s model to ``out`` in Pointcept's layout, whole (a full disk:
    :class:`train.runtime.files.NoRoomError`, ``out`` unchanged); returns its Pointcept config."""
    model, _ = load_frozen_teacher(checkpoint, torch.device("cpu"))
    buffer = io.BytesIO()
    torch.save({"state_dict": to_pointcept(model)}, buffer)
    atomic_write(buffer.getbuffer(), out)
    return {"model": pointcept_config(model), "upstream_unpool_cpe": model.config.upstream_unpool_cpe}


def check_out(out: Path, overwrite: bool) -> None:
    """ValueError in one line for an ``out`` that is a folder, or a file that exists without ``overwrite``."""
    if out.is_dir():
        raise ValueError(f"{out} is a folder: name the .pth file to write")
    if out.exists() and not overwrite:
        raise ValueError(f"{out} exists: pass --overwrite to replace it")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.export_pointcept", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="model_final.pt written by python -m train.run")
    parser.add_argument("out", help="output file for Pointcept (e.g. model_best.pth; written whole, never over an "
                        "existing file unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    from train.runtime.files import NoRoomError
    from train.runtime.logging_utils import refuse

    try:
        check_out(Path(args.out), args.overwrite)
        info = export(args.checkpoint, args.out)
    except (ValueError, FileNotFoundError, NoRoomError) as err:
        return refuse(f"train.export_pointcept: error: {err}")
    print(f"wrote {args.out}; in a Pointcept config:\nmodel = {pprint.pformat(info['model'], sort_dicts=False)}")
    if not info["upstream_unpool_cpe"]:
        print("note: this model was trained with the refreshed CPE input after unpooling; Pointcept's PTv3 "
              "feeds that CPE the skip branch alone, so its outputs there differ (docs/ptv3-and-datasets.md A7)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
