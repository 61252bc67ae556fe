"""Mixed precision never crashes a run (decision 23): an overflow, in the task loss's backward pass or
in the student's scaled saliency gradients, skips the step and reduces the loss scale as GradScaler
does; the teacher's saliency gradients do not depend on the student's scale; a NaN loss is skipped
and counted, and ``--max-bad-steps`` of them in a row stop the run with its last checkpoint intact.

On CPU the scaler is ``torch.amp.GradScaler("cpu")`` (enabled): the same skip-and-backoff rule as on
CUDA, driven by float32 overflows; the float16 variants are marked ``cuda``.
"""
from __future__ import annotations

import copy
import csv
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import train.engine.loop
import train.engine.steps
from test_train_support import TINY_MODEL, tiny_config, tiny_data
from train.runtime.checkpoint import load_checkpoint
from train.runtime.distributed import DistInfo
from train.engine.loop import ModelSpec
from train.engine.profiling import StepTimer
from train.run import main
from train.runner.stages import run
from train.engine.steps import DistillSettings, distillation_step, to_device
from train.engine.update import NONFINITE, OK, OVERFLOW, SkipCounter, apply_update

CPU = DistInfo(0, 1, 0, torch.device("cpu"))


def _linear() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    return model, torch.optim.AdamW(model.parameters(), lr=0.1)


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def _update(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss: torch.Tensor,
            saliency_overflow: bool = False) -> str:
    optimizer.zero_grad(set_to_none=True)
    return apply_update(loss, saliency_overflow, model, optimizer, scaler, None, StepTimer())


def test_a_finite_step_updates_the_weights_and_keeps_the_scale() -> None:
    model, opt = _linear()
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    before = _weights(model)
    assert _update(model, opt, scaler, model(torch.ones(1, 3)).sum()) == OK
    assert scaler.get_scale() == 4.0
    assert not torch.equal(model.weight, before["weight"])


def test_a_saliency_overflow_skips_the_step_and_backs_the_scale_off_like_gradscaler() -> None:
    model, opt = _linear()
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0, growth_interval=1)
    # one good step first: with growth_interval 1 the scale grows, so a reset growth count shows too
    assert _update(model, opt, scaler, model(torch.ones(1, 3)).sum()) == OK
    assert scaler.get_scale() == 8.0
    before, adam_before = _weights(model), opt.state_dict()["state"][0]["step"].clone()
    assert _update(model, opt, scaler, model(torch.ones(1, 3)).sum(), saliency_overflow=True) == OVERFLOW
    _assert_same(before, _weights(model))
    assert scaler.get_scale() == 4.0  # backoff factor 0.5
    assert torch.equal(opt.state_dict()["state"][0]["step"], adam_before)  # no optimiser step at all


def test_a_task_loss_overflow_is_skipped_and_reported() -> None:
    model, opt = _linear()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)  # x the loss's gradients > float32's range
    before = _weights(model)
    assert _update(model, opt, scaler, 1e3 * model(torch.ones(1, 3)).sum()) == OVERFLOW
    _assert_same(before, _weights(model))
    assert scaler.get_scale() == 2.0**126


@pytest.mark.parametrize("amp", [True, False], ids=["scaler", "no-scaler"])
def test_a_nan_loss_is_skipped_without_backward_and_leaves_the_scale(amp: bool) -> None:
    model, opt = _linear()
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0, enabled=amp)
    before = _weights(model)
    loss = model(torch.full((1, 3), float("nan"))).sum()
    assert _update(model, opt, scaler, loss) == NONFINITE
    _assert_same(before, _weights(model))
    assert all(p.grad is None for p in model.parameters())
    assert scaler.get_scale() == (4.0 if amp else 1.0)


def test_without_a_scaler_an_infinite_gradient_of_a_finite_loss_is_a_bad_step() -> None:
    model, opt = _linear()
    with torch.no_grad():
        model.weight.zero_()
    before = _weights(model)
    loss = model.weight.abs().sqrt().sum()  # finite (0), infinite slope at 0
    assert _update(model, opt, torch.amp.GradScaler("cpu", enabled=False), loss) == NONFINITE
    _assert_same(before, _weights(model))


