"""Non-topological controls of the persistence term, at matched strength (decision 101).

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

The Chamfer distance of clouds a (n, 3) and b (m, 3) is the mean squared distance from each point
of a to its nearest in b plus the same from b to a, in the frame the matching network sees both.
The norms of every matched step are kept (:attr:`MatchedControl.norms`) for the record of a run.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from train.condense.matching.topology_term import Batch

CONTROLS = ("chamfer", "start")


def chamfer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The Chamfer distance of the clouds ``a`` (..., n, 3) and ``b`` (..., m, 3) (module docstring),
    over the leading dimensions as ``torch.cdist`` broadcasts them (also the study's shape gap,
    :func:`train.condense.studies.shape_gap.chamfer_to_nearest`)."""
    squared = torch.cdist(a, b).square()
    return squared.amin(-1).mean(-1) + squared.amin(-2).mean(-1)


def nearest_chamfer(real: torch.Tensor, synthetic: torch.Tensor) -> torch.Tensor:
    """``chamfer``'s ``c_k``: mean over the synthetic clouds (S, n, 3) of the Chamfer distance to the
    nearest of the real clouds (R, m, 3)."""
    real = real.to(synthetic.dtype)
    return torch.stack([chamfer(s.expand(len(real), -1, -1), real).min() for s in synthetic]).mean()


def start_chamfer(synthetic: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """``start``'s ``c_k``: mean over the synthetic clouds (S, n, 3) of the Chamfer distance to each
    one's start (S, m, 3)."""
    return torch.stack([chamfer(s, s0.to(s.dtype)) for s, s0 in zip(synthetic, start, strict=True)]).mean()


def _norm(term: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
    grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
    return torch.sqrt(sum((g.double().square().sum() for g in grads if g is not None),
                          torch.zeros((), dtype=torch.float64)))


class MatchedControl:
    """The control ``kind`` in place of the persistence term, at its gradient norm on ``params``
    (module docstring); ``starts``: class -> its synthetic clouds at the start (``start`` only);
    ``norms``: the list the matched steps' gradient norms are appended to."""

    def __init__(self, kind: str, params: Sequence[torch.Tensor], starts: Mapping[int, torch.Tensor] | None = None,
                 norms: list[tuple[float, float]] | None = None) -> None:
        if kind not in CONTROLS:
            raise ValueError(f"the control must be one of {', '.join(CONTROLS)}, got {kind!r}")
        if kind == "start" and starts is None:
            raise ValueError("the start control needs each class's clouds at the start")
        self.kind, self.params, self.starts = kind, list(params), starts
        self.norms = [] if norms is None else norms  # (the term's, the control's unscaled) a matched step

    def __call__(self, k: int, real: Batch, synthetic: Batch, term: torch.Tensor) -> torch.Tensor:
        """``s_k * c_k`` for class ``k``, ``term`` its persistence term ``W * T_k`` at this step."""
        if self.kind == "chamfer":
            control = nearest_chamfer(real[0], synthetic[0])
        else:
            control = start_chamfer(synthetic[0], self.starts[k])
        wanted, own = _norm(term, self.params), _norm(control, self.params)
        self.norms.append((wanted.item(), own.item()))
        scale = wanted / own if own > 0 else torch.zeros((), dtype=torch.float64)
        return control * scale.to(control.dtype)
