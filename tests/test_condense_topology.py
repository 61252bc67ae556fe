"""The persistence term of gradient matching (decision 96, train/condense/matching/topology_term.py): its
value against the reference engine's pieces on the same inputs, its gradient against finite
differences, and a distillation with it on tiny data (provenance, exact resume, the term off
unchanged, refusals)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reference.distances import pairwise_distances
from tests.condensation_tiny import stop_after_second_checkpoint
from reference.normalize import normalize_cloud
from reference.persistence import rips_persistence
from reference.pwcd import pwcd
from reference.tps import tps_cloud
from train.condense.cli.command import main
from train.condense.files.condensed_file import read_condensed
from train.condense.matching.matching_loops import DistillSpec, fresh_network
from train.condense.methods import key_settings
from train.condense.files.rotator import Rotator, principal_axes
from train.condense.matching.topology_term import (RealDiagrams, diagram_distances, feature_term, part_shape_term,
                                                   reading_acts, shape_term, target_diagrams, topology_term)

ROOT = Path(__file__).resolve().parents[1]
M = 12  # below the clouds' sizes: TPS picks points


def _reference_diagrams(points: np.ndarray) -> list[np.ndarray]:
    if len(points) == 1:  # a single point: no finite pair (the reference engine wants two points)
        return [np.zeros((0, 2)), np.zeros((0, 2))]
    unit = normalize_cloud(points, "scale")
    picked = unit[tps_cloud(unit, M, 0)]
    return [d.pairs for d in rips_persistence(pairwise_distances(picked), maxdim=1)]


def _reference_distance(target: np.ndarray, mine: np.ndarray) -> float:
    a, b = _reference_diagrams(target), _reference_diagrams(mine)
    return sum(pwcd(a[d], b[d])[0] for d in (0, 1))


def _clouds(seed: int, count: int, n: int, width: int = 3) -> torch.Tensor:
    return torch.randn(count, n, width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("pairing", ["nearest", "mean"])
def test_the_shape_term_is_the_reference_pwcd_to_the_nearest_or_mean_real_diagram(pairing: str) -> None:
    real, synthetic = _clouds(0, 4, 20), _clouds(1, 3, 16)
    value = shape_term(real, synthetic, RealDiagrams(M), M, pairing).item()
    table = np.array([[_reference_distance(r, s) for r in real.numpy()] for s in synthetic.numpy()])
    expected = (table.min(axis=1) if pairing == "nearest" else table.mean(axis=1)).mean()
    assert value == pytest.approx(expected, rel=1e-9)
    assert table.min() > 0  # the clouds' diagrams differ: the comparison is not of zeros


@pytest.mark.parametrize("count", [5, 1])  # one synthetic cloud: an empty synthetic diagram
def test_the_feature_term_is_the_reference_pwcd_of_the_embeddings_diagrams(count: int) -> None:
    torch.manual_seed(3)
    net = fresh_network(3, torch.device("cpu")).double()
    real, synthetic = _clouds(4, 6, 16), _clouds(5, count, 16)
    value = feature_term(net, real, synthetic, M).item()
    with torch.no_grad():
        expected = _reference_distance(net.embed(real).numpy(), net.embed(synthetic).numpy())
    assert value == pytest.approx(expected, rel=1e-6) and expected > 0


@pytest.mark.parametrize("count,cut", [(3, 2), (2, 3), (4, 1), (6, 1)])  # sets of the synthetic size, or the batch
def test_the_equal_size_feature_term_is_the_mean_reference_pwcd_to_the_batchs_sets_of_that_size(count: int,
                                                                                                cut: int) -> None:
    torch.manual_seed(3)
    net = fresh_network(3, torch.device("cpu")).double()
    real, synthetic = _clouds(4, 6, 16), _clouds(5, count, 16)
    value = feature_term(net, real, synthetic, M, equal=True).item()
    with torch.no_grad():
        features, mine = net.embed(real).numpy(), net.embed(synthetic).numpy()
    size = count if cut > 1 else len(features)
    expected = np.mean([_reference_distance(features[i * size:(i + 1) * size], mine) for i in range(cut)])
    assert value == pytest.approx(expected, rel=1e-6) and expected > 0
    if cut == 1:
        assert value == feature_term(net, real, synthetic, M).item()  # the whole batch: the plain reading


def test_the_shape_terms_gradient_is_the_finite_difference_of_its_value() -> None:
    real = _clouds(6, 3, 20)
    synthetic = _clouds(7, 2, 16).requires_grad_()
    kept = RealDiagrams(M)
    shape_term(real, synthetic, kept, M).backward()
    grad = synthetic.grad.numpy()
    assert np.abs(grad).max() > 1e-3
    step = 1e-6
    for index in [(0, 0, 0), (0, 5, 1), (1, 3, 2), (1, 15, 0)]:
        values = []
        for sign in (1, -1):
            moved = synthetic.detach().clone()
            moved[index] += sign * step
            values.append(shape_term(real, moved, kept, M).item())
        assert (values[0] - values[1]) / (2 * step) == pytest.approx(grad[index], rel=1e-4, abs=1e-7)


def test_the_term_reaches_the_synthetic_points_through_torchs_gradcheck() -> None:
    real = _clouds(8, 2, 10)
    synthetic = _clouds(9, 1, 9).requires_grad_()
    kept = RealDiagrams(M)
    assert torch.autograd.gradcheck(lambda s: shape_term(real, s, kept, M, "mean"), (synthetic,), eps=1e-7,
                                    atol=1e-6)


def _parted(seed: int, count: int, n: int, parts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` clouds of ``n`` points, each point of one of ``parts`` (every cloud drawn anew)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.tensor(parts)[torch.randint(len(parts), (count, n), generator=gen)]
    return _clouds(seed, count, n), ids


def test_sets_of_different_sizes_get_the_reference_distances_in_one_call() -> None:
    sets = [_clouds(20, 1, n)[0] for n in (5, 17, 1, 2)]  # a single point: its diagrams are empty
    targets = [[_clouds(21, 1, 9)[0].numpy(), _clouds(22, 1, 14)[0].numpy()]] * len(sets)
    rows = diagram_distances(sets, [target_diagrams(t, M) for t in targets], M)
    for row, mine, wanted in zip(rows, sets, targets):
        np.testing.assert_allclose(row.numpy(), [_reference_distance(t, mine.numpy()) for t in wanted], rtol=1e-9)


def test_the_part_term_is_the_mean_over_cloud_and_part_of_the_nearest_real_diagram_of_that_part() -> None:
    """Parts 3 and 5 on both sides are compared; part 9, the real clouds' only, and part 7, the
    synthetic ones' only, are not (as DD3D's local matching); each part's points a set of their own."""
    real, synthetic = _parted(30, 4, 24, [3, 5, 9]), _parted(31, 3, 20, [3, 5, 7])
    value = part_shape_term(real, synthetic, RealDiagrams(M), M).item()
    expected = []
    for p in (3, 5):
        wanted = [r[q == p].numpy() for r, q in zip(*real)]
        for s, q in zip(*synthetic):
            expected.append(min(_reference_distance(w, s[q == p].numpy()) for w in wanted))
    assert value == pytest.approx(np.mean(expected), rel=1e-9) and min(expected) > 0
    apart = part_shape_term(real, _parted(36, 2, 20, [1, 7]), RealDiagrams(M), M)  # no part on both sides
    assert apart.item() == 0.0 and apart.dtype == real[0].dtype


