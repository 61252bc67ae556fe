"""The persistence term's strength: relative to the matching distance (decision 102), and its
non-topological controls at the same strength (decision 101).

A run with ``--topo R --topo-weight W --control C`` computes, for each class k at each outer step,
the persistence term ``W * T_k`` of reading R (:mod:`train.condense.matching.topology_term`) as the
run without the control would, and adds in its place a geometric term ``c_k`` that is not
topological, scaled so that its gradient on the synthetic parameters (the explicit clouds of GM,
the generator and sign of DD3D) has the same norm as the persistence term's at that step:

    ``s_k * c_k``,  ``s_k = ||d(W T_k)/d theta|| / ||d c_k / d theta||`` (``s_k`` a constant: no gradient)

so the control pushes the synthetic set exactly as hard as the term would, in another direction.
The controls (:data:`CONTROLS`):

- ``chamfer``: the mean over the class's synthetic clouds of the Chamfer distance to the nearest
  real cloud of the batch drawn for class k at that step (the shape reading's pairing, with the
  clouds' points in place of their diagrams);
- ``start``: the mean over the class's synthetic clouds of the Chamfer distance to the cloud each
  was at the start of the run (GM: its initial cloud; DD3D: its code drawn by the initial
  generator from a fixed noise), a pull back toward where the set began.

A run with ``--topo-ratio r`` in place of ``--topo-weight`` sets the term's strength relative to
the matching: at each class's step the term ``T_k`` (weight 1) is scaled so that its gradient on
the synthetic parameters is ``r`` times as long as that of the class's matching distance ``D_k``:

    ``s_k * T_k``,  ``s_k = r * ||d D_k / d theta|| / ||d T_k / d theta||`` (a constant, as above)

so one ``r`` means the same push against the matching for GM's clouds and DD3D's generator, whose
matching gradients differ in size; a control then takes the norm ``r * ||d D_k / d theta||``.

The Chamfer distance of clouds a (n, 3) and b (m, 3) is the mean squared distance from each point
of a to its nearest in b plus the same from b to a, in the frame the matching network sees both.
The norms of every matched step are kept (:attr:`MatchedStrength.norms`) for the record of a run.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch

from train.condense.matching.topology_term import Batch

CONTROLS = ("chamfer", "start")


def chamfer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The Chamfer distance of the clouds ``a`` (..., n, 3) and ``b`` (..., m, 3) (module docstring),
    over the leading dimensions as ``torch.cdist`` broadcasts them (also the study's shape gap,
    :func:`train.condense.studies.shape_gap.chamfer_to_nearest`). The nearest points are found
    without a gradient and their squared distances taken again from the coordinates: the gradient of
    the minima, without ``cdist``'s backward over every pair (13 clouds of 1,024 points against 13:
    0.49 s with it, 0.10 s so, on one core)."""
    lead = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a, b = a.expand(*lead, *a.shape[-2:]), b.expand(*lead, *b.shape[-2:])
    with torch.no_grad():
        distance = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")
        to_b, to_a = distance.argmin(-1), distance.argmin(-2)
    near_b = b.gather(-2, to_b.unsqueeze(-1).expand(*to_b.shape, b.shape[-1]))
    near_a = a.gather(-2, to_a.unsqueeze(-1).expand(*to_a.shape, a.shape[-1]))
    return (a - near_b).square().sum(-1).mean(-1) + (b - near_a).square().sum(-1).mean(-1)


def nearest_chamfer(real: torch.Tensor, synthetic: torch.Tensor) -> torch.Tensor:
    """``chamfer``'s ``c_k``: mean over the synthetic clouds (S, n, 3) of the Chamfer distance to the
    nearest of the real clouds (R, m, 3)."""
    real = real.to(synthetic.dtype)
    return torch.stack([chamfer(s.expand(len(real), -1, -1), real).min() for s in synthetic]).mean()


