"""The coreset baselines pick what their rules say (train.condense.methods.coreset, decision 71): herding's
greedy mean matching against a brute-force search written apart, k-center's farthest-first
property, random's seeded draw, and the per-class assembly."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from train.condense.methods.coreset import herding_order, kcenter_order, random_order, select_per_class


def brute_herding(x: np.ndarray, count: int) -> list[int]:
    """Herding by trying every unpicked cloud in a plain loop: the one whose addition makes the
    picked mean nearest the class mean, lowest index on ties."""
    mean = x.mean(axis=0)
    picked: list[int] = []
    for k in range(1, count + 1):
        best, best_gap = -1, np.inf
        for i in range(len(x)):
            if i in picked:
                continue
            gap = np.sqrt(((x[picked + [i]].mean(axis=0) - mean) ** 2).sum())
            if gap < best_gap:
                best, best_gap = i, gap
        picked.append(best)
    return picked


@pytest.mark.parametrize("seed", range(6))
def test_herding_order_is_the_greedy_mean_matching_order_of_a_brute_force_search(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(9, 4)) * rng.uniform(0.5, 3.0, size=4)
    assert herding_order(x, 9, rng).tolist() == brute_herding(x, 9)


def test_herding_first_pick_is_the_cloud_nearest_the_mean_and_its_mean_beats_a_random_subset() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8))
    order = herding_order(x, 5, rng)
    assert order[0] == np.argmin(np.linalg.norm(x - x.mean(0), axis=1))
    herd_gap = np.linalg.norm(x[order].mean(0) - x.mean(0))
    random_gaps = [np.linalg.norm(x[rng.choice(60, 5, replace=False)].mean(0) - x.mean(0)) for _ in range(200)]
    assert herd_gap < np.min(random_gaps)


@pytest.mark.parametrize("seed", range(6))
def test_kcenter_each_pick_is_the_cloud_farthest_from_its_nearest_earlier_pick(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(30, 5))
    order = kcenter_order(x, 8, rng).tolist()
    assert len(set(order)) == 8
    assert order[0] == int(np.argmin(np.linalg.norm(x - x.mean(0), axis=1)))
    for k in range(1, 8):
        nearest = np.min(np.linalg.norm(x[:, None] - x[order[:k]][None], axis=2), axis=1)
        assert nearest[order[k]] == pytest.approx(nearest.max())


def test_kcenter_covering_radius_is_within_twice_the_best_on_a_tiny_set() -> None:
    # the greedy rule is a 2-approximation of the minimal covering radius (Gonzalez 1985)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 2))
    dist = np.linalg.norm(x[:, None] - x[None], axis=2)
    best = min(dist[:, list(c)].min(axis=1).max() for c in itertools.combinations(range(12), 3))
    greedy = dist[:, kcenter_order(x, 3, rng)].min(axis=1).max()
    assert best <= greedy <= 2 * best + 1e-12


def test_a_class_smaller_than_cpc_gives_all_its_clouds_once() -> None:
    x = np.random.default_rng(1).normal(size=(4, 3))
    for rule in (herding_order, kcenter_order, random_order):
        assert sorted(rule(x, 10, np.random.default_rng(0)).tolist()) == [0, 1, 2, 3]


def test_select_per_class_keeps_cpc_of_each_class_in_class_order_seeded() -> None:
    labels = np.array([2, 0, 1, 0, 2, 1, 0, 2, 1, 0, 2, 1])
    space = np.empty((len(labels), 0))
    chosen = select_per_class(labels, space, 2, random_order, seed=5)
    assert labels[chosen].tolist() == [0, 0, 1, 1, 2, 2]
    assert len(set(chosen.tolist())) == 6
    assert chosen.tolist() == select_per_class(labels, space, 2, random_order, seed=5).tolist()
    draws = {tuple(select_per_class(labels, space, 2, random_order, seed=s).tolist()) for s in range(10)}
    assert len(draws) > 1


def test_select_per_class_maps_a_rule_order_back_to_the_whole_set() -> None:
    labels = np.array([1, 0, 1, 0, 1])
    feats = np.array([[0.0], [5.0], [9.0], [7.0], [1.0]])
    # class 1 holds rows 0, 2, 4 (features 0, 9, 1; mean 3.33): herding picks row 4 (1 is nearest), then ...
    chosen = select_per_class(labels, feats, 1, herding_order, seed=0)
    assert chosen.tolist() == [1, 4]
