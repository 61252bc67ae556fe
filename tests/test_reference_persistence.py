"""reference.persistence against independent engines (ripser, gudhi, giotto-ph, scipy's MST).

Claims checked (paper Sec. 3.2.1 / Theorem 1; decisions 1-3, 6a, 6b):
- the H0/H1 diagrams equal ripser's (float32 engine: bottleneck distance <= 1e-6 relative on the
  float64 matrix, and exactly equal when both get the same float32-representable matrix) and
  gudhi's (float64: equal to 1e-9, with and without a threshold), on Gaussian, clustered,
  circle, torus, collinear, duplicated and integer-lattice clouds, N in 2..120, C in 1..64;
- every critical edge's length is its birth/death value, every death triangle's diameter is its
  death, the death edge is the triangle's maximal edge in the documented order;
- on tie-free clouds the H0 death edges are scipy's minimum spanning tree and the H1
  (birth edge, death edge) pairs are those of giotto-ph (n_threads=1) and of gudhi;
- relabelling the points relabels the critical edges and leaves the diagram unchanged;
- both reduction modes (sorted-array and dense columns) give the same diagrams;
- bad inputs raise ValueError naming the problem.
"""
from __future__ import annotations

import itertools

import gudhi
import numpy as np
import pytest
import ripser
from gph import ripser_parallel
from hypothesis import given
from hypothesis import strategies as st
from scipy.sparse.csgraph import minimum_spanning_tree

import reference.persistence as persistence
from reference import Diagram, pairwise_distances, rips_persistence
from strategies import CLOUD_KINDS, build_cloud, point_clouds, tie_free_point_clouds

FLOAT32_RTOL = 1e-6  # decisions 6a
FLOAT64_RTOL = 1e-9


def _finite_positive(pairs: np.ndarray) -> np.ndarray:
    """Finite pairs with death > birth, sorted by (death, birth)."""
    pairs = np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
    pairs = pairs[np.isfinite(pairs[:, 1]) & (pairs[:, 1] > pairs[:, 0])]
    return pairs[np.lexsort((pairs[:, 0], pairs[:, 1]))]


def _assert_same_diagram(ours: np.ndarray, theirs: np.ndarray, rtol: float, scale: float, what: str) -> None:
    a, b = _finite_positive(ours), _finite_positive(theirs)
    assert a.shape == b.shape, f"{what}: {len(a)} pairs vs {len(b)}\nours={a}\ntheirs={b}"
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * max(scale, 1e-300), err_msg=what)


def _gudhi_tree(dist: np.ndarray, threshold: float = np.inf) -> gudhi.SimplexTree:
    tree = gudhi.RipsComplex(distance_matrix=dist, max_edge_length=threshold).create_simplex_tree(max_dimension=2)
    tree.compute_persistence(homology_coeff_field=2)
    return tree


def _edge_set(edges: np.ndarray) -> set[tuple[int, int]]:
    return {(int(min(e)), int(max(e))) for e in np.asarray(edges).reshape(-1, 2)}


def _critical_edge_pairs(diagram: Diagram) -> set[tuple[tuple[int, int], tuple[int, int]]]:
    return {
        ((int(b[0]), int(b[1])), (int(d[0]), int(d[1])))
        for b, d in zip(diagram.birth_edges, diagram.death_edges)
    }


@given(point_clouds(min_n=2, max_n=120, min_dim=1, max_dim=64))
def test_diagrams_match_ripser(feats: np.ndarray) -> None:
    dist = pairwise_distances(feats)
    scale = float(dist.max())
    ours = rips_persistence(dist)
    theirs = ripser.ripser(dist, distance_matrix=True, maxdim=1)["dgms"]
    for dim in (0, 1):
        # ripser rounds distances to float32, a perturbation of at most 2**-24 * scale: by the
        # stability theorem the diagrams are that close in bottleneck distance.
        gap = gudhi.bottleneck_distance(_finite_positive(ours[dim].pairs), _finite_positive(theirs[dim]))
        assert gap <= FLOAT32_RTOL * scale, f"H{dim} bottleneck {gap} vs ripser"
    # On a float32-representable matrix both engines see identical values: same diagrams.
    dist32 = dist.astype(np.float32).astype(np.float64)
    ours32 = rips_persistence(dist32)
    theirs32 = ripser.ripser(dist32, distance_matrix=True, maxdim=1)["dgms"]
    for dim in (0, 1):
        _assert_same_diagram(ours32[dim].pairs, theirs32[dim], FLOAT32_RTOL, scale, f"H{dim} (float32 input)")


