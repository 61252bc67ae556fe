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

# Plain eager imports: the package needs only numpy and scipy, and binding each public name after its
# submodule is imported keeps ``reference.pwcd`` the function even though ``reference/pwcd.py`` shares
# the name.
from reference.distances import pairwise_distances
from reference.kld import kld
from reference.normalize import normalize
from reference.persistence import Diagram, rips_persistence
from reference.pwcd import pwcd
from reference.routing import diagram_grad_to_dist_grad, dist_grad_to_feature_grad
from reference.saliency import saliency_loss
from reference.topo_loss import topo_loss, topo_loss_batch
from reference.tps import tps

__all__ = [
    "Diagram",
    "diagram_grad_to_dist_grad",
    "dist_grad_to_feature_grad",
    "kld",
    "normalize",
    "pairwise_distances",
    "pwcd",
    "rips_persistence",
    "saliency_loss",
    "topo_loss",
    "topo_loss_batch",
    "tps",
]
