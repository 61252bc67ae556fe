"""``train.predict`` on several processes (decision 77): shards by a fixed rule, one ``--out``,
outputs identical file by file to one process's, the whole-split files and one summary once every
shard has ended, scores summed as counts, a dead shard's work continued by a rerun of any count,
and a second run into a folder being labelled refused."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from test_data_loaders import random_points, write_nuscenes
from test_predict import kitti_root, run, split_args, synthetic, validation, write_model  # noqa: F401 (a fixture)
from train.data.labels import NUSCENES_CLASSES, SEMANTIC_KITTI_CLASSES
from train.data.lidar.nuscenes_index import official_splits
from train.data.lidar.scan_files import write_scan
from train.evaluation.evaluate import evaluate
from train.prediction.layouts import NpyLayout
from train.prediction.score import score_lines, score_scans
from train.prediction.shards import RUN_FOLDER, Shard, claim, process_shard
from train.runtime import lock_files

ROOT = Path(__file__).resolve().parents[1]


def outputs(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` by its relative path, with its bytes."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def score_of(capsys: pytest.CaptureFixture) -> list[str]:
    """The score lines printed since the last read."""
    return [line for line in capsys.readouterr().out.splitlines() if "score:" in line]


def test_every_scan_lies_in_exactly_one_shard_its_index_modulo_the_count() -> None:
    assert Shard(1, 3).indices(8) == (1, 4, 7)
    for count in (1, 2, 3, 5):
        assert sorted(i for k in range(count) for i in Shard(k, count).indices(7)) == list(range(7))
    assert process_shard(None, {"RANK": "1", "WORLD_SIZE": "4"}) == Shard(1, 4)  # torchrun's
    assert process_shard(" 2/3", {}) == Shard(2, 3)
    assert process_shard(None, {}) == Shard(0, 1)


@pytest.mark.parametrize("value", ["2/2", "1", "a/b", "0/0", "-1/2", "1/2/3", "1/ 2", ""])
def test_a_malformed_or_out_of_range_shard_is_refused_in_one_line(
        synthetic: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture, value: str) -> None:
    assert run(*split_args(synthetic, tmp_path / "out"), f"--shard={value}") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--shard" in err[0], err
    assert not (tmp_path / "out").exists()


def test_shard_under_torchrun_is_refused_in_one_line(synthetic: dict[str, Any], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert run(*split_args(synthetic, tmp_path / "out", "--shard", "0/2")) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "train.predict: error: --shard is for a process started alone; under torchrun the ranks share the scans"]


@pytest.fixture(scope="module")
def nuscenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Five scans of two nuScenes test scenes and a tiny model of nuScenes' classes."""
    root = tmp_path_factory.mktemp("nuscenes_shards")
    rng = np.random.default_rng(5)
    scenes = official_splits()["test"][:2]
    scans = [{"token": f"tok{i}", "scene": scenes[i % 2], "points": random_points(rng, 150, 5) * [0.3, 0.3, 0.05, 1, 1]}
             for i in range(5)]
    write_nuscenes(root / "nus", "v1.0-test", scans, labelled=False, more_scenes=official_splits()["test"])
    write_model(root / "nus.pt", len(NUSCENES_CLASSES), {"dataset": "nuscenes", "grid_size": 0.3})
    return {"args": ["--checkpoint", root / "nus.pt", "--data-root", root / "nus", "--split", "test",
                     "--nuscenes-version", "v1.0-test", "--format", "nuscenes"]}