def start_chamfer(synthetic: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """``start``'s ``c_k``: mean over the synthetic clouds (S, n, 3) of the Chamfer distance to each
    one's start (S, m, 3)."""
    return torch.stack([chamfer(s, s0.to(s.dtype)) for s, s0 in zip(synthetic, start, strict=True)]).mean()


def check_ratio(ratio: float, topo: str | None, weight: float) -> None:
    """ValueError in one line unless ``ratio`` is a positive finite number given with a term
    (``topo``) and instead of its ``weight`` (0: none given)."""
    if not math.isfinite(ratio) or ratio <= 0:
        raise ValueError(f"--topo-ratio must be a positive finite number (the term's gradient norm over the "
                         f"matching's), got {ratio}")
    if topo is None:
        raise ValueError("--topo-ratio sets the persistence term's strength: give --topo, the term it scales")
    if weight:
        raise ValueError(f"--topo-ratio {ratio:g} sets the term's strength at every step in place of --topo-weight "
                         f"{weight:g}: give one of them")


def _norm(term: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
    grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
    return torch.sqrt(sum((g.double().square().sum() for g in grads if g is not None),
                          torch.zeros((), dtype=torch.float64)))


class StepNorms(NamedTuple):
    """The gradient norms of one class step on the synthetic parameters: the matching distance's
    (NaN without a ratio), the term's as given, and the control's unscaled (NaN without a control)."""

    matching: float
    term: float
    control: float


class MatchedStrength:
    """What takes the persistence term's place in a class's distance (module docstring): the term
    scaled to ``ratio`` times the matching distance's gradient norm on ``params`` (None: the term as
    weighted), or with ``kind`` a control in its place at that norm; ``starts``: class -> its
    synthetic clouds at the start (``start`` only); ``norms``: the list each step's
    :class:`StepNorms` are appended to."""

    def __init__(self, params: Sequence[torch.Tensor], kind: str | None = None, ratio: float | None = None,
                 starts: Mapping[int, torch.Tensor] | None = None, norms: list[StepNorms] | None = None) -> None:
        if kind is not None and kind not in CONTROLS:
            raise ValueError(f"the control must be one of {', '.join(CONTROLS)}, got {kind!r}")
        if kind is None and ratio is None:
            raise ValueError("a matched strength needs a control, a ratio or both")
        if kind == "start" and starts is None:
            raise ValueError("the start control needs each class's clouds at the start")
        self.kind, self.ratio, self.params, self.starts = kind, ratio, list(params), starts
        self.norms = [] if norms is None else norms

    def __call__(self, k: int, real: Batch, synthetic: Batch, distance: torch.Tensor, term: torch.Tensor
                 ) -> torch.Tensor:
        """What class ``k`` adds to its matching ``distance`` D_k in place of ``term`` (the persistence
        term at its weight; weight 1 under a ratio) at this step."""
        term_norm = _norm(term, self.params)
        matching = float("nan") if self.ratio is None else _norm(distance, self.params)
        wanted = term_norm if self.ratio is None else self.ratio * matching
        if self.kind is None:
            added, own, control = term, term_norm, float("nan")
        else:
            added = (nearest_chamfer(real[0], synthetic[0]) if self.kind == "chamfer"
                     else start_chamfer(synthetic[0], self.starts[k]))
            own = _norm(added, self.params)
            control = own.item()
        self.norms.append(StepNorms(float(matching), term_norm.item(), control))
        scale = wanted / own if own > 0 else torch.zeros((), dtype=torch.float64)
        return added * scale.to(added.dtype)


def matched_strength(kind: str | None, ratio: float | None, params: Sequence[torch.Tensor],
                     starts: Mapping[int, torch.Tensor] | None, norms: list[StepNorms] | None) -> MatchedStrength | None:
    """The run's :class:`MatchedStrength` (None: neither a control nor a ratio, the term as weighted)."""
    return None if kind is None and ratio is None else MatchedStrength(params, kind, ratio, starts, norms)
