"""Distillation on several processes (decision 84): ``--procs 2`` runs of gm, dm and dd3d write one
process's condensed set (the classes split over the ranks, each class's gradients added in
float64, the ranks' sums all_reduced), a checkpoint written by two processes resumes in one and
one written by one process in two, and what cannot be split is refused in one line."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from train.condense.cli.command import main
from train.condense.files.data import DataSpec
from train.condense.files.distill_checkpoint import Checkpoint
from train.condense.methods.explicit import initial_clouds
from train.condense.matching.features import CACHE_NAME
from train.condense.matching.matching_loops import DistillSpec, own_classes
from train.condense.methods import condense_set
from train.condense.evaluation.training import TrainSpec
from train.condense.methods.trajectory import distill_trajectories
from train.runtime.distributed import DistInfo, cleanup
from train.runtime.leaving import leave
from tests.condensation_tiny import tiny_set
from tests.test_condense_ddp import _free_port, joined_rank

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "shapes", "--size", "2", "--points", "16", "--device", "cpu", "--cpc", "1", "--iterations", "2"]


def _two_processes(argv: list[str]) -> None:
    """``python -m train.condense ... --procs 2`` as people run it."""
    run = subprocess.run([sys.executable, "-m", "train.condense", *argv, "--procs", "2"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]


def _points(folder: Path) -> np.ndarray:
    with np.load(folder / "condensed.npz") as saved:
        return saved["points"]


@pytest.mark.parametrize("method", ["gm", "dm", "dd3d"])
def test_two_processes_write_one_processs_set(tmp_path: Path, method: str) -> None:
    argv = [*TINY, "--method", method]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    _two_processes([*argv, "--out", str(tmp_path / "two")])
    one, two = _points(tmp_path / "one"), _points(tmp_path / "two")
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6)
    if method != "dd3d":  # the clouds moved from where they started
        assert not np.array_equal(one, initial_clouds(DataSpec("shapes", size=2, points=16).load("train"), 1, 0,
                                                      "real")[0])
    if method == "dd3d":
        saved = [torch.load(tmp_path / n / "generator.pt", weights_only=True)["generator"] for n in ("one", "two")]
        for name, value in saved[0].items():
            torch.testing.assert_close(saved[1][name], value, rtol=1e-5, atol=1e-6)


class Interrupted(Exception):
    """A run stopped after its first iteration's checkpoint (as a preemption would)."""


def _save_then_stop(save: object) -> object:
    def patched(self: Checkpoint, iteration: int, *rest: object) -> None:
        save(dataclasses.replace(self, every=1), iteration, *rest)  # type: ignore[operator]
        raise Interrupted
    return patched


def _cut_rank(rank: int, port: int, out: str) -> None:
    """A rank of a two-process gm run stopped after the checkpoint of its first iteration."""
    Checkpoint.save_if_due = _save_then_stop(Checkpoint.save_if_due)  # type: ignore[method-assign]
    info = joined_rank(rank, 2, port)
    try:
        condense_set(DataSpec("shapes", size=2, points=16), "gm", 1, 0, TrainSpec(), Path(out) / CACHE_NAME, info,
                     distill=DistillSpec(iterations=2))
    except Interrupted:
        pass
    finally:
        cleanup()
    leave(0)  # as a rank of a run ends: gloo's threads outlive the group (decision 46)


def test_a_checkpoint_resumes_in_another_number_of_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    argv = [*TINY, "--method", "gm"]
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    with monkeypatch.context() as patch:  # one process stops after iteration 1; two go on
        patch.setattr(Checkpoint, "save_if_due", _save_then_stop(Checkpoint.save_if_due))
        with pytest.raises(Interrupted):
            main([*argv, "--out", str(tmp_path / "one_then_two")])
    _two_processes([*argv, "--resume", "--out", str(tmp_path / "one_then_two")])
    # two processes stop after iteration 1; one goes on
    mp.spawn(_cut_rank, args=(_free_port(), str(tmp_path / "two_then_one")), nprocs=2, join=True)
    assert not (tmp_path / "two_then_one" / "condensed.npz").exists()
    assert main([*argv, "--resume", "--out", str(tmp_path / "two_then_one")]) == 0
    whole = _points(tmp_path / "whole")
    for resumed in ("one_then_two", "two_then_one"):
        np.testing.assert_allclose(_points(tmp_path / resumed), whole, rtol=1e-5, atol=1e-6)


def test_what_cannot_be_split_over_processes_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="^14 processes share 13 classes: a rank matches whole classes, so run at "
                                         "most 13 processes$"):
        own_classes(list(range(13)), DistInfo(0, 14, 0, torch.device("cpu")))
    assert own_classes(list(range(5)), DistInfo(1, 2, 1, torch.device("cpu"))) == {1, 3}
    with pytest.raises(ValueError, match="^tm runs in one process: its loss is one student's path through every "
                                         "class"):
        distill_trajectories(tiny_set(), 1, 0, DistillSpec(iterations=1), DistInfo(0, 2, 0, torch.device("cpu")))
