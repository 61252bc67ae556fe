"""Device-agnostic PyTorch fast path of the distillation losses (CPU and CUDA), used by training.

A public name that ``reference/`` also exports is a twin: the same function of the same arguments
(batches of clouds as concatenated rows with END offsets), compared on fresh random inputs by
tests/test_twins.py. The other names are the persistence engine's (``fast.persistence``) and
``TopoLossJob``, ``topo_loss`` in two halves.

Several public functions share their name with the submodule defining them (``fast.tps`` is the
function in ``fast/tps.py``). ``fast.<name>`` is always the function; reach the module's other
contents with ``from fast.<name> import ...``.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any

# Public name -> defining submodule, resolved on first access (PEP 562), so that importing one
# piece does not import the others (the persistence worker processes import ``fast.persistence``
# without torch). See fast/<module>.py, or fast/persistence/, for each function's docstring.
_EXPORTS: dict[str, str] = {
    "saliency_loss": "fast.saliency",
    "kld": "fast.kld",
    "H1Engine": "fast.persistence",
    "CloudPersistence": "fast.persistence",
    "PersistencePool": "fast.persistence",
    "giotto_h1": "fast.persistence",
    "submit_diagrams": "fast.persistence",
    "compute_diagrams": "fast.persistence",
    "budget_miss_count": "fast.persistence",
    "prim_mst_edges": "fast.persistence",
    "edge_lengths": "fast.routing",
    "normalize": "fast.normalize",
    "tps": "fast.tps",
    "pwcd": "fast.pwcd",
    "sinkhorn_distance": "fast.sinkhorn",
    "persistence_image_distance": "fast.persistence_image",
    "topo_loss": "fast.topo_loss",
    "TopoLossJob": "fast.topo_loss",
    "pca_canonical": "fast.canonical",
    "sign_canonical": "fast.canonical",
    "gradient_match_distance": "fast.matching",
    "distribution_match_loss": "fast.matching",
    "generator_forward": "fast.generator",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fast' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


class _Package(types.ModuleType):
    """Keeps ``fast.<name>`` the function when the import system binds the same-named submodule.

    Importing ``fast.tps`` makes Python set the attribute ``tps`` of this package to the module;
    without this hook ``fast.tps(...)`` would then fail with "module is not callable".
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == value.__name__:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
