"""A killed run resumed from its last checkpoint ends with exactly the parameters of an
uninterrupted run (deterministic CPU mode), and checkpoints are written atomically."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import train.engine.loop
from test_train_support import TINY_MODEL, run_killed_after_checkpoint, tiny_config
from train.runtime.checkpoint import atomic_save, load_checkpoint
from train.runtime.distributed import DistInfo
from train.engine.loop import FINAL
from train.runner.stages import run

CPU = DistInfo(0, 1, 0, torch.device("cpu"))




def _final_weights(out: Path, stage: str) -> dict[str, torch.Tensor]:
    return load_checkpoint(out / stage / FINAL)["model"]


# 4 training scans, batch 2: 2 iterations per epoch, 2 epochs. Killed after step 1 (mid-epoch, an
# every-K checkpoint) or after step 2 (the end-of-epoch checkpoint).
@pytest.mark.parametrize("kill_after_step", [1, 2])
def test_resumed_run_equals_uninterrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              kill_after_step: int) -> None:
    # drop path and a shuffled serialization order make the run depend on the restored RNG state
    model = {**TINY_MODEL, "drop_path": 0.3, "deterministic": False}
    common = dict(stage="student", epochs=2, iters_per_epoch=None, checkpoint_every=1, student_overrides=model,
                  data_root=str(tmp_path / "data"), eval_every_epochs=1)
    run(tiny_config(tmp_path, out=str(tmp_path / "whole"), **common), CPU)

    run_killed_after_checkpoint(monkeypatch, kill_after_step,
                                lambda: run(tiny_config(tmp_path, out=str(tmp_path / "killed"), **common), CPU))
    assert not (tmp_path / "killed" / "student" / FINAL).exists()
    assert load_checkpoint(tmp_path / "killed" / "student" / "checkpoint_last.pt")["step"] == kill_after_step
    run(tiny_config(tmp_path, out=str(tmp_path / "killed"), resume=True, **common), CPU)

    whole, resumed = _final_weights(tmp_path / "whole", "student"), _final_weights(tmp_path / "killed", "student")
    assert whole.keys() == resumed.keys()
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), f"{name} differs after resume"
    # the validation pass of epoch 1 (step 2) is logged once, before the kill or after the resume
    for log in ("train_log.csv", "val_log.csv"):
        assert (tmp_path / "whole" / "student" / log).read_text() == (tmp_path / "killed" / "student" / log).read_text()
    assert [line.split(",")[0] for line in (tmp_path / "whole" / "student" / "val_log.csv").read_text().split()] == [
        "step", "2", "4"]
    # and the run really trained: the weights moved from their initial values
    torch.manual_seed(0)
    init = train.engine.loop.ModelSpec("student", 22, model).build().state_dict()
    assert any(not torch.equal(init[n], whole[n]) for n in whole if whole[n].is_floating_point())


def test_atomic_save_keeps_the_previous_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "ckpt.pt"
    atomic_save({"model": {"w": torch.ones(2)}}, target)

    class Unpicklable:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save({"model": Unpicklable()}, target)
    assert torch.equal(load_checkpoint(target)["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind


def test_loading_a_missing_or_foreign_checkpoint_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_checkpoint(tmp_path / "nothing.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt is not a topodistill checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


class _RunsCodeOnLoad:
    """What a crafted checkpoint does: unpickling calls a function of the attacker's choice."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.write_text, (self.marker, "code ran"))


def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned.txt"
    torch.save({"model": {"w": torch.ones(2)}, "payload": _RunsCodeOnLoad(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="evil.pt holds objects other than tensors"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_a_full_training_checkpoint_round_trips_through_the_safe_loader(tmp_path: Path) -> None:
    import random

    import numpy as np

    from train.runtime.checkpoint import rng_state, save_checkpoint, set_rng_state

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched.step()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_checkpoint(tmp_path / "c.pt", model, opt, sched, torch.amp.GradScaler("cuda", enabled=False), 7, 1,
                    {"lr": 0.1}, {"stage": "teacher"})
    expected = (random.random(), np.random.random(), torch.rand(1))
    state = load_checkpoint(tmp_path / "c.pt")
    set_rng_state(state["ranks"][0]["rng"])
    assert (random.random(), np.random.random(), torch.rand(1)) == expected
    assert (state["step"], state["epoch"], state["config"], state["extra"]) == (7, 1, {"lr": 0.1}, {"stage": "teacher"})
    assert rng_state()["numpy"][0] == "MT19937"


def test_loader_workers_that_live_through_the_epochs_give_the_run_without_workers(tmp_path: Path) -> None:
    """Two persistent loader workers, which plan each batch (decision 47) and learn each epoch's
    augmentation stream from the items they are asked for, train exactly the run of the training
    process alone: same final weights, same log."""
    model = {**TINY_MODEL, "drop_path": 0.3, "deterministic": False}
    common = dict(stage="student", epochs=3, iters_per_epoch=None, student_overrides=model,
                  data_root=str(tmp_path / "data"))
    run(tiny_config(tmp_path, out=str(tmp_path / "alone"), num_workers=0, **common), CPU)
    run(tiny_config(tmp_path, out=str(tmp_path / "workers"), num_workers=2, **common), CPU)
    alone, workers = _final_weights(tmp_path / "alone", "student"), _final_weights(tmp_path / "workers", "student")
    for name in alone:
        assert torch.equal(alone[name], workers[name]), f"{name} differs with loader workers"
    assert (tmp_path / "alone" / "student" / "train_log.csv").read_text() == \
        (tmp_path / "workers" / "student" / "train_log.csv").read_text()