@given(point_clouds(min_n=2, max_n=120, min_dim=1, max_dim=64), st.sampled_from([None, 0.25, 0.5, 0.75, 1.0]))
def test_diagrams_match_gudhi_with_and_without_threshold(feats: np.ndarray, quantile: float | None) -> None:
    dist = pairwise_distances(feats)
    threshold = np.inf if quantile is None else float(np.quantile(dist[np.triu_indices(len(dist), 1)], quantile))
    ours = rips_persistence(dist, threshold=threshold)
    tree = _gudhi_tree(dist, threshold)
    for dim in (0, 1):
        theirs = tree.persistence_intervals_in_dimension(dim)
        _assert_same_diagram(ours[dim].pairs, theirs, FLOAT64_RTOL, float(dist.max()), f"H{dim}, threshold {threshold}")


def _check_critical_simplices(dist: np.ndarray, diagrams: list[Diagram]) -> None:
    n = len(dist)
    h0, h1 = diagrams
    for diagram in diagrams:
        k = len(diagram)
        assert diagram.pairs.shape == (k, 2) and diagram.pairs.dtype == np.float64
        assert diagram.birth_simplices.shape == (k, diagram.dim + 1)
        assert diagram.death_simplices.shape == (k, diagram.dim + 2)
        assert diagram.death_edges.shape == (k, 2) and diagram.birth_edges.shape == (k, 2)
        for name in ("birth_simplices", "death_simplices", "death_edges", "birth_edges"):
            assert getattr(diagram, name).dtype == np.int64, name
        assert np.all(diagram.pairs[:, 1] > diagram.pairs[:, 0]), "zero-persistence pair reported"
        order = np.lexsort((diagram.pairs[:, 0], diagram.pairs[:, 1]))
        np.testing.assert_array_equal(diagram.pairs[order], diagram.pairs, "pairs not sorted by (death, birth)")
        assert np.all(diagram.death_edges[:, 0] < diagram.death_edges[:, 1])
        assert np.all((diagram.death_simplices >= 0) & (diagram.death_simplices < n))
        # decisions 6b: the length of every critical edge is exactly its birth/death value.
        np.testing.assert_array_equal(dist[diagram.death_edges[:, 0], diagram.death_edges[:, 1]], diagram.pairs[:, 1])
    # H0: births at 0 on a vertex, no birth edge, death simplex = death edge (an edge).
    np.testing.assert_array_equal(h0.pairs[:, 0], 0.0)
    np.testing.assert_array_equal(h0.birth_edges, -1)
    np.testing.assert_array_equal(h0.death_simplices, h0.death_edges)
    assert len(set(h0.birth_simplices[:, 0].tolist())) == len(h0), "a vertex died twice"
    assert 0 not in h0.birth_simplices[:, 0], "vertex 0 is the oldest and never dies (elder rule)"
    # H1: birth edge = birth simplex, its length is the birth; the death triangle's diameter is
    # the death and its maximal edge (length, i, j) is the death edge.
    np.testing.assert_array_equal(h1.birth_simplices, h1.birth_edges)
    assert np.all(h1.birth_edges[:, 0] < h1.birth_edges[:, 1])
    np.testing.assert_array_equal(dist[h1.birth_edges[:, 0], h1.birth_edges[:, 1]], h1.pairs[:, 0])
    tri = h1.death_simplices
    assert np.all((tri[:, 0] < tri[:, 1]) & (tri[:, 1] < tri[:, 2])), "triangle vertices not sorted"
    for (a, b, c), death_edge, death in zip(tri.tolist(), h1.death_edges.tolist(), h1.pairs[:, 1]):
        faces = [(a, b), (a, c), (b, c)]
        assert max(dist[i, j] for i, j in faces) == death
        assert tuple(death_edge) == max(faces, key=lambda e: (dist[e], e[0], e[1]))
    assert len(_edge_set(h1.birth_edges)) == len(h1), "an edge created two classes"


@given(point_clouds(min_n=2, max_n=120, min_dim=1, max_dim=64))
def test_critical_simplices_realise_birth_and_death_values(feats: np.ndarray) -> None:
    dist = pairwise_distances(feats)
    diagrams = rips_persistence(dist)
    _check_critical_simplices(dist, diagrams)
    only_h0 = rips_persistence(dist, maxdim=0)
    assert len(only_h0) == 1
    np.testing.assert_array_equal(only_h0[0].pairs, diagrams[0].pairs)
    np.testing.assert_array_equal(only_h0[0].death_edges, diagrams[0].death_edges)


