"""Validation during training (``--eval-every-epochs``, decision 35): the passes change nothing in
the training trajectory, are logged per evaluated epoch in ``val_log.csv``, survive a resume, and
``curves.png`` draws them."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from test_train_support import TINY_MODEL, tiny_config, tiny_data
from train.runtime.distributed import DistInfo
from train.evaluation.evaluate import evaluate
from train.evaluation.validation import validator
from train.runtime.logging_utils import MetricLogger, log_path
from train.engine.loop import ModelSpec, train_stage
from train.evaluation.plots import plot_curves

CPU = DistInfo(0, 1, 0, torch.device("cpu"))
PNG = b"\x89PNG\r\n\x1a\n"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_validating_every_epoch_leaves_the_trained_weights_bitwise_unchanged(tmp_path: Path) -> None:
    # drop path and a shuffled serialization order make training draw from torch's RNG, which the
    # validation DataLoader also draws from; both passes would also differ if the model stayed in eval mode
    model = {**TINY_MODEL, "drop_path": 0.3, "deterministic": False}
    spec = ModelSpec("student", 22, model)
    trained = {}
    for every in (0, 1):
        cfg = tiny_config(tmp_path, stage="student", epochs=2, eval_every_epochs=every, student_overrides=model,
                          out=str(tmp_path / f"every{every}"))
        data = tiny_data(cfg)
        trained[every] = train_stage(cfg, "student", Path(cfg.out), data.train, data.collate, spec, CPU,
                                     validate=validator(data.val_views(False), cfg, data.num_classes, CPU.device,
                                                        data.collate))
    plain, validated = trained[0].state_dict(), trained[1].state_dict()
    assert plain.keys() == validated.keys()
    for name in plain:
        assert torch.equal(plain[name], validated[name]), f"{name} differs when validating during training"
    assert not log_path(tmp_path / "every0", "val").exists()
    rows = _rows(log_path(tmp_path / "every1", "val"))
    assert [(r["step"], r["epoch"]) for r in rows] == [("2", "0.0"), ("4", "1.0")]
    # the last pass saw the final weights: it is the evaluation the results table reports
    final = evaluate(trained[1], data.val_views(False), data.num_classes, CPU.device, data.collate)
    assert float(rows[-1]["val_miou"]) == final.miou() and float(rows[-1]["val_accuracy"]) == final.accuracy()


def test_a_resumed_logger_keeps_the_earlier_rows_of_every_table_and_a_fresh_one_drops_them(tmp_path: Path) -> None:
    logger = MetricLogger(tmp_path, tensorboard=False, tables=("train", "val"))
    for step in (1, 2, 3, 4):
        logger.log(step, {"loss": 1.0 / step})
        if step % 2 == 0:
            logger.log(step, {"val_miou": 0.1 * step}, table="val")
    logger.close()
    resumed = MetricLogger(tmp_path, tensorboard=False, tables=("train", "val"), resume_step=2)
    resumed.log(3, {"loss": 0.5})
    resumed.close()
    assert [r["step"] for r in _rows(log_path(tmp_path, "train"))] == ["1", "2", "3"]
    assert [(r["step"], r["val_miou"]) for r in _rows(log_path(tmp_path, "val"))] == [("2", "0.2")]
    MetricLogger(tmp_path, tensorboard=False, tables=("train", "val")).close()
    assert not log_path(tmp_path, "train").exists() and not log_path(tmp_path, "val").exists()


def test_curves_draw_the_validation_passes_of_each_model_and_its_final_evaluation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib

    matplotlib.use("Agg")  # as train.evaluation.plots does: headless
    import matplotlib.pyplot as plt

    results = {}
    for i, label in enumerate(("teacher", "student seg")):
        logger = MetricLogger(tmp_path / label, tensorboard=False, tables=("train", "val"))
        for step in range(1, 9):
            logger.log(step, {"epoch": (step - 1) // 2, "loss": 2.0 / step + i, "lr": 0.01})
            if step % 4 == 0:
                logger.log(step, {"epoch": (step - 1) // 2, "val_miou": 0.05 * step + 0.1 * i}, table="val")
        logger.close()
        results[label] = {"miou": 0.5 - 0.1 * i}
    (tmp_path / "no logs").mkdir()
    results["student seg+kld"] = {"miou": 0.3}  # a model without logs still gets its colour, no curve
    dirs = {label: tmp_path / label for label in ("teacher", "student seg")} | {"student seg+kld": tmp_path / "no logs"}
    figures: list = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: (figures.append(fig), real_close(fig)))
    plot_curves(tmp_path / "curves.png", dirs, results)
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG
    panel = figures[0].axes[0]
    assert panel.get_title().startswith("validation mIoU")
    # per model with logs: its passes (steps 4, 8) and a star at its last step with the final mIoU
    drawn = [(line.get_xdata().tolist(), [round(y, 9) for y in line.get_ydata()]) for line in panel.lines]
    assert drawn == [([4.0, 8.0], [20.0, 40.0]), ([8.0], [50.0]), ([4.0, 8.0], [30.0, 50.0]), ([8.0], [40.0])]
