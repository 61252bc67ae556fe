"""Each training stage runs end to end on a tiny synthetic set, every distillation term's gradient
reaches the student and never the teacher, and bad runs fail before any work."""
from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import pytest
import torch

import fast.persistence
from pathological import stalls_on_some_clouds
from test_train_support import tiny_config, tiny_data
from train.engine.loop import FINAL, ModelSpec, distill_settings, load_frozen_teacher, stage_settings
from train.engine.profiling import StepTimer
from train.run import main
from train.runner.stages import run
from train.runtime.distributed import DistInfo
from train.engine.steps import distillation_step, to_device

CPU = DistInfo(0, 1, 0, torch.device("cpu"))


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("teacher")
    run(tiny_config(tmp, stage="teacher"), CPU)
    return tmp


def _log_rows(stage_dir: Path) -> list[dict[str, str]]:
    with (stage_dir / "train_log.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_teacher_stage_trains_two_iterations_and_writes_weights_logs_and_report(teacher_run: Path) -> None:
    stage_dir = teacher_run / "out" / "teacher"
    rows = _log_rows(stage_dir)
    assert [r["step"] for r in rows] == ["1", "2"]
    assert {"ce", "lovasz", "seg", "loss", "lr"} <= set(rows[0])
    assert "kld" not in rows[0] and "topo" not in rows[0]
    assert (stage_dir / FINAL).is_file() and (stage_dir / "checkpoint_last.pt").is_file()
    report = json.loads((stage_dir / "eval.json").read_text())
    (result,) = report["results"].values()
    assert 0.0 <= result["miou"] <= 1.0 and result["parameters"] > 0
    assert (teacher_run / "out" / "config.yaml").is_file()


@pytest.mark.parametrize(
    "stage, terms",
    [("student", set()), ("kd", {"kld"}), ("distill", {"kld", "topo", "grad"})],
)
def test_student_stages_train_two_iterations_with_their_loss_terms(
    teacher_run: Path, tmp_path: Path, stage: str, terms: set[str]
) -> None:
    cfg = tiny_config(tmp_path, stage=stage, teacher_checkpoint=str(teacher_run / "out" / "teacher" / FINAL),
                      data_root=str(teacher_run / "data"))
    (result,) = run(cfg, CPU).values()
    rows = _log_rows(tmp_path / "out" / stage)
    assert len(rows) == 2
    logged = {t for t in ("kld", "topo", "grad") if t in rows[0]}
    assert logged == terms
    for row in rows:
        total = float(row["seg"]) + sum(float(row[t]) * getattr(cfg, f"lambda_{t}") for t in terms)
        assert float(row["loss"]) == pytest.approx(total, rel=1e-5)
    assert (tmp_path / "out" / stage / FINAL).is_file()
    assert 0.0 <= result["miou"] <= 1.0


def test_distillation_under_a_time_budget_drops_only_the_late_clouds_and_counts_them_per_model(
    teacher_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Decision 6c with the budget active: the engine stalls on about half of the clouds; those
    # (and only those) lose H1 after their own budget, the run goes on, and the log counts the
    # misses of each model per step.
    monkeypatch.setitem(fast.persistence.ENGINES, fast.persistence.DEFAULT_ENGINE, stalls_on_some_clouds)
    cfg = tiny_config(tmp_path, stage="distill", teacher_checkpoint=str(teacher_run / "out" / "teacher" / FINAL),
                      data_root=str(teacher_run / "data"), topo_time_budget=1.0)
    with caplog.at_level(logging.WARNING, logger="fast.persistence"):
        run(cfg, CPU)
    rows = _log_rows(tmp_path / "out" / "distill")
    misses = [(float(r["topo_h1_over_budget_teacher"]), float(r["topo_h1_over_budget_student"])) for r in rows]
    clouds = cfg.batch_size
    assert all(0 <= t <= clouds and 0 <= s <= clouds for t, s in misses)
    total = sum(t + s for t, s in misses)
    assert 0 < total < 2 * clouds * len(rows)  # some clouds missed, not all: the budget is per cloud
    assert all(math.isfinite(float(r["topo"])) for r in rows)
    logged = [r.getMessage() for r in caplog.records if "missed its time budget" in r.getMessage()]
    assert len(logged) == total
    assert {m.split(" cloud")[0].removeprefix("H1 of ") for m in logged} <= {"teacher", "student"}


def _student_grads(cfg, teacher, batch, term: str | None) -> dict[str, torch.Tensor]:
    """Student parameter gradients of one distillation step with only ``term`` switched on
    (None: L_seg alone), from the same initial student and the same batch."""
    on = {"kld": False, "topo": False, "grad": False}
    if term:
        on[term] = True
    settings = distill_settings(cfg.__class__(**{**cfg.to_dict(), **on}), "distill")
    torch.manual_seed(0)
    student = ModelSpec("student", 22, dict(cfg.student_overrides)).build()
    student.train()
    torch.manual_seed(1)
    if not settings.uses_teacher:  # L_seg alone: the distillation step needs an active term
        settings.kld, settings.lambda_kld = True, 0.0
    total, _ = distillation_step(student, teacher, batch, settings, amp=False, timer=StepTimer())
    total.backward()
    return {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in student.named_parameters()}


def test_every_distillation_term_sends_gradient_to_the_student_and_none_to_the_teacher(teacher_run: Path) -> None:
    cfg = tiny_config(teacher_run, stage="distill", teacher_checkpoint=str(teacher_run / "out" / "teacher" / FINAL))
    data = tiny_data(cfg)
    batch = to_device(data.collate([data.train[0], data.train[1]]), torch.device("cpu"))
    teacher, _ = load_frozen_teacher(cfg.teacher_checkpoint, torch.device("cpu"))
    # Unfreeze the teacher: any path from a loss term into its parameters would now leave a gradient.
    for p in teacher.parameters():
        p.requires_grad_(True)
    base = _student_grads(cfg, teacher, batch, None)
    for term in ("kld", "topo", "grad"):
        grads = _student_grads(cfg, teacher, batch, term)
        diff = sum(float((grads[n] - base[n]).abs().sum()) for n in grads)
        assert diff > 0, f"L_{term} changed no student gradient"
        assert all(torch.isfinite(g).all() for g in grads.values())
        assert all(p.grad is None for p in teacher.parameters()), f"L_{term} reached the teacher's parameters"


def test_missing_teacher_checkpoint_fails_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(["--dataset", "synthetic", "--stage", "kd", "--teacher-checkpoint", str(tmp_path / "t.pt"),
               "--out", str(tmp_path / "out"), "--data-root", str(tmp_path / "data")])
    assert rc == 2
    assert "t.pt does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "data").exists()


def test_real_dataset_without_data_says_where_it_looked_the_layout_and_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rc = main(["--dataset", "waymo", "--data-root", str(tmp_path / "waymo"), "--out", str(tmp_path / "out"),
               "--stage", "teacher", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert str(tmp_path / "waymo") in err and "--data-root" in err and "coord.npy" in err
    assert not (tmp_path / "out").exists()  # nothing was written, no model was built


def test_frozen_teacher_saliency_gradients_are_its_own_loss_gradients_on_decoder_activations(
    teacher_run: Path,
) -> None:
    from train.engine.losses import segmentation_loss
    from train.engine.steps import DistillSettings, _teacher_pass, model_inputs

    cfg = tiny_config(teacher_run)
    data = tiny_data(cfg)
    batch = to_device(data.collate([data.train[0], data.train[1]]), torch.device("cpu"))
    teacher, _ = load_frozen_teacher(teacher_run / "out" / "teacher" / FINAL, torch.device("cpu"))
    teacher.deterministic = True
    settings = DistillSettings(grad=True, saliency_layers=(1, 2))
    grads = _teacher_pass(teacher, batch, settings, amp=False, timer=StepTimer(), topo_seed=0).grads
    # reference: an unfrozen copy, ordinary backward with retained activation gradients
    ref = ModelSpec(**torch.load(teacher_run / "out" / "teacher" / FINAL, weights_only=False)["extra"]["model_spec"]
                    ).build()
    ref.load_state_dict(teacher.state_dict())
    ref.eval()
    ref.deterministic = True
    out = ref(model_inputs(batch))
    for f in out.decoder_feats:
        f.retain_grad()
    segmentation_loss(out.logits, batch["segment"])[0].backward()
    assert len(grads) == 2
    for g, f in zip(grads, out.decoder_feats):
        assert float(g.abs().sum()) > 0 and not g.requires_grad
        torch.testing.assert_close(g, f.grad, rtol=1e-4, atol=1e-7)
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize("distance", ["sinkhorn", "persistence-image"])
def test_each_topo_distance_trains_the_student_and_logs_its_gradient_entropy(teacher_run: Path, distance: str) -> None:
    """--topo-distance reaches the step: L_topo changes the student's gradient, never the teacher's,
    and the step logs topo_grad_entropy in [0, 1] (decision 33)."""
    cfg = tiny_config(teacher_run, stage="distill", teacher_checkpoint=str(teacher_run / "out" / "teacher" / FINAL),
                      topo_distance=distance)
    data = tiny_data(cfg)
    batch = to_device(data.collate([data.train[0], data.train[1]]), torch.device("cpu"))
    teacher, _ = load_frozen_teacher(cfg.teacher_checkpoint, torch.device("cpu"))
    base, with_topo = _student_grads(cfg, teacher, batch, None), _student_grads(cfg, teacher, batch, "topo")
    assert sum(float((with_topo[n] - base[n]).abs().sum()) for n in base) > 0
    assert all(torch.isfinite(g).all() for g in with_topo.values())
    settings = distill_settings(cfg.__class__(**{**cfg.to_dict(), "kld": False, "grad": False}), "distill")
    assert settings.topo_distance == distance
    student = ModelSpec("student", 22, dict(cfg.student_overrides)).build().train()
    _, logs = distillation_step(student, teacher, batch, settings, amp=False, timer=StepTimer())
    assert 0.0 < float(logs["topo_grad_entropy"]) <= 1.0 and float(logs["topo"]) > 0.0


def test_logged_term_gradient_norms_equal_the_norms_of_each_terms_own_gradient(teacher_run: Path) -> None:
    cfg = tiny_config(teacher_run, stage="distill", teacher_checkpoint=str(teacher_run / "out" / "teacher" / FINAL))
    data = tiny_data(cfg)
    batch = to_device(data.collate([data.train[0], data.train[1]]), torch.device("cpu"))
    teacher, _ = load_frozen_teacher(cfg.teacher_checkpoint, torch.device("cpu"))
    base = _student_grads(cfg, teacher, batch, None)
    with_kld = _student_grads(cfg, teacher, batch, "kld")
    settings = distill_settings(cfg.__class__(**{**cfg.to_dict(), "topo": False, "grad": False}), "distill")
    torch.manual_seed(0)
    student = ModelSpec("student", 22, dict(cfg.student_overrides)).build()
    student.train()
    torch.manual_seed(1)
    _, logs = distillation_step(student, teacher, batch, settings, amp=False, timer=StepTimer(),
                                term_grad_norms=True)
    assert set(k for k in logs if k.startswith("gradnorm_")) == {"gradnorm_seg", "gradnorm_kld"}
    seg_norm = torch.sqrt(sum((g.double() ** 2).sum() for g in base.values()))
    kld_norm = torch.sqrt(sum(((with_kld[n] - base[n]).double() ** 2).sum() for n in base))
    assert float(logs["gradnorm_seg"]) == pytest.approx(float(seg_norm), rel=1e-4)
    assert float(logs["gradnorm_kld"]) == pytest.approx(float(kld_norm), rel=1e-3)


def test_stage_settings_weight_the_cross_entropy_by_the_training_label_shares(tmp_path: Path) -> None:
    from train.data.base import label_frequencies
    from train.engine.losses import class_weights

    cfg = tiny_config(tmp_path, stage="teacher", class_weights="inverse-sqrt")
    data = tiny_data(cfg)
    settings = stage_settings(cfg, "teacher", data.train)
    counts = label_frequencies(data.train)
    assert settings.class_weight == class_weights(counts, "inverse-sqrt")
    assert settings.seg_weight().shape == (22,) and float((settings.seg_weight() > 0).sum()) == (counts > 0).sum()
    assert stage_settings(tiny_config(tmp_path, stage="teacher"), "teacher", data.train).class_weight is None


class _FirstStage(Exception):
    """Raised in place of the first stage's training: what happened before it is the test's subject."""


@pytest.mark.parametrize("stage, starts_pool", [("all", True), ("distill", True), ("student", False), ("kd", False)])
def test_run_starts_the_persistence_workers_before_its_first_stage_when_any_stage_uses_l_topo(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stage: str, starts_pool: bool
) -> None:
    """The workers start (and on a new machine compile) while the earlier stages train (decision 41)."""
    import train.runner.stages

    events: list[object] = []

    def first_stage(cfg: object, name: str, *args: object) -> None:
        events.append(name)
        raise _FirstStage

    monkeypatch.setattr(train.runner.stages, "start_persistence",
                        lambda workers, clouds: events.append(("pool", workers)))
    monkeypatch.setattr(train.runner.stages, "run_stage", first_stage)
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(b"")  # named by the student stages; never read here
    cfg = tiny_config(tmp_path, stage=stage, topo_workers=1, teacher_checkpoint=str(teacher))
    with pytest.raises(_FirstStage):
        run(cfg, CPU)
    first = "teacher" if stage == "all" else stage
    assert events == ([("pool", 1)] if starts_pool else []) + [first]
