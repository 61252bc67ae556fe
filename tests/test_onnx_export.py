"""``python -m train.export_onnx`` and ``train.predict --checkpoint FILE.onnx`` (decision 55): one
exported file labels scans of every size as the checkpoint does, through onnxruntime without
importing torch; a wrongly wired plan input is caught; bad inputs are refused in one line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from test_predict import predicted, run, split_args, synthetic, validation  # noqa: E402,F401 (synthetic: a fixture)
from test_train_support import TINY_MODEL  # noqa: E402
from train.engine.loop import ModelSpec  # noqa: E402
from train.models.pointcept import pointcept_config, to_pointcept  # noqa: E402
from train.runtime.checkpoint import save_checkpoint  # noqa: E402
from train.data.lidar.scan_files import write_scan  # noqa: E402
from train.export_onnx import main as export_main  # noqa: E402
from train.models.graph_inputs import plan_feed  # noqa: E402
from train.models.plan import BatchPlan  # noqa: E402
from train.prediction.onnx_file import METADATA_KEY, load_onnx_predictor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROB_TOLERANCE = 2e-3  # per-class probabilities (written as float16: 1e-3 of their own rounding)


def export(*argv: Any) -> int:
    return export_main([str(a) for a in argv])


@pytest.fixture(scope="module")
def exported(synthetic: dict[str, Any]) -> dict[str, Any]:
    """test_predict's tiny model of the tiny synthetic set, exported as float32 and float16 files."""
    files = {}
    for precision, extra in (("float32", []), ("float16", ["--half"])):
        files[precision] = synthetic["root"] / f"model_{precision}.onnx"
        assert export("--checkpoint", synthetic["checkpoint"], "--out", files[precision], *extra) == 0
    return {**synthetic, "onnx": files["float32"], "half": files["float16"]}


