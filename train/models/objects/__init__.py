"""Object point-cloud backbones (classification and part segmentation), plain PyTorch on CPU and CUDA.

The networks the dataset distillation task trains and evaluates (DD3D, its Sec. 5.1 and Appendix
E; docs/object-backbones.md gives every configuration and its parameter count against its paper).
It imports ``train.models.ptv3`` (for the PTv3 student) and nothing above the models room.

The API::

    model = build_object_model("pointnet", num_classes=40)                 # classification
    logits = model(points)                      # (B, N, 3) float -> (B, 40)
    model = build_object_model("pointnet", num_classes=16, task="parts", num_parts=50)
    logits = model(points, category)            # (B, N, 3), (B, 16) one-hot -> (B, N, 50)

Names (``CLASSIFIERS``, ``PART_SEGMENTERS``): ``pointnet`` (the paper's lightweight PointNet, the
distillation network; instance norm for classification, batch norm for parts), ``pointnet2``
(PointNet++ SSG; classification and parts), ``dgcnn``, ``pct``, ``pointmlp``, ``pointnext``
(PointNeXt-S) and ``ptv3_student`` (this project's PTv3 student with a pooled classifier).
Sampling counts are strides of the input's point count (decision 67): 1,024 points per cloud give
each paper's configuration. Every cloud of a batch is processed on its own (in ``eval()`` a cloud's
logits do not depend on the rest of its batch); ``pointnet``, ``dgcnn`` and ``ptv3_student`` give
the same logits for any order of a cloud's points, the networks that sample from index 0
(``pointnet2``, ``pct``, ``pointmlp``, ``pointnext``) do not. The lightweight PointNet's
``embed(points)`` is its (B, 1024) global feature (a feature space for the coreset baselines).

Modules: ``neighbourhood`` (farthest-point sampling, k nearest neighbours, ball query, gathering,
interpolation: written once, shared), ``layers`` (shared perceptrons and the classifier head), one
module per network, ``build`` (``build_object_model``).
"""
from __future__ import annotations

from train.models.objects.build import CLASSIFIERS, PART_SEGMENTERS, TASKS, build_object_model
from train.models.objects.neighbourhood import ball_query, farthest_point_sample, gather_points, interpolate, knn

__all__ = ["CLASSIFIERS", "PART_SEGMENTERS", "TASKS", "ball_query", "build_object_model", "farthest_point_sample",
           "gather_points", "interpolate", "knn"]
