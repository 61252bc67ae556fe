"""Every ``fast`` function equals its ``reference`` twin of the same name: one table, one test.

``TABLE`` has one entry per public name that ``reference`` and ``fast`` share (in the style of
JAX's ``lax_reference`` tests): how to draw fresh random inputs of each input family it is run on
(``kinds``: generic inputs, exact ties, duplicated points, empty diagrams or empty selections, tiny
clouds, one homology dimension alone, an option switched on), the float64 and float32 tolerances
of the value and of the gradient, and which arguments' gradients are compared.
``test_fast_twin_matches_reference`` runs every entry on every kind, dtype and device (CUDA when
present) on inputs drawn from a hypothesis seed; ``tests/test_public_api.py`` checks that the
table covers every shared name and that the twins take the same arguments.

How one comparison runs (:func:`compare`):

- the inputs are drawn in float64 and rounded to the dtype first, so both twins get the same
  values and only the arithmetic differs; integer inputs (offsets, indices, labels) are exact;
- the reference runs in float64; a reference function returns ``(value, gradient)`` for a scalar
  loss, or the value only, with the entry's ``backward`` giving its vector-Jacobian product for a
  random cotangent (``fast`` takes the same cotangent through autograd);
- keyword arguments that only ``fast`` takes (``engine``, ...) are passed to ``fast`` only;
- the check is ``|fast - reference| <= tol * scale`` element by element, with the entry's scale
  (by default ``max |reference|``, floored); in float32 the scale is at least ``max |reference|``
  of the output, or the entry's size of the terms a gradient sums, since float32 rounding of a sum
  is relative to its largest terms (an entry-wise relative check is asked of float64 only); integer
  outputs (TPS indices) must be equal; floating outputs must have the working dtype and sit on the
  device.

Special cases are their own tests, next to the other tests of each function: exact ties where the
twins may pick different (equally valid) subgradients, the time budget, the deadline, mixed
precision, gradcheck and bad inputs (tests/test_fast_topo_loss.py, tests/test_fast_topo_parts.py,
tests/test_fast_saliency_kld.py).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from condensation_draws import (draw_distribution_match_loss, draw_generator_forward, draw_gradient_match_distance,
                                draw_pca_canonical, draw_sign_canonical)
from hypothesis import strategies as st
from scipy.special import log_softmax
from strategies import student_teacher_batch
from test_reference_saliency import gradient_scale, random_saliency_inputs

import fast
import reference
from reference.matching import GM_EPS
from reference.topo_loss import DISTANCES

Array = Union[np.ndarray, list]
Scale = Callable[[dict, Array], Union[float, np.ndarray, list]]
"""``(reference inputs, reference output) -> scale``: a number, or one array/number per array."""


def _max_abs(x: Array, floor: float) -> float:
    arrays = x if isinstance(x, list) else [x]
    return max([floor] + [float(np.max(np.abs(a), initial=0.0)) for a in arrays])


def largest(floor: float = 1e-12) -> Scale:
    """Scale ``max |reference|`` over the whole output, at least ``floor``."""
    return lambda inputs, want: _max_abs(want, floor)


def elementwise(floor: float) -> Scale:
    """Scale ``|reference| + floor`` entry by entry (a relative check with an absolute floor)."""
    return lambda inputs, want: [np.abs(a) + floor for a in want] if isinstance(want, list) else np.abs(want) + floor


def largest_plus_elementwise(floor: float) -> Scale:
    """Scale ``max(max |reference|, floor) + |reference|`` (``assert_allclose(rtol=tol, atol=tol * max)``)."""
    return lambda inputs, want: _max_abs(want, floor) + np.abs(want)


@dataclass(frozen=True)
class Twin:
    """One row of the table: a public name of both ``reference`` and ``fast``."""

    name: str
    draw: Callable[[np.random.Generator, str], dict]
    """``(rng, kind) -> keyword arguments`` (numpy arrays, floats in float64)."""
    kinds: tuple[str, ...]
    tol64: tuple[float, float]
    """(value, gradient) tolerance in float64."""
    tol32: Optional[tuple[float, float]]
    """(value, gradient) tolerance in float32; None: float64 only."""
    float64_only: tuple[str, ...] = ()
    """Kinds run in float64 only (ill-conditioned in float32, see the entry)."""
    wrt: tuple[str, ...] = ()
    """Arguments whose gradients are compared (empty: the values only)."""
    backward: Optional[Callable[[dict, np.ndarray], np.ndarray]] = None
    """Reference VJP ``(inputs, cotangent) -> gradient`` when the reference returns the value only."""
    value_scale: Scale = largest()
    grad_scale: Scale = largest()
    grad_terms: Optional[Callable[[dict, Optional[np.ndarray]], float]] = None
    """``(inputs, cotangent) -> size`` of the terms each gradient entry sums: the float32 scale is at
    least this (default: at least ``max |reference gradient|``)."""
    examples: float = 1.0
    """Share of the hypothesis profile's max_examples run per kind, dtype and device (at least 5)."""