@given(tie_free_point_clouds(min_n=2, max_n=20, min_dim=1, max_dim=64))
def test_tie_free_critical_edges_match_mst_giotto_and_gudhi(feats: np.ndarray) -> None:
    dist = pairwise_distances(feats)
    h0, h1 = rips_persistence(dist)
    mst = minimum_spanning_tree(dist).tocoo()
    assert _edge_set(h0.death_edges) == _edge_set(np.stack([mst.row, mst.col], axis=1))

    gens = ripser_parallel(dist, metric="precomputed", maxdim=1, n_threads=1, return_generators=True)["gens"]
    giotto = gens[1][0].reshape(-1, 4) if len(gens[1]) else np.zeros((0, 4), dtype=np.int64)
    giotto_pairs = {
        ((min(i, j), max(i, j)), (min(k, l), max(k, l))) for i, j, k, l in giotto.tolist() if dist[k, l] > dist[i, j]
    }
    assert _critical_edge_pairs(h1) == giotto_pairs

    # gudhi pairs simplices, not edges: the maximal edge of its death triangle is the death edge.
    gudhi_pairs = set()
    for birth, death in _gudhi_tree(dist).persistence_pairs():
        if len(birth) == 2 and len(death) == 3:
            top = max(itertools.combinations(sorted(death), 2), key=lambda e: dist[e])
            if dist[top] > dist[tuple(birth)]:
                gudhi_pairs.add(((min(birth), max(birth)), top))
    assert _critical_edge_pairs(h1) == gudhi_pairs


@given(point_clouds(min_n=2, max_n=80, min_dim=1, max_dim=16), st.integers(0, 2**32 - 1))
def test_relabelling_points_relabels_critical_edges(feats: np.ndarray, seed: int) -> None:
    perm = np.random.default_rng(seed).permutation(len(feats))
    dist = pairwise_distances(feats)
    base = rips_persistence(dist)
    moved = rips_persistence(dist[np.ix_(perm, perm)])
    for dim in (0, 1):
        np.testing.assert_array_equal(_finite_positive(base[dim].pairs), _finite_positive(moved[dim].pairs))
    values = dist[np.triu_indices(len(dist), 1)]
    if np.unique(values).size == values.size:  # no exact ties: the critical edges are unique
        relabel = lambda edges: _edge_set(perm[np.asarray(edges)].reshape(-1, 2))  # noqa: E731
        assert relabel(moved[0].death_edges) == _edge_set(base[0].death_edges)
        moved_h1 = {(tuple(sorted(perm[list(b)])), tuple(sorted(perm[list(d)]))) for b, d in _critical_edge_pairs(moved[1])}
        assert moved_h1 == _critical_edge_pairs(base[1])


@pytest.mark.parametrize("mode", ["dense_after_first_addition", "sorted_arrays_only"])
@pytest.mark.parametrize("kind_seed", range(6))
def test_both_column_modes_give_the_same_diagrams(monkeypatch: pytest.MonkeyPatch, mode: str, kind_seed: int) -> None:
    feats = build_cloud(CLOUD_KINDS[kind_seed % 3 + 1], 90, 2 + kind_seed, seed=kind_seed)
    if kind_seed == 0:  # one clean circle: a single cycle whose column needs many additions
        angle = np.random.default_rng(0).uniform(0, 2 * np.pi, 150)
        feats = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    dist = pairwise_distances(feats)
    expected = rips_persistence(dist)
    if mode == "dense_after_first_addition":
        monkeypatch.setattr(persistence, "_SPARSE_ADDITIONS", 1)
        monkeypatch.setattr(persistence, "_SCAN_WINDOW", 7)
    else:
        monkeypatch.setattr(persistence, "_DENSE_MAX_BYTES", 0)
    got = rips_persistence(dist)
    for dim in (0, 1):
        np.testing.assert_array_equal(got[dim].pairs, expected[dim].pairs)
        np.testing.assert_array_equal(got[dim].death_simplices, expected[dim].death_simplices)
        np.testing.assert_array_equal(got[dim].birth_simplices, expected[dim].birth_simplices)
    tree = _gudhi_tree(dist)
    _assert_same_diagram(got[1].pairs, tree.persistence_intervals_in_dimension(1), FLOAT64_RTOL, float(dist.max()), "H1")


def test_unit_square_and_regular_hexagon_by_hand() -> None:
    square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    h0, h1 = rips_persistence(pairwise_distances(square))
    np.testing.assert_array_equal(h0.pairs, [[0.0, 1.0]] * 3)
    np.testing.assert_array_equal(h0.death_edges, [[0, 1], [0, 3], [1, 2]])  # (length, i, j) order
    np.testing.assert_array_equal(h0.birth_simplices, [[1], [3], [2]])
    np.testing.assert_allclose(h1.pairs, [[1.0, np.sqrt(2.0)]])
    np.testing.assert_array_equal(h1.birth_edges, [[2, 3]])  # the last unit edge closes the cycle
    np.testing.assert_array_equal(h1.death_edges, [[0, 2]])  # first diagonal in (length, i, j) order
    # (0, 2)'s first coface {0, 1, 2} is its apparent zero-persistence partner, so the cycle is
    # filled by the next triangle with that maximal edge that contains the birth edge.
    np.testing.assert_array_equal(h1.death_simplices, [[0, 2, 3]])

    angle = np.arange(6) * np.pi / 3
    hexagon = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    dist = pairwise_distances(hexagon)
    h0, h1 = rips_persistence(dist)
    assert len(h0) == 5 and len(h1) == 1
    np.testing.assert_allclose(h1.pairs, [[1.0, np.sqrt(3.0)]], rtol=1e-12)


