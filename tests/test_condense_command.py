"""``python -m train.condense`` end to end on tiny generated sets: the condensed file of each
coreset method (real training clouds of their class, CPC a class, the same bytes for the same
seed, Herding's and K-Center's picks in the cached network's feature space), the feature
network's cache, the evaluation line, the coreset table, part segmentation, and each refusal in
one line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from train.condense.cli.command import main
from train.condense.evaluation.metrics import paired_gain, two_level
from train.condense.files.condensed_file import read_condensed
from train.condense.methods.coreset import Rule, herding_order, kcenter_order, select_per_class
from train.data.objects import load_objects
from train.models.objects import build_object_model

TINY = ["--dataset", "shapes", "--size", "4", "--points", "32", "--device", "cpu"]
STEPS = ["--steps", "3"]  # the feature network's (herding, kcenter) and evaluate's recipe


def condense(out: Path, method: str, cpc: int = 2, *extra: str) -> Path:
    steps = STEPS if method in ("herding", "kcenter") else []
    assert main([*TINY, *steps, "--method", method, "--cpc", str(cpc), "--out", str(out), *extra]) == 0
    return out / "condensed.npz"


@pytest.mark.parametrize("method", ["random", "herding", "kcenter"])
def test_a_coreset_file_holds_cpc_real_training_clouds_of_each_class(tmp_path: Path, method: str) -> None:
    cset = read_condensed(condense(tmp_path, method))
    train = load_objects("shapes", split="train", points=32, size=4)
    assert cset.provenance["method"] == method and cset.provenance["cpc"] == 2
    assert cset.provenance["class_names"] == list(train.class_names) and cset.provenance["size"] == 4
    assert np.bincount(cset.labels).tolist() == [2] * len(train.class_names)
    for cloud, label in zip(cset.points, cset.labels):
        same = np.flatnonzero((train.points == cloud).all(axis=(1, 2)))
        assert len(same) == 1 and train.labels[same[0]] == label
    assert (tmp_path / "feature_net.pt").exists() == (method != "random")


@pytest.mark.parametrize("method", ["random", "herding"])
def test_a_fixed_seed_gives_the_same_file_and_another_seed_another_draw(tmp_path: Path, method: str) -> None:
    # herding: each folder trains its own feature network, from the seed
    a = condense(tmp_path / "a", method, 2, "--seed", "1")
    b = condense(tmp_path / "b", method, 2, "--seed", "1")
    c = condense(tmp_path / "c", method, 2, "--seed", "2")
    assert a.read_bytes() == b.read_bytes()
    assert not np.array_equal(read_condensed(a).points, read_condensed(c).points)


def test_the_feature_network_is_trained_once_and_retrained_for_other_data(tmp_path: Path) -> None:
    condense(tmp_path, "herding")
    cache = tmp_path / "feature_net.pt"
    first = cache.read_bytes()
    kcenter = read_condensed(condense(tmp_path, "kcenter", 2, "--overwrite"))  # --overwrite keeps the cache
    assert cache.read_bytes() == first  # read, not trained again
    condense(tmp_path, "kcenter", 2, "--setting", "rotated", "--overwrite")
    assert cache.read_bytes() != first  # another key: trained anew and replaced
    assert kcenter.provenance["setting"] == "aligned"


@pytest.mark.parametrize("method, rule", [("herding", herding_order), ("kcenter", kcenter_order)])
def test_the_file_holds_the_rules_picks_in_the_cached_pointnets_global_feature_space(tmp_path: Path, method: str,
                                                                                     rule: Rule) -> None:
    cset = read_condensed(condense(tmp_path, method, 3))
    saved = torch.load(tmp_path / "feature_net.pt", weights_only=True)
    train = load_objects("shapes", split="train", points=32, size=4)
    net = build_object_model("pointnet", len(train.class_names))
    net.load_state_dict(saved["state"])
    with torch.no_grad():
        space = net.eval().embed(torch.from_numpy(train.points)).double().numpy()
    chosen = select_per_class(train.labels, space, 3, rule, seed=0)
    assert np.array_equal(cset.points, train.points[chosen]) and np.array_equal(cset.labels, train.labels[chosen])


def test_a_damaged_feature_cache_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "feature_net.pt").write_bytes(b"garbage")
    assert main([*TINY, *STEPS, "--method", "herding", "--cpc", "1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "feature_net.pt: not a readable feature cache" in err


def test_evaluate_reports_the_last_step_scores_of_a_file_and_of_the_full_set(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture) -> None:
    path = condense(tmp_path, "random", 1)
    assert main(["evaluate", "--from", str(path), "--runs", "2", "--steps", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "shapes aligned, frame none, random CPC 1 (13 clouds), pointnet, 2 steps, lr 0.001, 2 runs, test split, last step: OA " in out
    assert "(mAcc " in out and " ± " in out
    assert main(["evaluate", "--from", "full", *TINY, *STEPS, "--size", "10", "--runs", "1", "--split", "val"]) == 0
    assert "full train split" in capsys.readouterr().out


def test_several_steps_and_rates_are_chosen_on_the_validation_split_and_reported_on_test(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["evaluate", "--from", "full", *TINY, "--size", "10", "--runs", "2", "--steps", "1", "4", "--lr", "1e-9",
            "3e-3", "--out", str(tmp_path / "scores.json")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    tried = [line for line in out.splitlines() if line.startswith("val split: ")]
    assert [line.split(":")[1] for line in tried] == [" 1 steps, lr 1e-09", " 1 steps, lr 0.003", " 4 steps, lr 1e-09",
                                                      " 4 steps, lr 0.003"]
    means = [float(line.split(": ")[2].split()[0]) for line in tried]
    best = max(range(4), key=lambda i: (means[i], -i))  # the best validation mean, the first on a tie
    steps, lr = [(1, 1e-9), (1, 3e-3), (4, 1e-9), (4, 3e-3)][best]
    assert f"pointnet, {steps} steps, lr {lr}, 2 runs, test split" in out
    kept = json.loads((tmp_path / "scores.json").read_text())
    assert kept["recipe"]["steps"] == steps and kept["recipe"]["recipe"] == "cpu"
    # every candidate's validation summary kept beside the test scores, as printed
    assert [(c["recipe"]["steps"], c["recipe"]["lr"]) for c in kept["validation"]] == [(1, 1e-9), (1, 3e-3), (4, 1e-9),
                                                                                       (4, 3e-3)]
    assert [round(c["val"]["oa"][0], 1) for c in kept["validation"]] == means


def test_evaluate_with_the_paper_recipe_reports_the_last_epoch_and_the_best_test_epoch_apart(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = condense(tmp_path, "random", 1)
    argv = ["evaluate", "--from", str(path), "--runs", "2", "--recipe", "paper", "--epochs", "3", "--device", "cpu",
            "--out", str(tmp_path / "scores.json")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "paper recipe: shapes aligned, frame none, random CPC 1 (13 clouds), pointnet, 3 epochs, lr 0.001, 2 runs, " \
           "test split, last step: OA " in out
    assert "best test epoch, for comparison with the paper's numbers only (the test split scored after every 1 of 3 " \
           "epochs: 3 predictions of its " in out
    kept = json.loads((tmp_path / "scores.json").read_text())
    assert {k: kept["recipe"][k] for k in ("recipe", "epochs", "batch_size", "weight_decay", "lr_end", "augmentation")} \
        == {"recipe": "paper", "epochs": 3, "batch_size": 256, "weight_decay": 5e-4, "lr_end": 1e-4,
            "augmentation": "released"}
    assert all(run["best_test_epoch"]["epoch"] in (1, 2, 3) for run in kept["runs"]) and kept["validation"] == []


def test_several_distillations_report_two_levels_and_the_gain_over_the_references_same_seeds(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    files = {(m, s): condense(tmp_path / f"{m}{s}", m, 1, "--seed", str(s)) for m in ("herding", "random") for s in (0, 1)}
    argv = ["evaluate", "--from", str(files["herding", 0]), str(files["herding", 1]), "--against",
            str(files["random", 1]), str(files["random", 0]), "--runs", "2", "--steps", "2", "--device", "cpu",
            "--out", str(tmp_path / "cells.json")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    kept = json.loads((tmp_path / "cells.json").read_text())
    oa = {side: {int(s): [100 * r["oa"] for r in runs] for s, runs in kept[side].items()}
          for side in ("runs", "against_runs")}
    assert sorted(oa["runs"]) == sorted(oa["against_runs"]) == [0, 1] and kept["recipe"]["steps"] == 2
    cell, gain = two_level([oa["runs"][0], oa["runs"][1]]), paired_gain(oa["runs"], oa["against_runs"])
    assert kept["distillations"]["groups"] == pytest.approx(list(cell.groups))
    assert kept["gain"]["by_seed"] == {str(s): pytest.approx(d) for s, d in gain.by_seed.items()}
    assert f"herding over 2 distillations (seeds 0, 1): OA {cell.mean:.1f} ± {cell.half:.1f} " \
           f"[{cell.groups[0]:.1f} / {cell.groups[1]:.1f}]" in out
    assert f"gain over --against (random) paired by seed: {gain.mean:+.1f} ± {gain.half:.1f} (s0 " in out
    assert out.count(", 2 runs, test split, last step: OA ") == 4  # every file's own line


@pytest.mark.parametrize("several, words", [
    (["SET0", "SET0", "--steps", "1"], "seed 0; each file of a list must be another seed of one method (random)"),
    (["SET0", "full", "--steps", "1"], "not full"),
    (["SET0", "SET1", "--steps", "1", "2"], "choose the recipe on one set first"),
    (["SET0", "--against", "CPC2", "--steps", "1"], "cpc 2, "),
])
def test_several_files_must_be_seeds_of_one_method(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                  several: list[str], words: str) -> None:
    swap = {"SET0": str(condense(tmp_path / "r0", "random", 1)),
            "SET1": str(condense(tmp_path / "r1", "random", 1, "--seed", "1")),
            "CPC2": str(condense(tmp_path / "c2", "random", 2))}
    capsys.readouterr()
    assert main(["evaluate", "--runs", "1", "--device", "cpu", "--from", *[swap.get(a, a) for a in several]]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and words in err


def test_part_segmentation_writes_parts_and_reports_instance_miou(tmp_path: Path, capsys: pytest.CaptureFixture
                                                                  ) -> None:
    cset = read_condensed(condense(tmp_path, "random", 1, "--task", "parts"))
    assert cset.parts is not None and cset.parts.shape == (13, 32) and cset.provenance["part_names"]
    assert main(["evaluate", "--from", str(tmp_path / "condensed.npz"), "--runs", "1", "--steps", "1"]) == 0
    assert "last step: instance mIoU " in (out := capsys.readouterr().out) and "(class mIoU " in out


@pytest.mark.parametrize("argv, words", [
    ([*TINY, "--method", "nope", "--cpc", "1", "--out", "OUT"], "method 'nope' is not one of random, herding, kcenter"),
    ([*TINY, "--method", "random", "--cpc", "0", "--out", "OUT"], "cpc must be a positive integer, got 0"),
    ([*TINY, "--method", "random", "--cpc", "1", "--setting", "upside", "--out", "OUT"], "setting 'upside'"),
    (["evaluate", "--from", "full", "--steps", "1"], "--from full needs --dataset"),
    (["evaluate", "--from", "BAD"], "BAD: not a readable .npz file"),
    (["evaluate", "--from", "FILE", "--setting", "rotated"], "holds setting 'aligned'; --setting 'rotated' differs"),
    (["evaluate", "--from", "FILE", "--runs", "0"], "runs must be a positive integer, got 0"),
    (["evaluate", "--from", "FILE", "--steps", "1", "2", "--split", "val"], "chosen on the validation split"),
    (["evaluate", "--from", "FILE", "--lr", "1e-3", "-1"], "--lr must be positive, got -1.0"),
    (["evaluate", "--from", "FILE", "--recipe", "paper", "--steps", "3"],
     "--steps is not a count of the paper recipe, which counts --epochs"),
    (["evaluate", "--from", "FILE", "--epochs", "3"], "--epochs is not a count of the cpu recipe, which counts --steps"),
    (["evaluate", "--from", "FILE", "--best-every", "2"], "--best-every scores the paper recipe's epochs"),
    (["evaluate", "--from", "FILE", "--recipe", "paper", "--best-every", "-1"], "--best-every must be positive, got -1"),
])
def test_each_refusal_is_one_line_naming_the_value(tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str],
                                                   words: str) -> None:
    path = condense(tmp_path / "set", "random", 1)
    capsys.readouterr()
    (tmp_path / "bad.npz").write_bytes(b"nonsense")
    swap = {"OUT": str(tmp_path / "out"), "FILE": str(path), "BAD": str(tmp_path / "bad.npz")}
    assert main([swap.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("python -m train.condense: error: ")
    assert words.replace("BAD", str(tmp_path / "bad.npz")) in err


def test_the_table_prints_every_method_and_cpc_in_both_settings(tmp_path: Path, capsys: pytest.CaptureFixture
                                                                ) -> None:
    argv = ["table", "--out", str(tmp_path), "--cpcs", "1", "2", "--runs", "2", "--size", "3", "--points", "32",
            "--steps", "2", "--device", "cpu"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| setting | CPC | Random | Herding | K-Center | full set |" in out
    rows = [line for line in out.splitlines() if line.startswith(("| aligned |", "| rotated |"))]
    assert [r.split(" | ")[:2] for r in rows] == [["| aligned", "1"], ["| aligned", "2"], ["| rotated", "1"],
                                                  ["| rotated", "2"]]
    assert all(r.count(" ± ") == 8 for r in rows)  # OA and mAcc of four sets, each with its interval
    assert (tmp_path / "table.md").read_text().strip() in out
    record = json.loads((tmp_path / "table.json").read_text())
    assert record["data"]["setting"] == ["aligned", "rotated"] and len(record["scores"]["rotated"]["herding-cpc2"]) == 2
    assert out.startswith("# shapes (size 3, 32 points), pointnet 2 steps, 2 runs")
    assert read_condensed(tmp_path / "rotated" / "kcenter-cpc2" / "condensed.npz").provenance["setting"] == "rotated"


def test_the_main_help_names_every_other_form(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for form in ("evaluate", "table", "sample", "show", "study"):
        assert f"python -m train.condense {form} (" in out
