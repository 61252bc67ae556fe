"""A persistence term in gradient matching: synthetic clouds that keep the real clouds' shape
(decision 96).

Gradient matching minimises, per class k, DD3D's Eq. 10 distance ``D_k`` between the real and the
synthetic gradients (:func:`train.condense.matching.matching_loops.class_distances`); with a reading on,
the class's term becomes ``D_k + w * T_k``. ``T_k`` is built from the topological distillation
paper's (seed ``000``) pieces, none new: each point set is normalised over itself (``scale``,
decision 13), subsampled by TPS to at most ``m`` points (Algorithm 5, seed :data:`TPS_SEED` for
every set, so a set's diagram is a function of the set alone), its H0/H1 Rips diagrams are
computed by the project's engine in the persistence worker pool (``fast.persistence``), and two
diagrams are compared by PWCD (Eq. 2-3, ``fast.pwcd``) summed over H0 and H1. Gradients are exact:
every synthetic birth/death value is the length of its critical edge (Theorem 1, Eq. 1,
``fast.routing.edge_lengths``), so autograd routes the PWCD gradient (Algorithm 4) to the critical
edges, the points, through the normalisation and on to the synthetic parameters.

Three readings (:data:`READINGS`):

- ``shape``: each synthetic cloud s of class k against the real clouds r of the batch drawn for
  class k at that outer step: ``T_k = mean_s min_r PWCD(dgm(r), dgm(s))``, the nearest real diagram
  (:data:`PAIRINGS`: ``mean`` takes the mean over r instead; decision 96 gives the measurement
  that chose ``nearest``). The real clouds do not change during a run, so their diagrams are
  computed once and kept by content up to the signs of the axes (:class:`RealDiagrams`: the
  learned sign step flips them anew every iteration). Rips diagrams of a scale-normalised cloud
  do not change under rotation, so the rotator's frame does not enter.
- ``feature``: RETA's set-level reading: ``T_k = PWCD(dgm(E_real), dgm(E_syn))`` where ``E`` are
  the 1,024-wide global features (``net.embed``) of the class's real batch and of its synthetic
  clouds in the matching network of that outer step. With one or two synthetic clouds a class the
  term is a constant (no gradient): one feature has no finite pair, and two features normalised
  over their set lie 2 apart whatever they are (:data:`FEATURE_SMALLEST_CPC`).
- ``feature_equal``: the same with real sets of the synthetic set's size: the real batch's
  features cut, in batch order, into the disjoint sets of n = CPC that it holds, ``T_k`` the mean
  PWCD of the synthetic diagram to theirs (the whole batch where it holds fewer than two such
  sets: the sizes cannot be made equal without leaving most of it out). A Rips diagram depends
  on its set's size (H0's deaths, a minimum spanning tree's edges, shorten as a set grows), so
  ``feature`` charges ten real clouds for being ten and pulls their features together
  (decision 98 gives the measurement).

On part segmentation the shape reading is taken part by part (:func:`part_shape_term`): per part
of the class present in both batches, as DD3D's local matching (Eq. 11), each synthetic cloud's
points of the part against the real clouds' points of it; the feature reading is refused there.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import torch

from fast.normalize import normalize
from fast.persistence import CloudPersistence, PersistencePool, default_pool, submit_tps_diagrams
from fast.pwcd import Segments, segment_pwcd
from fast.routing import edge_lengths

READINGS = ("shape", "feature", "feature_equal")
FEATURE_READINGS = ("feature", "feature_equal")  # set-level: a class's synthetic clouds' features as one set
# the feature readings act from 3 synthetic clouds a class: a set of 2 normalised over itself (centred, over its
# RMS radius) is 2 points 2 apart whatever they are, so its diagram is fixed and the term's gradient 0 (measured:
# 5e-15 at 2 points, 3e-3 at 3)
FEATURE_SMALLEST_CPC = 3
PART_READINGS = ("shape",)  # on part segmentation sets (the part network has no class feature to read)
PAIRINGS = ("nearest", "mean")
DEFAULT_M = 128  # TPS budget of the term (decision 96: the share of an outer iteration it costs)
TPS_SEED = 0
DIMS = (0, 1)  # H0 and H1, summed
EPS_W = 1e-8  # PWCD's weight stabiliser (fast.pwcd's default)

Batch = tuple[torch.Tensor, "torch.Tensor | None"]  # (B, N, 3) clouds and, for part segmentation, (B, N) part ids
Term = Callable[[torch.nn.Module, Batch, Batch], torch.Tensor]
"""(the matching network, class k's real batch, its synthetic batch) -> w * T_k."""


def _start(sets: Sequence[np.ndarray], m: int, pool: PersistencePool) -> list[tuple]:
    """Each (n, C) float64 set normalised over itself; TPS and its diagrams started in the pool."""
    started = []
    for points in sets:
        unit = normalize(torch.from_numpy(points), [len(points)]).numpy()
        rows, diagrams = submit_tps_diagrams([unit], m, TPS_SEED, pool=pool, name="condensation set")
        started.append((rows[0], diagrams[0]))
    return started


def target_diagrams(sets: Sequence[np.ndarray], m: int, pool: PersistencePool | None = None) -> list[CloudPersistence]:
    """The diagrams of each (n, C) set (no gradient), normalised and subsampled as the module says."""
    started = _start([np.asarray(s, dtype=np.float64) for s in sets], m, default_pool() if pool is None else pool)
    return [diagrams.result() for _, diagrams in started]


def _pairs(x: torch.Tensor, d: CloudPersistence, start: int) -> list[torch.Tensor]:
    """The H0 and H1 (birth, death) pairs of ``d`` as lengths of its critical edges among the rows
    ``x[start:]``."""
    def lengths(edges: np.ndarray) -> torch.Tensor:
        return edge_lengths(x, torch.from_numpy(edges + start))
    h0, births, deaths = lengths(d.h0_death_edges), lengths(d.h1_birth_edges), lengths(d.h1_death_edges)
    return [torch.stack([torch.zeros_like(h0), h0], 1), torch.stack([births, deaths], 1)]


def diagram_distances(sets: Sequence[torch.Tensor], targets: Sequence[Sequence[CloudPersistence]], m: int,
                      pool: PersistencePool | None = None) -> list[torch.Tensor]:
    """Per set b of ``sets`` ((n_b, C) each, sizes free; a (B, n, C) tensor is B sets),
    differentiable in it, the (T_b,) PWCD (H0 + H1) of its diagram to each diagram of
    ``targets[b]``: every pair of diagrams of every set in one ``segment_pwcd`` (a few operators
    whatever the number of pairs)."""
    pool = default_pool() if pool is None else pool
    started = _start([s.detach().to(torch.float64).cpu().numpy() for s in sets], m, pool)
    counts = np.array([len(s) for s in sets])
    ends = np.cumsum(counts)
    picked = [rows.result() + start for (rows, _), start in zip(started, ends - counts)]
    x = normalize(torch.cat(list(sets)), ends, rows=torch.from_numpy(np.concatenate(picked)).to(sets[0].device))
    base = np.cumsum([0] + [len(p) for p in picked[:-1]])
    mine = [_pairs(x, diagrams.result(), start) for (_, diagrams), start in zip(started, base)]
    sizes = [len(q) for qs in mine for q in qs]
    first = np.cumsum([0] + sizes[:-1]).reshape(len(mine), len(DIMS))
    teacher, student, t_sizes, s_sizes = [], [], [], []
    for b, wanted in enumerate(targets):
        for target in wanted:
            for d, pairs in enumerate((target.h0_pairs, target.h1_pairs)):
                teacher.append(pairs)
                t_sizes.append(len(pairs))
                student.append(first[b, d] + np.arange(sizes[b * len(DIMS) + d]))
                s_sizes.append(sizes[b * len(DIMS) + d])
    q = torch.cat([q for qs in mine for q in qs])[torch.from_numpy(np.concatenate(student)).to(x.device)]
    p = torch.from_numpy(np.concatenate(teacher)).to(q)
    values = segment_pwcd(p, q, _segments(t_sizes, q.device), _segments(s_sizes, q.device), EPS_W)
    return list(values.view(-1, len(DIMS)).sum(1).split([len(t) for t in targets]))


def _segments(sizes: list[int], device: torch.device) -> Segments:
    ids, local = Segments.host_index(sizes)
    return Segments(sizes, torch.from_numpy(ids).to(device), torch.from_numpy(local).to(device))


def sign_free_key(cloud: np.ndarray) -> bytes:
    """A (n, 3) cloud's bytes with each axis signed so that its first non-zero coordinate is positive
    (zeros as +0): equal for exactly the clouds that differ by negated axes. Negation is exact in
    floating point, so such clouds have the same normalised points but for signs, the same
    distances, hence the same TPS rows and diagrams, bit for bit."""
    signs = np.array([np.sign(column[np.flatnonzero(column)[0]]) if column.any() else 1.0 for column in cloud.T])
    return (cloud * signs + 0.0).tobytes()


KEPT_DIAGRAMS = 16_384  # real sets whose diagrams a run keeps: ~5 KB each at M = 128, about 80 MB


class RealDiagrams:
    """The diagrams of real clouds, computed once per cloud and kept, by the cloud up to the signs
    of its axes (:func:`sign_free_key`): a real batch under the learned sign step (DD3D, Eq. 5-6)
    is the clouds on their principal axes with signs that change every iteration, so the cache
    holds at most one entry per real cloud of the run, and one diagram serves every sign. At most
    ``capacity`` sets are kept, the least recently used dropped first: DD3D's real part batches are
    perturbed at every draw (its released augmentation), so their sets never come again and an
    unbounded cache would grow with every iteration."""

    def __init__(self, m: int, pool: PersistencePool | None = None, capacity: int = KEPT_DIAGRAMS) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be 1 or more, got {capacity}")
        self.m, self.pool, self.capacity = m, pool, capacity
        self.kept: OrderedDict[bytes, CloudPersistence] = OrderedDict()

    def __call__(self, clouds: Sequence[torch.Tensor]) -> list[CloudPersistence]:
        host = [c.detach().to(torch.float64).cpu().numpy() for c in clouds]
        keys = [sign_free_key(c) for c in host]
        new = {k: c for k, c in zip(keys, host) if k not in self.kept}
        found = dict(zip(new, target_diagrams(list(new.values()), self.m, self.pool)))
        found.update((k, self.kept[k]) for k in keys if k not in found)
        for k in keys:  # the batch's sets become the most recent
            self.kept[k] = found[k]
            self.kept.move_to_end(k)
        while len(self.kept) > self.capacity:
            self.kept.popitem(last=False)
        return [found[k] for k in keys]


def shape_term(real: torch.Tensor, synthetic: torch.Tensor, diagrams: Callable[[torch.Tensor], list[CloudPersistence]],
               m: int = DEFAULT_M, pairing: str = "nearest", pool: PersistencePool | None = None) -> torch.Tensor:
    """``T_k`` of the shape reading: the mean over the synthetic clouds of their PWCD to the nearest
    (or, ``pairing="mean"``, the mean) real diagram; ``diagrams`` gives the real clouds' diagrams."""
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")
    targets = diagrams(real)
    rows = diagram_distances(synthetic, [targets] * len(synthetic), m, pool)
    pick = (lambda v: v.min()) if pairing == "nearest" else (lambda v: v.mean())
    return torch.stack([pick(v) for v in rows]).mean()


def part_shape_term(real: Batch, synthetic: Batch, diagrams: Callable[[Sequence[torch.Tensor]], list[CloudPersistence]],
                    m: int = DEFAULT_M, pool: PersistencePool | None = None) -> torch.Tensor:
    """``T_k`` of the shape reading on a part set: per part p of the class present on both sides
    (as DD3D's local matching, Eq. 11), each synthetic cloud's points of part p against the real
    clouds' points of part p, its PWCD to the nearest of their diagrams; the mean over the (cloud,
    part) pairs (zero where no part is on both sides). Each part's points are a set of their own,
    normalised over themselves."""
    (real_points, real_parts), (points, parts) = real, synthetic
    shared = sorted(set(real_parts.unique().tolist()) & set(parts.unique().tolist()))
    if not shared:  # no part on both sides: nothing to compare, as the local matching skips the class
        return torch.zeros((), dtype=points.dtype, device=points.device)
    real_sets = [[r[q == p] for r, q in zip(real_points, real_parts) if bool((q == p).any())] for p in shared]
    # every part's real sets in one call, so that the pool computes their diagrams together
    found = iter(diagrams([s for sets in real_sets for s in sets]))
    mine, targets = [], []
    for p, sets in zip(shared, real_sets):
        wanted = [next(found) for _ in sets]
        ours = [s[q == p] for s, q in zip(points, parts) if bool((q == p).any())]
        mine += ours
        targets += [wanted] * len(ours)
    return torch.stack([v.min() for v in diagram_distances(mine, targets, m, pool)]).mean()


def feature_term(net: torch.nn.Module, real: torch.Tensor, synthetic: torch.Tensor, m: int = DEFAULT_M,
                 pool: PersistencePool | None = None, equal: bool = False) -> torch.Tensor:
    """``T_k`` of the feature reading: PWCD between the diagrams of the real and of the synthetic
    clouds' global features in ``net``; with ``equal`` (``feature_equal``) the mean PWCD to the
    diagrams of the real batch's consecutive disjoint sets of the synthetic set's size (the whole
    batch where it holds one such set or none)."""
    with torch.no_grad():
        features = net.embed(real).to(torch.float64).cpu().numpy()
    n = len(synthetic)
    sets = [features[i:i + n] for i in range(0, len(features) - n + 1, n)] if equal and 2 * n <= len(features) \
        else [features]
    return diagram_distances(net.embed(synthetic)[None], [target_diagrams(sets, m, pool)], m, pool)[0].mean()


def reading_acts(reading: str, cpc: int) -> bool:
    """Whether ``reading`` can move a set of ``cpc`` synthetic clouds a class (module docstring)."""
    return reading not in FEATURE_READINGS or cpc >= FEATURE_SMALLEST_CPC


def check_weight(weight: float) -> None:
    """Refuse a weight that is not a finite positive number (``--topo-weight``)."""
    if not (np.isfinite(weight) and weight > 0):
        raise ValueError(f"--topo-weight must be a finite number > 0, got {weight!r}")
    if weight > float(np.finfo(np.float32).max):  # the term is computed in float32
        raise ValueError(f"--topo-weight {weight!r} is beyond float32's range (at most {np.finfo(np.float32).max:.3g}), "
                         "in which the term is computed")


def topology_term(reading: str | None, weight: float, m: int = DEFAULT_M) -> Term | None:
    """The hook gradient matching adds to each class's distance: ``weight * T_k`` of ``reading``
    (None: no term)."""
    if reading is None:
        return None
    if reading not in READINGS:
        raise ValueError(f"the topology reading must be one of {', '.join(READINGS)}, got {reading!r}")
    check_weight(weight)
    if reading in FEATURE_READINGS:
        equal = reading == "feature_equal"
        return lambda net, real, synthetic: weight * feature_term(net, real[0], synthetic[0], m, equal=equal)
    kept = RealDiagrams(m)

    def shape(net: torch.nn.Module, real: Batch, synthetic: Batch) -> torch.Tensor:
        if synthetic[1] is None:
            return weight * shape_term(real[0], synthetic[0], kept, m)
        return weight * part_shape_term(real, synthetic, kept, m)
    return shape
