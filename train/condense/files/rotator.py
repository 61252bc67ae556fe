"""DD3D's point cloud rotator, paper Sec. 4.1: Eq. (4) (PCA) for the real clouds, then a per-axis
sign step, fixed (the released code's) or learned (Eq. (5)-(6), Algorithm 4) (decision 78).

- ``fixed``: ``fast.sign_canonical`` (axis j negated where ``mean_n sin(w0 x_nj) < 0``).
- ``learned``: Eq. (5)'s sinusoidal features ``sin(k w0 x)``, k = 1..t, without bias (odd in x, so
  the sign is sign-equivariant), averaged over the points (Eq. 6's Pool) and decoded by a learned
  vector ``w`` of length t: ``q_j = Sign(w . mean_n sin(k w0 x_nj))``. ``Sign`` has no gradient,
  so a straight-through estimator passes the gradient of ``q`` to its argument unchanged; ``w``
  starts at (1, 0, ..., 0), the fixed rule. A tie (0) keeps the axis, as decision 74.
- ``pca``: no sign step (Table 5's "+ PCA": rotation-invariant, sign-variant).
- ``none``: the identity, and no PCA either (the aligned setting's default: its clouds share the
  test split's frame; Table 5's plain PointNet on the rotated set).

Real clouds are put on their principal axes once (:func:`principal_axes`, ``fast.pca_canonical``)
unless the rotator is ``none``; the generator draws in that frame already, so synthetic clouds get
the sign step only. A condensed set lives in its rotator's frame, and so must every cloud a network
trained on it sees: :func:`to_frame` puts clouds there (PCA, then the sign step), and
:func:`frame_record` / :func:`rotator_of` write the rotator into a condensed file's provenance and
read it back (decision 86).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from fast import pca_canonical, sign_canonical
from reference.canonical import check_w0

ROTATORS = ("none", "pca", "fixed", "learned")
SETTING_ROTATOR = {"aligned": "none", "rotated": "fixed", "rotated_raw": "none"}  # each setting's default rotator
SIGN_W0 = 1.0  # Eq. 5's frequencies 1..t; decision 78: no larger w0 measured more stable under resampling
SIGN_PERIODS = 8  # t of Eq. (5), the learned sign's frequencies


def check_rotator(kind: str) -> str:
    if kind not in ROTATORS:
        raise ValueError(f"rotator {kind!r} is not one of {', '.join(ROTATORS)}")
    return kind


def rotator_kind(setting: str, kind: str | None) -> str:
    """``kind``, or the ``setting``'s default rotator where it is None (:data:`SETTING_ROTATOR`), checked."""
    return check_rotator(SETTING_ROTATOR[setting] if kind is None else kind)


def principal_axes(points: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Every (S, N, 3) cloud centred on its principal axes (Eq. 4), in chunks of ``chunk`` clouds."""
    return torch.cat([pca_canonical(points[i:i + chunk]) for i in range(0, len(points), chunk)])


class Rotator(nn.Module):
    """The sign step of the rotator (module docstring) on (B, N, 3) clouds; ``learned`` holds ``w``."""

    def __init__(self, kind: str, w0: float = SIGN_W0, periods: int = SIGN_PERIODS):
        super().__init__()
        self.kind, self.w0 = check_rotator(kind), check_w0(w0)
        if kind == "learned":
            decoder = torch.zeros(periods)
            decoder[0] = 1.0
            self.decoder = nn.Parameter(decoder)
            self.register_buffer("frequencies", torch.arange(1, periods + 1, dtype=torch.float32) * self.w0)

    def signs(self, points: torch.Tensor) -> torch.Tensor:
        """The learned rotator's (B, 1, 3) signs, with the straight-through gradient to ``w``."""
        pooled = torch.sin(points.unsqueeze(-1) * self.frequencies.to(points.dtype)).mean(dim=1, keepdim=True)
        score = pooled @ self.decoder.to(points.dtype)  # (B, 1, 3): w . Pool(H Q)
        hard = torch.where(score < 0, -1.0, 1.0).to(points.dtype)
        return hard + (score - score.detach())  # exactly Sign's value forward, the identity's gradient back

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        if self.kind in ("none", "pca"):
            return points
        if self.kind == "fixed":
            return sign_canonical(points, self.w0)
        return points * self.signs(points)


def frame_record(rotator: Rotator) -> dict[str, Any]:
    """The rotator as JSON values (a condensed file's provenance ``frame``): kind, ``w0`` and the
    learned decoder (None for the others)."""
    decoder = rotator.decoder.detach().cpu().double().tolist() if rotator.kind == "learned" else None
    return {"rotator": rotator.kind, "w0": rotator.w0, "decoder": decoder}


def rotator_of(record: dict[str, Any]) -> Rotator:
    """The rotator of a :func:`frame_record`; ValueError for a record it did not write."""
    if not isinstance(record, dict) or set(record) != {"rotator", "w0", "decoder"}:
        raise ValueError(f"a frame holds rotator, w0 and decoder, got {record!r}")
    kind, decoder = record["rotator"], record["decoder"]
    if not isinstance(kind, str) or (decoder is None) == (kind == "learned"):
        raise ValueError(f"frame {record!r}: a decoder exactly when the rotator is 'learned'")
    w0 = record["w0"]
    if isinstance(w0, bool) or not isinstance(w0, (int, float)):
        raise ValueError(f"frame {record!r}: w0 must be a number")
    if decoder is None:
        return Rotator(kind, float(w0)).eval()
    if not isinstance(decoder, list) or not decoder or not all(isinstance(v, (int, float)) for v in decoder):
        raise ValueError(f"frame {record!r}: the decoder must be a list of numbers")
    rotator = Rotator(kind, float(w0), periods=len(decoder))
    with torch.no_grad():
        rotator.decoder.copy_(torch.tensor(decoder, dtype=torch.float64))
    return rotator.eval()


@torch.no_grad()
def to_frame(points: np.ndarray, rotator: Rotator) -> np.ndarray:
    """(S, N, 3) clouds in ``rotator``'s frame: on their principal axes (Eq. 4) and through its sign
    step; unchanged for ``none``. float32 out."""
    if rotator.kind == "none":
        return points
    device = next(iter(rotator.buffers()), torch.empty(0)).device
    clouds = principal_axes(torch.from_numpy(np.ascontiguousarray(points)).to(device))
    return rotator(clouds).cpu().numpy().astype(np.float32)