def test_enclosing_radius_cut_keeps_late_deaths() -> None:
    # Two far-apart points plus a small cycle: a threshold below the cycle's death makes it
    # essential (dropped); the default keeps it because it dies before the enclosing radius.
    angle = np.arange(8) * np.pi / 4
    feats = np.concatenate([np.stack([np.cos(angle), np.sin(angle)], axis=1), [[0.0, 10.0]]])
    dist = pairwise_distances(feats)
    h1 = rips_persistence(dist)[1]
    assert len(h1) == 1 and h1.pairs[0, 1] < dist.max(axis=1).min()
    assert len(rips_persistence(dist, threshold=float(h1.pairs[0, 0]))[1]) == 0
    h0_cut = rips_persistence(dist, threshold=2.0)[0]
    assert len(h0_cut) == 7, "the far point's merge lies above the threshold: essential, dropped"


def test_identical_points_give_empty_diagrams() -> None:
    for diagram in rips_persistence(np.zeros((5, 5))):
        assert len(diagram) == 0 and diagram.pairs.shape == (0, 2)
        assert diagram.death_simplices.shape == (0, diagram.dim + 2)


def test_diagram_arrays_are_read_only() -> None:
    h0 = rips_persistence(pairwise_distances(np.arange(3.0)[:, None]))[0]
    with pytest.raises(ValueError):
        h0.pairs[0, 1] = 5.0


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_points_raise(n: int) -> None:
    with pytest.raises(ValueError, match="at least 2 points"):
        rips_persistence(np.zeros((n, n)))
    if n:
        with pytest.raises(ValueError, match="at least 2 points"):
            rips_persistence(pairwise_distances(np.ones((n, 3))))


_GOOD = pairwise_distances(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]))


def _with(i: int, j: int, value: float) -> np.ndarray:
    bad = _GOOD.copy()
    bad[i, j] = value
    return bad


@pytest.mark.parametrize(
    ("dist", "kwargs", "message"),
    [
        (np.zeros((3, 2)), {}, "square"),
        (np.zeros(4), {}, "square"),
        (_with(0, 1, 7.0), {}, "not symmetric"),
        (_with(0, 1, np.nan), {}, "NaN/Inf"),
        (_with(1, 2, np.inf), {}, "NaN/Inf"),
        (-_GOOD, {}, "negative"),
        (_with(1, 1, 0.5), {}, "nonzero diagonal"),
        (_GOOD, {"maxdim": 2}, "maxdim must be 0 or 1"),
        (_GOOD, {"maxdim": -1}, "maxdim must be 0 or 1"),
        (_GOOD, {"maxdim": 1.0}, "maxdim must be 0 or 1"),
        (_GOOD, {"maxdim": True}, "maxdim must be 0 or 1"),
        (_GOOD, {"threshold": np.nan}, "threshold"),
        (_GOOD, {"threshold": -1.0}, "threshold"),
    ],
)
def test_bad_distance_matrices_raise_value_error(dist: np.ndarray, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rips_persistence(dist, **kwargs)


@pytest.mark.parametrize(
    ("feats", "message"),
    [
        (np.array([[0.0, np.nan], [1.0, 1.0]]), "feats contains 1 NaN/Inf"),
        (np.array([[0.0, np.inf]]), "feats contains 1 NaN/Inf"),
        (np.zeros(3), r"\(N, C\)"),
        (np.zeros((0, 3)), r"\(N, C\)"),
    ],
)
def test_bad_features_raise_value_error(feats: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pairwise_distances(feats)


@given(point_clouds(min_n=1, max_n=40, min_dim=1, max_dim=64))
def test_pairwise_distances_are_exact_symmetric_euclidean(feats: np.ndarray) -> None:
    dist = pairwise_distances(feats)
    np.testing.assert_array_equal(dist, dist.T)
    np.testing.assert_array_equal(np.diag(dist), 0.0)
    expected = np.linalg.norm(feats[:, None, :] - feats[None, :, :], axis=-1)
    np.testing.assert_allclose(dist, expected, rtol=1e-15, atol=0)
