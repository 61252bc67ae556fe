"""Smoke test of the README's main command at a tiny budget: ``python -m train.run --dataset
synthetic`` (stage ``all``) generates the set, trains the teacher and the three students, evaluates
them, prints one table and draws the run's pictures (``train.evaluation.plots``)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from test_train_support import tiny_config
from train.evaluation.plots import PLOTS
from train.run import main

PNG = b"\x89PNG\r\n\x1a\n"


def test_synthetic_all_pipeline_trains_four_models_and_prints_one_table(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    values = tiny_config(tmp_path).to_dict()
    values.pop("stage")  # the default, "all"
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump(values))
    assert main(["--config", str(cfg_file), "--dataset", "synthetic"]) == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("backends on")] == [
        "backends on cpu: convolution ours (torch); attention PyTorch SDPA; TPS host (the features are not on a CUDA "
        "device); DataLoader workers 0 per process"]  # printed once, at the start

    columns = ["teacher", "student seg", "student seg+kld", "student seg+kld+topo+grad"]
    header = next(line for line in out.splitlines() if line.startswith("| class |"))
    assert header == "| class | val points % | " + " | ".join(columns) + " |"
    assert "**mIoU**" in out and "latency ms/scan" in out
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert list(report["results"]) == columns
    for result in report["results"].values():
        assert 0.0 <= result["miou"] <= 1.0 and result["latency_ms"] > 0
        assert len(result["iou"]) == len(report["class_names"]) == 22
        assert not math.isnan(result["miou"])
    res = report["results"]
    for col in columns[2:]:  # each distilled student's improvement over the CE student, also printed
        assert res[col]["miou_vs_ce"] == pytest.approx(res[col]["miou"] - res["student seg"]["miou"], abs=1e-12)
    assert "miou_vs_ce" not in res["teacher"] and "miou_vs_ce" not in res["student seg"]
    assert "| mIoU vs CE student | | - | - | " in out
    sizes = {name: r["parameters"] for name, r in report["results"].items()}
    assert len({sizes[c] for c in columns[1:]}) == 1  # the three students share one architecture
    saved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert saved["stage"] == "all" and saved["dataset"] == "synthetic"
    for stage in ("teacher", "student", "kd", "distill"):
        assert (tmp_path / "out" / stage / "model_final.pt").is_file()
        assert (tmp_path / "out" / stage / "eval.md").is_file()
    for name in PLOTS:  # the pictures next to the table
        assert (tmp_path / "out" / name).read_bytes()[:8] == PNG, name


def test_no_plots_writes_no_pictures(tmp_path: Path) -> None:
    values = tiny_config(tmp_path, stage="teacher").to_dict()
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump(values))
    assert main(["--config", str(cfg_file), "--no-plots"]) == 0
    assert (tmp_path / "out" / "results.md").is_file()
    assert not list((tmp_path / "out").rglob("*.png"))
