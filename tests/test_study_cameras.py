"""``python -m train.study --table cameras``: the camera teacher unit and its rows.

The smoke form runs the whole chain at its smallest size: the label-scarce synthetic set rendered
with the ring rig, the 2D teacher on the training scenes' images, predictions and projection, the
CE row, the CE row on the camera's pseudo-labels of the unlabelled scans, the rows distilled from the
cameras, and the report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.test_train_support import TINY_MODEL
from train.data.lidar.waymo import WaymoDataset
from train.study.ablation import main, parse, study_rows

PSEUDO_ROW = "CE+camera pseudo-labels (unlabelled)"
CAMERA_ROWS = (PSEUDO_ROW, "camera KD", "camera KD+unlabelled", "camera KD+topo+unlabelled")
MIXED_ROWS = (PSEUDO_ROW, "camera KD+unlabelled", "camera KD+topo+unlabelled")  # the unlabelled scans mixed in


def _argv(tmp_path: Path) -> list[str]:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({"teacher_overrides": dict(TINY_MODEL), "student_overrides": dict(TINY_MODEL)}))
    return ["--table", "cameras", "--config", str(cfg), "--out", str(tmp_path / "study"), "--seeds", "0", "1",
            "--data-root", str(tmp_path / "data"), "--synthetic-scenes", "5", "--synthetic-unlabelled-scenes", "2",
            "--synthetic-beams", "8", "--synthetic-azimuth-steps", "64", "--grid-size", "0.3", "--epochs", "1",
            "--batch-size", "2", "--iters-per-epoch", "1", "--device", "cpu", "--deterministic", "--topo-m", "32",
            "--latency-runs", "1", "--no-tensorboard", "--no-progress", "--procs", "1",
            "--image-teacher-epochs", "1"]


def test_the_camera_rows_distil_from_the_projected_predictions_without_a_saliency_term() -> None:
    """After CE, the pseudo-label baseline (decision 65): a kd stage with the unlabelled scans mixed in,
    L_seg on the camera's classes there, no L_kld; then the rows distilled with L_kld (and L_topo)."""
    rows = study_rows("cameras", {}, [], unlabelled_split="unlabelled", camera_labels="out/camera/labels")
    camera = {"teacher": "images", "image_predictions": "out/camera/labels"}
    mixed = {**camera, "unlabelled_split": "unlabelled"}
    assert [(r.key, r.stage, r.values) for r in rows] == [
        ("CE", "student", {}),
        (PSEUDO_ROW, "kd", {**mixed, "camera_pseudo_labels": True, "pseudo_label_threshold": 0.0, "kld": False}),
        (CAMERA_ROWS[1], "kd", camera), (CAMERA_ROWS[2], "kd", mixed),
        (CAMERA_ROWS[3], "distill", {**mixed, "grad": False})]


def test_the_study_gives_its_pseudo_label_threshold_to_the_pseudo_label_row_alone(tmp_path: Path) -> None:
    """--pseudo-label-threshold of the study reaches the pseudo-label row's units only (a run option
    would be refused by the CE row, which has no camera teacher); other tables refuse it."""
    args, rows, _ = parse([*_argv(tmp_path), "--pseudo-label-threshold", "0.8"])
    assert {r.key: r.values.get("pseudo_label_threshold") for r in rows} == {
        "CE": None, PSEUDO_ROW: 0.8, CAMERA_ROWS[1]: None, CAMERA_ROWS[2]: None, CAMERA_ROWS[3]: None}
    for bad in (["--pseudo-label-threshold", "1.5"], ["--table", "unlabelled", "--pseudo-label-threshold", "0.5"]):
        with pytest.raises(ValueError, match="--pseudo-label-threshold"):
            parse([*_argv(tmp_path), *bad])


def test_the_camera_study_runs_end_to_end_at_its_smallest_size(tmp_path: Path) -> None:
    assert main(_argv(tmp_path)) == 0
    out, data = tmp_path / "study", tmp_path / "data"
    saved = json.loads((out / "study.json").read_text())["study"]
    assert list(saved["rows"]) == ["CE", *CAMERA_ROWS]
    assert all(len(units) == 2 for units in saved["rows"].values())
    assert saved["config"]["synthetic_cameras"] == "ring" and saved["config"]["unlabelled_split"] == "unlabelled"
    report = (out / "STUDY.md").read_text()
    assert "distillation from cameras" in report and "Teacher: the camera pipeline" in report
    assert all(f"| {row} | 2 |" in report for row in ("CE", *CAMERA_ROWS))

    # the 2D teacher saw the training scenes' images only: 4 cameras a frame
    camera = json.loads((out / "camera" / "result.json").read_text())
    train, unlabelled = WaymoDataset(data, "training"), WaymoDataset(data, "unlabelled", labelled=False)
    assert camera["kind"] == "camera" and camera["image_teacher"]["images"] == 4 * len(train)
    assert {"val", "test"} <= set(camera) and 0 < camera["points"]["training"]["seen_share"] <= 1
    labels = out / "camera" / "labels"
    for split in (train, unlabelled):
        for i in range(len(split)):
            name = split.scan_name(i)
            probs = np.load(labels / f"{name}.probs.npy")
            features = np.load(labels / f"{name}.features.npy")
            assert probs.shape == (len(split.load(i)["coord"]), 22) and features.shape[0] == probs.shape[0]
    assert any((out / "camera" / "eval-labels" / "testing").rglob("*.npy"))
    assert not any(labels.glob("validation/**/*.npy")) and not any(labels.glob("testing/**/*.npy"))

    # the camera rows read those files, three of them mix in the unlabelled split (the pseudo-label row
    # trains on the camera's classes there); the CE row reads neither
    stages = ("student", "kd", "kd", "kd", "distill")
    for row, stage in zip(("CE", *CAMERA_ROWS), stages):
        unit = out / "units" / row.replace(" ", "_") / "seed-1"
        extra = torch.load(unit / "model_final.pt", weights_only=False)["extra"]
        assert extra["stage"] == stage
        assert ("camera_teacher" in extra) == (row != "CE"), row
        assert ("unlabelled" in extra) == (row in MIXED_ROWS), row
        assert ("pseudo_label_threshold" in extra.get("camera_teacher", {})) == (row == PSEUDO_ROW), row


@pytest.mark.parametrize("options, message", [
    (["--dataset", "semantic_kitti"], "rendered class images"),
    (["--synthetic-cameras", "none"], "rendered with cameras"),
    (["--image-teacher-epochs", "0"], "--image-teacher-epochs must be >= 1"),
])
def test_a_camera_study_that_cannot_run_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                               options: list[str], message: str) -> None:
    argv = _argv(tmp_path) + options + (["--unlabelled-split", "test"] if "semantic_kitti" in options else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "data").exists()
