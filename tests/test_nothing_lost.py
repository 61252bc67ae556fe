"""Nothing lost when a command is refused, stopped or out of room (decision 99): one test
per mechanism, each on the commands' own code.

- a file a command replaces (a report, a configuration, a figure, a copied log) is written whole:
  a disk that fills while it is written leaves the old file byte-identical and no temporary file;
- a full disk ends a command in one line naming the folder, the bytes and the free space, exit
  status non-zero, and the file it would have replaced is unchanged;
- a file that is not the command's own kind of output is not replaced without ``--overwrite``,
  refused in one line before any work;
- an option that cannot act in the run as given is refused in one line that says why.

A full disk is simulated in this process (:func:`tests.full_disk.full_disk`): every write into a
folder fails with ``ENOSPC`` after half of its bytes; nothing fills a real disk.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any, Callable

import pytest

from test_predict import synthetic  # noqa: F401  (the fixture: a tiny synthetic split and model_final.pt)
from tests.full_disk import full_disk, full_disk_for

OLD = b"the user's file, as it was\n"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- files written whole


def _save_config(folder: Path) -> Path:
    from train.options.resolve import resolve, save_config

    save_config(resolve(["--dataset", "synthetic", "--out", str(folder)]), folder / "config.yaml")
    return folder / "config.yaml"


def _results(classes: int) -> dict[str, dict[str, Any]]:
    return {"teacher": {"miou": 0.5, "iou": [0.5] * classes, "class_frequency": [1.0 / classes] * classes,
                        "parameters": 10, "latency_ms": 1.0}}


def _eval_report(folder: Path) -> Path:
    from train.evaluation.evaluate import write_report

    write_report(folder / "results", _results(2), ["road", "car"], header="# a run")
    return folder / "results.json"


def _per_class_figure(folder: Path) -> Path:
    from train.evaluation.plots import plot_per_class_iou

    plot_per_class_iou(folder / "per_class_iou.png", _results(2), ["road", "car"])
    return folder / "per_class_iou.png"


def _budget_figure(folder: Path) -> Path:
    from train.study.report import plot_budgets

    plot_budgets({"teacher": {1: [(1, 0.2), (2, 0.3)]}}, folder / "budget.png")
    return folder / "budget.png"


def _kept_unit(folder: Path) -> Path:
    from train.study.units import RESULT, keep_units

    unit = folder / "out" / "units" / "full" / "seed-0"
    unit.mkdir(parents=True)
    (unit / RESULT).write_text('{"val": {}}')
    kept = folder / "kept" / "units" / "full" / "seed-0" / RESULT
    kept.parent.mkdir(parents=True)
    kept.write_bytes(OLD)
    with full_disk(kept.parent):
        keep_units(folder / "out", folder / "kept")
    return kept


WRITERS: dict[str, Callable[[Path], Path]] = {
    "train.run's config.yaml": _save_config, "an evaluation report's .json": _eval_report,
    "a run's figure": _per_class_figure,
    "a study's figure": _budget_figure,
}


def _prepared(writer: Callable[[Path], Path], folder: Path) -> Path:
    """The path ``writer`` writes, holding :data:`OLD` (figures: matplotlib loaded before the disk fills)."""
    import matplotlib

    matplotlib.use("Agg")
    scratch = folder.parent / "scratch"
    scratch.mkdir()
    target = folder / writer(scratch).name
    target.write_bytes(OLD)
    return target


@pytest.mark.parametrize("writer", list(WRITERS), ids=list(WRITERS))
def test_a_report_config_or_figure_replaced_on_a_full_disk_is_kept_byte_identical(tmp_path: Path,
                                                                                  writer: str) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    write = WRITERS[writer]
    target = _prepared(write, folder)
    before = _files(folder)
    with full_disk(folder), pytest.raises(OSError) as err:
        write(folder)
    assert err.value.errno == errno.ENOSPC
    assert _files(folder) == before  # the old file byte-identical, no temporary file beside it
    assert target.read_bytes() == OLD


def test_a_training_log_row_on_a_full_disk_is_left_out_whole_and_said_in_one_line(tmp_path: Path) -> None:
    from train.runtime.files import NoRoomError
    from train.runtime.logging_utils import MetricLogger, log_path

    logger = MetricLogger(tmp_path, tensorboard=False)
    logger.log(1, {"loss": 0.5})
    before = log_path(tmp_path, "train").read_bytes()
    with full_disk(tmp_path), pytest.raises(NoRoomError) as err:
        logger.log(2, {"loss": 0.25})
    assert "\n" not in str(err.value) and "no room to write" in str(err.value) and str(tmp_path) in str(err.value)
    assert log_path(tmp_path, "train").read_bytes() == before  # no half row: a resume reads the rows it had
    logger.log(2, {"loss": 0.25})
    assert log_path(tmp_path, "train").read_bytes() == before + b"2,0.25\r\n"


def test_a_checkpoint_on_a_full_disk_names_the_room_it_needs_and_keeps_the_previous(tmp_path: Path) -> None:
    import torch

    from train.runtime.checkpoint import atomic_save
    from train.runtime.checkpoint_errors import CheckpointWriteError

    target = tmp_path / "checkpoint_last.pt"
    target.write_bytes(OLD)
    with full_disk(tmp_path), pytest.raises(CheckpointWriteError) as err:
        atomic_save({"model": {"w": torch.ones(1000)}}, target)
    line = str(err.value)
    assert "\n" not in line and f"could not write checkpoint {target}: No space left on device (" in line
    assert "MB needed" in line and "MB free there" in line and "--resume" in line
    assert _files(tmp_path) == {"checkpoint_last.pt": OLD}


def test_a_unit_kept_for_another_machine_is_kept_whole_on_a_full_disk(tmp_path: Path) -> None:
    with pytest.raises(OSError) as err:
        _kept_unit(tmp_path)
    assert err.value.errno == errno.ENOSPC
    kept = tmp_path / "kept" / "units" / "full" / "seed-0"
    assert _files(kept) == {"result.json": OLD}


# ---------------------------------------------------------------- a full disk: one line, nothing lost


def _one_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "no room to write" in lines[0] and "free there" in lines[0], lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


TINY_RUN = ["--dataset", "synthetic", "--synthetic-scenes", "5", "--synthetic-beams", "8", "--synthetic-azimuth-steps",
            "64", "--grid-size", "0.3", "--epochs", "1", "--teacher-epochs", "1", "--batch-size", "2",
            "--iters-per-epoch", "2", "--device", "cpu", "--procs", "1", "--no-progress", "--topo-m", "32"]


def _tiny_run_argv(tmp_path: Path) -> list[str]:
    import yaml

    from test_train_support import TINY_MODEL

    overrides = tmp_path / "tiny.yaml"
    overrides.write_text(yaml.safe_dump({"teacher_overrides": dict(TINY_MODEL), "student_overrides": dict(TINY_MODEL)}))
    return [*TINY_RUN, "--config", str(overrides), "--data-root", str(tmp_path / "data")]


@pytest.fixture
def quiet_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The caches train.run and train.study point under their --out, restored after the test."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "torch_cache"))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "matplotlib"))


def test_train_run_on_a_full_disk_ends_in_one_line_and_keeps_the_file_it_would_replace(
        tmp_path: Path, capsys: pytest.CaptureFixture, quiet_caches: None) -> None:
    from train.run import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "config.yaml").write_bytes(OLD)
    with full_disk_for(out, lambda path: not path.name.startswith("config.yaml")):
        assert main([*_tiny_run_argv(tmp_path), "--stage", "teacher", "--out", str(out)]) == 2
    _one_line(capsys.readouterr().err, "train.run: error:", str(out))
    assert _files(out) == {"config.yaml": OLD}


def test_train_run_into_an_earlier_run_of_its_stage_without_resume_is_refused_and_touches_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture, quiet_caches: None) -> None:
    from train.run import main

    out = tmp_path / "out"
    stage = out / "teacher"
    stage.mkdir(parents=True)
    for name in ("checkpoint_last.pt", "train_log.csv", "val_log.csv"):  # an earlier run, stopped
        (stage / name).write_bytes(OLD + name.encode())
    before = _files(out)
    argv = [*_tiny_run_argv(tmp_path), "--stage", "teacher", "--out", str(out)]
    assert main(argv) == 2
    _refused(capsys.readouterr().err, f"train.run: error: --out {out} holds the teacher stage of an earlier run",
             "pass --resume to go on with it")
    assert _files(out) == before and not (tmp_path / "data").exists()  # refused before the data set is made


def test_train_run_on_a_full_disk_while_it_generates_the_synthetic_set_ends_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture, quiet_caches: None) -> None:
    from train.run import main

    data = tmp_path / "data"
    with full_disk_for(data, lambda path: path.name.startswith("synthetic.json")):
        assert main([*_tiny_run_argv(tmp_path), "--stage", "teacher", "--out", str(tmp_path / "out")]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and line.startswith(f"train.run: error: no room to generate the synthetic set in {data}")
    assert "free there" in line and not (tmp_path / "out").exists()


def test_train_study_on_a_full_disk_ends_in_one_line_and_keeps_the_file_it_would_replace(
        tmp_path: Path, capsys: pytest.CaptureFixture, quiet_caches: None) -> None:
    from train.study.ablation import main

    kept, out = tmp_path / "kept" / "units" / "full" / "seed-0", tmp_path / "out"
    kept.mkdir(parents=True)
    (kept / "result.json").write_text('{"val": {}}')
    (kept / "val_log.csv").write_text("step,val_miou\n1,0.5\n")
    unit = out / "units" / "full" / "seed-0"
    unit.mkdir(parents=True)
    (unit / "val_log.csv").write_bytes(OLD)  # a killed run's log of that unit
    with full_disk(out):
        assert main([*_tiny_run_argv(tmp_path), "--out", str(out), "--keep-units", str(tmp_path / "kept"),
                     "--seeds", "0", "1", "--rows", "full"]) == 2
    _one_line(capsys.readouterr().err, "train.study: error:", str(unit))
    assert _files(out) == {"units/full/seed-0/val_log.csv": OLD}


def test_train_predict_on_a_full_disk_ends_in_one_line_and_keeps_the_labels_it_would_replace(
        synthetic: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from test_predict import split_args
    from test_predict import run as predict

    out = tmp_path / "out"
    assert predict(*split_args(synthetic, out)) == 0
    before = _files(out)
    first = min(before)
    (out / first).write_bytes(OLD)
    before[first] = OLD
    capsys.readouterr()
    with full_disk_for(out, lambda path: ".predict" in path.parts):
        assert predict(*split_args(synthetic, out, "--overwrite")) == 2
    _one_line(capsys.readouterr().err, "train.predict: error:", str(out), "a rerun goes on")
    after = {name: data for name, data in _files(out).items() if not name.startswith(".predict/")}  # its lock
    assert after == before  # every label file byte-identical, the replaced one too; no temporary file


@pytest.mark.parametrize("command, name", [("export_onnx", "model.onnx"), ("export_pointcept", "model_best.pth")])
def test_an_export_on_a_full_disk_ends_in_one_line_and_keeps_the_file_it_would_replace(
        synthetic: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture, command: str, name: str) -> None:
    import importlib

    main = importlib.import_module(f"train.{command}").main
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_bytes(OLD)
    checkpoint, target = str(synthetic["checkpoint"]), str(out / name)
    argv = ["--checkpoint", checkpoint, "--out", target] if command == "export_onnx" else [checkpoint, target]
    with full_disk(out):
        assert main([*argv, "--overwrite"]) == 2
    _one_line(capsys.readouterr().err, f"train.{command}: error:", str(out))
    assert _files(out) == {name: OLD}


def test_train_image_labels_on_a_full_disk_ends_in_one_line_and_keeps_the_file_it_would_replace(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from test_image_labels import SKY_MAP, _class_map_file, _run, _scene

    _scene(tmp_path, beams=8, azimuths=90)
    out = tmp_path / "out"
    out.mkdir()
    summary = b'{"splits": {}}'  # an earlier run's summary, of no split yet
    (out / "image_labels.json").write_bytes(summary)
    with full_disk_for(out, lambda path: not path.name.startswith("image_labels.json")):
        assert _run(tmp_path, monkeypatch, "--class-map", str(_class_map_file(tmp_path, SKY_MAP))) == 2
    _one_line(capsys.readouterr().err, "train.image_labels: error:", str(out), "labelled before it are kept")
    assert (out / "image_labels.json").read_bytes() == summary and not list(out.rglob("*.tmp"))


def test_train_topo_diagnostic_on_a_full_disk_ends_in_one_line_and_keeps_the_file_it_would_replace(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import torch

    from test_train_support import tiny_config, tiny_data
    from train.engine.loop import model_spec
    from train.runtime.checkpoint import save_checkpoint
    from train.study.topo_diagnostic import main

    cfg = tiny_config(tmp_path)
    data = tiny_data(cfg)
    paths = []
    for kind in ("teacher", "student"):
        spec = model_spec(cfg, kind, data.num_classes, torch.device("cpu"))
        path = tmp_path / f"{kind}.pt"
        save_checkpoint(path, spec.build(), None, None, None, 0, 0, cfg.to_dict(), {"model_spec": spec.__dict__})
        paths.append(str(path))
    out = tmp_path / "diagnostic"
    out.mkdir()
    earlier = b'{"summary": {}, "clouds": []}'  # an earlier diagnostic's numbers
    (out / "d.json").write_bytes(earlier)
    capsys.readouterr()
    with full_disk(out):
        assert main(["--teacher", paths[0], "--student", paths[1], "--scans", "1", "--json", str(out / "d.json"),
                     *_tiny_run_argv(tmp_path)[:-2], "--data-root", cfg.data_root]) == 2
    _one_line(capsys.readouterr().err, "train.topo_diagnostic: error:", str(out))
    assert _files(out) == {"d.json": earlier}


# ---------------------------------------------------------------- a file not the command's own: only with --overwrite


def _refused(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_train_export_pointcept_replaces_an_existing_file_only_with_overwrite_refused_before_reading(
        synthetic: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from train.export_pointcept import main

    out = tmp_path / "checkpoint_last.pt"  # a training checkpoint named as the output by mistake
    out.write_bytes(OLD)
    missing = tmp_path / "missing.pt"  # refused for the output before the checkpoint is read
    assert main([str(missing), str(out)]) == 2
    _refused(capsys.readouterr().err, f"{out} exists: pass --overwrite")
    assert out.read_bytes() == OLD
    assert main([str(synthetic["checkpoint"]), str(tmp_path)]) == 2
    _refused(capsys.readouterr().err, "is a folder")
    assert main([str(synthetic["checkpoint"]), str(out), "--overwrite"]) == 0
    assert out.read_bytes() != OLD and not list(tmp_path.glob("*.tmp"))


def test_train_export_onnx_refuses_an_out_that_is_a_folder_before_the_export(
        synthetic: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from train.export_onnx import main

    folder = tmp_path / "model.onnx"
    (folder / "kept").mkdir(parents=True)
    assert main(["--checkpoint", str(synthetic["checkpoint"]), "--out", str(folder), "--overwrite"]) == 2
    _refused(capsys.readouterr().err, f"--out {folder} is a folder")
    assert [p.name for p in folder.iterdir()] == ["kept"]


def test_train_topo_diagnostic_replaces_a_file_not_its_own_json_only_with_overwrite_refused_before_work(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from train.study.topo_diagnostic import main

    for name, old in (("model_final.pt", OLD), ("other.json", b'{"summary": {}}')):
        target = tmp_path / name
        target.write_bytes(old)
        argv = ["--teacher", str(target), "--student", str(target), "--json", str(target),
                *_tiny_run_argv(tmp_path)]
        assert main(argv) == 2
        _refused(capsys.readouterr().err, f"--json {target} exists and is not a JSON of train.topo_diagnostic",
                 "--overwrite")
        assert target.read_bytes() == old
    assert not (tmp_path / "data").exists()  # refused before the data set was generated
    assert main(["--teacher", str(target), "--student", str(target), "--overwrite", *_tiny_run_argv(tmp_path)]) == 2
    _refused(capsys.readouterr().err, "--overwrite replaces a --json file; without --json it has nothing to replace")
    assert main(["--teacher", str(target), "--student", str(target), *_tiny_run_argv(tmp_path)]) == 2
    _refused(capsys.readouterr().err, "train.topo_diagnostic: error:", "other.json is not a checkpoint")
    assert not (tmp_path / "data").exists()  # a file that is no checkpoint: refused before the data set is made


def test_train_image_labels_replaces_files_no_run_of_it_wrote_only_with_overwrite_refused_before_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from test_image_labels import SKY_MAP, _class_map_file, _run, _scene

    dataset, _ = _scene(tmp_path, beams=8, azimuths=90)
    name = dataset.scan_name(0)
    out = tmp_path / "out"
    scan = out / f"{name}.npy"  # a scan folder's own .npy beside it: --out is that folder by mistake
    scan.parent.mkdir(parents=True)
    scan.write_bytes(OLD)
    class_map = str(_class_map_file(tmp_path, SKY_MAP))
    assert _run(tmp_path, monkeypatch, "--class-map", class_map) == 2
    _refused(capsys.readouterr().err, f"--out {out} holds {scan}", "pass --overwrite")
    assert _files(out) == {f"{name}.npy": OLD}  # nothing written: refused before any scan was labelled
    (out / "image_labels.json").write_text("[]")  # not a summary of this command
    assert _run(tmp_path, monkeypatch, "--class-map", class_map, "--overwrite") == 2
    _refused(capsys.readouterr().err, "image_labels.json: not a summary of python -m train.image_labels")
    assert _files(out) == {f"{name}.npy": OLD, "image_labels.json": b"[]"}
    (out / "image_labels.json").unlink()
    assert _run(tmp_path, monkeypatch, "--class-map", class_map, "--overwrite") == 0
    assert scan.read_bytes() != OLD
    scan.write_bytes(OLD)  # now a file of a folder an earlier run labelled (its image_labels.json): its own
    assert _run(tmp_path, monkeypatch, "--class-map", class_map) == 0
    assert scan.read_bytes() != OLD


# ---------------------------------------------------------------- no silent no-ops


IDLE_OPTIONS: dict[str, tuple[str, list[str], str]] = {
    "image_labels --depth-block with --no-depth-test": (
        "train.image_labels", ["--dataset", "synthetic", "--depth-block", "4", "--no-depth-test"],
        "--depth-block sizes the depth test's blocks; with --no-depth-test it would change nothing"),
    "image_labels --nuscenes-version of another data set": (
        "train.image_labels", ["--dataset", "synthetic", "--nuscenes-version", "v1.0-mini"],
        "--nuscenes-version names a nuScenes release; with --dataset synthetic it would change nothing"),
    "predict --nuscenes-version with --input": (
        "train.predict", ["--input", "scans/", "--nuscenes-version", "v1.0-mini"],
        "--nuscenes-version names the release of a nuScenes --split; with --input it would change nothing"),
    "predict --nuscenes-version of another data set": (
        "train.predict", ["--split", "validation", "--dataset", "waymo", "--nuscenes-version", "v1.0-mini"],
        "with --dataset waymo it would change nothing"),
    "predict --preset of an .onnx model": (
        "train.predict", ["--input", "scans/", "--preset", "student", "--checkpoint", "model.onnx"],
        "--preset names the architecture of a Pointcept checkpoint; an .onnx model holds its own"),
    "predict --num-workers of an .onnx model": (
        "train.predict", ["--input", "scans/", "--num-workers", "2", "--checkpoint", "model.onnx"],
        "--num-workers sets torch's loader workers; an .onnx model reads the next batch in one thread instead"),
}


@pytest.mark.parametrize("case", list(IDLE_OPTIONS), ids=list(IDLE_OPTIONS))
def test_an_option_that_cannot_act_is_refused_in_one_line_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture, case: str) -> None:
    import train.image_labels
    import train.predict

    command, options, needle = IDLE_OPTIONS[case]
    missing = str(tmp_path / "none")  # nothing is read: every input named here is missing
    if command == "train.predict":
        argv = ["--checkpoint", missing + ".pt", "--out", str(tmp_path / "out"), *options]
        assert train.predict.main(argv) == 2
    else:
        argv = ["--data-root", missing, "--split", "training", "--predictions", missing, "--out",
                str(tmp_path / "out"), *options]
        assert train.image_labels.main(argv) == 2
    _refused(capsys.readouterr().err, needle)
    assert list(tmp_path.iterdir()) == []


MODEL_IDLE: dict[str, tuple[list[str], str]] = {
    "predict --nuscenes-version": (["--nuscenes-version", "v1.0-mini"],
                                   "labels synthetic scans, where it would change nothing"),
    "predict --preset": (["--preset", "student"], "is not one (its architecture is its own), so --preset would "
                         "change nothing"),
    "export_onnx --preset": (["--preset", "student"], "is not one (its architecture is its own), so --preset would "
                             "change nothing"),
}


@pytest.mark.parametrize("case", list(MODEL_IDLE), ids=list(MODEL_IDLE))
def test_an_option_a_model_of_train_run_cannot_use_is_refused_once_it_is_read_before_any_work(
        synthetic: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture, case: str) -> None:
    from test_predict import run as predict
    from test_predict import split_args
    from train.export_onnx import main as export

    options, needle = MODEL_IDLE[case]
    if case.startswith("predict"):
        assert predict(*split_args(synthetic, tmp_path / "out", *options)) == 2
    else:
        assert export(["--checkpoint", str(synthetic["checkpoint"]), "--out", str(tmp_path / "out" / "m.onnx"),
                       *options]) == 2
    _refused(capsys.readouterr().err, needle)
    assert not (tmp_path / "out").exists()


STUDY_IDLE: dict[str, tuple[list[str], str]] = {
    "--sinkhorn-eps-grid with --table 5": (["--sinkhorn-eps-grid", "0.1"],
                                           "--sinkhorn-eps-grid is read by --table 11 only, got it with --table 5"),
    "--lambda-topo-grid with --table 10": (["--table", "10", "--lambda-topo-grid", "8"],
                                           "--lambda-topo-grid is read by --table 7 only, got it with --table 10"),
    "--saliency-sets with --table 7": (["--table", "7", "--saliency-sets", "4"],
                                       "--saliency-sets is read by --table 10 only"),
    "--image-teacher-epochs with --table 5": (["--image-teacher-epochs", "3"],
                                              "--image-teacher-epochs is read by --table cameras only"),
    "--budget-tolerance without --converge": (["--budget-tolerance", "0.5"],
                                              "--budget-tolerance is read by --converge's budget searches only"),
    "--max-doublings without --converge": (["--max-doublings", "2"],
                                           "--max-doublings is read by --converge's budget searches only"),
}


@pytest.mark.parametrize("case", list(STUDY_IDLE), ids=list(STUDY_IDLE))
def test_a_study_option_of_another_table_or_of_converge_is_refused_before_any_work(tmp_path: Path, case: str) -> None:
    from train.study.ablation import parse

    options, needle = STUDY_IDLE[case]
    with pytest.raises(ValueError, match="would change nothing") as err:
        parse(["--out", str(tmp_path / "study"), "--data-root", str(tmp_path / "data"), *options])
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_a_study_whose_models_or_out_cannot_be_used_is_refused_before_any_work(tmp_path: Path) -> None:
    import yaml

    from train.study.ablation import parse

    overrides = tmp_path / "bad.yaml"
    overrides.write_text(yaml.safe_dump({"student_overrides": {"enc_depths": [1, 1]}}))
    argv = ["--out", str(tmp_path / "study"), "--data-root", str(tmp_path / "data"), "--device", "cpu"]
    with pytest.raises(ValueError, match="--student-preset .* need one entry per encoder stage"):
        parse([*argv, "--config", str(overrides)])  # found as train.run finds it, not once the teacher is trained
    (tmp_path / "file").write_bytes(OLD)
    with pytest.raises(FileNotFoundError, match="is a file: pass a folder"):
        parse([*argv[:1], str(tmp_path / "file"), *argv[2:]])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "file"]


def test_study_options_given_where_they_act_and_their_defaults_are_kept(tmp_path: Path) -> None:
    from train.study.ablation import PAPER_GRID, PAPER_SINKHORN_EPS, parse
    from train.study.budget import DEFAULT_MAX_DOUBLINGS

    args, rows, _ = parse(["--out", str(tmp_path / "s"), "--table", "11", "--sinkhorn-eps-grid", "0.1"])
    assert [r.key for r in rows if "sinkhorn" in r.key] == ["KD+topo sinkhorn eps=0.1"]
    assert args.max_doublings == DEFAULT_MAX_DOUBLINGS and args.saliency_sets == ["1 2 3 4", "3 4", "4"]
    args, rows, _ = parse(["--out", str(tmp_path / "s"), "--table", "7", "--converge", "--max-doublings", "1"])
    assert args.max_doublings == 1 and args.lambda_topo == list(PAPER_GRID["lambda_topo"])
    assert args.sinkhorn_eps_grid == list(PAPER_SINKHORN_EPS) and len(rows) == 2 + 27


# ---------------------------------------------------------------- stopped or killed while replacing a file


@pytest.fixture(scope="module")
def diagnostic_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny synthetic set and a teacher and student checkpoint for train.topo_diagnostic."""
    import torch

    from test_train_support import tiny_config, tiny_data
    from train.engine.loop import model_spec
    from train.runtime.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("diagnostic")
    cfg = tiny_config(root)
    data = tiny_data(cfg)
    paths = []
    for kind in ("teacher", "student"):
        spec = model_spec(cfg, kind, data.num_classes, torch.device("cpu"))
        path = root / f"{kind}.pt"
        save_checkpoint(path, spec.build(), None, None, None, 0, 0, cfg.to_dict(), {"model_spec": spec.__dict__})
        paths.append(str(path))
    return {"root": root, "data_root": cfg.data_root, "teacher": paths[0], "student": paths[1]}