def surface_scan(n: int, seed: int) -> np.ndarray:
    """A LiDAR-like scan of ``n`` points: a rolling ground, two walls and a pole, intensity 0..1."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 4, n)
    x, y = rng.uniform(-30, 30, n), rng.uniform(-30, 30, n)
    z = 0.3 * np.sin(x / 5) + rng.normal(0, 0.02, n)
    x = np.where(kind == 1, 8.0 + rng.normal(0, 0.02, n), x)
    y = np.where(kind == 2, -6.0 + rng.normal(0, 0.02, n), y)
    z = np.where(kind >= 1, rng.uniform(0, 4, n), z)
    x, y = np.where(kind == 3, rng.normal(3, 0.1, n), x), np.where(kind == 3, rng.normal(3, 0.1, n), y)
    return np.stack([x, y, z, rng.uniform(0, 1, n)], 1).astype(np.float32)


def agreement(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.concatenate([x == y for x, y in zip(a, b)]).mean())


def assert_same_answers(reference: Path, other: Path, names: list[str]) -> float:
    """The answers written under ``other`` (``--save-probs``) are the checkpoint's under ``reference``:
    per-class probabilities within :data:`PROB_TOLERANCE` at every point, and the same label at every
    point whose top class the checkpoint puts ahead of the next by more than twice that tolerance.
    Closer points are near ties, where a label may flip within the tolerance: the models here are
    randomly initialised, so a few in a thousand points are (0.18% flipped on a 16-core Xeon with
    onnxruntime 1.30). Returns the share of all points with the same label."""
    for name, a, b in zip(names, probabilities(reference, names), probabilities(other, names)):
        np.testing.assert_allclose(a, b, atol=PROB_TOLERANCE, rtol=0, err_msg=name)
        top2 = np.sort(a, axis=1)[:, -2:] if len(a) else np.zeros((0, 2), np.float32)
        clear = top2[:, 1] - top2[:, 0] > 2 * PROB_TOLERANCE
        labels_a, labels_b = np.load(reference / f"{name}.npy"), np.load(other / f"{name}.npy")
        np.testing.assert_array_equal(labels_a[clear], labels_b[clear], err_msg=name)
    return agreement(predicted(reference, names), predicted(other, names))


def probabilities(out: Path, names: list[str]) -> list[np.ndarray]:
    return [np.load(out / f"{name}.probs.npy").astype(np.float32) for name in names]


@pytest.mark.parametrize("tta", [False, True], ids=["plain", "tta"])
def test_the_exported_file_labels_the_validation_split_as_the_checkpoint(exported: dict[str, Any], tmp_path: Path,
                                                                          tta: bool) -> None:
    more = ["--save-probs", "--batch-size", "2"] + (["--tta"] if tta else [])
    assert run(*split_args(exported, tmp_path / "pt", *more)) == 0
    assert run(*split_args({**exported, "checkpoint": exported["onnx"]}, tmp_path / "onnx", *more)) == 0
    split = validation(exported)
    names = [split.scan_name(i) for i in range(len(split))]
    assert_same_answers(tmp_path / "pt", tmp_path / "onnx", names)


def test_files_of_1500_to_60000_points_get_the_checkpoint_labels_from_one_export(exported: dict[str, Any],
                                                                                 tmp_path: Path) -> None:
    names = []
    for i, n in enumerate((1_500, 12_000, 60_000)):
        names.append(f"scan_{n}")
        write_scan(tmp_path / "scans" / f"scan_{n}.npy", surface_scan(n, i), ("x", "y", "z", "intensity"))
    for model, out in ((exported["checkpoint"], "pt"), (exported["onnx"], "onnx"), (exported["half"], "half")):
        assert run("--checkpoint", model, "--input", tmp_path / "scans", "--out", tmp_path / out, "--save-probs") == 0
    same = assert_same_answers(tmp_path / "pt", tmp_path / "onnx", names)
    half = agreement(predicted(tmp_path / "pt", names), predicted(tmp_path / "half", names))
    print(f"float32 file: {same:.5f} of the points get the checkpoint's label")
    print(f"float16 file: {half:.5f} of the points get the checkpoint's label")  # measured, reported in docs/deploy.md
    assert half >= 0.99


def test_scans_of_no_one_or_a_few_points_and_a_stray_point_get_the_checkpoint_labels_through_the_file(
        exported: dict[str, Any], tmp_path: Path) -> None:
    # decision 54's scans (a scan of no points ended the onnxruntime loop with an IndexError; one
    # under the coarsest voxel pools into itself) through the exported file, as through the checkpoint
    points = surface_scan(3_000, 7)
    tiny = points[:1] + np.float32([0.1, 0.2, 0.0, 0.0]) * np.arange(5)[:, None]  # 0.9 m across
    scans = {"empty": points[:0], "one": points[:1], "tiny": tiny, "whole": points,
             "stray": np.vstack([points, [[10_000.0, 0.0, 0.0, 0.5]]]).astype(np.float32)}
    for name, scan in scans.items():
        write_scan(tmp_path / "in" / f"{name}.npy", scan, ("x", "y", "z", "intensity"))
    for model, out in ((exported["checkpoint"], "pt"), (exported["onnx"], "onnx")):
        assert run("--checkpoint", model, "--input", tmp_path / "in", "--out", tmp_path / out, "--save-probs",
                   "--batch-size", 2) == 0
    names = list(scans)
    for name, labels in zip(names, predicted(tmp_path / "onnx", names)):
        assert labels.shape == (len(scans[name]),), name
    assert_same_answers(tmp_path / "pt", tmp_path / "onnx", names)


def test_a_pointcept_checkpoint_and_a_checkpoint_last_of_an_spconv_model_export_with_their_labels(
        exported: dict[str, Any], tmp_path: Path) -> None:
    """Whatever train.predict reads exports: a checkpoint_last.pt whose spec names the spconv backend
    (the graph uses the plain convolution: spconv is not needed), and the same weights as a Pointcept
    checkpoint with --dataset and --preset; each file labels the split as its checkpoint does."""
    import torch

    torch.manual_seed(2)
    overrides = {**TINY_MODEL, "upstream_unpool_cpe": True}
    spec = ModelSpec("teacher-demo", 22, overrides)
    model = spec.build()
    native = tmp_path / "model_final.pt"  # the same weights, run by PyTorch's own convolution on this CPU
    save_checkpoint(native, model, None, None, None, 1, 1, exported["cfg"].to_dict(),
                    {"model_spec": spec.__dict__, "stage": "student"})
    last = tmp_path / "checkpoint_last.pt"
    spconv = ModelSpec("teacher-demo", 22, {**overrides, "conv_backend": "spconv"})
    save_checkpoint(last, model, torch.optim.AdamW(model.parameters()), None, None, 3, 1, exported["cfg"].to_dict(),
                    {"model_spec": spconv.__dict__, "stage": "student"})
    experiment = tmp_path / "experiment"
    (experiment / "model").mkdir(parents=True)
    (experiment / "config.py").write_text(f"model = {pointcept_config(model)!r}\n")
    pointcept = experiment / "model" / "model_best.pth"
    torch.save({"state_dict": to_pointcept(model)}, pointcept)
    assert export("--checkpoint", last, "--out", tmp_path / "last.onnx") == 0
    assert export("--checkpoint", pointcept, "--out", tmp_path / "pointcept.onnx", "--dataset", "synthetic",
                  "--preset", "teacher-demo", "--grid-size", exported["cfg"].grid_size) == 0
    split = validation(exported)
    names = [split.scan_name(i) for i in range(len(split))]
    assert run(*split_args({**exported, "checkpoint": native}, tmp_path / "pt", "--save-probs")) == 0
    for name in ("last", "pointcept"):
        assert run(*split_args({**exported, "checkpoint": tmp_path / f"{name}.onnx"}, tmp_path / name,
                               "--save-probs")) == 0
        assert_same_answers(tmp_path / "pt", tmp_path / name, names)


def test_a_rerun_with_the_file_labels_only_what_is_missing(exported: dict[str, Any], tmp_path: Path) -> None:
    split = validation(exported)
    names = [split.scan_name(i) for i in range(len(split))]
    onnx_args = split_args({**exported, "checkpoint": exported["onnx"]}, tmp_path / "out")
    assert run(*onnx_args) == 0
    first = tmp_path / "out" / f"{names[0]}.npy"
    kept = (tmp_path / "out" / f"{names[1]}.npy").stat().st_mtime_ns
    first.unlink()
    assert run(*onnx_args) == 0
    assert first.is_file() and (tmp_path / "out" / f"{names[1]}.npy").stat().st_mtime_ns == kept


def _surface_feed(predictor: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The graph's inputs for one ray-cast surface scan (0.3 voxels, random features) and its logits."""
    scan = surface_scan(4_000, 7)
    grid = np.unique(np.floor((scan[:, :3] - scan[:, :3].min(0)) / 0.3).astype(np.int64), axis=0)
    feat = np.random.default_rng(0).standard_normal((len(grid), 4)).astype(np.float32)
    feed = plan_feed(BatchPlan(grid, np.array([len(grid)]), predictor.orders, predictor.items), feat,
                     predictor.inputs)
    (logits,) = predictor.session.run(["logits"], feed)
    return feed, logits


