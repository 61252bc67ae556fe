"""Training augmentations of the condensation protocol, by name (:data:`AUGMENTATIONS`): scaling,
jitter and small rotations (DD3D Sec. 5 trains its evaluation networks with these three; the
paper's table of values is empty).

``protocol`` (decision 72, the ``cpu`` recipe's), per cloud, in this order: a rotation by three
small angles about x, y and z (each N(0, 0.06^2) radians clipped to +-0.18, PointNet's rotation
perturbation), a scale per axis uniform in [2/3, 3/2] (DGCNN's), and per point a jitter
N(0, 0.01^2) clipped to +-0.05 (PointNet's). Every
draw comes from the caller's generator, so a seed gives the same batch on any device and in any
number of processes.

``released`` (decision 94, the ``paper`` recipe's: DD3D's released evaluation of classification):
per cloud one scale for all three axes uniform in [0.8, 1.25], then per point the same jitter,
then the same small rotation applied as ``x @ R`` (the jitter rotated too). ``none``: the clouds as
they are (the released part-segmentation evaluation trains without augmentation).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

ANGLE_SIGMA, ANGLE_CLIP = 0.06, 0.18
SCALE_LOW, SCALE_HIGH = 2.0 / 3.0, 3.0 / 2.0
JITTER_SIGMA, JITTER_CLIP = 0.01, 0.05
RELEASED_SCALE_LOW, RELEASED_SCALE_HIGH = 0.8, 1.25


def rotations(angles: torch.Tensor) -> torch.Tensor:
    """(B, 3) angles about x, y, z -> (B, 3, 3) rotations R = Rz Ry Rx."""
    c, s = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])
    rx = torch.stack([one, zero, zero, zero, c[:, 0], -s[:, 0], zero, s[:, 0], c[:, 0]], 1).view(-1, 3, 3)
    ry = torch.stack([c[:, 1], zero, s[:, 1], zero, one, zero, -s[:, 1], zero, c[:, 1]], 1).view(-1, 3, 3)
    rz = torch.stack([c[:, 2], -s[:, 2], zero, s[:, 2], c[:, 2], zero, zero, zero, one], 1).view(-1, 3, 3)
    return rz @ ry @ rx


def augment(points: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, N, 3) clouds, each rotated, scaled and jittered as the module docstring says."""
    b = points.shape[0]
    angles = (torch.randn(b, 3, generator=generator) * ANGLE_SIGMA).clamp(-ANGLE_CLIP, ANGLE_CLIP)
    scale = torch.empty(b, 1, 3).uniform_(SCALE_LOW, SCALE_HIGH, generator=generator)
    jitter = (torch.randn(points.shape, generator=generator) * JITTER_SIGMA).clamp(-JITTER_CLIP, JITTER_CLIP)
    turn = rotations(angles).to(points)
    return (points @ turn.transpose(1, 2)) * scale.to(points) + jitter.to(points)


def released_augment(points: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, N, 3) clouds, each scaled (one factor), jittered and rotated (module docstring, ``released``)."""
    b = points.shape[0]
    scale = torch.empty(b, 1, 1).uniform_(RELEASED_SCALE_LOW, RELEASED_SCALE_HIGH, generator=generator)
    jitter = (torch.randn(points.shape, generator=generator) * JITTER_SIGMA).clamp(-JITTER_CLIP, JITTER_CLIP)
    angles = (torch.randn(b, 3, generator=generator) * ANGLE_SIGMA).clamp(-ANGLE_CLIP, ANGLE_CLIP)
    return (points * scale.to(points) + jitter.to(points)) @ rotations(angles).to(points)


def no_augment(points: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The clouds unchanged (``none``)."""
    return points


AUGMENTATIONS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "protocol": augment, "released": released_augment, "none": no_augment}