def test_shards_run_in_turn_write_one_process_files_and_the_submission_once_the_last_has_ended(
        nuscenes: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    one, sharded = tmp_path / "one", tmp_path / "sharded"
    assert run(*nuscenes["args"], "--out", one) == 0
    capsys.readouterr()
    assert run(*nuscenes["args"], "--out", sharded, "--shard", "1/2") == 0
    out = capsys.readouterr().out
    assert "shard 1/2: labelled 2 scans" in out and "all 2 shards" not in out
    labels = sorted(p.name for p in (sharded / "lidarseg" / "test").iterdir())
    assert labels == ["tok1_lidarseg.bin", "tok3_lidarseg.bin"]  # the scans 1 and 3 of the split's order
    assert not (sharded / "test" / "submission.json").exists()  # not before every shard has ended
    assert run(*nuscenes["args"], "--out", sharded, "--shard", "0/2") == 0
    out = capsys.readouterr().out
    assert "shard 0/2: labelled 3 scans" in out
    assert f"all 2 shards: labelled 5 scans (0 already labelled, 0 unreadable skipped)" in out
    assert outputs(sharded) == outputs(one)  # byte by byte, submission.json included; the run folder is gone
    assert not (sharded / RUN_FOLDER).exists()


def test_the_score_of_two_shards_sums_their_counts_into_one_process_score_and_evaluates_exactly(
        synthetic: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    assert run(*split_args(synthetic, tmp_path / "one", "--score")) == 0
    single = score_of(capsys)
    for shard in ("0/2", "1/2"):
        assert run(*split_args(synthetic, tmp_path / "two", "--score", "--shard", shard)) == 0
    sharded = score_of(capsys)
    assert sharded == single and len(single) == 2  # printed once, by the shard that ended the run
    split = validation(synthetic)
    layout = NpyLayout(tmp_path / "two", save_probs=False, overwrite=False)
    parts = [score_scans(layout, split, Shard(k, 2).indices(len(split)), 22) for k in range(2)]
    data = synthetic["data"]
    expected = evaluate(synthetic["model"], data.val_views(False), 22, torch.device("cpu"), data.collate)
    np.testing.assert_array_equal(parts[0] + parts[1], expected.state().numpy())  # train.run's counts, exactly
    assert single == [f"train.predict: {line}" for line in score_lines(parts[0] + parts[1], split.class_names)]
    assert f"mIoU {100 * expected.miou():.2f} %" in single[0]


def test_the_score_reads_back_the_labels_of_every_layout(synthetic: dict[str, Any], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    """The same labels written as .npy, as PLY and as SemanticKITTI's raw ids score the same."""
    pytest.importorskip("plyfile")
    capsys.readouterr()
    assert run(*split_args(synthetic, tmp_path / "npy", "--score")) == 0
    npy = score_of(capsys)
    assert run(*split_args(synthetic, tmp_path / "ply", "--score", "--format", "ply")) == 0
    assert score_of(capsys) == npy and "mIoU" in npy[0]
    kitti_root(tmp_path / "kitti")
    write_model(tmp_path / "kitti.pt", len(SEMANTIC_KITTI_CLASSES), {"dataset": "semantic_kitti", "grid_size": 0.3})
    common = ["--checkpoint", tmp_path / "kitti.pt", "--data-root", tmp_path / "kitti", "--score"]
    assert run(*common, "--split", "val", "--out", tmp_path / "k_npy") == 0
    npy = score_of(capsys)
    assert run(*common, "--split", "val", "--out", tmp_path / "k_sub", "--format", "semantic_kitti") == 0
    assert score_of(capsys) == npy and "mIoU" in npy[0]
    # a split without labels, and files, have nothing to be scored against: one line, nothing labelled
    assert run(*common, "--split", "test", "--out", tmp_path / "k_test") == 2
    (err,) = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert err.startswith("train.predict: error: --score needs the labels of --split test: semantic_kitti file")
    assert not (tmp_path / "k_test").exists()
    assert run("--checkpoint", tmp_path / "kitti.pt", "--input", tmp_path / "kitti", "--score", "--out",
               tmp_path / "k_files") == 2
    assert "--score scores a labelled --split" in capsys.readouterr().err


def test_a_shard_of_no_scans_labels_nothing_and_succeeds(synthetic: dict[str, Any], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    assert run(*split_args(synthetic, tmp_path / "out", "--shard", "4/5")) == 0  # 3 scans: shards 3 and 4 empty
    assert "shard 4/5: labelled 0 scans (0 already labelled, 0 unreadable skipped)" in capsys.readouterr().out
    assert not list((tmp_path / "out").rglob("*.npy"))


class Killed(BaseException):
    """A process's death in the middle of its shard."""


@pytest.mark.parametrize("rerun", [["--shard", "0/2"], []], ids=["same-count", "one-process"])
def test_a_shard_that_dies_loses_only_its_unfinished_scan_and_a_rerun_of_any_count_labels_what_is_missing(
        synthetic: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
        rerun: list[str]) -> None:
    out = tmp_path / "out"
    assert run(*split_args(synthetic, tmp_path / "one")) == 0
    assert run(*split_args(synthetic, out, "--shard", "1/2")) == 0  # scan 1
    written, last = NpyLayout.write_labels, out / f"{validation(synthetic).scan_name(2)}.npy"

    def die_on_the_last(self: NpyLayout, path: Path, labels: np.ndarray, points: np.ndarray | None) -> None:
        if path == last:  # killed while writing: half its bytes in atomic_write's temporary file
            (path.parent / f"{path.name}.0123456789abcdef.tmp").write_bytes(b"\x93NUMPY half")
            raise Killed
        written(self, path, labels, points)

    monkeypatch.setattr(NpyLayout, "write_labels", die_on_the_last)
    with pytest.raises(Killed):
        run(*split_args(synthetic, out, "--shard", "0/2"))  # scan 0 written, killed on scan 2
    monkeypatch.undo()
    assert len(list(out.rglob("*.tmp"))) == 1
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")}
    assert len(before) == 2 and (out / RUN_FOLDER).is_dir()
    capsys.readouterr()
    assert run(*split_args(synthetic, out, *rerun)) == 0
    out_text = capsys.readouterr().out
    if rerun:
        assert "all 2 shards: labelled 2 scans (1 already labelled" in out_text  # shard 1/2's record joins
    else:
        assert "train.predict: labelled 1 scans (2 already labelled" in out_text
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing labelled twice
    assert outputs(out) == outputs(tmp_path / "one")  # the run folder gone, the files one process writes


def test_a_second_run_into_an_out_being_labelled_is_refused_in_one_line(
        synthetic: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    capsys.readouterr()
    with claim(out, Shard(0, 1)):  # a run labelling out
        assert run(*split_args(synthetic, out)) == 2
        (err,) = capsys.readouterr().err.strip().splitlines()
        assert f"shard 0/1 of --out {out} is being labelled by another process (pid {os.getpid()}" in err
    with claim(out, Shard(1, 2)):  # shard 1 of a run of 2
        assert run(*split_args(synthetic, out)) == 2
        (err,) = capsys.readouterr().err.strip().splitlines()
        assert "is being labelled by a run of 2 processes" in err and "this one has 1" in err
        assert not list(out.rglob("*.npy"))
        assert run(*split_args(synthetic, out, "--shard", "0/2")) == 0  # the other shard of that run goes on
        assert len(list(out.rglob("*.npy"))) == 2
    assert run(*split_args(synthetic, out)) == 0  # that run has died: one of another count labels what is left
    assert "labelled 1 scans (2 already labelled" in capsys.readouterr().out
    assert not (out / RUN_FOLDER).exists()


def test_a_shard_claims_the_run_folder_though_the_end_of_another_run_removes_it_in_between(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[Path] = []

    def removed_once(path: Path, mode: str) -> Any:
        opened.append(path)
        if len(opened) == 1:  # the ending run's rmdir came between the mkdir and the open
            shutil.rmtree(path.parent)
            raise FileNotFoundError(path)
        return open(path, mode)

    monkeypatch.setattr(lock_files, "open", removed_once, raising=False)  # the lock files' opener
    with claim(tmp_path / "out", Shard(0, 2)) as folder:
        assert (folder / "shard-0-of-2.lock").read_text().startswith(f"pid {os.getpid()} on ")
    assert len(opened) == 2


def test_a_process_that_cannot_write_out_says_so_in_one_line_whatever_its_rank(
        synthetic: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "out"
    capsys.readouterr()
    assert run(*split_args(synthetic, out)) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"train.predict: error: cannot write --out {out}: Not a directory"]
    monkeypatch.setenv("RANK", "1")  # under torchrun only rank 0 prints the refusals every rank shares
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert run(*split_args(synthetic, out)) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"train.predict: shard 1/2: error: cannot write --out {out}: Not a directory"]


def test_a_gpu_rank_without_a_gpu_of_its_own_says_so_in_one_line(
        synthetic: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine of one GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for name, value in (("RANK", "1"), ("LOCAL_RANK", "1"), ("WORLD_SIZE", "2")):  # torchrun's second rank
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    assert run(*split_args(synthetic, tmp_path / "out", "--device", "cuda")) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "train.predict: shard 1/2: error: local rank 1 has no GPU of its own (1 here): start at most that many "
        "processes a machine (torchrun --nproc_per_node), or give --device cpu"]


def test_torchrun_with_two_processes_writes_one_process_files_and_one_summary_naming_every_bad_scan(
        synthetic: dict[str, Any], tmp_path: Path) -> None:
    split = validation(synthetic)
    for i in range(len(split)):  # s0, s1, s2: the split's scans as files
        sample = split.load(i)
        write_scan(tmp_path / "in" / f"s{i}.bin", np.concatenate([sample["coord"], sample["strength"]], axis=1))
    for i in (3, 4):  # one unreadable scan in each shard: s3 in 1/2, s4 in 0/2
        (tmp_path / "in" / f"s{i}.bin").write_bytes(b"\x00" * 10)
    args = ["--checkpoint", synthetic["checkpoint"], "--input", tmp_path / "in", "--skip-bad-scans", "--device", "cpu"]
    assert run(*args, "--out", tmp_path / "one") == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "train.predict", *map(str, args), "--out", str(tmp_path / "two")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (summary,) = [line for line in done.stdout.splitlines() if "all 2 shards" in line]
    assert "labelled 3 scans (0 already labelled, 2 unreadable skipped) [unreadable: s4, s3]" in summary
    assert {line.split(":")[1] for line in done.stdout.splitlines() if "shard" in line} == {
        " shard 0/2", " shard 1/2", " all 2 shards"}
    assert outputs(tmp_path / "two") == outputs(tmp_path / "one")
    # progress (plain lines off a terminal): one machine's first rank alone, its shard of s0, s2, s4
    assert "predict 3/3" in done.stderr and "predict 2/2" not in done.stderr


def test_an_exported_onnx_model_labels_and_scores_in_shards_what_it_does_in_one_process(
        synthetic: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from train.export_onnx import main as export_main

    model = tmp_path / "model.onnx"
    assert export_main(["--checkpoint", str(synthetic["checkpoint"]), "--out", str(model)]) == 0
    args = ["--checkpoint", model, "--split", "validation", "--data-root", synthetic["cfg"].data_root, "--score"]
    capsys.readouterr()
    assert run(*args, "--out", tmp_path / "one") == 0
    single = score_of(capsys)
    for shard in ("1/2", "0/2"):
        assert run(*args, "--out", tmp_path / "two", "--shard", shard) == 0
    assert score_of(capsys) == single
    assert outputs(tmp_path / "two") == outputs(tmp_path / "one")