def test_the_part_terms_gradient_reaches_each_parts_points_through_gradcheck() -> None:
    real, (points, parts) = _parted(32, 2, 12, [0, 1]), _parted(33, 1, 10, [0, 1])
    kept = RealDiagrams(M)
    assert torch.autograd.gradcheck(lambda s: part_shape_term(real, (s, parts), kept, M),
                                    (points.requires_grad_(),), eps=1e-7, atol=1e-6)


def test_the_shape_reading_takes_the_part_term_when_the_batches_carry_parts() -> None:
    real, synthetic = _parted(34, 3, 16, [0, 1]), _parted(35, 2, 12, [0, 1])
    term = topology_term("shape", 2.0, M)
    assert term(None, real, synthetic).item() == pytest.approx(2 * part_shape_term(real, synthetic,
                                                                                   RealDiagrams(M), M).item())
    assert term(None, (real[0], None), (synthetic[0], None)).item() == pytest.approx(
        2 * shape_term(real[0], synthetic[0], RealDiagrams(M), M).item())


def test_the_real_diagrams_keep_one_entry_a_cloud_under_the_learned_signs_and_are_the_given_clouds() -> None:
    """Under ``--rotator learned`` DD3D's real batch is the clouds on their principal axes times the
    sign step's signs, which change with the decoder every iteration: up to 8 byte patterns a cloud.
    The cache keeps one entry a cloud, and each diagram it returns is that of the cloud given."""
    clouds = principal_axes(_clouds(12, 5, 20).float())
    rotator, gen = Rotator("learned"), torch.Generator().manual_seed(0)
    kept = RealDiagrams(M)
    seen = set()
    for _ in range(24):
        with torch.no_grad():
            rotator.decoder.copy_(torch.randn(len(rotator.decoder), generator=gen))
            drawn = rotator(clouds)[torch.randperm(len(clouds), generator=gen)[:3]]
        seen.update(c.numpy().tobytes() for c in drawn)
        got = kept(drawn)
        assert len(kept.kept) <= len(clouds)
        for mine, fresh in zip(got, target_diagrams(list(drawn.double().numpy()), M)):
            for field in ("h0_pairs", "h0_death_edges", "h1_pairs", "h1_birth_edges", "h1_death_edges"):
                assert np.array_equal(getattr(mine, field), getattr(fresh, field)), field
    assert len(seen) > 2 * len(clouds)  # the signs did change: bytes alone would have kept each pattern


