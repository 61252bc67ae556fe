"""Distillation on unlabelled scans (``--unlabelled-split``, decision 57): in a step, L_seg skips the
unlabelled scans while L_kld and both saliency task losses read the teacher's most likely class
there; a run names how many unlabelled scans each stage read and its checkpoints record the split
and ratio; a killed run resumes bit for bit with the mixed list; bad input is one line."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import train.engine.loop
import train.engine.steps
from test_data_folder import SPEC, build_folder
from test_train_support import run_killed_after_checkpoint, tiny_config
from train.data.validation import DatasetLayoutError
from train.engine.loop import FINAL, LAST, load_frozen_teacher, stage_settings
from train.engine.profiling import StepTimer
from train.engine.steps import distillation_step, task_targets, to_device
from train.runner.datasets import prepare_splits
from train.runner.stages import run
from train.runtime.checkpoint import load_checkpoint
from train.runtime.checkpoint_errors import ResumeMismatchError
from train.runtime.distributed import DistInfo

CPU = DistInfo(0, 1, 0, torch.device("cpu"))
MIXED = dict(synthetic_unlabelled_scenes=4, unlabelled_split="unlabelled")


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny teacher trained on the tiny synthetic set that has 4 unlabelled scenes."""
    tmp = tmp_path_factory.mktemp("unlabelled")
    run(tiny_config(tmp, stage="teacher", synthetic_unlabelled_scenes=4), CPU)
    return tmp


def _kd(tmp: Path, teacher_run: Path, **values: Any) -> Any:
    return tiny_config(tmp, **{**dict(stage="kd", teacher_checkpoint=str(teacher_run / "out" / "teacher" / FINAL),
                                      data_root=str(teacher_run / "data"), **MIXED), **values})


def test_task_targets_put_the_teachers_class_on_the_unlabelled_scans_only() -> None:
    segment = torch.tensor([0, -1, 2, -1, -1, -1, 1])
    logits = torch.nn.functional.one_hot(torch.tensor([2, 2, 1, 0, 1, 2, 0]), 3).float()
    batch = {"segment": segment, "offset": torch.tensor([3, 6, 7]), "unlabelled": [False, True, False]}
    assert task_targets(batch, logits).tolist() == [0, -1, 2, 0, 1, 2, 1]
    assert task_targets({**batch, "unlabelled": [False] * 3}, logits) is segment