def test_swapped_plan_arrays_change_the_logits_so_the_comparisons_catch_a_wrong_wiring(exported: dict[str, Any]
                                                                                      ) -> None:
    predictor = load_onnx_predictor(exported["onnx"], ["CPUExecutionProvider"])
    feed, logits = _surface_feed(predictor)
    curves = feed["patches_l0_gather"]
    swapped = {**feed, "patches_l0_gather": np.ascontiguousarray(curves[[1, 0, *range(2, len(curves))]])}
    (wrong,) = predictor.session.run(["logits"], swapped)
    assert np.abs(wrong - logits).max() > 10 * PROB_TOLERANCE


def test_the_metadata_names_the_curves_the_blocks_read_and_the_other_rows_change_nothing(exported: dict[str, Any]
                                                                                          ) -> None:
    """TINY_MODEL has one block per stage: it reads the z rows only (``plan.curves_read``); the
    other curves' rows of every level, filled with the z row, give the same logits bit for bit."""
    predictor = load_onnx_predictor(exported["onnx"], ["CPUExecutionProvider"])
    meta = json.loads({p.key: p.value for p in onnx.load(exported["onnx"]).metadata_props}[METADATA_KEY])
    assert meta["plan"]["curves_read"] == [["z"], ["z"], ["z"]]
    feed, logits = _surface_feed(predictor)
    rows = {name: value for name, value in feed.items() if name.startswith("patches_l")}
    assert len(rows) == 6 and all(not np.array_equal(value[0], value[1]) for value in rows.values())
    only_z = {name: np.ascontiguousarray(np.broadcast_to(value[:1], value.shape)) for name, value in rows.items()}
    np.testing.assert_array_equal(predictor.session.run(["logits"], {**feed, **only_z})[0], logits)


def test_the_convolutions_sum_the_same_at_four_threads_in_every_run(exported: dict[str, Any]) -> None:
    """Each kernel offset is added by its own ScatterND (decision 55): onnxruntime's CPU ScatterND
    adds duplicate indices from several threads without atomics, which one ScatterND over all pairs
    would hit (different logits from run to run)."""
    predictor = load_onnx_predictor(exported["onnx"], ["CPUExecutionProvider"], threads=4)
    scan = surface_scan(60_000, 3)
    grid = np.unique(np.floor((scan[:, :3] - scan[:, :3].min(0)) / 0.1).astype(np.int64), axis=0)
    feat = np.random.default_rng(0).standard_normal((len(grid), 4)).astype(np.float32)
    feed = plan_feed(BatchPlan(grid, np.array([len(grid)]), predictor.orders, predictor.items), feat,
                     predictor.inputs)
    first = predictor.session.run(["logits"], feed)[0]
    for _ in range(4):
        np.testing.assert_array_equal(predictor.session.run(["logits"], feed)[0], first)