@pytest.mark.parametrize("signum", [9, 15, 2], ids=["kill -9", "SIGTERM", "Ctrl-C"])
def test_a_command_killed_or_stopped_while_it_replaces_a_file_leaves_it_byte_identical(
        diagnostic_inputs: dict[str, Any], tmp_path: Path, signum: int) -> None:
    import signal
    import subprocess
    import sys

    d = diagnostic_inputs
    out = tmp_path / "diagnostic"
    out.mkdir()
    earlier = b'{"summary": {}, "clouds": []}'  # an earlier diagnostic's numbers
    (out / "d.json").write_bytes(earlier)
    root = Path(__file__).resolve().parents[1]
    argv = ["--teacher", d["teacher"], "--student", d["student"], "--scans", "1", "--json", str(out / "d.json"),
            *_tiny_run_argv(tmp_path)[:-2], "--data-root", d["data_root"]]
    env = {**os.environ, "STOP_AT": "d.json", "STOP_WITH": str(signum), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, str(root / "tests" / "stopped_write.py"), "train.study.topo_diagnostic",
                           *argv], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == -signum, done.stderr  # the signal's own action ended it, mid-write
    assert (out / "d.json").read_bytes() == earlier
    stray = [p.name for p in out.iterdir() if p.name != "d.json"]
    if signum == signal.SIGINT:  # KeyboardInterrupt: atomic_write removes its temporary file
        assert stray == []
    else:  # no Python code runs: at most the temporary file is left beside it
        assert len(stray) <= 1 and all(name.startswith("d.json.") and name.endswith(".tmp") for name in stray)