def test_a_step_skips_the_unlabelled_scan_in_l_seg_and_gives_l_kld_and_the_saliency_the_teachers_classes(
        teacher_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _kd(tmp_path, teacher_run, stage="distill", topo=False)
    data = prepare_splits(cfg, CPU)
    mixed = data.training_set(cfg, "distill")
    flags, _, _ = mixed.epoch_list(0)
    first_unlabelled = int(flags.nonzero()[0][0])
    batch = to_device(data.collate([mixed[0], mixed[first_unlabelled]]), torch.device("cpu"))
    assert batch["unlabelled"] == [False, True]
    end = int(batch["offset"][0])
    assert (batch["segment"][end:] == -1).all() and (batch["segment"][:end] >= -1).all()
    seen: dict[str, list[torch.Tensor]] = {"seg": [], "kld": []}
    real_seg, real_kld = train.engine.steps.segmentation_loss, train.engine.steps.kld

    def seg(logits: torch.Tensor, labels: torch.Tensor, **kw: Any) -> Any:
        seen["seg"].append(labels)
        return real_seg(logits, labels, **kw)

    def kld(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, **kw: Any) -> Any:
        seen["kld"].append(labels)
        return real_kld(student, teacher, labels, **kw)

    monkeypatch.setattr(train.engine.steps, "segmentation_loss", seg)
    monkeypatch.setattr(train.engine.steps, "kld", kld)
    teacher, spec = load_frozen_teacher(teacher_run / "out" / "teacher" / FINAL, torch.device("cpu"))
    student = train.engine.loop.ModelSpec("student", spec.num_classes, cfg.student_overrides).build()
    _, logs = distillation_step(student, teacher, batch, stage_settings(cfg, "distill", mixed), False, StepTimer())
    teacher_seg, student_seg, student_task = seen["seg"]  # teacher's saliency task, L_seg, student's saliency task
    assert torch.equal(student_seg, batch["segment"])
    with torch.no_grad():
        predicted = teacher(train.engine.steps.model_inputs(batch)).logits.argmax(1)
    expected = torch.cat([batch["segment"][:end], predicted[end:]])
    for labels in (teacher_seg, student_task, seen["kld"][0]):
        assert torch.equal(labels, expected)
    assert torch.isfinite(logs["grad"]) and torch.isfinite(logs["kld"])


def test_a_run_names_the_unlabelled_scans_each_stage_read_and_its_checkpoints_record_the_split(
        teacher_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = _kd(tmp_path, teacher_run, unlabelled_ratio=2.0, iters_per_epoch=None, epochs=2)
    (result,) = run(cfg, CPU).values()
    # 3 labelled training scans and 6 unlabelled entries an epoch, batch 2: 5 steps read the 9 entries (the last
    # batch holds one), 2 epochs: 12 reads of the 4 unlabelled scenes
    assert result["unlabelled_scans"] == {"split": "unlabelled", "ratio": 2.0, "read": 12, "distinct": 4,
                                          "in_split": 4}
    saved = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert list(saved.values())[0]["unlabelled_scans"]["read"] == 12
    line = "student seg+kld: trained on 12 unlabelled scans of split 'unlabelled' (ratio 2; 4 distinct of its 4)"
    assert line in (tmp_path / "out" / "results.md").read_text().splitlines()
    err = capsys.readouterr().err
    assert "kd: 6 scans of the unlabelled split 'unlabelled' mixed into each epoch with the 3 labelled ones" in err
    for name in (FINAL, LAST):
        extra = load_checkpoint(tmp_path / "out" / "kd" / name)["extra"]
        assert extra["unlabelled"] == {"split": "unlabelled", "ratio": 2.0, "scans": 4,
                                       "scans_sha256": extra["unlabelled"]["scans_sha256"]}
        assert len(extra["unlabelled"]["scans_sha256"]) == 64
    rows = (tmp_path / "out" / "kd" / "train_log.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 5




@pytest.mark.parametrize("kill_after_step", [2, 4])
def test_a_killed_run_with_the_mixed_list_resumes_to_the_uninterrupted_weights(
        teacher_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kill_after_step: int) -> None:
    model = {**cfg_model(), "drop_path": 0.3, "deterministic": False}
    common = dict(epochs=2, iters_per_epoch=None, checkpoint_every=1, student_overrides=model, stage="distill",
                  unlabelled_ratio=1.5)
    run(_kd(tmp_path, teacher_run, out=str(tmp_path / "whole"), **common), CPU)
    forget_the_lists()
    killed = _kd(tmp_path, teacher_run, out=str(tmp_path / "killed"), **common)
    run_killed_after_checkpoint(monkeypatch, kill_after_step, lambda: run(killed, CPU))
    forget_the_lists()  # a resume is a new process: nothing of the killed run's lists is left
    with pytest.raises(ResumeMismatchError, match=r"--unlabelled-ratio 1\.5 \(now 1\.0\)"):
        run(_kd(tmp_path, teacher_run, out=str(tmp_path / "killed"), resume=True,
                **{**common, "unlabelled_ratio": 1.0}), CPU)
    # a scene added to the unlabelled folder would change the list the run resumes (decision 68)
    unlabelled = teacher_run / "data" / "unlabelled"
    first = sorted(unlabelled.iterdir())[0]
    shutil.copytree(first, unlabelled / f"{first.name}-copy")
    try:
        with pytest.raises(ResumeMismatchError, match="written with 4 scans in the unlabelled split 'unlabelled' and "
                                                      "this run finds 5"):
            run(_kd(tmp_path, teacher_run, out=str(tmp_path / "killed"), resume=True, **common), CPU)
    finally:
        shutil.rmtree(unlabelled / f"{first.name}-copy")
    forget_the_lists()
    run(_kd(tmp_path, teacher_run, out=str(tmp_path / "killed"), resume=True, **common), CPU)
    whole = load_checkpoint(tmp_path / "whole" / "distill" / FINAL)["model"]
    resumed = load_checkpoint(tmp_path / "killed" / "distill" / FINAL)["model"]
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    log = "train_log.csv"
    assert (tmp_path / "whole" / "distill" / log).read_text() == (tmp_path / "killed" / "distill" / log).read_text()


def forget_the_lists() -> None:
    """Empty the caches of the epoch lists (:mod:`train.data.mixed`), as a new process starts."""
    import train.data.mixed

    train.data.mixed._epoch_list.cache_clear()
    train.data.mixed._cycle.cache_clear()


def cfg_model() -> dict[str, Any]:
    from test_train_support import TINY_MODEL

    return dict(TINY_MODEL)


@pytest.mark.parametrize("values,message", [
    (dict(stage="teacher"), "--stage teacher with these terms reads no teacher"),
    (dict(stage="student"), "--stage student with these terms reads no teacher"),
    (dict(stage="kd", kld=False), "--stage kd with these terms reads no teacher"),
    (dict(unlabelled_ratio=0), "--unlabelled-ratio must be a number > 0"),
    (dict(unlabelled_split="training"), "synthetic has no unlabelled split of that name; its unlabelled split is "
                                        "unlabelled"),
    (dict(unlabelled_split="validation"), "has no unlabelled split of that name"),
    (dict(synthetic_unlabelled_scenes=0), "names no scans of the synthetic set: generate them with "
                                          "--synthetic-unlabelled-scenes N"),
    (dict(synthetic_unlabelled_scenes=-1), "--synthetic-unlabelled-scenes must be an integer >= 0"),
])
def test_an_unlabelled_split_a_stage_cannot_use_or_that_names_no_scans_is_refused_in_one_line(
        tmp_path: Path, values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as err:
        tiny_config(tmp_path, **{**dict(stage="all", **MIXED), **values})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_command_line_refuses_a_student_stage_with_an_unlabelled_split_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from train.run import main

    rc = main(["--dataset", "synthetic", "--data-root", str(tmp_path / "d"), "--out", str(tmp_path / "o"),
               "--stage", "student", "--unlabelled-split", "unlabelled", "--synthetic-unlabelled-scenes", "3"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "reads no teacher" in err
    assert not (tmp_path / "d").exists() and not (tmp_path / "o").exists()


@pytest.mark.parametrize("unlabelled,split", [(["train/s1.ply", "test/*"], "training"), (["val/*"], "val"),
                                              (["test/*"], "test")])
def test_a_folder_unlabelled_split_that_shares_a_scan_with_a_labelled_split_is_refused(
        tmp_path: Path, unlabelled: list[str], split: str) -> None:
    build_folder(tmp_path / "f", {**SPEC, "splits": {**SPEC["splits"], "unlabelled": unlabelled}})
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(b"")
    cfg = tiny_config(tmp_path, dataset="folder", data_root=str(tmp_path / "f"), stage="kd",
                      teacher_checkpoint=str(teacher), unlabelled_split="unlabelled")
    with pytest.raises(DatasetLayoutError) as err:
        prepare_splits(cfg, CPU)
    # the folder's own rule (decision 54: a scan belongs to one split) names both splits first
    named = {"training": "train"}.get(split, split)
    both = f"(unlabelled|{named})"
    assert re.search(rf"lies in split '{both}' and in split '{both}' \(1 scan", str(err.value))
    assert "\n" not in str(err.value)


def test_an_unlabelled_frame_of_a_validation_frame_or_segment_is_refused_and_one_of_a_training_segment_is_not(
        tmp_path: Path) -> None:
    """Scan names carry their split's folder, so names alone never match: the frame (segment and
    timestamp) and its segment do. Waymo's unlabelled frames come from its training segments."""
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(b"")
    cfg = tiny_config(tmp_path, stage="kd", teacher_checkpoint=str(teacher), **MIXED)
    prepare_splits(cfg, CPU)
    root = Path(cfg.data_root)
    cases = [("validation", "same", "shares 1 frame(s) with the val split"),
             ("validation", "next", "holds frames of 1 recording(s) of the val split"),
             ("training", "same", "shares 1 frame(s) with the training split"),
             ("training", "next", None)]
    for split, when, refusal in cases:
        frame = sorted((root / split).glob("*/*"))[0]
        copy = root / "unlabelled" / frame.parent.name / (frame.name if when == "same" else str(int(frame.name) + 1))
        shutil.copytree(frame, copy)
        if refusal is None:
            data = prepare_splits(cfg, CPU)
            assert len(data.unlabelled) == 5
            assert data.training_set(cfg, "kd").read_per_epoch == 2 * 2  # --iters-per-epoch 2, batch 2
        else:
            with pytest.raises(ValueError, match=re.escape(refusal) + f".*first: {frame.parent.name}") as err:
                prepare_splits(cfg, CPU)
            assert "\n" not in str(err.value)
        shutil.rmtree(copy.parent)


def test_a_folder_unlabelled_split_that_matches_no_scan_is_refused_and_labels_in_it_are_said_once(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    build_folder(tmp_path / "f", {**SPEC, "splits": {**SPEC["splits"], "unlabelled": ["raw/*"]}})
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(b"")
    cfg = tiny_config(tmp_path, dataset="folder", data_root=str(tmp_path / "f"), stage="kd",
                      teacher_checkpoint=str(teacher), unlabelled_split="unlabelled")
    with pytest.raises(DatasetLayoutError, match="split 'unlabelled' .* matches no scan file"):
        prepare_splits(cfg, CPU)
    for name in ("r0", "r1"):
        src = tmp_path / "f" / "train" / "s1.ply"
        (tmp_path / "f" / "raw").mkdir(exist_ok=True)
        (tmp_path / "f" / "raw" / f"{name}.ply").write_bytes(src.read_bytes())
        (tmp_path / "f" / "raw" / f"{name}.label").write_bytes(src.with_suffix(".label").read_bytes())
    capsys.readouterr()
    data = prepare_splits(cfg, CPU)
    err = capsys.readouterr().err.splitlines()
    assert err == ["--unlabelled-split unlabelled: 2 of its 2 scans have a label file; they are not read (the split "
                   "is trained on without labels)"]
    assert all((data.unlabelled[i]["segment"] == -1).all() for i in range(2))


@pytest.mark.parametrize("size,unlabelled", [(3, 7), (5, 2)])
@pytest.mark.parametrize("old,new", [(2, 1), (1, 2), (2, 3), (2, 2)])
def test_a_mixed_epoch_resumed_on_another_number_of_processes_reads_exactly_the_rest_of_its_list(
        size: int, unlabelled: int, old: int, new: int) -> None:
    """The mixed list is the same whatever the number of processes; after p steps of batch B its
    first p*B entries were read, and the new processes read the rest, each entry once (decision 46)."""
    from test_data_unlabelled import _Scans
    from train.data.mixed import MixedSplit
    from train.runtime.distributed import ResumableDistributedSampler

    mixed = MixedSplit(_Scans("L", size), _Scans("U", unlabelled), "unlabelled", 1.5, seed=2)
    mixed.set_epoch(3)

    def shard(world: int, rank: int, start: int = 0, list_world: int | None = None) -> list[str]:
        sampler = ResumableDistributedSampler(mixed, world, rank, shuffle=False, seed=2)  # type: ignore[arg-type]
        sampler.set_epoch(3)
        sampler.set_start(start, list_world)
        return [mixed[i]["name"] for i in sampler]

    batch = old * new
    lists = [shard(old, r) for r in range(old)]
    padded = [lists[k % old][k // old] for k in range(old * len(lists[0]))]
    flags, index, _ = mixed.epoch_list(3)
    names = [("U" if f else "L") + str(i) for f, i in zip(flags, index)]
    assert padded[:len(names)] == names  # the list, dealt out
    for steps in range(-(-len(padded) // batch)):
        rest = padded[steps * batch:]
        shards = [shard(new, r, steps * batch // new, old) for r in range(new)]
        assert [shards[k % new][k // new] for k in range(len(rest))] == rest


def test_a_preempted_mixed_run_resumes_to_the_uninterrupted_weights_and_on_one_process_to_the_end(
        teacher_run: Path, tmp_path: Path) -> None:
    """``--procs 2``, the launcher signalled in step 4 (epoch 2 of 3, mid-epoch): exit status 75 with one
    checkpoint; ``--resume`` with 2 processes ends with the uninterrupted run's weights and log, and with
    1 process it deals out the rest of the mixed list and ends at the same step count."""
    import shutil

    from test_train_preemption import ENTRY, _finish, _start
    from train.runtime.preemption import PREEMPTED_EXIT

    model = {**cfg_model(), "drop_path": 0.3, "deterministic": False}

    def launch(name: str, *args: str, procs: int = 2, **env: str) -> tuple[int, str]:
        cfg = _kd(tmp_path, teacher_run, out=str(tmp_path / name), epochs=3, iters_per_epoch=None, procs=procs,
                  plots=False, student_overrides=model)
        path = tmp_path / f"{name}-{procs}.yaml"
        path.write_text(yaml.safe_dump(cfg.to_dict()))
        log = path.with_suffix(".log")
        return _finish([_start([str(ENTRY), "--config", str(path), *args], log, **env)], [log])[0]

    code, log = launch("whole")
    assert code == 0, log
    code, log = launch("stopped", SIGNAL_AT="4")
    assert code == PREEMPTED_EXIT, log
    assert int(load_checkpoint(tmp_path / "stopped" / "kd" / LAST)["step"]) == 4
    shutil.copytree(tmp_path / "stopped", tmp_path / "stopped_one")
    code, log = launch("stopped", "--resume")
    assert code == 0, log
    whole, resumed = (load_checkpoint(tmp_path / run_ / "kd" / FINAL)["model"] for run_ in ("whole", "stopped"))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert (tmp_path / "whole" / "kd" / "train_log.csv").read_text() == (
        tmp_path / "stopped" / "kd" / "train_log.csv").read_text()
    code, log = launch("stopped_one", "--resume", procs=1)
    assert code == 0 and "written by 2 process(es) and this run has 1" in log, log
    assert int(load_checkpoint(tmp_path / "stopped_one" / "kd" / FINAL)["step"]) == 9
