"""DD3D (decision 78): the generator module is the twin's forward with its own weights, draws clouds
at any resolution point by point, and its training lowers Eq. 10's distance on fixed probe networks
(tests/condensation_tiny.py); the rotator's output does not depend on a rotation or reflection
of its input (checked against the reference twins), its learned sign gets its gradient through
the straight-through estimator; ``python -m train.condense`` keeps the generator, and ``sample``
draws the set again at any resolution."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import reference
from tests.condensation_draws import anisotropic_cloud, random_orthogonal, sign_well_posed
from tests.condensation_tiny import CPU, probe, tiny_set
from train.condense.cli.command import main
from train.condense.files.condensed_file import read_condensed
from train.condense.methods.dd3d import GENERATOR_NAME, distill_dd3d, draw_set, load_generator
from train.condense.matching.generator import DATASET_W0, PointGenerator
from train.condense.matching.matching_loops import DistillSpec
from train.condense.files.rotator import SIGN_W0, Rotator, principal_axes


def test_the_generator_module_computes_the_reference_forward_with_its_weights() -> None:
    torch.manual_seed(0)
    gen = PointGenerator(clouds=3, w0=100.0, width=16).double()
    noise, index = torch.rand(2, 7, dtype=torch.float64), torch.tensor([2, 0])
    want = reference.generator_forward(
        noise.numpy(), gen.codes.weight[index].detach().numpy(), [s.weight.detach().numpy() for s in gen.sines],
        [s.bias.detach().numpy() for s in gen.sines], [m.weight.detach().numpy() for m in gen.modulators],
        [m.bias.detach().numpy() for m in gen.modulators], gen.out.weight.detach().numpy(), 100.0)
    np.testing.assert_allclose(gen(noise, index).detach().numpy(), want, rtol=0, atol=1e-12)


def test_the_generator_draws_every_cloud_at_the_requested_resolution_point_by_point() -> None:
    torch.manual_seed(0)
    gen, rotator = PointGenerator(clouds=4, w0=100.0, width=32), Rotator("none")
    for points in (1, 50, 300):
        drawn, parts = draw_set(gen, rotator, points, seed=3)
        assert parts is None and drawn.shape == (4, points, 3) and drawn.dtype == np.float32
        assert np.abs(drawn).max() < 1.0
    noise, clouds = torch.rand(2, 20), torch.tensor([1, 3])
    whole = gen(noise, clouds).detach()
    _assert_same_points(gen(noise[:, 5:9], clouds).detach(), whole[:, 5:9])
    for wrong in (gen(noise[:, 6:10], clouds), gen(noise[:, 5:9], clouds.flip(0))):  # shifted points, swapped clouds
        with pytest.raises(AssertionError):
            _assert_same_points(wrong.detach(), whole[:, 5:9])


def _assert_same_points(part: torch.Tensor, want: torch.Tensor) -> None:
    """Point by point within 1e-5: float32 products of other shapes differ in their last bits (3.7e-7 on
    an AVX-512 Xeon), two different points of this generator by more than 2e-3."""
    np.testing.assert_allclose(part.numpy(), want.numpy(), rtol=0, atol=1e-5)


def _unit_cloud(rng: np.random.Generator, rotator: Rotator) -> np.ndarray:
    """A cloud in the unit sphere whose frame and sign step are well-posed (margins 0.05 and 1e-3)."""
    while True:
        cloud = anisotropic_cloud(rng, int(rng.integers(64, 200)))
        cloud = (cloud - cloud.mean(axis=0)) / np.linalg.norm(cloud - cloud.mean(axis=0), axis=1).max()
        canonical = reference.pca_canonical(cloud[None])[0]
        if rotator.kind == "fixed" and sign_well_posed(canonical, SIGN_W0):
            return cloud
        if rotator.kind == "learned":
            pooled = np.sin(canonical[:, :, None] * rotator.frequencies.double().numpy()).mean(axis=0)
            if np.abs(pooled @ rotator.decoder.detach().double().numpy()).min() >= 1e-3:  # far from a tie
                return cloud


@pytest.mark.parametrize("kind", ["fixed", "learned"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_rotators_output_is_invariant_to_a_rotation_or_reflection_of_its_input(kind: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rotator = Rotator(kind).double()
    if kind == "learned":
        with torch.no_grad():
            rotator.decoder.copy_(torch.from_numpy(rng.normal(size=rotator.decoder.shape)))
    cloud = _unit_cloud(rng, rotator)
    moved = np.stack([cloud @ random_orthogonal(rng) + rng.normal(scale=0.3, size=3) for _ in range(4)])
    got = rotator(principal_axes(torch.from_numpy(moved))).detach().numpy()
    want = rotator(principal_axes(torch.from_numpy(cloud[None]))).detach().numpy()
    np.testing.assert_allclose(got, np.broadcast_to(want, got.shape), atol=1e-9)
    if kind == "fixed":  # the twins' canonical frame
        np.testing.assert_allclose(want[0], reference.sign_canonical(reference.pca_canonical(cloud[None]), SIGN_W0)[0],
                                   atol=1e-9)


def test_the_learned_sign_gets_its_gradient_through_the_straight_through_estimator() -> None:
    torch.manual_seed(0)
    rotator = Rotator("learned").double()
    points, weights = torch.rand(2, 30, 3, dtype=torch.float64) - 0.5, torch.randn(2, 30, 3, dtype=torch.float64)
    out = rotator(points)
    pooled = torch.sin(points.unsqueeze(-1) * rotator.frequencies.double()).mean(dim=1)  # (B, 3, t)
    signs = torch.where(pooled @ rotator.decoder.detach() < 0, -1.0, 1.0).double()
    torch.testing.assert_close(out, points * signs[:, None, :], rtol=0, atol=0)  # the forward is Sign's
    (out * weights).sum().backward()
    want = torch.einsum("bj,bjt->t", (points * weights).sum(dim=1), pooled)  # d/dw of sum(c * x * (w . pooled))
    assert rotator.decoder.grad is not None and rotator.decoder.grad.abs().max() > 0
    torch.testing.assert_close(rotator.decoder.grad, want, rtol=1e-12, atol=1e-12)
    assert list(Rotator("fixed").parameters()) == []


def test_dd3d_lowers_the_matching_distance_of_its_drawn_clouds(tmp_path: Path) -> None:
    tiny = tiny_set()
    torch.manual_seed(0)  # the run's generator before training: the same seed, built first
    start, _ = draw_set(PointGenerator(3, DATASET_W0["shapes"]), Rotator("none"), 32, seed=0)
    points, labels, _, history = distill_dd3d(tiny, 1, 0, DistillSpec(iterations=10), CPU, tmp_path, Rotator("none"))
    assert np.array_equal(labels, [0, 1, 2]) and len(history) == 10
    before, after = probe(tiny, start, labels, "gm"), probe(tiny, points, labels, "gm")
    assert after < 0.95 * before, (before, after)


TINY = ["--dataset", "shapes", "--size", "4", "--points", "32", "--device", "cpu", "--cpc", "1", "--iterations", "1",
        "--method", "dd3d"]


def test_dd3d_keeps_its_generator_and_sample_draws_the_set_at_other_resolutions(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    for folder in (run, tmp_path / "same"):
        assert main([*TINY, "--out", str(folder)]) == 0
    assert (run / "condensed.npz").read_bytes() == (tmp_path / "same" / "condensed.npz").read_bytes()  # a fixed seed
    distilled = read_condensed(run / "condensed.npz")
    assert distilled.points.shape == (13, 32, 3) and distilled.provenance["method"] == "dd3d"
    for points in (16, 64):
        out = tmp_path / f"s{points}.npz"
        assert main(["sample", "--from", str(run), "--points", str(points), "--out", str(out)]) == 0
        drawn = read_condensed(out)
        assert drawn.points.shape == (13, points, 3)
        assert np.array_equal(drawn.labels, distilled.labels) and drawn.provenance == distilled.provenance
    # Table 4's path: distilled at 32 points, evaluated at 64 (the test split read at the file's resolution)
    evaluate = ["evaluate", "--from", str(tmp_path / "s64.npz"), "--steps", "2", "--runs", "1", "--device", "cpu"]
    assert main(evaluate) == 0
    assert "dd3d CPC 1 (13 clouds)" in capsys.readouterr().out
    again = tmp_path / "again.npz"
    assert main(["sample", "--from", str(run), "--points", "32", "--out", str(again)]) == 0
    np.testing.assert_array_equal(read_condensed(again).points, distilled.points)  # seed 0: the distilled draw
    assert main(["sample", "--from", str(tmp_path), "--points", "8", "--out", str(tmp_path / "other.npz")]) == 2
    assert "condensed.npz" in capsys.readouterr().err


def test_dd3d_with_the_learned_sign_moves_its_decoder(tmp_path: Path) -> None:
    assert main([*TINY, "--setting", "rotated", "--rotator", "learned", "--out", str(tmp_path)]) == 0
    _, rotator, _, _ = load_generator(tmp_path / GENERATOR_NAME)
    start = torch.zeros_like(rotator.decoder)
    start[0] = 1.0
    assert rotator.kind == "learned" and (rotator.decoder.detach() - start).abs().max() > 1e-4
