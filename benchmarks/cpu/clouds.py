"""Synthetic 64-d teacher/student feature clouds for the benchmarks (decisions 6c and 12).

Representative timings need *structured* features, like a trained teacher's (decision 6c): TPS on
unstructured 64-d features selects a near-spherical shell on which exact H1 is several times slower.
Three families:

- ``clusters``: points around ``k`` well-separated centres (semantic classes);
- ``latent``: a smooth image of a 3-d latent variable (a low-dimensional manifold) plus noise;
- ``shell``: i.i.d. Gaussian 64-d features, the unstructured worst case, reported separately.

The student's features are a fixed random smooth map of the teacher's plus noise, so the two
diagrams differ (a non-trivial PWCD) while sharing structure, as during distillation.
"""
from __future__ import annotations

import numpy as np
import torch

FAMILIES = ("clusters", "latent", "shell")
CHANNELS = 64  # decision 12: 64-channel pre-classifier embeddings for teacher and student


def teacher_features(n: int, family: str, rng: np.random.Generator, c: int = CHANNELS) -> np.ndarray:
    """(n, c) float64 teacher features of one cloud from ``family`` (see the module docstring)."""
    if n < 1:
        raise ValueError(f"a cloud needs n >= 1 points, got {n}")
    if family == "clusters":
        centres = rng.normal(size=(8, c)) * 3.0
        return centres[rng.integers(8, size=n)] + rng.normal(size=(n, c))
    if family == "latent":
        z = rng.normal(size=(n, 3))
        return np.tanh(z @ rng.normal(size=(3, c)) + rng.normal(size=c)) + 0.05 * rng.normal(size=(n, c))
    if family == "shell":
        return rng.normal(size=(n, c))
    raise ValueError(f"unknown cloud family {family!r}; choose one of {FAMILIES}")


def student_teacher(
    n: int, family: str, seed: int, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """One cloud's (student, teacher) (n, 64) feature tensors; the student requires grad."""
    rng = np.random.default_rng(seed)
    teacher = teacher_features(n, family, rng)
    mix = rng.normal(size=(CHANNELS, CHANNELS)) / np.sqrt(CHANNELS)
    student = np.tanh(teacher @ mix) + 0.1 * rng.normal(size=teacher.shape)
    return (
        torch.tensor(student, dtype=dtype, requires_grad=True),
        torch.tensor(teacher, dtype=dtype),
    )


def batch(
    b: int, n: int, family: str, seed: int, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """``b`` clouds of ``n`` points concatenated (PTv3 layout): (student, teacher, END offsets)."""
    pairs = [student_teacher(n, family, seed + i, dtype) for i in range(b)]
    student = torch.cat([s.detach() for s, _ in pairs]).requires_grad_(True)
    teacher = torch.cat([t for _, t in pairs])
    return student, teacher, [n * (i + 1) for i in range(b)]
