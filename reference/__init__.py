"""Readable pure-numpy oracle of every piece of the distillation math (no torch).

One function per paper equation or algorithm; ``fast/`` holds the PyTorch twin of each under the
same name, and the tests compare the two on fresh random inputs.

| paper                                   | function                                   |
|-----------------------------------------|--------------------------------------------|
| Vietoris-Rips persistence, H0/H1 (3.2.1)| ``rips_persistence``  (reference.persistence) |
| Theorem 1, Eq. (1), Algorithm 3         | ``diagram_grad_to_dist_grad``, ``dist_grad_to_feature_grad`` (reference.routing) |
| Eq. (2)-(3), Algorithms 2 and 4 (PWCD)  | ``pwcd``              (reference.pwcd)     |
| Algorithm 5 (TPS)                       | ``tps``               (reference.tps)      |
| Algorithm 1 (topological distillation)  | ``topo_loss``, ``topo_loss_batch`` (reference.topo_loss) |
| Eq. (4)-(7) (saliency alignment)        | ``saliency_loss``     (reference.saliency) |
| Sec. 3.4 (temperature-scaled KL)        | ``kld``               (reference.kld)      |
"""
from __future__ import annotations

import importlib
from typing import Any

# Public name -> defining submodule. Resolved on first access (PEP 562) so importing one piece
# does not import the others.
_EXPORTS = {
    "pairwise_distances": "reference.distances",
    "Diagram": "reference.persistence",
    "rips_persistence": "reference.persistence",
    "diagram_grad_to_dist_grad": "reference.routing",
    "dist_grad_to_feature_grad": "reference.routing",
    "pwcd": "reference.pwcd",
    "tps": "reference.tps",
    "normalize": "reference.normalize",
    "topo_loss": "reference.topo_loss",
    "topo_loss_batch": "reference.topo_loss",
    "saliency_loss": "reference.saliency",
    "kld": "reference.kld",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'reference' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
