"""``python -m train.topo_diagnostic``: the PWCD split into what each pair pays adds up to the
reference loss; the normalisation removes a student's overall scale from L_topo; the command runs
on tiny trained-shape models."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from reference.pwcd import pwcd
from tests.test_train_support import TINY_MODEL, tiny_config, tiny_data
from train.runtime.checkpoint import save_checkpoint
from train.engine.loop import model_spec
from train.study.topo_diagnostic import cloud_diagnostics, main, pwcd_parts


def _diagram(rng: np.random.Generator, n: int) -> np.ndarray:
    b = rng.uniform(0, 1, n)
    return np.stack([b, b + rng.uniform(0, 1, n)], axis=1)


@pytest.mark.parametrize("sizes", [(7, 5), (1, 9), (0, 4), (4, 0), (6, 6)])
def test_pair_costs_add_up_to_the_reference_pwcd(sizes: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(sizes))
    P, Q = _diagram(rng, sizes[0]), _diagram(rng, sizes[1])
    parts = pwcd_parts(P, Q)
    assert parts["recall"].sum() + parts["precision"].sum() == pytest.approx(pwcd(P, Q)[0], rel=1e-12, abs=1e-15)
    assert parts["teacher_matched"].shape == (sizes[0],) and (parts["teacher_gap"] >= 0).all()


def test_scale_normalisation_removes_the_students_overall_scale() -> None:
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(60, 8))
    same_shape = cloud_diagnostics(teacher, 3.0 * teacher + 1.0, m=40, seed=2)
    assert same_shape["loss_scaled"] == pytest.approx(0.0, abs=1e-20)  # the shape is the teacher's
    assert same_shape["loss_raw"] > 0 and same_shape["rms_student"] == pytest.approx(3 * same_shape["rms_teacher"])
    assert same_shape["dims"]["H0"]["teacher_matched"] == same_shape["dims"]["H0"]["pairs_teacher"]
    other = cloud_diagnostics(teacher, rng.normal(size=(60, 8)), m=40, seed=2)
    shares = [other["dims"][d]["share"] for d in ("H0", "H1")]
    assert other["loss_scaled"] > 0 and sum(shares) == pytest.approx(1.0)
    assert other["loss_scaled"] == pytest.approx(sum(other["dims"][d]["loss_scaled"] for d in ("H0", "H1")))


def test_command_reports_both_dimensions_on_tiny_models(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tiny_config(tmp_path)
    data = tiny_data(cfg)
    paths = []
    for kind in ("teacher", "student"):
        spec = model_spec(cfg, kind, data.num_classes, torch.device("cpu"))
        torch.manual_seed(len(paths))
        path = tmp_path / f"{kind}.pt"
        save_checkpoint(path, spec.build(), None, None, None, 0, 0, cfg.to_dict(), {"model_spec": spec.__dict__})
        paths.append(path)
    overrides = tmp_path / "tiny.yaml"
    overrides.write_text(yaml.safe_dump({"teacher_overrides": dict(TINY_MODEL), "student_overrides": dict(TINY_MODEL)}))
    argv = ["--teacher", str(paths[0]), "--student", str(paths[1]), "--scans", "2", "--json", str(tmp_path / "d.json"),
            "--config", str(overrides), "--data-root", cfg.data_root, "--synthetic-scenes", "5", "--synthetic-beams", "8",
            "--synthetic-azimuth-steps", "64", "--grid-size", "0.3", "--topo-m", "32", "--device", "cpu",
            "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| PWCD (scaled) |" in printed and "dL_seg/dh" in printed
    saved = json.loads((tmp_path / "d.json").read_text())  # the tiny set has one validation scan
    assert len(saved["clouds"]) == 1 and set(saved["summary"]) >= {"H0", "H1", "seg_grad_norm", "loss_raw"}
    assert main(argv[:2] + ["--student", str(tmp_path / "missing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
