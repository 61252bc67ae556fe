"""The twin contract of the public names of ``reference`` and ``fast``.

- A name both packages export is a twin: the same function of the same arguments. The ``fast``
  twin takes the reference's arguments, in the same order and with the same defaults (batches of
  clouds as concatenated rows with END offsets in both), and may add options after them
  (``engine``, ``pool``, ``eps_dist`` of a backward, ...). tests/test_twins.py compares every twin
  on fresh random inputs; its table must list exactly these names.
- Every other public name is listed below as one-sided, with the reason: the reference's one-cloud
  forms ``<twin>_cloud`` (the twin's arguments without ``offsets``) and hand-written backward
  passes ``<twin>_backward``, and the pieces that have no twin of the same shape.
- Several functions share their name with the submodule that defines them (``reference/pwcd.py``
  defines ``pwcd``); importing the submodule must not replace the package attribute with the module.
"""
from __future__ import annotations

import importlib
import inspect
import types

import pytest

TWINS = ["distribution_match_loss", "edge_lengths", "generator_forward", "gradient_match_distance", "kld",
         "normalize", "pca_canonical", "persistence_image_distance", "pwcd", "saliency_loss", "sign_canonical",
         "sinkhorn_distance", "topo_loss", "tps"]

REFERENCE_ONLY = {
    "normalize_cloud": "the one-cloud form of normalize",
    "tps_cloud": "the one-cloud form of tps",
    "topo_loss_cloud": "the one-cloud form of topo_loss",
    "normalize_backward": "hand-written backward of normalize (fast: autograd)",
    "edge_lengths_backward": "hand-written backward of edge_lengths (fast: EdgeLengths.backward)",
    "generator_backward": "hand-written backward of generator_forward (fast: autograd)",
    "diagram_grad_to_dist_grad": "routing through the full distance matrix (fast: edge lengths only)",
    "dist_grad_to_feature_grad": "routing through the full distance matrix (fast: edge lengths only)",
    "pairwise_distances": "the full distance matrix (fast: fast.persistence computes it per cloud)",
    "rips_persistence": "readable persistence (fast: the engines behind fast.persistence)",
    "Diagram": "rips_persistence's result (fast: fast.persistence.CloudPersistence)",
    "farthest_point_sample": "the twin is train.models.objects.neighbourhood's, on (B, N, 3) batches, not END offsets",
}
FAST_ONLY = {
    "TopoLossJob": "topo_loss in two halves, so that persistence overlaps the network",
    "H1Engine": "the persistence engine's backend contract",
    "CloudPersistence": "the persistence engine's result per cloud",
    "PersistencePool": "the persistence engine's worker processes",
    "giotto_h1": "a persistence engine backend",
    "submit_diagrams": "the persistence engine's front door",
    "compute_diagrams": "the persistence engine's front door (blocking)",
    "budget_miss_count": "the count of clouds whose H1 missed its time budget",
    "prim_mst_edges": "H0 of the persistence engine",
}


def test_every_public_name_is_a_twin_or_listed_as_one_sided() -> None:
    import fast
    import reference

    assert sorted(set(reference.__all__) & set(fast.__all__)) == TWINS
    assert set(reference.__all__) - set(TWINS) == set(REFERENCE_ONLY)
    assert set(fast.__all__) - set(TWINS) == set(FAST_ONLY)


def test_the_twin_table_lists_every_twin() -> None:
    from test_twins import TABLE

    assert sorted(twin.name for twin in TABLE) == TWINS


@pytest.mark.parametrize("package", ["reference", "fast"])
def test_public_names_stay_functions_after_submodule_imports(package: str) -> None:
    pkg = importlib.import_module(package)
    for name in pkg.__all__:
        getattr(pkg, name)  # resolve lazily exported names first
    for module in ("pwcd", "tps", "normalize", "topo_loss", "saliency", "kld", "routing", "sinkhorn",
                   "persistence_image"):
        importlib.import_module(f"{package}.{module}")
    for name in pkg.__all__:
        assert not isinstance(getattr(pkg, name), types.ModuleType), f"{package}.{name} is a module"


def _parameters(package: str, name: str) -> list[inspect.Parameter]:
    return list(inspect.signature(getattr(importlib.import_module(package), name)).parameters.values())


@pytest.mark.parametrize("name", TWINS)
def test_fast_twin_takes_the_reference_arguments_in_order(name: str) -> None:
    ref, fst = _parameters("reference", name), _parameters("fast", name)
    assert [(p.name, p.default) for p in fst[: len(ref)]] == [(p.name, p.default) for p in ref]


@pytest.mark.parametrize("name", [n for n in REFERENCE_ONLY if n.endswith("_cloud")])
def test_one_cloud_form_takes_the_batch_arguments_without_offsets(name: str) -> None:
    batch = [(p.name, p.default) for p in _parameters("reference", name.removesuffix("_cloud"))]
    assert ("offsets", inspect.Parameter.empty) in batch
    assert [(p.name, p.default) for p in _parameters("reference", name)] == [a for a in batch if a[0] != "offsets"]