def test_skip_counter_stops_after_consecutive_bad_steps_only() -> None:
    skips = SkipCounter(max_bad_steps=3)
    for outcome in (NONFINITE, NONFINITE, OVERFLOW, OK, NONFINITE, OVERFLOW, NONFINITE):
        skips.record(outcome)
        skips.stop_if_exhausted("distill", 1, {})
    assert (skips.overflow, skips.nonfinite, skips.streak) == (2, 4, 2)
    assert skips.postfix() == {"overflow": 2, "bad": 4}
    skips.record(NONFINITE)
    with pytest.raises(FloatingPointError, match="3 consecutive steps .*--max-bad-steps"):
        skips.stop_if_exhausted("distill", 9, {"loss": math.nan})


# ---- the distillation step ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """A frozen random teacher, a student and one batch of two tiny synthetic scans."""
    cfg = tiny_config(tmp_path_factory.mktemp("amp"))
    data = tiny_data(cfg)
    batch = to_device(data.collate([data.train[0], data.train[1]]), torch.device("cpu"))
    torch.manual_seed(0)
    teacher = ModelSpec("teacher", 22, dict(TINY_MODEL)).build().eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = ModelSpec("student", 22, dict(TINY_MODEL)).build().train()
    return teacher, student, batch


SALIENCY = DistillSettings(grad=True, kld=True, saliency_layers=(1, 2))


