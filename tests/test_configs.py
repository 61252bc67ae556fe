"""configs/: every file resolves through ``--config`` (no unknown key, every value valid), the command
line overrides it, the paper settings give the paper's values, and the demo file is what
``--dataset synthetic`` chooses by itself."""
from __future__ import annotations

from pathlib import Path

import pytest

from train.config import RunConfig
from train.models import PRESETS
from train.options.resolve import resolve

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
PAPER_DATASETS = ("nuscenes", "waymo", "semantic_kitti")

# The paper's values (App. C.2 "Training Protocol" and C.3; Table 7's best weights; Table 8's models)
PAPER_RECIPE = {"epochs": 50, "teacher_epochs": 50, "batch_size": 12, "lr": 0.002, "weight_decay": 0.005,
                "grid_size": 0.05, "teacher_preset": "teacher", "student_preset": "student", "seg_loss": "ce"}
PAPER_DISTILL = {"lambda_topo": 8.0, "lambda_grad": 1.0, "lambda_kld": 1.0}


def _resolve(path: Path, tmp_path: Path, *extra: str) -> RunConfig:
    """Resolve ``path`` as ``train.run --config`` does; a distillation's teacher is a stand-in file."""
    teacher = tmp_path / "model_final.pt"
    teacher.write_bytes(b"")
    needs_teacher = "stage: distill" in path.read_text()
    return resolve(["--config", str(path), *(["--teacher-checkpoint", str(teacher)] if needs_teacher else []), *extra])


def test_there_is_a_teacher_and_a_distillation_per_published_set_and_the_demo() -> None:
    expected = {f"{d}-{s}.yaml" for d in PAPER_DATASETS for s in ("teacher", "distill")} | {"synthetic-demo.yaml"}
    assert {p.name for p in CONFIGS} == expected


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_resolves_and_the_command_line_overrides_it(path: Path, tmp_path: Path) -> None:
    cfg = _resolve(path, tmp_path)
    for kind in ("teacher_preset", "student_preset"):
        assert getattr(cfg, kind) == "auto" or getattr(cfg, kind) in PRESETS
    overridden = _resolve(path, tmp_path, "--batch-size", "4", "--epochs", "3")
    assert (overridden.batch_size, overridden.epochs) == (4, 3)
    assert overridden.teacher_epochs == cfg.teacher_epochs  # set by the file, not by --epochs


@pytest.mark.parametrize("dataset", PAPER_DATASETS)
def test_paper_configs_give_the_paper_values(dataset: str, tmp_path: Path) -> None:
    teacher = _resolve(ROOT / "configs" / f"{dataset}-teacher.yaml", tmp_path)
    distill = _resolve(ROOT / "configs" / f"{dataset}-distill.yaml", tmp_path)
    for cfg in (teacher, distill):
        assert cfg.dataset == dataset
        assert {k: getattr(cfg, k) for k in PAPER_RECIPE} == PAPER_RECIPE
    assert teacher.stage == "teacher"
    assert distill.stage == "distill" and distill.terms() == {"kld": True, "topo": True, "grad": True}
    assert {k: getattr(distill, k) for k in PAPER_DISTILL} == PAPER_DISTILL
    # the distillation reads the teacher the teacher's file writes
    assert Path(_teacher_path(dataset)) == Path(teacher.out) / "teacher" / "model_final.pt"


def _teacher_path(dataset: str) -> str:
    import yaml

    return yaml.safe_load((ROOT / "configs" / f"{dataset}-distill.yaml").read_text())["teacher_checkpoint"]


def test_demo_config_is_what_dataset_synthetic_chooses(tmp_path: Path) -> None:
    demo = _resolve(ROOT / "configs" / "synthetic-demo.yaml", tmp_path)
    assert demo.to_dict() == resolve(["--dataset", "synthetic"]).to_dict()