def test_the_real_diagrams_keep_the_most_recent_sets_up_to_their_capacity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Perturbed real batches (DD3D's part sets) never come again: the cache drops the least recently used."""
    import train.condense.matching.topology_term as term
    made: list[int] = []
    real = term.target_diagrams
    monkeypatch.setattr(term, "target_diagrams", lambda sets, m, pool=None: made.append(len(sets)) or real(sets, m, pool))
    clouds = _clouds(40, 5, 12)
    kept = RealDiagrams(M, capacity=3)
    kept(clouds[:2])
    kept(clouds[2:4])  # clouds 0..3 seen: cloud 0, the oldest, dropped
    assert len(kept.kept) == 3 and made == [2, 2]
    got = kept(clouds[[3, 0]])  # 3 is kept, 0 is made again
    assert made == [2, 2, 1] and len(kept.kept) == 3
    for mine, fresh in zip(got, real(list(clouds[[3, 0]].numpy()), M)):
        assert np.array_equal(mine.h0_pairs, fresh.h0_pairs) and np.array_equal(mine.h1_pairs, fresh.h1_pairs)
    with pytest.raises(ValueError, match="capacity must be 1 or more"):
        RealDiagrams(M, capacity=0)


@pytest.mark.parametrize("equal", [False, True])
def test_the_feature_terms_gradient_reaches_the_synthetic_points_through_the_network(equal: bool) -> None:
    torch.manual_seed(3)
    net = fresh_network(3, torch.device("cpu")).double()
    real, synthetic = _clouds(10, 6, 8), _clouds(11, 3, 6).requires_grad_()
    feature_term(net, real, synthetic, M, equal=equal).backward()
    assert synthetic.grad.abs().max() > 0
    assert torch.autograd.gradcheck(lambda s: feature_term(net, real, s, M, equal=equal), (synthetic,), eps=1e-7,
                                    atol=1e-6)


def test_a_bad_reading_or_weight_is_refused() -> None:
    assert topology_term(None, 0.0) is None
    with pytest.raises(ValueError, match="shape, feature"):
        topology_term("loops", 1.0)
    with pytest.raises(ValueError, match="--topo-weight"):
        topology_term("shape", 0.0)


TINY = ["--dataset", "shapes", "--size", "2", "--points", "16", "--device", "cpu", "--cpc", "1", "--iterations", "3"]


class Interrupted(Exception):
    """A run stopped after a checkpoint."""


@pytest.mark.parametrize("method,reading", [("gm", "shape"), ("dd3d", "shape"), ("gm", "feature"),
                                            ("dd3d", "feature_equal")])
def test_a_run_with_the_term_records_it_and_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            method: str, reading: str) -> None:
    tiny = TINY if reading == "shape" else [*TINY[:2], "--size", "3", *TINY[4:8], "--cpc", "3", *TINY[10:]]  # CPC 3:
    run = [*tiny, "--method", method, "--topo", reading, "--topo-weight", "0.5"]  # the feature readings act from 3
    assert main([*run, "--out", str(tmp_path / "whole")]) == 0
    assert main([*tiny, "--method", method, "--out", str(tmp_path / "off")]) == 0
    whole = read_condensed(tmp_path / "whole" / "condensed.npz")
    assert whole.provenance["topo"] == {"reading": reading, "weight": 0.5}
    assert not np.array_equal(whole.points, read_condensed(tmp_path / "off" / "condensed.npz").points)  # it acted
    stop_after_second_checkpoint([*run, "--out", str(tmp_path / "cut")], monkeypatch)
    assert main([*run, "--resume", "--out", str(tmp_path / "cut")]) == 0
    assert (tmp_path / "cut" / "condensed.npz").read_bytes() == (tmp_path / "whole" / "condensed.npz").read_bytes()
    other = [*run[:-1], "0.25", "--resume", "--out", str(tmp_path / "cut")]
    assert main(other) == 2  # another weight is another run