def _step(pair: tuple[nn.Module, nn.Module, dict[str, Any]], grad_scale: float,
          batch: dict[str, Any] | None = None, amp: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    teacher, student, default = pair
    torch.manual_seed(0)  # the same serialization orders and drop-out draws in every call
    return distillation_step(student, teacher, batch or default, SALIENCY, amp=amp, timer=StepTimer(),
                             grad_scale=grad_scale)


@pytest.mark.parametrize("amp", [False, True], ids=["float32", "autocast"])
def test_teacher_saliency_gradients_do_not_depend_on_the_student_scale(
    tiny_pair: tuple[nn.Module, nn.Module, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, amp: bool
) -> None:
    # amp=True on CPU: autocast in bfloat16 for both models, the teacher through teacher_autocast
    seen: list[list[torch.Tensor]] = []
    real = train.engine.steps.saliency_loss

    def record(*args: Any, **kwargs: Any) -> torch.Tensor:
        seen.append([g.clone() for g in args[5]])  # the teacher's gradients
        return real(*args, **kwargs)

    monkeypatch.setattr(train.engine.steps, "saliency_loss", record)
    for scale in (1.0, 2.0**20):
        total, logs = _step(tiny_pair, scale, amp=amp)
        assert torch.isfinite(total) and float(logs["saliency_overflow"]) == 0.0
    assert len(seen) == 2 and all(torch.equal(a, b) for a, b in zip(*seen))


def test_an_overflow_of_the_scaled_saliency_gradients_leaves_the_term_out_and_flags_it(
    tiny_pair: tuple[nn.Module, nn.Module, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # float32 on CPU does not overflow at a realistic scale: the scaled pass is made to return an
    # infinite gradient, as float16 does past 65504
    real = train.engine.steps.saliency_gradients

    def overflowing(loss: torch.Tensor, feats: Any, retain_graph: bool, grad_scale: float = 1.0) -> Any:
        grads = real(loss, feats, retain_graph, grad_scale)
        if retain_graph:  # the student's pass (the teacher's frees its graph)
            grads[-1].view(-1)[0] = float("inf")
        return grads

    monkeypatch.setattr(train.engine.steps, "saliency_gradients", overflowing)
    total, logs = _step(tiny_pair, 2.0**16)
    assert float(logs["saliency_overflow"]) == 1.0 and math.isnan(float(logs["grad"]))
    assert torch.isfinite(total)
    assert float(total.detach()) == pytest.approx(float(logs["seg"] + logs["kld"]))
    _, unscaled = _step(tiny_pair, 1.0)  # the same infinity at no scale: a bad step, not an overflow
    assert float(unscaled["saliency_overflow"]) == 0.0 and math.isnan(float(unscaled["loss"]))
    monkeypatch.setattr(train.engine.steps, "saliency_gradients", real)
    _, fine = _step(tiny_pair, 2.0**16)
    assert float(fine["saliency_overflow"]) == 0.0 and math.isfinite(float(fine["grad"]))


def test_nan_features_give_a_nan_loss_not_an_overflow_nor_an_exception(
    tiny_pair: tuple[nn.Module, nn.Module, dict[str, Any]]
) -> None:
    # every term on: the kernels refuse NaN input, so the step must not reach them
    teacher, student, batch = tiny_pair
    batch = {**batch, "feat": batch["feat"].clone()}
    batch["feat"][0] = float("nan")
    full = DistillSettings(grad=True, kld=True, topo=True, topo_m=32, topo_time_budget=None, saliency_layers=(1, 2))
    total, logs = distillation_step(student, teacher, batch, full, amp=False, timer=StepTimer(), grad_scale=2.0**16,
                                    term_grad_norms=True)
    assert not torch.isfinite(total) and float(logs["saliency_overflow"]) == 0.0
    # the same log columns as a good step, so the CSV keeps its header
    _, good = distillation_step(student, teacher, tiny_pair[2], full, amp=False, timer=StepTimer(),
                                term_grad_norms=True)
    assert logs.keys() == good.keys()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_float16_saliency_overflow_on_cuda_is_skipped_and_backs_the_scale_off(
    tiny_pair: tuple[nn.Module, nn.Module, dict[str, Any]]
) -> None:
    cuda = torch.device("cuda")
    teacher, student = (copy.deepcopy(m).to(cuda) for m in tiny_pair[:2])
    batch = to_device(tiny_pair[2], cuda)
    optimizer = torch.optim.AdamW(student.parameters(), lr=0.01)
    # 2**40 x a logit gradient of ~1/N is far beyond float16's 65504 once cast back into the network
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**40)
    before = _weights(student)
    total, logs = distillation_step(student, teacher, batch, SALIENCY, amp=True, timer=StepTimer(),
                                    grad_scale=scaler.get_scale())
    assert float(logs["saliency_overflow"]) == 1.0 and torch.isfinite(total)
    outcome = apply_update(total, True, student, optimizer, scaler, None, StepTimer())
    assert outcome == OVERFLOW and scaler.get_scale() == 2.0**39
    assert [k for k, v in student.named_parameters() if not torch.equal(v, before[k])] == []


# ---- the training loop ---------------------------------------------------------------------------------------


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_consecutive_nan_steps_stop_the_run_with_a_message_and_keep_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    # step 1 is good and checkpointed (every step), steps 2 and 3 see NaN features: stop after 2
    calls: list[dict[str, torch.Tensor]] = []
    real = train.engine.loop.segmentation_step

    def nan_features_from_step_2(model: nn.Module, batch: dict[str, Any], *args: Any) -> Any:
        calls.append(_weights(model))
        if len(calls) >= 2:
            batch = {**batch, "feat": torch.full_like(batch["feat"], float("nan"))}
        return real(model, batch, *args)

    monkeypatch.setattr(train.engine.loop, "segmentation_step", nan_features_from_step_2)
    cfg = tiny_config(tmp_path, stage="student", epochs=3, iters_per_epoch=2, checkpoint_every=1, max_bad_steps=2)
    with pytest.raises(FloatingPointError, match="stage student: 2 consecutive steps .* at step 3"):
        run(cfg, CPU)
    assert len(calls) == 3
    _assert_same(calls[1], calls[2])  # the bad step changed no weight
    last = load_checkpoint(tmp_path / "out" / "student" / "checkpoint_last.pt")
    assert last["step"] == 1
    _assert_same(calls[1], dict(last["model"]))
    rows = _rows(tmp_path / "out" / "student" / "train_log.csv")
    assert [r["skipped_nonfinite"] for r in rows] == ["0.0", "1.0", "1.0"] and rows[2]["loss"] == "nan"

    # the command line: --resume continues from step 1 (step 2 good again), then stops with the message
    calls.clear()
    rc = main(["--dataset", "synthetic", "--config", str(_yaml(tmp_path, cfg)), "--resume"])
    err = capsys.readouterr().err
    assert rc == 2 and "train.run: error: stage student: 2 consecutive steps (the last at step 4)" in err


def _yaml(tmp_path: Path, cfg: Any) -> Path:
    from train.options.resolve import save_config

    save_config(cfg, tmp_path / "cfg.yaml")
    return tmp_path / "cfg.yaml"


def test_a_saliency_overflow_in_the_loop_is_skipped_logged_and_backs_the_scale_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, torch.Tensor]] = []
    real = train.engine.loop.segmentation_step

    def overflow_at_step_2(model: nn.Module, batch: dict[str, Any], *args: Any) -> Any:
        # parameters only: an overflow step's (finite) forward pass updates BatchNorm statistics, as under GradScaler
        calls.append({k: p.detach().clone() for k, p in model.named_parameters()})
        loss, logs = real(model, batch, *args)
        return loss, {**logs, "saliency_overflow": torch.tensor(float(len(calls) == 2))}

    monkeypatch.setattr(train.engine.loop, "segmentation_step", overflow_at_step_2)
    monkeypatch.setattr(train.engine.loop, "make_scaler",
                        lambda device, amp: torch.amp.GradScaler("cpu", init_scale=4.0))
    cfg = tiny_config(tmp_path, stage="student", epochs=2, iters_per_epoch=2)
    run(cfg, CPU)
    rows = _rows(tmp_path / "out" / "student" / "train_log.csv")
    assert [r["skipped_overflow"] for r in rows] == ["0.0", "1.0", "0.0", "0.0"]
    assert all(r["skipped_nonfinite"] == "0.0" for r in rows)
    _assert_same(calls[1], calls[2])  # the overflow step changed nothing
    assert not torch.equal(calls[0]["head.weight"], calls[1]["head.weight"])  # the good one did
    assert float(load_checkpoint(tmp_path / "out" / "student" / "checkpoint_last.pt")["scaler"]["scale"]) == 2.0


def _nan_on_rank_1_at_step_2(model: nn.Module, batch: dict[str, Any], *args: Any) -> Any:
    global _CALLS
    _CALLS += 1
    if _CALLS == 2 and torch.distributed.get_rank() == 1:
        batch = {**batch, "feat": torch.full_like(batch["feat"], float("nan"))}
    return _REAL_SEGMENTATION_STEP(model, batch, *args)


_CALLS = 0
_REAL_SEGMENTATION_STEP = train.engine.loop.segmentation_step


def _ddp_rank(rank: int, port: int, cfg: Any, out: str) -> None:
    import os

    from train.runner.datasets import prepare_splits
    from train.runtime.distributed import cleanup, init_from_env
    from train.runtime.leaving import leave

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    train.engine.loop.segmentation_step = _nan_on_rank_1_at_step_2
    info = init_from_env("cpu")
    try:
        # the ranks' own DistInfo: rank 0 writes the synthetic set while rank 1 waits at the barrier
        # (two ranks each acting as rank 0 of one both wrote it at once and, now and then, one
        # refused the folder the other had half made)
        data = prepare_splits(cfg, info)
        spec = ModelSpec("student", 22, dict(cfg.student_overrides))
        model = train.engine.loop.train_stage(cfg, "student", Path(out), data.train, data.collate, spec, info)
        torch.save(model.state_dict(), Path(out) / f"rank{rank}.pt")
    finally:
        cleanup()
    leave(0)  # as a rank of a run ends: gloo's threads outlive the group (decision 46)


def test_a_nan_loss_on_one_ddp_rank_skips_the_step_on_both(tmp_path: Path) -> None:
    # two gloo ranks, one scan each; rank 1 alone sees NaN features at step 2: both ranks must skip
    # it (a rank that skipped its backward pass alone would hang the other in the all-reduce)
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    cfg = tiny_config(tmp_path, stage="student", epochs=1, iters_per_epoch=None, batch_size=2, synthetic_scenes=8,
                      synthetic_val_fraction=0.25, synthetic_test_fraction=0.0)
    mp.spawn(_ddp_rank, args=(port, cfg, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert [k for k in r0 if not torch.equal(r0[k], r1[k])] == []
    rows = _rows(tmp_path / "train_log.csv")
    assert [r["skipped_nonfinite"] for r in rows] == ["0.0", "1.0", "0.0"]
    assert math.isfinite(float(rows[1]["loss"]))  # rank 0's own loss was finite: the decision is global
