"""``python -m train.study``: units resume and are never redone; the report's statistics equal a
hand computation; rows of Tables 5, 7 and 10."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

import train.study.ablation as study_mod
from tests.test_train_support import TINY_MODEL, record_calls
from train.study.ablation import PI_LAMBDA_TOPO, TABLE5, main, study_rows
from train.evaluation.metrics import IoUAccumulator
from train.study.report import (bootstrap_miou, class_group_lines, mean_ci, ordering_statement, paired_difference,
                                scene_bootstrap_difference, summarize)

# Two-sided 95% Student-t quantiles t_{0.975, df}, from printed tables.
T975 = {1: 12.706204736, 2: 4.302652730, 3: 3.182446305}


def test_mean_ci_equals_the_student_t_interval_by_hand() -> None:
    mean, half = mean_ci([0.50, 0.60, 0.70])
    assert mean == pytest.approx(0.6, abs=1e-15)
    assert half == pytest.approx(T975[2] * 0.1 / math.sqrt(3), rel=1e-9)  # s = 0.1 exactly
    mean, half = mean_ci([0.31, 0.35, 0.30, 0.38])
    s = math.sqrt(sum((v - 0.335) ** 2 for v in (0.31, 0.35, 0.30, 0.38)) / 3)
    assert mean == pytest.approx(0.335, abs=1e-15) and half == pytest.approx(T975[3] * s / 2.0, rel=1e-9)
    assert math.isnan(mean_ci([0.4])[1]) and mean_ci([0.4])[0] == 0.4


def test_paired_difference_uses_common_seeds_only() -> None:
    row = {0: 0.52, 1: 0.55, 2: 0.50, 7: 0.9}
    ref = {0: 0.50, 1: 0.51, 2: 0.49}
    mean, half, n = paired_difference(row, ref)
    d = [0.02, 0.04, 0.01]
    s = math.sqrt(sum((x - sum(d) / 3) ** 2 for x in d) / 2)
    assert n == 3 and mean == pytest.approx(sum(d) / 3, abs=1e-15)
    assert half == pytest.approx(T975[2] * s / math.sqrt(3), rel=1e-9)


def _random_scans(rng: np.random.Generator, scans: int, classes: int) -> np.ndarray:
    """(S, 3, K) per-scan counts of random predictions (some classes absent from some scans)."""
    accs = []
    for _ in range(scans):
        acc = IoUAccumulator(classes)
        n = int(rng.integers(20, 60))
        target = torch.from_numpy(rng.integers(0, classes - 1, n))  # the last class is never a label
        acc.update(torch.from_numpy(rng.integers(0, classes, n)), target)
        accs.append(acc.state().numpy())
    return np.stack(accs)


def test_bootstrap_miou_equals_the_accumulators_miou_of_each_resample() -> None:
    rng = np.random.default_rng(3)
    scans = _random_scans(rng, 6, 5)
    draws = rng.multinomial(6, np.full(6, 1 / 6), size=40).astype(np.float64)
    got = bootstrap_miou(scans, draws)
    for b, w in enumerate(draws):
        acc = IoUAccumulator(5)
        acc.load_state(torch.from_numpy(np.einsum("s,sck->ck", w, scans)))
        assert got[b] == pytest.approx(acc.miou(), abs=1e-12), b
    assert bootstrap_miou(scans, np.ones((1, 6))) == pytest.approx([_miou(scans)], abs=1e-12)


def _miou(scans: np.ndarray) -> float:
    acc = IoUAccumulator(scans.shape[2])
    acc.load_state(torch.from_numpy(scans.sum(0)))
    return acc.miou()


def test_scene_bootstrap_interval_is_paired_and_holds_the_observed_difference() -> None:
    rng = np.random.default_rng(4)
    ref = {s: _random_scans(rng, 8, 4) for s in (0, 1, 2)}
    # the same model scored twice: every draw's difference is 0
    assert scene_bootstrap_difference(ref, ref, draws=500)[:2] == (0.0, 0.0)
    row = {s: _random_scans(rng, 8, 4) for s in (0, 1, 7)}
    low, high, n = scene_bootstrap_difference(row, ref, draws=2000)
    observed = np.mean([_miou(row[s]) - _miou(ref[s]) for s in (0, 1)])
    assert n == 2 and low < observed < high and high - low < 1.0
    # the same draws for the same seed argument, so the report repeats
    assert scene_bootstrap_difference(row, ref, draws=2000) == (low, high, n)
    with pytest.raises(ValueError, match="same scans"):
        scene_bootstrap_difference({0: row[0][:5]}, ref)


def _unit(seed: int, test: float, val: float, iou: list[float]) -> dict[str, Any]:
    split = lambda m: {"miou": m, "iou": iou, "class_frequency": [0.5, 0.5], "parameters": 10}  # noqa: E731
    return {"seed": seed, "wall_s": 60.0, "val": split(val), "test": split(test)}


def test_summary_and_ordering_statement_from_hand_made_units() -> None:
    means = {"CE": 0.30, "KD": 0.32, "KD+topo": 0.33, "KD+grad": 0.34, "full": 0.36}
    rows = {name: [_unit(s, m + 0.01 * s, m, [m, m + 0.1]) for s in range(3)] for name, m in means.items()}
    summary = summarize({"eval_split": "test", "rows": rows})
    assert summary["full"]["mean"][0] == pytest.approx(0.37, abs=1e-12)
    # identical seed effects in every row: the paired differences have zero spread
    d, half, n = summary["full"]["vs_KD"]
    assert (d, n) == (pytest.approx(0.04, abs=1e-12), 3) and half == pytest.approx(0.0, abs=1e-12)
    assert summary["KD"]["per_class"] == pytest.approx([0.32, 0.42])
    assert "vs_KD" not in summary["KD"] and "vs_CE" not in summary["CE"]
    assert "**holds**" in ordering_statement(summary)
    rows["full"] = [_unit(s, 0.31 + 0.01 * s, 0.31, [0.3, 0.3]) for s in range(3)]
    assert "**does not hold**" in ordering_statement(summarize({"eval_split": "test", "rows": rows}))


def test_frequent_and_rare_class_mious_and_their_paired_differences_equal_a_hand_computation() -> None:
    """Three classes, the third with 0.5% of the points: the frequent mIoU is the mean IoU of the
    first two, the rare one the third's, each with the main table's paired differences; a split
    without a rare class adds no lines."""
    freq = [0.6, 0.395, 0.005]

    def unit(seed: int, iou: list[float]) -> dict[str, Any]:
        split = {"miou": float(np.mean(iou)), "iou": iou, "class_frequency": freq, "parameters": 10}
        return {"seed": seed, "wall_s": 60.0, "val": split, "test": split}

    rows = {"CE": [unit(s, [0.5, 0.3 + 0.01 * s, 0.1]) for s in range(3)],
            "KD": [unit(s, [0.6, 0.3 + 0.01 * s, 0.1 * s]) for s in range(3)]}
    summary = summarize({"eval_split": "test", "rows": rows})
    ce, kd = summary["CE"], summary["KD"]
    assert ce["frequent"]["mean"][0] == pytest.approx(0.405, abs=1e-12)  # seeds 0.400, 0.405, 0.410
    assert ce["rare"]["mean"] == (pytest.approx(0.1, abs=1e-12), pytest.approx(0.0, abs=1e-12))
    assert kd["frequent"]["vs_CE"] == (pytest.approx(0.05, abs=1e-12), pytest.approx(0.0, abs=1e-12), 3)
    d, half, n = kd["rare"]["vs_CE"]  # differences -0.1, 0, +0.1
    assert (d, n) == (pytest.approx(0.0, abs=1e-12), 3) and half == pytest.approx(T975[2] * 0.1 / math.sqrt(3))
    study = {"eval_split": "test", "teacher": {"test": rows["CE"][0]["test"]}}
    lines = class_group_lines(study, summary)
    assert "the 2 classes with at least 1% of the test points (99.5% of them; teacher 40.0)" in lines[2]
    assert "1 rarer ones (teacher 10.0)" in lines[2]
    assert f"| KD | 45.5 ± {100 * T975[2] * 0.005 / math.sqrt(3):.1f} | +5.0 ± 0.0 | - | 10.0 ± 24.8 | " \
           "+0.0 ± 24.8 | - |" in lines
    study["teacher"]["test"] = {**study["teacher"]["test"], "class_frequency": [0.6, 0.4, 0.0]}
    assert class_group_lines(study, summary) == []


def test_table_rows() -> None:
    assert [r.key for r in TABLE5] == ["CE", "KD", "KD+topo", "KD+grad", "full"]
    assert [r.stage for r in TABLE5] == ["student", "kd", "distill", "distill", "distill"]
    grid = {"lambda_topo": [0.5, 8.0], "lambda_grad": [1.0], "lambda_kld": [1.0, 2.0]}
    rows7 = study_rows(7, grid, [])
    assert [r.key for r in rows7[:2]] == ["CE", "KD"] and len(rows7) == 2 + 4
    assert rows7[-1].values == {"lambda_topo": 8.0, "lambda_grad": 1.0, "lambda_kld": 2.0}
    rows10 = study_rows(10, grid, [[1, 2, 3, 4], [4]])
    assert [r.values["saliency_layers"] for r in rows10[2:]] == [[1, 2, 3, 4], [4]]
    rows11 = study_rows(11, grid, [], [0.05, 0.2])
    assert [r.key for r in rows11] == ["CE", "KD", "KD+topo pwcd", "KD+topo sinkhorn eps=0.05",
                                       "KD+topo sinkhorn eps=0.2", "KD+topo persistence-image"]
    assert rows11[4].values == {"grad": False, "topo_distance": "sinkhorn", "sinkhorn_eps": 0.2}
    assert rows11[5].values["lambda_topo"] == PI_LAMBDA_TOPO
    assert all(r.stage == "distill" and r.values["grad"] is False for r in rows11[2:])


def _argv(tmp_path: Path) -> list[str]:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({"teacher_overrides": dict(TINY_MODEL), "student_overrides": dict(TINY_MODEL)}))
    return ["--config", str(cfg), "--out", str(tmp_path / "study"), "--seeds", "0", "1",
            "--rows", "CE", "KD", "full", "--data-root", str(tmp_path / "data"), "--synthetic-scenes", "5",
            "--synthetic-beams", "8", "--synthetic-azimuth-steps", "64", "--grid-size", "0.3",
            "--epochs", "1", "--teacher-epochs", "1", "--batch-size", "2", "--iters-per-epoch", "2",
            "--device", "cpu", "--deterministic", "--saliency-layers", "1", "2", "--topo-m", "32",
            "--latency-runs", "1", "--no-tensorboard", "--no-progress", "--procs", "1"]


def test_study_writes_report_skips_finished_units_and_redoes_a_killed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = _argv(tmp_path)
    assert main(argv) == 0
    out = tmp_path / "study"
    report = (out / "STUDY.md").read_text()
    assert "| CE | 2 |" in report and "| full | 2 |" in report and "Δ vs KD" in report
    assert (out / "study.png").stat().st_size > 1000
    saved = json.loads((out / "study.json").read_text())
    assert saved["study"]["eval_split"] == "test" and set(saved["study"]["rows"]) == {"CE", "KD", "full"}
    killed = out / "units" / "full" / "seed-1"
    first = json.loads((killed / "result.json").read_text())
    # every unit keeps each test scan's counts, and the report draws the test scenes again from them
    assert len(first["test"]["scans"]["union"]) == len(first["test"]["scans"]["intersection"]) > 0
    assert "| full | " in report.split("scene bootstrap")[1] and "Δ vs KD [scene interval]" in report

    calls = record_calls(monkeypatch, study_mod, "train_or_reuse")
    assert main(argv) == 0
    assert calls == []  # every unit finished: nothing trained, nothing evaluated again
    # a unit killed before it wrote its result (its checkpoints deleted too) is trained again,
    # deterministically to the same numbers
    (killed / "result.json").unlink()
    for f in killed.glob("*.pt"):
        f.unlink()
    assert main(argv) == 0
    assert calls == [killed]
    again = json.loads((killed / "result.json").read_text())
    assert again["test"]["miou"] == first["test"]["miou"]
    np.testing.assert_array_equal(np.array(again["val"]["iou"], float), np.array(first["val"]["iou"], float))


def test_study_rejects_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--seeds", "0"]) == 2
    assert "at least two distinct seeds" in capsys.readouterr().err
    assert main(_argv(tmp_path) + ["--rows", "nope"]) == 2
    assert "not rows of table 5" in capsys.readouterr().err


def test_the_unlabelled_table_compares_labelled_only_rows_with_rows_that_mix_in_the_unlabelled_split() -> None:
    rows = study_rows("unlabelled", {}, [], unlabelled_split="sweeps")
    assert [(r.key, r.stage, r.values) for r in rows] == [
        ("CE", "student", {}), ("KD", "kd", {}), ("KD+unlabelled", "kd", {"unlabelled_split": "sweeps"}),
        ("full+unlabelled", "distill", {"unlabelled_split": "sweeps"})]


def test_the_label_scarce_study_runs_end_to_end_at_its_smallest_size(tmp_path: Path) -> None:
    """The smoke form of ``--table unlabelled``: the label-scarce regime's data but for the sizes given,
    the teacher and the CE and KD rows on the labelled scans only, two rows with the unlabelled scans."""
    argv = [a for a in _argv(tmp_path) if a not in ("--rows", "CE", "KD", "full")]
    assert main(["--table", "unlabelled", *argv, "--synthetic-unlabelled-scenes", "4"]) == 0
    out = tmp_path / "study"
    saved = json.loads((out / "study.json").read_text())["study"]
    assert set(saved["rows"]) == {"CE", "KD", "KD+unlabelled", "full+unlabelled"}
    assert saved["config"]["synthetic_val_fraction"] == 0.4 and saved["config"]["unlabelled_split"] == "unlabelled"
    assert "distillation with unlabelled scans" in (out / "STUDY.md").read_text()
    for row, mixed in (("CE", False), ("KD", False), ("KD+unlabelled", True), ("full+unlabelled", True)):
        stage = {"CE": "student", "KD": "kd", "KD+unlabelled": "kd", "full+unlabelled": "distill"}[row]
        extra = torch.load(out / "units" / row / "seed-1" / "model_final.pt", weights_only=False)["extra"]
        assert ("unlabelled" in extra) == mixed, row
        assert extra["stage"] == stage
        result = json.loads((out / "units" / row / "seed-1" / "result.json").read_text())
        # the label-scarce fractions leave 1 of the 5 scenes for training: 1 unlabelled scan beside it
        assert result.get("unlabelled_scans") == ({"split": "unlabelled", "ratio": 1.0, "read": 1, "distinct": 1,
                                                   "in_split": 4} if mixed else None)
    teacher = torch.load(out / "teacher" / "model_final.pt", weights_only=False)
    assert "unlabelled" not in teacher["extra"] and teacher["config"]["unlabelled_split"] is None
    assert len(list((tmp_path / "data" / "unlabelled").glob("*/*"))) == 4