@pytest.mark.parametrize("method", ["gm", "dd3d"])
def test_a_part_segmentation_run_with_the_shape_reading_moves_its_clouds_and_resumes_exactly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    parts = [*TINY, "--task", "parts", "--method", method]
    run = [*parts, "--topo", "shape", "--topo-weight", "0.5"]
    assert main([*run, "--out", str(tmp_path / "whole")]) == 0
    assert main([*parts, "--out", str(tmp_path / "off")]) == 0
    whole, off = (read_condensed(tmp_path / n / "condensed.npz") for n in ("whole", "off"))
    assert whole.provenance["topo"] == {"reading": "shape", "weight": 0.5}
    assert np.array_equal(whole.parts, off.parts) and not np.array_equal(whole.points, off.points)
    stop_after_second_checkpoint([*run, "--out", str(tmp_path / "cut")], monkeypatch)
    assert main([*run, "--resume", "--out", str(tmp_path / "cut")]) == 0
    assert (tmp_path / "cut" / "condensed.npz").read_bytes() == (tmp_path / "whole" / "condensed.npz").read_bytes()


def test_without_the_term_the_key_and_provenance_are_todays(tmp_path: Path) -> None:
    assert set(key_settings(DistillSpec())) == {"iterations", "net_lr", "real_batch", "init", "checkpoint_every"}
    assert "topo" in json.dumps(key_settings(DistillSpec(topo="shape", topo_weight=1.0)))
    assert main([*TINY, "--method", "gm", "--out", str(tmp_path)]) == 0
    assert "topo" not in read_condensed(tmp_path / "condensed.npz").provenance


@pytest.mark.parametrize("extra,message", [
    (["--method", "gm", "--topo", "shape"], "--topo and --topo-weight go together"),
    (["--method", "gm", "--topo-weight", "1"], "--topo and --topo-weight go together"),
    (["--method", "dm", "--topo", "shape", "--topo-weight", "1"], "--topo is an option of gm, dd3d"),
    (["--method", "gm", "--topo", "shape", "--topo-weight", "-1"], "--topo-weight must be a finite number > 0"),
])
def test_the_terms_options_are_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str],
                                                   message: str) -> None:
    assert main([*TINY, *extra, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_two_processes_write_one_processs_set_with_the_term(tmp_path: Path) -> None:
    """Each rank adds the term of the classes it matches (decision 84): ``--procs 2`` writes the set of one process."""
    argv = [*TINY, "--method", "gm", "--topo", "shape", "--topo-weight", "0.5"]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    run = subprocess.run([sys.executable, "-m", "train.condense", *argv, "--procs", "2", "--out",
                          str(tmp_path / "two")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    one, two = (read_condensed(tmp_path / n / "condensed.npz") for n in ("one", "two"))
    np.testing.assert_allclose(two.points, one.points, rtol=1e-5, atol=1e-6)
    assert two.provenance["topo"] == one.provenance["topo"]


@pytest.mark.parametrize("n, moves", [(1, False), (2, False), (3, True), (4, True)])
def test_the_feature_reading_moves_a_set_from_three_clouds_a_class(n: int, moves: bool) -> None:
    """``reading_acts``' threshold, measured on the term itself: below 3 synthetic clouds a class the
    feature term's gradient is nothing but rounding (one feature has no pair; two normalised over
    their set lie 2 apart whatever they are), from 3 on it is not."""
    torch.manual_seed(n)
    net = fresh_network(3, torch.device("cpu")).eval()
    real = torch.rand(16, 32, 3, dtype=torch.float32)
    synthetic = torch.rand(n, 32, 3, dtype=torch.float32, requires_grad=True)
    grad, = torch.autograd.grad(feature_term(net, real, synthetic), synthetic, allow_unused=True)
    size = 0.0 if grad is None else float(grad.abs().max())
    assert (size > 1e-6) == moves, size
    assert reading_acts("feature", n) == reading_acts("feature_equal", n) == moves and reading_acts("shape", n)
