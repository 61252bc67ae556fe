"""The frame of a condensed set (decision 86): every method condenses in its rotator's frame (PCA,
then the sign step), the file records the frame, ``evaluate`` puts the test, validation and full
training clouds in it, a learned sign survives the round trip through the file, a file written
before the frame was recorded reads as the data's own frame, and the ``rotated_raw`` setting is
the rotated clouds not projected (the paper's Table 5, first row)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import train.condense.cli.command as command
from fast import pca_canonical, sign_canonical
from train.condense.cli.command import main
from train.condense.files.condensed_file import read_condensed
from train.condense.files.rotator import Rotator, frame_record, rotator_of, to_frame
from train.data.objects import load_objects

TINY = ["--dataset", "shapes", "--size", "4", "--points", "32", "--device", "cpu"]


def test_a_coreset_on_the_rotated_set_holds_real_clouds_in_the_fixed_frame_and_says_so(tmp_path: Path) -> None:
    assert main([*TINY, "--setting", "rotated", "--method", "random", "--cpc", "1", "--out", str(tmp_path)]) == 0
    cset = read_condensed(tmp_path / "condensed.npz")
    assert cset.provenance["frame"] == {"rotator": "fixed", "w0": 1.0, "decoder": None}  # the setting's default
    train = load_objects("shapes", split="train", points=32, size=4, setting="rotated")
    framed = sign_canonical(pca_canonical(torch.from_numpy(train.points).double())).float().numpy()
    for cloud in cset.points:
        assert np.abs(framed - cloud).max(axis=(1, 2)).min() < 1e-5  # one real cloud, in the frame
    assert not any(np.array_equal(cloud, real) for cloud in cset.points for real in train.points[:5])


def test_evaluate_puts_the_test_clouds_in_the_files_frame(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert main([*TINY, "--setting", "rotated", "--method", "random", "--cpc", "1", "--out", str(tmp_path)]) == 0
    seen = {}

    def capture(train, test, *args, **kwargs):  # noqa: ANN001, ANN202 (evaluate_runs' signature)
        seen["test"] = test.points
        return [{"oa": 0.5, "macc": 0.5}]
    monkeypatch.setattr(command, "evaluate_runs", capture)
    assert main(["evaluate", "--from", str(tmp_path / "condensed.npz"), "--runs", "1", "--device", "cpu"]) == 0
    test = load_objects("shapes", split="test", points=32, size=4, setting="rotated")
    np.testing.assert_allclose(seen["test"], to_frame(test.points, Rotator("fixed")), atol=0)
    assert not np.allclose(seen["test"], test.points)  # the fixed sign flips some axes


def test_the_full_set_takes_the_rotator_option_and_a_file_refuses_it(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    full = ["evaluate", "--from", "full", *TINY, "--steps", "2", "--setting", "rotated", "--runs", "1"]
    assert main([*full, "--rotator", "pca"]) == 0
    assert "shapes rotated, frame pca, full train split" in capsys.readouterr().out
    assert main([*full, "--rotator", "learned"]) == 2
    assert "--rotator learned is a dd3d run's" in capsys.readouterr().err
    assert main([*TINY, "--method", "random", "--cpc", "1", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--from", str(tmp_path / "condensed.npz"), "--rotator", "fixed", "--device", "cpu"]) == 2
    assert "names its own frame; --rotator is for --from full" in capsys.readouterr().err


def test_a_learned_sign_goes_through_the_file_and_back_unchanged() -> None:
    rotator = Rotator("learned").double()
    with torch.no_grad():
        rotator.decoder.copy_(torch.tensor([0.3, -1.2, 0.5, 0.0, 2.0, -0.1, 0.7, 0.05], dtype=torch.float64))
    record = json.loads(json.dumps(frame_record(rotator)))
    back = rotator_of(record).double()
    clouds = torch.from_numpy(np.random.default_rng(0).normal(size=(6, 50, 3)))
    assert torch.equal(back(clouds), rotator(clouds))
    for bad, words in [({"rotator": "learned", "w0": 1.0, "decoder": None}, "a decoder exactly when"),
                       ({"rotator": "fixed", "w0": 1.0}, "holds rotator, w0 and decoder"),
                       ({"rotator": "sideways", "w0": 1.0, "decoder": None}, "not one of"),
                       ({"rotator": "learned", "w0": 1.0, "decoder": ["x"]}, "list of numbers")]:
        with pytest.raises(ValueError, match=words):
            rotator_of(bad)


def test_a_file_without_a_frame_reads_as_the_datas_own_and_a_bad_frame_is_refused(tmp_path: Path) -> None:
    assert main([*TINY, "--method", "random", "--cpc", "1", "--out", str(tmp_path)]) == 0
    with np.load(tmp_path / "condensed.npz") as data:
        arrays = {k: data[k] for k in data.files}
    provenance = json.loads(str(arrays["provenance"]))
    del provenance["frame"]
    np.savez(tmp_path / "old.npz", **{**arrays, "provenance": np.array(json.dumps(provenance))})
    assert read_condensed(tmp_path / "old.npz").provenance["frame"]["rotator"] == "none"
    provenance["frame"] = {"rotator": "fixed", "w0": "one", "decoder": None}
    np.savez(tmp_path / "bad.npz", **{**arrays, "provenance": np.array(json.dumps(provenance))})
    with pytest.raises(ValueError, match="bad.npz: provenance frame: .*w0 must be a number"):
        read_condensed(tmp_path / "bad.npz")


def test_gm_refuses_the_learned_sign_and_condenses_in_the_pca_frame(tmp_path: Path, capsys: pytest.CaptureFixture
                                                                    ) -> None:
    assert main([*TINY, "--setting", "rotated_raw", "--method", "gm", "--rotator", "learned", "--cpc", "1",
                 "--out", str(tmp_path)]) == 2
    assert "the learned sign is trained by dd3d; gm takes the rotator none, pca or fixed" in capsys.readouterr().err
    assert main([*TINY, "--setting", "rotated_raw", "--method", "gm", "--rotator", "pca", "--iterations", "1",
                 "--cpc", "1", "--out", str(tmp_path)]) == 0
    assert read_condensed(tmp_path / "condensed.npz").provenance["frame"]["rotator"] == "pca"


def test_rotated_raw_clouds_are_the_rotated_ones_before_their_projection() -> None:
    raw = load_objects("shapes", split="test", points=64, size=4, setting="rotated_raw")
    projected = load_objects("shapes", split="test", points=64, size=4, setting="rotated")
    aligned = load_objects("shapes", split="test", points=64, size=4)
    for a, b, c in zip(raw.points[:8].astype(np.float64), projected.points[:8].astype(np.float64),
                       aligned.points[:8].astype(np.float64)):
        gram = a @ a.T  # a rotation of the same centred, scaled cloud: the same inner products
        np.testing.assert_allclose(gram, b @ b.T, atol=1e-5)
        np.testing.assert_allclose(gram, c @ c.T, atol=1e-5)
        cov = a.T @ a
        assert np.abs(cov - np.diag(np.diag(cov))).max() > 1e-3  # not on its principal axes
