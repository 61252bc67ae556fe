"""The persistence term's non-topological controls at matched strength, its strength relative to the
matching (decisions 101 and 102), and DD3D with two noise scalars a point: the Chamfer distances
against a brute force and by gradcheck, the scalings that give the control the term's gradient norm
and the term a ratio of the matching's on the synthetic parameters, runs of GM and DD3D that record
the control or the ratio and resume exactly, and DD3D's surfaces drawn, recorded and resumed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.condensation_tiny import stop_after_second_checkpoint
from train.condense.cli.command import main
from train.condense.files.condensed_file import read_condensed
from train.condense.matching.controls import MatchedStrength, chamfer, nearest_chamfer, start_chamfer

TINY = ["--dataset", "shapes", "--size", "2", "--points", "16", "--device", "cpu", "--cpc", "1", "--iterations", "3"]


def brute_chamfer(a: np.ndarray, b: np.ndarray) -> float:
    squared = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return float(squared.min(1).mean() + squared.min(0).mean())


@pytest.mark.parametrize("n, m", [(1, 1), (5, 3), (16, 16)])
def test_chamfer_is_the_brute_force_mean_nearest_squared_distance_both_ways(n: int, m: int) -> None:
    rng = np.random.default_rng(n * 10 + m)
    a, b = rng.normal(size=(n, 3)), rng.normal(size=(m, 3))
    b[0] = a[0]  # a shared point: a zero distance among the minima
    assert chamfer(torch.from_numpy(a), torch.from_numpy(b)).item() == pytest.approx(brute_chamfer(a, b), abs=1e-12)
    real, synthetic = rng.normal(size=(4, m, 3)), rng.normal(size=(2, n, 3))
    nearest = np.mean([min(brute_chamfer(s, r) for r in real) for s in synthetic])
    assert nearest_chamfer(torch.from_numpy(real), torch.from_numpy(synthetic)).item() == pytest.approx(nearest,
                                                                                                         abs=1e-12)
    start = rng.normal(size=(2, m, 3))
    assert start_chamfer(torch.from_numpy(synthetic), torch.from_numpy(start)).item() == pytest.approx(
        np.mean([brute_chamfer(s, s0) for s, s0 in zip(synthetic, start)]), abs=1e-12)


def test_the_controls_gradients_pass_gradcheck() -> None:
    rng = np.random.default_rng(3)  # distinct points: every minimum is unique, the function smooth there
    real = torch.from_numpy(rng.normal(size=(3, 6, 3)))
    synthetic = torch.from_numpy(rng.normal(size=(2, 5, 3))).requires_grad_()
    start = torch.from_numpy(rng.normal(size=(2, 7, 3)))
    assert torch.autograd.gradcheck(lambda s: nearest_chamfer(real, s), (synthetic,))
    assert torch.autograd.gradcheck(lambda s: start_chamfer(s, start), (synthetic,))


@pytest.mark.parametrize("kind", ["chamfer", "start"])
def test_the_scaled_control_has_the_terms_gradient_norm_on_the_parameters(kind: str) -> None:
    rng = np.random.default_rng(5)
    code = torch.from_numpy(rng.normal(size=(4,))).requires_grad_()
    weights = torch.from_numpy(rng.normal(size=(2, 6, 3)))  # the clouds are a function of the parameter
    synthetic = torch.tanh(code[0] * weights + code[1:].sum())
    real = torch.from_numpy(rng.normal(size=(3, 6, 3)))
    term = 7.0 * synthetic.square().sum() * code.square().sum()  # any differentiable stand-in for W * T_k
    control = MatchedStrength([code], kind, starts={0: torch.from_numpy(rng.normal(size=(2, 6, 3)))})
    scaled = control(0, (real, None), (synthetic, None), synthetic.sum(), term)
    g_term, = torch.autograd.grad(term, code, retain_graph=True)
    g_scaled, = torch.autograd.grad(scaled, code)
    assert g_scaled.norm().item() == pytest.approx(g_term.norm().item(), rel=1e-12)
    assert control.norms[0].term == pytest.approx(g_term.norm().item(), rel=1e-12) and control.norms[0].control > 0
    assert np.isnan(control.norms[0].matching)  # no ratio: the matching's norm is not computed
    assert torch.abs(g_scaled / g_scaled.norm() - g_term / g_term.norm()).max() > 1e-3  # another direction


@pytest.mark.parametrize("kind", [None, "chamfer", "start"])
def test_under_a_ratio_the_term_or_its_control_has_that_ratio_of_the_matchings_gradient_norm(kind: str | None) -> None:
    rng = np.random.default_rng(7)
    code = torch.from_numpy(rng.normal(size=(4,))).requires_grad_()
    synthetic = torch.tanh(code[0] * torch.from_numpy(rng.normal(size=(2, 6, 3))) + code[1:].sum())
    real = torch.from_numpy(rng.normal(size=(3, 6, 3)))
    distance = (code - torch.from_numpy(rng.normal(size=(4,)))).square().sum() * 3.0  # stand-in for D_k
    term = synthetic.square().sum() * code.square().sum()  # stand-in for T_k at weight 1
    strength = MatchedStrength([code], kind, 0.25, {0: torch.from_numpy(rng.normal(size=(2, 6, 3)))})
    added = strength(0, (real, None), (synthetic, None), distance, term)
    g_match, = torch.autograd.grad(distance, code, retain_graph=True)
    g_term, = torch.autograd.grad(term, code, retain_graph=True)
    g_added, = torch.autograd.grad(added, code)
    assert g_added.norm().item() == pytest.approx(0.25 * g_match.norm().item(), rel=1e-12)
    norms = strength.norms[0]
    assert norms.matching == pytest.approx(g_match.norm().item(), rel=1e-12)
    assert norms.term == pytest.approx(g_term.norm().item(), rel=1e-12)
    if kind is None:  # the term's own direction, rescaled
        assert torch.allclose(g_added / g_added.norm(), g_term / g_term.norm(), atol=1e-12) and np.isnan(norms.control)
    else:
        assert torch.abs(g_added / g_added.norm() - g_term / g_term.norm()).max() > 1e-3 and norms.control > 0


@pytest.mark.parametrize("method, control", [("gm", None), ("dd3d", "chamfer")])
def test_a_run_at_a_ratio_records_it_and_the_matchings_norm_and_resumes_exactly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str, control: str | None) -> None:
    run = [*TINY, "--method", method, "--topo", "shape", "--topo-ratio", "0.1",
           *([] if control is None else ["--control", control])]
    assert main([*run, "--out", str(tmp_path / "whole")]) == 0
    whole = read_condensed(tmp_path / "whole" / "condensed.npz")
    assert whole.provenance["topo"] == {"reading": "shape", "ratio": 0.1, **({} if control is None else
                                                                             {"control": control})}
    norms = whole.provenance["distill"]["strength_norms"]
    assert norms["steps"] > 0 and norms["matching"] > 0 and norms["term"] > 0 and ("control" in norms) == bool(control)
    stop_after_second_checkpoint([*run, "--out", str(tmp_path / "cut")], monkeypatch)
    assert main([*run, "--resume", "--out", str(tmp_path / "cut")]) == 0
    assert np.array_equal(read_condensed(tmp_path / "cut" / "condensed.npz").points, whole.points)
    assert main([*TINY, "--method", method, "--topo", "shape", "--topo-ratio", "0.2", "--resume", "--out",
                 str(tmp_path / "cut")]) == 2  # another ratio is another run


@pytest.mark.parametrize("options, words", [
    (["--topo", "shape", "--topo-ratio", "0"], "--topo-ratio must be a positive finite number"),
    (["--topo", "shape", "--topo-ratio", "nan"], "--topo-ratio must be a positive finite number"),
    (["--topo-ratio", "0.1"], "--topo-ratio sets the persistence term's strength: give --topo"),
    (["--topo", "shape", "--topo-ratio", "0.1", "--topo-weight", "10"], "in place of --topo-weight 10: give one"),
])
def test_a_bad_ratio_is_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture, options: list[str],
                                                words: str) -> None:
    assert main([*TINY, "--method", "gm", *options, "--out", str(tmp_path / "out")]) == 2
    assert words in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("method, kind", [("gm", "chamfer"), ("dd3d", "start")])
def test_a_run_with_a_control_records_it_its_norms_and_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       method: str, kind: str) -> None:
    topo = [*TINY, "--method", method, "--topo", "shape", "--topo-weight", "0.5"]
    run = [*topo, "--control", kind]
    assert main([*run, "--out", str(tmp_path / "whole")]) == 0
    assert main([*topo, "--out", str(tmp_path / "term")]) == 0
    whole, term = (read_condensed(tmp_path / name / "condensed.npz") for name in ("whole", "term"))
    assert whole.provenance["topo"] == {"reading": "shape", "weight": 0.5, "control": kind}
    assert "control" not in term.provenance["topo"] and "strength_norms" not in term.provenance["distill"]
    norms = whole.provenance["distill"]["strength_norms"]
    assert norms["steps"] > 0 and norms["term"] > 0 and norms["control"] > 0
    assert not np.array_equal(whole.points, term.points)  # the control, not the term, moved the set
    stop_after_second_checkpoint([*run, "--out", str(tmp_path / "cut")], monkeypatch)
    assert main([*run, "--resume", "--out", str(tmp_path / "cut")]) == 0
    assert (tmp_path / "cut" / "condensed.npz").read_bytes() != b""
    cut = read_condensed(tmp_path / "cut" / "condensed.npz")
    assert np.array_equal(cut.points, whole.points)  # the same set (the norms: of the steps this process ran)
    assert main([*topo, "--control", "start" if kind == "chamfer" else "chamfer", "--resume", "--out",
                 str(tmp_path / "cut")]) == 2  # another control is another run


def test_a_control_without_the_term_it_controls_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([*TINY, "--method", "gm", "--control", "chamfer", "--out", str(tmp_path)]) == 2
    assert "--control takes the persistence term's place at its strength: give --topo and --topo-weight" in \
        capsys.readouterr().err
    assert main([*TINY, "--method", "dm", "--topo", "shape", "--topo-weight", "1", "--control", "start", "--out",
                 str(tmp_path)]) == 2
    assert "--topo is an option of gm, dd3d, not of dm" in capsys.readouterr().err


def test_dd3d_with_two_noise_scalars_a_point_draws_surfaces_records_them_and_resumes_exactly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = [*TINY, "--method", "dd3d", "--noise-dims", "2"]
    assert main([*run, "--out", str(tmp_path / "whole")]) == 0
    whole = read_condensed(tmp_path / "whole" / "condensed.npz")
    assert whole.provenance["distill"]["noise_dims"] == 2
    generator = torch.load(tmp_path / "whole" / "generator.pt", weights_only=True)
    assert generator["noise_dims"] == 2 and generator["generator"]["sines.0.weight"].shape == (256, 2)
    assert main(["sample", "--from", str(tmp_path / "whole"), "--points", "40", "--out", str(tmp_path / "s.npz")]) == 0
    assert read_condensed(tmp_path / "s.npz").points.shape[1:] == (40, 3)
    assert main([*TINY, "--method", "dd3d", "--out", str(tmp_path / "curve")]) == 0
    curve = read_condensed(tmp_path / "curve" / "condensed.npz")
    assert "noise_dims" not in curve.provenance["distill"] and not np.array_equal(curve.points, whole.points)
    stop_after_second_checkpoint([*run, "--out", str(tmp_path / "cut")], monkeypatch)
    assert main([*run, "--resume", "--out", str(tmp_path / "cut")]) == 0
    assert (tmp_path / "cut" / "condensed.npz").read_bytes() == (tmp_path / "whole" / "condensed.npz").read_bytes()


@pytest.mark.parametrize("options, words", [
    (["--method", "gm", "--noise-dims", "2"], "--noise-dims is an option of dd3d, not of gm"),
    (["--method", "dd3d", "--task", "parts", "--noise-dims", "2"], "a part segmentation set's parts are intervals of "
                                                                   "one noise scalar"),
])
def test_two_noise_scalars_are_refused_where_they_cannot_act(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                             options: list[str], words: str) -> None:
    assert main([*TINY, *options, "--out", str(tmp_path)]) == 2
    assert words in capsys.readouterr().err


def test_the_kept_probe_reports_the_table_its_study_shows() -> None:
    """``benchmarks/studies/condense-topo-controls-cpu/``: the table of its STUDY.md is what
    ``probe.py report`` computes from the kept ``results.json``, every row."""
    import importlib.util

    folder = Path(__file__).resolve().parents[1] / "benchmarks" / "studies" / "condense-topo-controls-cpu"
    spec = importlib.util.spec_from_file_location("topo_controls_probe", folder / "probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    table = probe.report(folder / "results.json").splitlines()
    assert len(table) == 2 + 8 and all(line in (folder / "STUDY.md").read_text().splitlines() for line in table)
