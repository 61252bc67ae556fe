"""Everything ``python -m train.run`` is given, checked before any work starts (decision 38).

:func:`train.options.checks.validate` checks the values of the options; :func:`check_inputs` then checks
what they name, by the same code the run uses later, before the synthetic set is generated and
before any process is spawned: the model presets and overrides (each model the run builds is
built once, on the CPU), the synthetic set's folder, the teacher checkpoint (read and built as the run will:
readable, a ``model_final.pt`` or a Pointcept checkpoint that fits the preset) or the camera
teacher's folder (``--image-predictions``, decision 61), under
``--resume`` every checkpoint the run would continue from (one usable, or none yet), and without
it that no stage folder of ``--out`` holds an earlier run's checkpoints (the stage would delete that
run's logs as it starts and replace its checkpoints, decision 99). Each
refusal is one line naming the option or file and the fix, printed once
(:func:`train.runtime.logging_utils.refuse`), exit
status 2.
"""
from __future__ import annotations

from pathlib import Path

import torch

from train.config import RunConfig
from train.data.cameras.camera_teacher import open_camera_teacher
from train.engine.loop import FINAL, LAST, PREV, ModelSpec, load_frozen_teacher, model_spec
from train.models import build_model
from train.options.defaults import runs_on_cuda
from train.runner.datasets import class_count
from train.runtime.checkpoint import load_latest

CPU = torch.device("cpu")


def check_inputs(cfg: RunConfig) -> None:
    """Raise ValueError / FileNotFoundError / CheckpointError (one line each) for the first input
    of ``cfg`` the run could not use; does no work the run would keep."""
    _check_out(cfg)
    _check_data_root(cfg)
    stages = cfg.stages()
    for kind in ("teacher", "student"):
        if any((s == "teacher") == (kind == "teacher") for s in stages):
            _check_model(cfg, kind)
    if cfg.teacher_checkpoint is not None and cfg.stage != "all":
        load_frozen_teacher(cfg.teacher_checkpoint, CPU, pointcept=_spec(cfg, "teacher"))
    if cfg.teacher == "images":  # the folder and its image_labels.json; the scans' files: prepare_splits
        open_camera_teacher(cfg.image_predictions, class_count(cfg), features=False)
    for stage in stages:
        if cfg.resume:
            _check_resume(cfg, Path(cfg.out) / stage)
        else:
            _check_fresh(cfg, stage)


def _spec(cfg: RunConfig, kind: str) -> ModelSpec:
    return model_spec(cfg, kind, class_count(cfg), _run_device(cfg))


def _run_device(cfg: RunConfig) -> torch.device:
    return torch.device("cuda" if runs_on_cuda(cfg) else "cpu")


def _check_model(cfg: RunConfig, kind: str) -> None:
    spec = _spec(cfg, kind)
    try:
        build_model(spec.preset, spec.num_classes, in_channels=4, **spec.overrides)
    except (ValueError, TypeError) as err:
        chosen = cfg.teacher_overrides if kind == "teacher" else cfg.student_overrides
        where = f"--{kind}-preset {spec.preset}" + (f" with {kind}_overrides {chosen}" if chosen else "")
        raise ValueError(f"{where}: {err}") from None


def _check_data_root(cfg: RunConfig) -> None:
    """The synthetic set's folder; a real data set's layout is checked by its loader, before any work."""
    root = Path(cfg.data_root)
    if cfg.dataset == "synthetic" and root.exists() and not root.is_dir():
        raise FileNotFoundError(f"--data-root {root} is a file: pass a folder (the synthetic set is generated "
                                "there when it is absent)")


def _check_out(cfg: RunConfig) -> None:
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise FileNotFoundError(f"--out {out} is a file: pass a folder for the run's outputs")


def _check_fresh(cfg: RunConfig, stage: str) -> None:
    """A stage started afresh into a folder that holds an earlier run's checkpoints is refused."""
    folder = Path(cfg.out) / stage
    kept = [name for name in (FINAL, LAST, PREV) if (folder / name).is_file()]
    if kept:
        raise ValueError(f"--out {cfg.out} holds the {stage} stage of an earlier run ({folder / kept[0]}), which "
                         "this run would replace (its logs first): pass --resume to go on with it (a finished stage "
                         f"is reused), or remove {folder} or choose another --out to train it again")


def _check_resume(cfg: RunConfig, stage_dir: Path) -> None:
    """The stage's finished model, or the checkpoint a resume of it would continue from."""
    if (stage_dir / FINAL).is_file():
        load_frozen_teacher(stage_dir / FINAL, CPU)
        return
    load_latest([stage_dir / LAST, stage_dir / PREV], warn=False)
