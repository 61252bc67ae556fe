"""Readable pure-numpy oracle of every piece of the distillation math (no torch).

One function per paper equation or algorithm. ``fast/`` holds the PyTorch twin of each under the
same name, taking the same arguments (batches of clouds as concatenated rows with END offsets),
and tests/test_twins.py compares the two on fresh random inputs. Functions the reference adds:
the one-cloud forms ``*_cloud`` that the batch functions apply per cloud, the hand-written
vector-Jacobian products ``*_backward`` of the twins whose output is not a scalar loss (``fast``
uses autograd), and the distance-matrix steps of the routing.

| paper                                   | function                                   |
|-----------------------------------------|--------------------------------------------|
| Vietoris-Rips persistence, H0/H1 (3.2.1)| ``rips_persistence``  (reference.persistence) |
| Theorem 1, Eq. (1), Algorithm 3         | ``edge_lengths`` (+ ``_backward``), ``diagram_grad_to_dist_grad``, ``dist_grad_to_feature_grad`` (reference.routing) |
| Algorithm 1 step 1 (normalisation)      | ``normalize`` (+ ``_backward``), ``normalize_cloud`` (reference.normalize) |
| Eq. (2)-(3), Algorithms 2 and 4 (PWCD)  | ``pwcd``              (reference.pwcd)     |
| Sec. 5 / Table 11 (Sinkhorn OT, decision 31) | ``sinkhorn_distance`` (reference.sinkhorn) |
| TopKD persistence images (decision 32)  | ``persistence_image_distance`` (reference.persistence_image) |
| Algorithm 5 (TPS)                       | ``tps``, ``tps_cloud`` (reference.tps)     |
| Farthest-point sampling of the object backbones (decision 67) | ``farthest_point_sample`` (reference.tps) |
| Algorithm 1 (topological distillation)  | ``topo_loss``, ``topo_loss_cloud`` (reference.topo_loss) |
| Eq. (4)-(7) (saliency alignment)        | ``saliency_loss``     (reference.saliency) |
| Sec. 3.4 (temperature-scaled KL)        | ``kld``               (reference.kld)      |
| DD3D Eq. (4) and the fixed sign step (rotator, decision 74) | ``pca_canonical``, ``sign_canonical`` (reference.canonical) |
| DD3D Eq. (10)'s D, distribution matching (decision 75) | ``gradient_match_distance``, ``distribution_match_loss`` (reference.matching) |
| DD3D Eq. (7)-(9) (point-wise generator, decision 76) | ``generator_forward`` (+ ``generator_backward``) (reference.generator) |
"""
from __future__ import annotations

# Plain eager imports: the package needs only numpy and scipy, and binding each public name after its
# submodule is imported keeps ``reference.pwcd`` the function even though ``reference/pwcd.py`` shares
# the name.
from reference.canonical import pca_canonical, sign_canonical
from reference.distances import pairwise_distances
from reference.generator import generator_backward, generator_forward
from reference.kld import kld
from reference.matching import distribution_match_loss, gradient_match_distance
from reference.normalize import normalize, normalize_backward, normalize_cloud
from reference.persistence import Diagram, rips_persistence
from reference.persistence_image import persistence_image_distance
from reference.pwcd import pwcd
from reference.routing import diagram_grad_to_dist_grad, dist_grad_to_feature_grad, edge_lengths, edge_lengths_backward
from reference.saliency import saliency_loss
from reference.sinkhorn import sinkhorn_distance
from reference.topo_loss import topo_loss, topo_loss_cloud
from reference.tps import farthest_point_sample, tps, tps_cloud

__all__ = [
    "Diagram",
    "diagram_grad_to_dist_grad",
    "dist_grad_to_feature_grad",
    "edge_lengths",
    "distribution_match_loss",
    "edge_lengths_backward",
    "farthest_point_sample",
    "generator_backward",
    "generator_forward",
    "gradient_match_distance",
    "kld",
    "normalize",
    "normalize_backward",
    "normalize_cloud",
    "pairwise_distances",
    "pca_canonical",
    "persistence_image_distance",
    "pwcd",
    "rips_persistence",
    "saliency_loss",
    "sign_canonical",
    "sinkhorn_distance",
    "topo_loss",
    "topo_loss_cloud",
    "tps",
    "tps_cloud",
]
