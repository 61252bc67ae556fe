"""reference.saliency_loss: gradient-guided saliency alignment, paper Eq. (4)-(7), decisions 15-17.

Proves: the loss equals a direct point-by-point evaluation of Eq. (4)-(7); the gradient equals
central finite differences on generic inputs; at an exact min/max tie the gradient is the average
of the gradients on either side of the tie (the uniform split); invariances that must hold
(per-cloud scaling of student activations, scaling of the given gradients, channel permutation,
identical student and teacher -> 0); bad inputs raise ValueError naming the argument; with
``detach_range`` (decision 43) the loss is unchanged and the gradient is that of Eq. (7) with each
cloud's min and max held fixed.

``random_saliency_inputs`` is also used by tests/test_fast_saliency_kld.py.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.saliency import saliency_loss

ARG_ORDER = (
    "student_acts", "student_grads", "student_stage_offsets", "student_index",
    "teacher_acts", "teacher_grads", "teacher_stage_offsets", "teacher_index",
)


def random_saliency_inputs(
    seed: int,
    cloud_sizes: tuple[int, ...],
    n_layers: int,
    channels_student: int = 3,
    channels_teacher: int = 5,
) -> dict:
    """Random per-layer activations/gradients with pooled stages and input->stage index maps.

    Layer ``l`` keeps about ``1 / 2**l`` of each cloud's points (at least two when the cloud has
    two); like a pooling inverse, the index maps the input points of each cloud onto all stage rows
    of that cloud (a surjection, random otherwise). Returns the keyword arguments of saliency_loss.
    """
    rng = np.random.default_rng(seed)
    offsets = np.cumsum(cloud_sizes)
    out: dict = {name: [] for name in ARG_ORDER}

    def surjection(start: int, rows: int, n: int) -> np.ndarray:
        return start + rng.permutation(np.concatenate([np.arange(rows), rng.integers(rows, size=n - rows)]))

    for who, C in (("student", channels_student), ("teacher", channels_teacher)):
        for l in range(n_layers):
            stage_sizes = [max(min(n, 2), n >> l) for n in cloud_sizes]
            stage_off = np.cumsum(stage_sizes)
            starts = stage_off - stage_sizes
            index = np.concatenate([surjection(s, r, n) for s, r, n in zip(starts, stage_sizes, cloud_sizes)])
            rows = int(stage_off[-1])
            out[f"{who}_acts"].append(rng.normal(size=(rows, C)))
            out[f"{who}_grads"].append(rng.normal(size=(rows, C)) * rng.uniform(0.1, 2.0, size=C))
            out[f"{who}_stage_offsets"].append(stage_off.astype(np.int64))
            out[f"{who}_index"].append(index.astype(np.int64))
    out["offsets"] = offsets.astype(np.int64)
    return out


def gradient_scale(inp: dict, grads: list[np.ndarray]) -> float:
    """Size of the terms that saliency gradient entries are sums of, for tolerances.

    Entries are sums of terms of size ~ omega / N (omega <= max |student_grads|) that can cancel
    almost completely (in a 2-point cloud every entry is O(eps = 1e-8)), so errors are measured
    against that term size, not against the possibly tiny result.
    """
    return max(
        max(float(np.abs(g).max(initial=0.0)) for g in grads),
        max(float(np.abs(g).max()) for g in inp["student_grads"]) / int(inp["offsets"][-1]),
    )


def direct_maps(acts, grads, stage_off, index, offsets, eps=1e-8) -> np.ndarray:
    """Eq. (4)-(6) evaluated point by point with Python loops (independent of the implementation)."""
    n_in = int(offsets[-1])
    out = np.zeros(n_in)
    in_start, s_start = 0, 0
    for b in range(len(offsets)):
        s_end, in_end = int(stage_off[b]), int(offsets[b])
        C = acts.shape[1]
        omega = [sum(abs(grads[i, k]) for i in range(s_start, s_end)) / (s_end - s_start) for k in range(C)]
        M = {i: sum(abs(omega[k] * acts[i, k]) for k in range(C)) for i in range(s_start, s_end)}
        up = [M[int(index[p])] for p in range(in_start, in_end)]
        lo, hi = min(up), max(up)
        for p, v in zip(range(in_start, in_end), up):
            out[p] = (v - lo) / (hi - lo + eps)
        in_start, s_start = in_end, s_end
    return out


def direct_loss_and_kink_margin(inp: dict) -> tuple[float, float]:
    """Eq. (7) from ``direct_maps`` and the smallest |hat_T - hat_S| over non-extremal points."""
    loss, margin = 0.0, np.inf
    for l in range(len(inp["student_acts"])):
        maps = {}
        for who in ("student", "teacher"):
            maps[who] = direct_maps(
                inp[f"{who}_acts"][l], inp[f"{who}_grads"][l], inp[f"{who}_stage_offsets"][l],
                inp[f"{who}_index"][l], inp["offsets"],
            )
        diff = maps["teacher"] - maps["student"]
        loss += np.abs(diff).sum() / inp["offsets"][-1]
        interior = (maps["student"] > 0) & (maps["student"] < 1 - 1e-6)
        if interior.any():
            margin = min(margin, float(np.abs(diff[interior]).min()))
    return loss, margin


def _stage_extremum_gaps(inp: dict) -> float:
    """Smallest relative gap between the two lowest / two highest distinct stage values per cloud."""
    gap = np.inf
    for l in range(len(inp["student_acts"])):
        u = direct_maps(
            inp["student_acts"][l], inp["student_grads"][l], inp["student_stage_offsets"][l],
            inp["student_index"][l], inp["offsets"],
        )
        start = 0
        for end in inp["offsets"]:
            vals = np.unique(u[start:end])
            if len(vals) > 2:
                gap = min(gap, vals[1] - vals[0], vals[-1] - vals[-2])
            start = end
    return gap


def central_differences(inp: dict, step: float = 1e-6) -> list[np.ndarray]:
    out = []
    for A in inp["student_acts"]:
        fd = np.zeros_like(A)
        for idx in np.ndindex(*A.shape):
            old = A[idx]
            A[idx] = old + step
            lp = saliency_loss(**inp)[0]
            A[idx] = old - step
            lm = saliency_loss(**inp)[0]
            A[idx] = old
            fd[idx] = (lp - lm) / (2 * step)
        out.append(fd)
    return out


small_cases = st.tuples(
    st.integers(0, 2**32 - 1),
    st.lists(st.integers(2, 9), min_size=1, max_size=3).map(tuple),
    st.integers(1, 2),
)


@settings(max_examples=max(settings.default.max_examples // 10, 5))
@given(case=small_cases)
def test_saliency_loss_equals_direct_evaluation_of_eq_4_to_7(case) -> None:
    inp = random_saliency_inputs(*case)
    loss, grads = saliency_loss(**inp)
    assert loss == pytest.approx(direct_loss_and_kink_margin(inp)[0], rel=1e-12, abs=1e-15)
    assert [g.shape for g in grads] == [a.shape for a in inp["student_acts"]]


@settings(max_examples=max(settings.default.max_examples // 10, 5))
@given(case=small_cases)
def test_saliency_gradient_matches_central_differences(case) -> None:
    inp = random_saliency_inputs(*case)
    _, margin = direct_loss_and_kink_margin(inp)
    if margin < 1e-4 or _stage_extremum_gaps(inp) < 1e-4:  # FD only away from the kinks
        return
    _, grads = saliency_loss(**inp)
    fds = central_differences(inp)
    scale = max(max(float(np.abs(g).max()) for g in grads), 1e-3)
    err = max(float(np.abs(fd - g).max()) for fd, g in zip(fds, grads))
    assert err / scale < 1e-6


@pytest.mark.parametrize("extremum", ["min", "max"])
def test_saliency_min_and_max_ties_split_the_gradient_uniformly_over_input_points(extremum: str) -> None:
    """Stage rows a (1 input point) and b (2 input points) tie for the cloud's min or max.

    The uniform split over the 3 tied input points gives a 1/3, b 2/3: the gradient at the tie is
    (g_a + 2 g_b) / 3, where g_a (g_b) is the gradient just off the tie with a (b) the unique extremum.
    """
    inp = random_saliency_inputs(5, (12,), 1)
    A = inp["student_acts"][0]
    M = np.abs(A).dot(np.abs(inp["student_grads"][0]).mean(0))
    order = np.argsort(M)
    a, b = (order[0], order[1]) if extremum == "min" else (order[-1], order[-2])
    A[b] = -A[a]  # |F| is sign-blind: same map value, opposite activation signs
    # Put a, b, b at input points where the teacher map is strictly inside (0, 1), so that the only
    # kink at the tie is the min/max itself (not also |hat_T - hat_S| at hat_T = hat_S = 0 or 1).
    hat_T = direct_maps(*(inp[f"teacher_{k}"][0] for k in ("acts", "grads", "stage_offsets", "index")), inp["offsets"])
    interior = np.flatnonzero((hat_T > 1e-3) & (hat_T < 1 - 1e-3))[:3]
    rest = [p for p in range(12) if p not in interior]
    index = np.empty(12, dtype=np.int64)
    index[interior] = [a, b, b]
    index[rest] = [r for r in range(len(A)) if r not in (a, b)][: len(rest)]
    inp["student_index"][0] = index
    _, g_tie = saliency_loss(**inp)
    off_tie = {}
    for winner, bump in (("a", 1 + 1e-9), ("b", 1 - 1e-9)):  # bump b's map up (a wins) or down
        A_side = A.copy()
        A_side[b] *= bump if extremum == "min" else 1 / bump
        off_tie[winner] = saliency_loss(**{**inp, "student_acts": [A_side]})[1][0]
    assert not np.allclose(off_tie["a"], off_tie["b"])  # the tie really is a kink
    np.testing.assert_allclose(g_tie[0], (off_tie["a"] + 2 * off_tie["b"]) / 3, rtol=1e-6, atol=1e-12)


@given(case=small_cases, factor=st.floats(0.1, 10.0))
def test_saliency_invariant_to_student_scale_and_gradient_scale(case, factor: float) -> None:
    inp = random_saliency_inputs(*case)
    # Min-max normalisation removes the scale up to its eps stabiliser, made negligible here.
    loss, _ = saliency_loss(**inp, eps=1e-15)
    scaled = {**inp, "student_acts": [a * factor for a in inp["student_acts"]],
              "teacher_grads": [g * factor for g in inp["teacher_grads"]]}
    assert saliency_loss(**scaled, eps=1e-15)[0] == pytest.approx(loss, rel=1e-9, abs=1e-10)


@given(case=small_cases)
def test_saliency_invariant_to_channel_permutation(case) -> None:
    inp = random_saliency_inputs(*case)
    loss, grads = saliency_loss(**inp)
    perm = np.random.default_rng(case[0]).permutation(inp["student_acts"][0].shape[1])
    permuted = {**inp, "student_acts": [a[:, perm] for a in inp["student_acts"]],
                "student_grads": [g[:, perm] for g in inp["student_grads"]]}
    loss_p, grads_p = saliency_loss(**permuted)
    assert loss_p == pytest.approx(loss, rel=1e-12, abs=1e-15)
    scale = gradient_scale(inp, grads)
    for g, gp in zip(grads, grads_p):
        np.testing.assert_allclose(gp, g[:, perm], rtol=1e-12, atol=1e-12 * scale)


def test_saliency_identical_student_and_teacher_give_zero() -> None:
    inp = random_saliency_inputs(7, (5, 9, 3), 3)
    for key in ("acts", "grads", "stage_offsets", "index"):
        inp[f"teacher_{key}"] = [x.copy() for x in inp[f"student_{key}"]]
    loss, grads = saliency_loss(**inp)
    assert loss == 0.0 and all(np.all(g == 0.0) for g in grads)


def _bad(mutate) -> dict:
    inp = random_saliency_inputs(3, (4, 6), 2)
    mutate(inp)
    return inp


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d["student_acts"].pop(), "one entry per layer"),
        (lambda d: d.update(student_acts=[]), "non-empty list"),
        (lambda d: d["student_acts"][0].__setitem__((0, 0), np.nan), "student_acts contains"),
        (lambda d: d["teacher_grads"][1].__setitem__((1, 1), np.inf), "teacher_grads contains"),
        (lambda d: d["student_grads"].__setitem__(0, d["student_grads"][0][:, :2]), "student_grads has shape"),
        (lambda d: d.update(offsets=np.array([4, 9])), "offsets"),
        (lambda d: d.update(offsets=np.array([6, 4])), "offsets"),
        (lambda d: d["teacher_stage_offsets"].__setitem__(0, np.array([2, 3, 5])), "teacher_stage_offsets"),
        (lambda d: d["student_index"].__setitem__(0, d["student_index"][0][:-1]), "student_index"),
        (lambda d: d["teacher_index"][0].__setitem__(0, d["teacher_stage_offsets"][0][-1] - 1), "outside their own cloud"),
    ],
)
def test_saliency_bad_input_raises_value_error(mutate, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        saliency_loss(**_bad(mutate))


def test_saliency_eps_must_be_positive() -> None:
    with pytest.raises(ValueError, match="eps"):
        saliency_loss(**random_saliency_inputs(1, (3,), 1), eps=0.0)



def _raw_up(acts, grads, stage_off, index, offsets) -> np.ndarray:
    """Eq. (4)-(5) brought to the input points, not normalised (point by point, like direct_maps)."""
    out, in_start, s_start = np.zeros(int(offsets[-1])), 0, 0
    for b in range(len(offsets)):
        s_end, in_end = int(stage_off[b]), int(offsets[b])
        omega = np.abs(grads[s_start:s_end]).sum(axis=0) / (s_end - s_start)
        for p in range(in_start, in_end):
            out[p] = sum(abs(omega[k] * acts[int(index[p]), k]) for k in range(acts.shape[1]))
        in_start, s_start = in_end, s_end
    return out


def test_saliency_detach_range_keeps_the_loss_and_differentiates_with_min_and_max_held_fixed() -> None:
    """Decision 43: with ``detach_range`` the loss is unchanged and the gradient is the derivative of
    Eq. (7) with each cloud's min and max of the student's map frozen at their values."""
    inp = random_saliency_inputs(31, (9, 8), 2)
    loss, full = saliency_loss(**inp)
    loss_d, grads = saliency_loss(**inp, detach_range=True)
    assert loss_d == loss
    layer_args = [[inp[f"student_{k}"][l] for k in ("acts", "grads", "stage_offsets", "index")]
                  for l in range(2)]
    ends = np.asarray(inp["offsets"])
    starts = ends - np.diff(ends, prepend=0)
    bounds = [[(up[a:e].min(), up[a:e].max()) for a, e in zip(starts, ends)]
              for up in (_raw_up(*args, inp["offsets"]) for args in layer_args)]
    teacher = [direct_maps(*[inp[f"teacher_{k}"][l] for k in ("acts", "grads", "stage_offsets", "index")],
                           inp["offsets"]) for l in range(2)]
    assert all(np.abs(teacher[l] - direct_maps(*args, inp["offsets"])).min() > 1e-3 for l, args in enumerate(layer_args))

    def frozen_loss() -> float:
        total = 0.0
        for l, args in enumerate(layer_args):
            up = _raw_up(*args, inp["offsets"])
            lo = np.concatenate([np.full(e - a, bounds[l][b][0]) for b, (a, e) in enumerate(zip(starts, ends))])
            hi = np.concatenate([np.full(e - a, bounds[l][b][1]) for b, (a, e) in enumerate(zip(starts, ends))])
            total += np.abs(teacher[l] - (up - lo) / (hi - lo + 1e-8)).sum() / ends[-1]
        return total

    assert frozen_loss() == pytest.approx(loss, rel=1e-12)
    step = 1e-6
    for l, A in enumerate(inp["student_acts"]):
        fd = np.zeros_like(A)
        for idx in np.ndindex(*A.shape):
            old = A[idx]
            A[idx] = old + step
            plus = frozen_loss()
            A[idx] = old - step
            minus = frozen_loss()
            A[idx] = old
            fd[idx] = (plus - minus) / (2 * step)
        scale = max(float(np.abs(grads[l]).max()), 1e-3)
        assert float(np.abs(fd - grads[l]).max()) / scale < 1e-6
        assert float(np.abs(full[l] - grads[l]).max()) / scale > 1e-2  # the range path is really left out
