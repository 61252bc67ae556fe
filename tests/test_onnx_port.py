"""A port of an exported model written from ``docs/deploy.md`` and the file's metadata alone (its
"Before the graph" steps, the plan and the graph's inputs: ``tests/test_deploy_port.py``'s NumPy
port), with NumPy and onnxruntime and nothing of this package's prediction or plan code, labels
scans as ``train.predict`` labels them: at every point, for a data set whose points are clamped
into the evaluation box (the synthetic set, Waymo's) and for ones that are not (SemanticKITTI,
nuScenes with its intensity scale), with points outside the box and a minimum corner off the
voxel grid."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from test_deploy_port import port_labels  # noqa: E402
from test_onnx_export import export, surface_scan  # noqa: E402
from test_predict import run, write_model  # noqa: E402
from train.data.labels import NUSCENES_CLASSES, SEMANTIC_KITTI_CLASSES, WAYMO_CLASSES  # noqa: E402
from train.data.lidar.scan_files import write_scan  # noqa: E402

GRID = 0.3
CLASSES = {"synthetic": len(WAYMO_CLASSES), "semantic_kitti": len(SEMANTIC_KITTI_CLASSES),
           "nuscenes": len(NUSCENES_CLASSES)}


def scans() -> dict[str, np.ndarray]:
    """Scans with points outside the evaluation box (beyond 75.2 m, above 2 m, below -4 m) and a
    minimum corner that is not on the 0.3 m grid."""
    rng = np.random.default_rng(5)
    near = surface_scan(6_000, 11) + np.float32([0.137, -0.071, 0.0, 0.0])
    far = np.stack([rng.uniform(60, 140, 800) * rng.choice([-1, 1], 800), rng.uniform(-120, 120, 800),
                    rng.uniform(-6, 9, 800), rng.uniform(0, 1, 800)], 1).astype(np.float32)
    tall = surface_scan(3_000, 12) * np.float32([1, 1, 3, 1]) + np.float32([0.05, 0.11, -1.3, 0])
    return {"near_and_far": np.vstack([near, far]), "tall": tall}


@pytest.mark.parametrize("dataset, tta", [("synthetic", False), ("semantic_kitti", False), ("nuscenes", False),
                                         ("synthetic", True)])
def test_a_port_written_from_the_deploy_document_labels_every_point_as_train_predict(tmp_path: Path, dataset: str,
                                                                                       tta: bool) -> None:
    write_model(tmp_path / "model_final.pt", CLASSES[dataset], {"dataset": dataset, "grid_size": GRID})
    model = tmp_path / "model.onnx"
    assert export("--checkpoint", tmp_path / "model_final.pt", "--out", model) == 0
    scale = 255.0 if dataset == "nuscenes" else 1.0  # nuScenes stores intensity 0..255
    points = {name: scan * np.float32([1, 1, 1, scale]) for name, scan in scans().items()}
    for name, scan in points.items():
        write_scan(tmp_path / "in" / f"{name}.npy", scan, ("x", "y", "z", "intensity"))
    assert run("--checkpoint", model, "--input", tmp_path / "in", "--out", tmp_path / "out",
               *(["--tta"] if tta else [])) == 0
    outside, check = 0, {"arrays": 0}
    for name, scan in points.items():
        outside += int(((np.abs(scan[:, :2]) > 75.2).any(axis=1) | (scan[:, 2] > 2) | (scan[:, 2] < -4)).sum())
        np.testing.assert_array_equal(port_labels(model, scan, tta, check),
                                      np.load(tmp_path / "out" / f"{name}.npy"), err_msg=name)
    assert outside > 1_000 and check["arrays"] > 0  # the box matters for these scans; every input compared


def with_metadata(source: Path, out: Path, change: dict) -> Path:
    """``source`` with its topodistill metadata updated by ``change`` (a value None: the key removed)."""
    graph = onnx.load(source)
    entry = next(p for p in graph.metadata_props if p.key == "topodistill")
    doc = json.loads(entry.value)
    doc.update(change)
    entry.value = json.dumps({key: value for key, value in doc.items() if key not in change or value is not None})
    onnx.save(graph, out)
    return out


def test_a_file_written_before_the_box_was_recorded_labels_as_before_and_a_foreign_box_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_model(tmp_path / "model_final.pt", CLASSES["synthetic"], {"dataset": "synthetic", "grid_size": GRID})
    model = tmp_path / "model.onnx"
    assert export("--checkpoint", tmp_path / "model_final.pt", "--out", model) == 0
    scan = scans()["near_and_far"]
    write_scan(tmp_path / "in" / "a.npy", scan, ("x", "y", "z", "intensity"))
    old = with_metadata(model, tmp_path / "old.onnx", {"evaluation_box": None})
    assert run("--checkpoint", old, "--input", tmp_path / "in", "--out", tmp_path / "old") == 0
    np.testing.assert_array_equal(np.load(tmp_path / "old" / "a.npy"), port_labels(model, scan))
    capsys.readouterr()
    foreign = with_metadata(model, tmp_path / "foreign.onnx", {"evaluation_box": {"low": [-50, -50, -3],
                                                                                   "high": [50, 50, 3]}})
    assert run("--checkpoint", foreign, "--input", tmp_path / "in", "--out", tmp_path / "foreign") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "foreign.onnx" in err and "evaluation_box" in err, err