def test_the_file_passes_the_checker_and_its_metadata_holds_what_labelling_needs(exported: dict[str, Any]) -> None:
    graph = onnx.load(exported["onnx"])
    onnx.checker.check_model(graph, full_check=True)
    meta = json.loads({p.key: p.value for p in graph.metadata_props}[METADATA_KEY])
    assert meta["dataset"] == "synthetic" and meta["grid_size"] == 0.3 and meta["precision"] == "float32"
    assert meta["class_names"] and meta["label_map"] and meta["feature"] == {"column": "intensity", "scale": 1.0}
    assert meta["plan"]["orders"] == ["z", "z-trans", "hilbert", "hilbert-trans"] and meta["plan"]["kernel_sizes"] == [3, 5]
    assert meta["opset"] == 17 and {o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")} == {17}
    assert [i.name for i in graph.graph.input] == [spec["name"] for spec in meta["inputs"]]
    dynamic = [d.dim_param for i in graph.graph.input for d in i.type.tensor_type.shape.dim if not d.HasField("dim_value")]
    assert "points_l0" in dynamic and all(dynamic)


def test_labelling_through_onnxruntime_never_imports_torch(exported: dict[str, Any], tmp_path: Path) -> None:
    pytest.importorskip("plyfile")  # the PLY output's writer (the `scans` extra)
    blocker = tmp_path / "blocked" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise RuntimeError('torch was imported')\n")
    write_scan(tmp_path / "scans" / "a.npy", surface_scan(3_000, 1), ("x", "y", "z", "intensity"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "blocked"), str(ROOT)])}
    result = subprocess.run([sys.executable, "-m", "train.predict", "--checkpoint", str(exported["onnx"]), "--input",
                             str(tmp_path / "scans"), "--out", str(tmp_path / "out"), "--tta", "--save-probs",
                             "--format", "ply", "--no-progress"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "a.ply").is_file() and (tmp_path / "out" / "a.probs.npy").is_file()


def test_bad_inputs_are_refused_in_one_line(exported: dict[str, Any], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def refusal(code: int, *needles: str) -> None:
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert all(needle in err for needle in needles), err

    scans = tmp_path / "scans"
    write_scan(scans / "a.npy", surface_scan(1_500, 1), ("x", "y", "z", "intensity"))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a model")
    refusal(run("--checkpoint", garbage, "--input", scans, "--out", tmp_path / "o1"), "is not an ONNX model")
    foreign = tmp_path / "foreign.onnx"
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    # IR version and opset pinned: the installed onnx's defaults may be newer than onnxruntime reads
    onnx.save(onnx.helper.make_model(graph, ir_version=8, opset_imports=[onnx.helper.make_opsetid("", 17)]), foreign)
    refusal(run("--checkpoint", foreign, "--input", scans, "--out", tmp_path / "o2"), "without topodistill's metadata")
    refusal(run("--checkpoint", exported["onnx"], "--dataset", "nuscenes", "--input", scans, "--out", tmp_path / "o3"),
            "cannot label nuscenes scans")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        refusal(run("--checkpoint", exported["onnx"], "--device", "cuda", "--input", scans, "--out", tmp_path / "o4"),
                "no CUDA execution provider")
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))

    refusal(export("--checkpoint", garbage, "--out", tmp_path / "x.onnx"), "garbage.onnx")
    existing = tmp_path / "existing.onnx"
    existing.write_bytes(b"keep me")
    refusal(export("--checkpoint", exported["checkpoint"], "--out", existing), "exists: pass --overwrite")
    assert existing.read_bytes() == b"keep me"
    refusal(export("--checkpoint", exported["checkpoint"], "--out", tmp_path / "model.pt"), "must end in .onnx")

    import train.prediction.export as exporter

    def unsupported(*args: Any) -> None:
        raise RuntimeError("Exporting the operator 'aten::some_op' to ONNX opset version 17 is not supported.\nmore")

    monkeypatch.setattr(exporter, "export_graph", unsupported)
    refusal(export("--checkpoint", exported["checkpoint"], "--out", existing, "--overwrite"),
            "architecture cannot be exported", "aten::some_op")
    assert existing.read_bytes() == b"keep me" and not list(tmp_path.glob("*.tmp"))
    monkeypatch.undo()
    assert export("--checkpoint", exported["checkpoint"], "--out", existing, "--overwrite") == 0
    assert METADATA_KEY in {p.key for p in onnx.load(existing).metadata_props}