# --- input families -----------------------------------------------------------------------------


def _sizes(rng: np.random.Generator, low: int, high: int, clouds: int = 4) -> list[int]:
    return [int(n) for n in rng.integers(low, high, size=rng.integers(1, clouds))]


def _clouds(rng: np.random.Generator, sizes: list[int], channels: int, duplicates: bool) -> np.ndarray:
    """Concatenated Gaussian clouds; with ``duplicates`` about a quarter of each cloud's rows repeat others."""
    parts = []
    for n in sizes:
        x = rng.normal(size=(n, channels))
        if duplicates and n > 2:
            src = rng.integers(n, size=max(n // 4, 1))
            x[rng.integers(n, size=len(src))] = x[src]
        parts.append(x)
    return np.concatenate(parts)


def _diagram(rng: np.random.Generator, k: int, grid: bool) -> np.ndarray:
    """(k, 2) pairs with birth <= death; on a coarse grid when ``grid`` (forces exact ties)."""
    p = rng.integers(0, 4, size=(k, 2)) / 4.0 if grid else rng.random((k, 2))
    return np.sort(p, axis=1)


def draw_pwcd(rng: np.random.Generator, kind: str) -> dict:
    k_teacher, k_student = (int(k) for k in rng.integers(1, 13, size=2))
    if kind == "empty":  # one or both diagrams empty
        k_teacher, k_student = [(0, k_student), (k_teacher, 0), (0, 0)][int(rng.integers(3))]
    grid = kind == "ties"
    return dict(teacher_pairs=_diagram(rng, k_teacher, grid), student_pairs=_diagram(rng, k_student, grid), eps_w=1e-8)


def draw_sinkhorn_distance(rng: np.random.Generator, kind: str) -> dict:
    pairs = draw_pwcd(rng, kind)
    return dict(teacher_pairs=pairs["teacher_pairs"], student_pairs=pairs["student_pairs"],
                eps=float(rng.choice([0.02, 0.05, 0.1, 0.2])))


def draw_persistence_image_distance(rng: np.random.Generator, kind: str) -> dict:
    pairs = draw_pwcd(rng, kind)
    # l2 only on the grid: l1's subgradient at an exactly zero pixel difference is 0 in both twins
    # only if both round it to exactly zero, which coinciding grid diagrams do not promise
    norm = "l2" if kind == "ties" else str(rng.choice(["l2", "l1"]))
    return dict(teacher_pairs=pairs["teacher_pairs"], student_pairs=pairs["student_pairs"], norm=norm)


def sinkhorn_grad_terms(inputs: dict, cotangent: Optional[np.ndarray]) -> float:
    """A student pair's gradient sums plan entries (at most 1 / (M + K)) times 2 |q - p|: their size."""
    P, Q = (np.asarray(inputs[k], dtype=np.float64).reshape(-1, 2) for k in ("teacher_pairs", "student_pairs"))
    return 2.0 * max(_max_abs(P, 0.0), _max_abs(Q, 0.0), 1e-12) / max(len(P) + len(Q), 1)


def terms_scale(terms: Callable[[dict, Optional[np.ndarray]], float]) -> Scale:
    """Scale ``max(max |reference|, size of the summed terms)``: exact cancellations (ties, matching
    diagrams) leave gradients far smaller than the rounding of the terms they are made of."""
    return lambda inputs, want: max(_max_abs(want, 1e-12), terms(inputs, None))


def persistence_image_grad_terms(inputs: dict, cotangent: Optional[np.ndarray]) -> float:
    """Size of the terms a student pair's gradient sums: per pixel |dL/dI| (|dw| + |w| max|dF|), with the
    pixel masses F at their bound 1, since a float32 difference of two erf values is only accurate to
    ulp(1) whatever its size."""
    from reference.persistence_image import PI_RESOLUTION, PI_SIGMA, image_domain, persistence_image

    P, Q = (np.asarray(inputs[k], dtype=np.float64).reshape(-1, 2) for k in ("teacher_pairs", "student_pairs"))
    if len(Q) == 0:
        return 0.0
    b_lo, side = image_domain(P, Q)
    diff = persistence_image(Q, b_lo, side)[0] - persistence_image(P, b_lo, side)[0]
    x, y, w = persistence_image(Q, b_lo, side)[1][:3]
    per_pixel = (2.0 * np.abs(diff) if inputs["norm"] == "l2" else np.ones_like(diff)) / PI_RESOLUTION**2
    dw = 1000.0 / (100.0 * x + 1.0) + 10.0
    max_density = 1.0 / (np.sqrt(np.pi) * PI_SIGMA * side * np.sqrt(2.0))
    return float(per_pixel.sum() * np.max(dw + 2.0 * np.abs(w) * max_density))


def draw_tps(rng: np.random.Generator, kind: str) -> dict:
    sizes = _sizes(rng, 1, 8 if kind == "tiny" else 60, clouds=5)
    x = _clouds(rng, sizes, int(rng.integers(1, 6)), duplicates=kind == "duplicates")
    return dict(feats=x, offsets=np.cumsum(sizes), m=int(rng.integers(1, 40)), seed=int(rng.integers(2**16)))


def draw_normalize(rng: np.random.Generator, kind: str) -> dict:
    sizes = _sizes(rng, 1, 3 if kind == "tiny" else 20)
    x = _clouds(rng, sizes, int(rng.integers(1, 5)), duplicates=kind == "duplicates")
    if kind == "duplicates":
        x[rng.integers(len(x))] = 0.0  # a zero vector (l2's non-differentiable point)
        # a cloud of identical points (scale's non-differentiable point); dyadic values keep its
        # mean exact, as any rounding there is amplified by 1/eps = 1e12
        x[: sizes[0]] = rng.integers(-8, 8, size=x.shape[1]) / 4.0
    return dict(feats=x, offsets=np.cumsum(sizes), mode=str(rng.choice(["scale", "l2", "none"])))


def draw_edge_lengths(rng: np.random.Generator, kind: str) -> dict:
    n = int(rng.integers(2, 30))
    x = _clouds(rng, [n], int(rng.integers(1, 6)), duplicates=kind == "duplicates")
    edges = rng.integers(n, size=(0 if kind == "empty" else int(rng.integers(1, 3 * n)), 2))
    edges = edges[edges[:, 0] != edges[:, 1]]
    edges = np.concatenate([edges, edges[: len(edges) // 3, ::-1]])  # repeated edges accumulate
    return dict(feats=x, edges=edges, eps_dist=1e-12)


def draw_topo_loss(rng: np.random.Generator, kind: str) -> dict:
    normalize, seed, dims = str(rng.choice(["scale", "l2", "none"])), int(rng.integers(2**16)), (0, 1)
    if kind in ("generic", "one_dim", "distances"):  # separated clouds, some below m (all points), some above (TPS)
        m = int(rng.integers(3, 21))
        if kind == "one_dim":  # the H0 or the H1 term alone
            dims = [(0,), (1,)][int(rng.integers(2))]
        S, T, offsets = student_teacher_batch(rng, _sizes(rng, 2, 25), m, normalize, seed)
    elif kind == "duplicates":  # any cloud, ties and duplicated points included (decision 6a)
        m, normalize = 40, "scale"
        S, T, offsets = student_teacher_batch(rng, _sizes(rng, 2, 120), m, normalize, seed,
                                              duplicates=bool(rng.integers(2)), check=False)
    elif kind == "empty":  # two or three points, or collinear points: empty H1 diagrams
        m, normalize = 8, str(rng.choice(["scale", "none"]))  # both keep a line a line
        S, T, offsets = student_teacher_batch(rng, [int(n) for n in rng.integers(2, 4, size=2)], m, normalize, seed)
        n = int(rng.integers(4, 12))
        S = np.concatenate([S, np.sort(rng.random(n))[:, None] * rng.normal(size=(1, 4)) + rng.normal(size=4)])
        T = np.concatenate([T, np.sort(rng.random(n))[:, None] * rng.normal(size=(1, 3)) + rng.normal(size=3)])
        offsets = np.append(offsets, offsets[-1] + n)
    else:  # "tiny": clouds of very different sizes, from 2 points to far above m
        m = 20
        sizes = [2, int(rng.integers(3, 6)), int(rng.integers(15, 25)), int(rng.integers(150, 300))]
        S, T, offsets = student_teacher_batch(rng, sizes, m, normalize, seed)
    # the alternatives (kind "distances", float64 only: their float32 rows are the distance twins')
    distance = str(rng.choice(DISTANCES[1:])) if kind == "distances" else "pwcd"
    return dict(student_feats=S, teacher_feats=T, offsets=offsets, m=m, seed=seed, normalize=normalize, dims=dims,
                distance=distance, sinkhorn_eps=float(rng.choice([0.05, 0.1, 0.2])),
                pi_norm=str(rng.choice(["l2", "l1"])))


def draw_saliency_loss(rng: np.random.Generator, kind: str) -> dict:
    sizes = tuple(int(n) for n in rng.choice([1, 2, 3, 17, 60, 300], size=rng.integers(1, 5)))
    return {**random_saliency_inputs(int(rng.integers(2**32)), sizes, int(rng.integers(1, 5))),
            "detach_range": kind == "detach_range"}  # decision 43


def draw_kld(rng: np.random.Generator, kind: str) -> dict:
    n = 1 if kind == "tiny" else int(rng.choice([5, 64, 700]))
    k = int(rng.integers(2, 21))
    labels_mode = "all_ignored" if kind == "empty" else str(rng.choice(["none", "some"]))
    labels = {"none": None, "some": rng.integers(-1, k, size=n), "all_ignored": np.full(n, -1)}[labels_mode]
    # class weights (decision 44) on half the labelled draws, some of them 0
    weighted = labels is not None and bool(rng.integers(2))
    class_weight = rng.uniform(0, 3, size=k) * (rng.uniform(size=k) > 0.2) if weighted else None
    return dict(student_logits=rng.normal(scale=4, size=(n, k)), teacher_logits=rng.normal(scale=4, size=(n, k)),
                labels=labels, temperature=float(rng.choice([0.5, 1.0, 2.0, 4.0])), class_weight=class_weight)


def _kld_point_weights(inputs: dict) -> np.ndarray:
    """Each point's weight in the mean: 1 or its class weight on labelled points, 0 on ignored ones."""
    labels, w = inputs["labels"], inputs["class_weight"]
    if labels is None:
        return np.ones(len(inputs["student_logits"]))
    keep = labels != -1
    return np.where(keep, 1.0 if w is None else w[np.where(keep, labels, 0)], 0.0)


def kld_loss_scale(inputs: dict, want: np.ndarray) -> float:
    """The KL sums terms p_T (log p_T - log p_S) that can cancel to a tiny result, so the loss error
    is measured against T^2 * mean sum |p_T (log p_T - log p_S)| (conditioning-aware)."""
    zs, zt, T = inputs["student_logits"], inputs["teacher_logits"], inputs["temperature"]
    w = _kld_point_weights(inputs)
    log_ps, log_pt = log_softmax(zs / T, axis=1), log_softmax(zt / T, axis=1)
    terms = w * np.sum(np.exp(log_pt) * np.abs(log_pt - log_ps), axis=1)
    return max(T * T * float(terms.sum()) / max(float(w.sum()), 1e-12), 1e-12)


def kld_grad_scale(inputs: dict, want: np.ndarray) -> float:
    """T w_i (p_S - p_T) / sum w is measured against T max w / sum w (probabilities are <= 1)."""
    w = _kld_point_weights(inputs)
    return max(_max_abs(want, 0.0), inputs["temperature"] * float(w.max(initial=0.0)) / max(float(w.sum()), 1e-12))


def gradient_match_grad_terms(inputs: dict, cotangent: Optional[np.ndarray]) -> float:
    """A row's gradient -b / den + (a.b) |b| a / (|a| den^2) sums two terms of size |b| / den each
    (den = |a| |b| + eps): their size, which exact cancellations (a row of one element) leave far
    above the gradient."""
    sizes = [0.0]
    for a, b in zip(inputs["grads_a"], inputs["grads_b"]):
        if np.ndim(a) >= 2:
            a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
            nb = np.linalg.norm(b, axis=1)
            sizes.append(float(np.max(nb / (np.linalg.norm(a, axis=1) * nb + GM_EPS))))
    return max(sizes)


GENERATOR_TENSORS = ("noise", "codes", "sine_weights", "sine_biases", "modulator_weights", "modulator_biases",
                     "out_weight")


def generator_vjp(inputs: dict, cotangent: np.ndarray) -> list[np.ndarray]:
    """``reference.generator_backward``'s gradients as one flat list, in the order of ``GENERATOR_TENSORS``."""
    grads = reference.generator_backward(**{k: inputs[k] for k in (*GENERATOR_TENSORS, "w0")}, cotangent=cotangent)
    return [a for g in grads for a in (g if isinstance(g, list) else [g])]


# --- the table ------------------------------------------------------------------------------------

TABLE: tuple[Twin, ...] = (
    Twin("pwcd", draw_pwcd, ("generic", "ties", "empty"), tol64=(1e-12, 1e-10), tol32=(1e-5, 1e-5),
         wrt=("student_pairs",), value_scale=lambda inputs, want: max(1.0, abs(float(want))),
         grad_scale=elementwise(1e-2), examples=1 / 10),
    # the twins run the same POT iterations (numpy / torch backend) and both differentiate the value
    # at the plan (decision 31)
    Twin("sinkhorn_distance", draw_sinkhorn_distance, ("generic", "ties", "empty"), tol64=(1e-10, 1e-10),
         tol32=(1e-5, 1e-5), wrt=("student_pairs",), value_scale=lambda inputs, want: max(1.0, abs(float(want))),
         grad_scale=terms_scale(sinkhorn_grad_terms), grad_terms=sinkhorn_grad_terms, examples=1 / 10),
    Twin("persistence_image_distance", draw_persistence_image_distance, ("generic", "ties", "empty"),
         tol64=(1e-12, 1e-10), tol32=(1e-5, 1e-5), wrt=("student_pairs",), value_scale=largest(1e-6),
         grad_scale=terms_scale(persistence_image_grad_terms), grad_terms=persistence_image_grad_terms,
         examples=1 / 10),
    Twin("tps", draw_tps, ("generic", "duplicates", "tiny"), tol64=(0.0, 0.0), tol32=None, examples=1 / 10),
    # float64 only: centring nearly equal points (the duplicates and tiny kinds) loses float32 digits in
    # proportion to |h| / rms, so no fixed float32 tolerance holds; fast.normalize in float32 runs in
    # the float32 rows of topo_loss.
    Twin("normalize", draw_normalize, ("generic", "duplicates", "tiny"), tol64=(1e-12, 1e-9), tol32=None,
         wrt=("feats",), backward=lambda kw, cot: reference.normalize_backward(kw["feats"], kw["offsets"], cot, kw["mode"]),
         value_scale=elementwise(1.0), grad_scale=elementwise(1.0), examples=1 / 4),
    # a feature's gradient sums cotangent x unit vector over its edges: terms of size |cotangent|
    Twin("edge_lengths", draw_edge_lengths, ("generic", "duplicates", "empty"), tol64=(1e-12, 1e-12),
         tol32=(1e-5, 1e-5), wrt=("feats",),
         backward=lambda kw, cot: reference.edge_lengths_backward(kw["feats"], kw["edges"], cot, kw["eps_dist"]),
         grad_terms=lambda kw, cot: _max_abs(cot, 0.0), examples=1 / 10),
    # float64 only: one_dim (an H1 term alone can be tiny next to the float32 rounding of the lengths
    # it is made of) and duplicates (up to 119 points per cloud: a small gradient per point next to
    # the same rounding).
    # distances: Sinkhorn OT or persistence images in place of PWCD, float64 only (the weight's
    # ln(100 b + 1) and the erf differences amplify the float32 rounding of the edge lengths; the
    # distances themselves are compared in float32 in their own rows).
    Twin("topo_loss", draw_topo_loss, ("generic", "one_dim", "duplicates", "empty", "tiny", "distances"),
         tol64=(1e-10, 1e-10), tol32=(1e-5, 1e-5), float64_only=("one_dim", "duplicates", "distances"),
         wrt=("student_feats",),
         value_scale=largest(1e-6),
         grad_scale=largest_plus_elementwise(1e-6), examples=1 / 8),
    # detach_range (decision 43) float64 only: where both maps peak at the same point, both normalised
    # values are 1 - eps / range and the sign of their difference (that point's whole gradient once
    # the range is held) is decided at float32 rounding level; the exact derivative has no such term.
    Twin("saliency_loss", draw_saliency_loss, ("generic", "detach_range"), tol64=(1e-10, 1e-10),
         tol32=(1e-5, 1e-5), float64_only=("detach_range",), wrt=("student_acts",),
         grad_scale=lambda inputs, want: gradient_scale(inputs, want), examples=1 / 10),
    Twin("kld", draw_kld, ("generic", "empty", "tiny"), tol64=(1e-10, 1e-10), tol32=(1e-5, 1e-5),
         wrt=("student_logits",), value_scale=kld_loss_scale, grad_scale=kld_grad_scale),
    # DD3D (decisions 74-76). The draws keep away from the ill-posed clouds by the margins of
    # tests/condensation_draws.py (distinct principal variances, no sign ties).
    Twin("pca_canonical", draw_pca_canonical, ("generic", "tiny", "duplicates"), tol64=(1e-10, 0.0),
         tol32=(1e-5, 0.0), examples=1 / 10),
    Twin("sign_canonical", draw_sign_canonical, ("generic", "tiny", "duplicates"), tol64=(1e-12, 0.0),
         tol32=(1e-6, 0.0), examples=1 / 10),
    # a row's term 1 - cos is rounded relative to 1, so D's value against max(1, |D|)
    Twin("gradient_match_distance", draw_gradient_match_distance, ("generic", "zero_rows", "one_dim"),
         tol64=(1e-12, 1e-10), tol32=(1e-5, 1e-5), wrt=("grads_a",),
         value_scale=lambda inputs, want: max(1.0, abs(float(want))),
         grad_scale=terms_scale(gradient_match_grad_terms), grad_terms=gradient_match_grad_terms, examples=1 / 10),
    Twin("distribution_match_loss", draw_distribution_match_loss, ("generic", "tiny", "empty"),
         tol64=(1e-12, 1e-10), tol32=(1e-5, 1e-5), wrt=("embeddings_a",), examples=1 / 10),
    # float32 rounds the first layer's argument w0 (z w + b) by ~w0 * 6e-8: the errors grow about
    # linearly with w0 (largest over 300 draws each, relative to the largest value or gradient entry:
    # 6e-7 at w0 = 1, 7.8e-6 at 30, 5.4e-5 at 100, 6.8e-5 at 400), so both scales grow with w0 / 5
    # (high_frequency: the paper's 100 for ModelNet40 and 400 for ShapeNet-part)
    Twin("generator_forward", draw_generator_forward, ("generic", "tiny", "high_frequency", "surface"),
         tol64=(1e-10, 1e-10), tol32=(1e-5, 1e-5), wrt=GENERATOR_TENSORS, backward=generator_vjp,
         value_scale=lambda inputs, want: _max_abs(want, 1e-12) * max(1.0, inputs["w0"] / 5),
         grad_scale=lambda inputs, want: _max_abs(want, 1e-12) * max(1.0, inputs["w0"] / 5), examples=1 / 10),
)
BY_NAME = {twin.name: twin for twin in TABLE}


# --- running one comparison ---------------------------------------------------------------------


def _rounded(value: Any, dtype: torch.dtype) -> Any:
    """Float arrays rounded to ``dtype`` (kept as float64 numpy); lists element by element."""
    if isinstance(value, list):
        return [_rounded(v, dtype) for v in value]
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return torch.tensor(value, dtype=dtype).double().numpy()
    return value


def to_torch(value: Any, dtype: torch.dtype, device: str, requires_grad: bool = False) -> Any:
    """Numpy inputs as tensors on ``device``: floats in ``dtype``, integers as they are; lists element-wise."""
    if isinstance(value, list):
        return [to_torch(v, dtype, device, requires_grad) for v in value]
    if not isinstance(value, np.ndarray):
        return value
    if value.dtype.kind == "f":
        return torch.tensor(value, dtype=dtype, device=device, requires_grad=requires_grad)
    return torch.tensor(value, device=device)


def _flat(x: Any) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _check(got: list[np.ndarray], want: list[np.ndarray], scale: Any, tol: float, floor: float, what: str) -> None:
    """``|got - want| <= tol * max(scale, floor)`` entry by entry (integer outputs: equal)."""
    assert len(got) == len(want), f"{what}: {len(got)} outputs, the reference has {len(want)}"
    scales = scale if isinstance(scale, list) else [scale] * len(want)
    for i, (g, w, s) in enumerate(zip(got, want, scales)):
        w = np.asarray(w)
        assert g.shape == w.shape, f"{what}[{i}]: shape {g.shape}, the reference has {w.shape}"
        if w.dtype.kind in "iu":
            np.testing.assert_array_equal(g, w, err_msg=f"{what}[{i}]")
            continue
        err = np.abs(g - w)
        bad = err > tol * np.maximum(np.asarray(s), floor)
        assert not bad.any(), f"{what}[{i}]: max error {err.max()} > {tol} * scale at {np.argwhere(bad)[:3].tolist()}"


def compare(twin: Twin, inputs: dict, dtype: torch.dtype, device: str, rng: np.random.Generator) -> None:
    """Run ``fast.<name>`` and ``reference.<name>`` on ``inputs`` and check the table's claims."""
    inputs = {k: _rounded(v, dtype) for k, v in inputs.items()}
    ref_fn, fast_fn = getattr(reference, twin.name), getattr(fast, twin.name)
    ref_args = {k: v for k, v in inputs.items() if k in inspect.signature(ref_fn).parameters}
    out = ref_fn(**ref_args)
    cotangent = None
    if twin.wrt and twin.backward is None:
        want, want_grads = out
    else:
        want, want_grads = out, None
        if twin.wrt:
            cotangent = rng.normal(size=np.shape(want))
            want_grads = twin.backward(inputs, cotangent)

    args = {k: to_torch(v, dtype, device, requires_grad=k in twin.wrt) for k, v in inputs.items()}
    got = fast_fn(**args)
    for t in _flat(got):
        assert t.device.type == device, f"{twin.name} output on {t.device}, inputs on {device}"
        if t.is_floating_point():
            assert t.dtype == dtype, f"{twin.name} output dtype {t.dtype}, inputs {dtype}"
    (tol_value, tol_grad), float32 = (twin.tol32, True) if dtype == torch.float32 else (twin.tol64, False)
    _check([t.detach().cpu().double().numpy() if t.is_floating_point() else t.cpu().numpy() for t in _flat(got)],
           _flat(want), twin.value_scale(inputs, want), tol_value, _max_abs(want, 0.0) if float32 else 0.0,
           f"{twin.name} value")
    if not twin.wrt:
        return
    if got.requires_grad:  # a loss that does not depend on the input (e.g. an empty diagram) has no graph
        got.backward(None if cotangent is None else torch.tensor(cotangent, dtype=got.dtype, device=device))
    leaves = [t for name in twin.wrt for t in _flat(args[name])]
    grads = [np.zeros(t.shape) if t.grad is None else t.grad.cpu().double().numpy() for t in leaves]
    terms = _max_abs(want_grads, 0.0) if twin.grad_terms is None else twin.grad_terms(inputs, cotangent)
    _check(grads, _flat(want_grads), twin.grad_scale(inputs, want_grads), tol_grad,
           max(terms, _max_abs(want_grads, 0.0)) if float32 else 0.0, f"{twin.name} gradient")


def _params() -> list:
    out = []
    for twin in TABLE:
        for kind in twin.kinds:
            for dtype in (torch.float64, torch.float32):
                if dtype == torch.float32 and (twin.tol32 is None or kind in twin.float64_only):
                    continue
                for device in ("cpu", "cuda"):
                    marks = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
                    out.append(pytest.param(twin, kind, dtype, device, marks=marks if device == "cuda" else (),
                                            id=f"{twin.name}-{kind}-{str(dtype)[6:]}-{device}"))
    return out


@pytest.mark.parametrize(("twin", "kind", "dtype", "device"), _params())
def test_fast_twin_matches_reference(twin: Twin, kind: str, dtype: torch.dtype, device: str) -> None:
    @settings(max_examples=max(int(settings.default.max_examples * twin.examples), 5))
    @given(seed=st.integers(0, 2**32 - 1))
    def check(seed: int) -> None:
        rng = np.random.default_rng(seed)
        compare(twin, twin.draw(rng, kind), dtype, device, rng)

    check()
