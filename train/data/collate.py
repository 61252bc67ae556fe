"""Batch grid-sampled samples into the concatenated-points-with-offsets form of spec A1.

Output keys: ``coord`` (N,3) float32, ``grid_coord`` (N,3) int64, ``feat`` (N,C) float32,
``offset`` (B,) int64 END offsets, ``segment`` (N,) int64, ``inverse`` (sum n_orig,) int64 mapping
every original point to its row in the batch (so ``logits[inverse]`` predicts every original
point), ``origin_offset`` (B,) END offsets of the original points, ``origin_segment``
(sum n_orig,) int64 full-resolution labels, ``name`` list[str], ``skipped`` list[str]: the errors of
the bad scans whose slots these samples took (``--skip-bad-scans``, :mod:`train.data.base`),
``unlabelled`` list[bool]: which scans come from an unlabelled split (:mod:`train.data.mixed`);
with the camera teacher (decision 61) also ``camera_probs`` (N,K) and ``camera_features`` (N,C)
float16, NaN rows where no camera sees the point (:mod:`train.data.cameras.camera_teacher`).
:func:`collate_arrays` gives the same batch as NumPy arrays (labelling through onnxruntime, which
never imports torch, decision 55); :func:`collate` as tensors, importing torch when called.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .cameras.camera_teacher import CAMERA_KEYS

REQUIRED_KEYS = ("coord", "grid_coord", "feat", "segment", "inverse", "origin_segment", "name")


def collate(samples: Sequence[dict]) -> dict:
    """Concatenate transformed samples (each must have gone through GridSample and
    AssembleFeatures, e.g. ``build_transforms``) into one batch dict of tensors."""
    import torch

    return {key: torch.from_numpy(value) if isinstance(value, np.ndarray) else value
            for key, value in collate_arrays(samples).items()}


def collate_arrays(samples: Sequence[dict]) -> dict:
    """:func:`collate`'s batch with NumPy arrays instead of tensors."""
    if len(samples) == 0:
        raise ValueError("collate got an empty list of samples; use a batch size >= 1")
    for i, s in enumerate(samples):
        missing = [k for k in REQUIRED_KEYS if k not in s]
        if missing:
            raise ValueError(
                f"collate: sample {i} ({s.get('name')!r}) lacks {missing}; build the dataset with "
                f"transform=build_transforms(...) (GridSample and AssembleFeatures) first"
            )
        n = len(s["coord"])
        if n == 0:
            raise ValueError(f"collate: sample {i} ({s['name']!r}) has no points")
        if len(s["inverse"]) != len(s["origin_segment"]):
            raise ValueError(f"collate: sample {i} ({s['name']!r}) has {len(s['inverse'])} inverse "
                             f"entries but {len(s['origin_segment'])} original labels")
        if len(s["inverse"]) and not 0 <= int(s["inverse"].min()) <= int(s["inverse"].max()) < n:
            raise ValueError(f"collate: sample {i} ({s['name']!r}) has inverse indices outside "
                             f"[0, {n}); do not modify points after GridSample")
    counts = np.array([len(s["coord"]) for s in samples], dtype=np.int64)
    origin_counts = np.array([len(s["inverse"]) for s in samples], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])

    def cat(key: str, dtype: np.dtype) -> np.ndarray:
        return np.concatenate([np.asarray(s[key], dtype) for s in samples])

    camera = {key: cat(key, np.float16) for key in CAMERA_KEYS if _camera_rows(samples, key)}
    return {
        **camera,
        "coord": cat("coord", np.float32),
        "grid_coord": cat("grid_coord", np.int64),
        "feat": cat("feat", np.float32),
        "offset": np.cumsum(counts),
        "segment": cat("segment", np.int64),
        "inverse": np.concatenate([np.asarray(s["inverse"], np.int64) + start for s, start in zip(samples, starts)]),
        "origin_offset": np.cumsum(origin_counts),
        "origin_segment": cat("origin_segment", np.int64),
        "name": [str(s["name"]) for s in samples],
        "skipped": [message for s in samples for message in s.get("skipped", ())],
        "unlabelled": [bool(s.get("unlabelled", False)) for s in samples],
    }


def _camera_rows(samples: Sequence[dict], key: str) -> bool:
    """Whether the samples carry the camera teacher's ``key`` (all of them or none, with as many
    columns each)."""
    having = [s for s in samples if key in s]
    if not having:
        return False
    widths = {np.shape(s[key])[1] for s in having}
    if len(having) != len(samples) or len(widths) > 1:
        names = [(s["name"], np.shape(s[key])[1] if key in s else None) for s in samples]
        raise ValueError(f"collate: the samples' {key} differ (scan, columns): {names}; every scan of a batch "
                         "needs its camera file, with the same number of columns")
    return True
