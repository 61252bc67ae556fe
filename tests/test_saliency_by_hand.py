"""L_grad (paper Eq. 4-7, decisions 15-17) and L_kld of a whole distillation step on a model small enough to
differentiate by hand.

Teacher and student are two-layer linear decoders: stage 1 runs on pooled points,
``F1 = pool(X) W1`` (pairs of consecutive input points averaged), stage 2 on the input points,
``F2 = F1[cluster] W2``, and ``logits = F2 W3``. With the class-weighted cross-entropy
``L_seg = sum_i w_{y_i} CE_i / sum_i w_{y_i}`` the activation gradients are closed forms:
``dL/dlogits = w_{y_i} (p_i - onehot_i) / sum w``, ``dL/dF2 = dL/dlogits W3^T`` and
``dL/dF1[r] = sum_{i in cluster r} dL/dF2_i W2^T``. From them Eq. 4-7 are written out in numpy
below (per cloud: channel weights, maps, maps brought to the input points, min-max, L1 over input
points / N, summed over the two stages), independently of ``reference.saliency`` and
``fast.saliency``. ``train.engine.steps.distillation_step`` must give the same ``L_grad``, and the
gradient its total sends to the student's parameters must be the derivative of
``L_seg + l_grad L_grad`` with the channel weights held constant (decision 16: no second-order
graph), which this file takes by central differences of the numpy loss. With
``saliency_detach_range`` (decision 43) the per-cloud min and max of Eq. 6 are held constant too.
The same step's L_kld takes the CE's class weights exactly when ``kld_class_weights`` asks
(decision 44).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from train.models.ptv3 import ModelOutput
from train.engine.profiling import StepTimer
from train.engine.steps import DistillSettings, distillation_step

OFFSETS = (6, 12)  # two clouds: input points 0-5 and 6-11 (END offsets)
CLUSTER = np.repeat(np.arange(6), 2)  # stage-1 rows: 3 per cloud
STAGE1_OFFSETS = (3, 6)
N_IN, K = 3, 4
CLASS_WEIGHT = (0.5, 1.0, 2.0, 1.5)
LAMBDA_GRAD = 0.7


class TinyDecoder(nn.Module):
    """F1 = pool(X) W1 on the stage-1 rows, F2 = F1[cluster] W2, logits = F2 W3."""

    def __init__(self, w1: np.ndarray, w2: np.ndarray, w3: np.ndarray) -> None:
        super().__init__()
        self.w1, self.w2, self.w3 = (nn.Parameter(torch.tensor(w, dtype=torch.float64)) for w in (w1, w2, w3))

    def forward(self, data: dict[str, torch.Tensor]) -> ModelOutput:
        cluster = torch.as_tensor(CLUSTER)
        x = data["feat"].to(torch.float64)
        pooled = torch.zeros(int(cluster.max()) + 1, x.shape[1], dtype=x.dtype).index_add(0, cluster, x) / 2.0
        f1 = pooled @ self.w1
        f2 = f1[cluster] @ self.w2
        return ModelOutput(logits=f2 @ self.w3, embedding=f2, decoder_feats=[f1, f2],
                           decoder_index=[cluster, torch.arange(len(CLUSTER))],
                           decoder_offsets=[torch.tensor(STAGE1_OFFSETS), torch.tensor(OFFSETS)])


def _activations(x: np.ndarray, w1: np.ndarray, w2: np.ndarray, w3: np.ndarray, y: np.ndarray
                 ) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    """[F1, F2], their closed-form gradients [dL/dF1, dL/dF2] and L_seg (weighted CE)."""
    pooled = np.stack([x[CLUSTER == r].mean(axis=0) for r in range(CLUSTER.max() + 1)])
    f1 = pooled @ w1
    f2 = f1[CLUSTER] @ w2
    z = f2 @ w3
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    w = np.asarray(CLASS_WEIGHT)[y]
    seg = float(np.sum(w * -np.log(p[np.arange(len(y)), y])) / w.sum())
    d_logits = w[:, None] * (p - np.eye(K)[y]) / w.sum()
    g2 = d_logits @ w3.T
    g1 = np.zeros_like(f1)
    np.add.at(g1, CLUSTER, g2 @ w2.T)
    return [f1, f2], [g1, g2], seg


def _raw_maps(feats: list[np.ndarray], omegas: list[np.ndarray]) -> list[np.ndarray]:
    """Eq. 5 with given per-cloud channel weights, brought to the input points."""
    out = []
    for layer, (f, om) in enumerate(zip(feats, omegas)):
        rows = CLUSTER if layer == 0 else np.arange(len(CLUSTER))
        stage_cloud = np.repeat([0, 1], np.diff((0,) + (STAGE1_OFFSETS if layer == 0 else OFFSETS)))
        out.append(np.abs(om[stage_cloud] * f).sum(axis=1)[rows])
    return out


CLOUDS = ((0, OFFSETS[0]), (OFFSETS[0], OFFSETS[1]))


def _ranges(maps: list[np.ndarray]) -> list[list[tuple[float, float]]]:
    """Per layer, per cloud: (min, max) of the map over the cloud's input points."""
    return [[(m[a:e].min(), m[a:e].max()) for a, e in CLOUDS] for m in maps]


def _normalised_maps(maps: list[np.ndarray], ranges: list[list[tuple[float, float]]]) -> list[np.ndarray]:
    """Eq. 6 per cloud with the given (min, max) of each cloud."""
    out = []
    for m, layer_ranges in zip(maps, ranges):
        hat = np.empty_like(m)
        for (a, e), (lo, hi) in zip(CLOUDS, layer_ranges):
            hat[a:e] = (m[a:e] - lo) / (hi - lo + 1e-8)
        out.append(hat)
    return out


def _omegas(grads: list[np.ndarray]) -> list[np.ndarray]:
    """Eq. 4 per cloud: mean over the cloud's stage rows of |dL/dF|, one (2, C) array per layer."""
    out = []
    for layer, g in enumerate(grads):
        ends = STAGE1_OFFSETS if layer == 0 else OFFSETS
        out.append(np.stack([np.abs(g[lo:hi]).mean(axis=0) for lo, hi in zip((0,) + ends[:-1], ends)]))
    return out


def _setup(seed: int = 16) -> tuple[dict[str, torch.Tensor], list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(len(CLUSTER), N_IN))
    y = rng.integers(0, K, size=len(CLUSTER))
    student = [rng.normal(size=s) for s in ((N_IN, 2), (2, 3), (3, K))]
    teacher = [rng.normal(size=s) for s in ((N_IN, 5), (5, 4), (4, K))]
    batch = {"coord": torch.tensor(x), "grid_coord": torch.zeros(len(CLUSTER), 3, dtype=torch.int64),
             "feat": torch.tensor(x), "offset": torch.tensor(OFFSETS), "segment": torch.tensor(y)}
    return batch, student, teacher


@pytest.mark.parametrize("detach_range", [False, True])
def test_distillation_step_l_grad_and_its_gradient_equal_the_hand_computation(detach_range: bool) -> None:
    batch, ws, wt = _setup()
    x, y = batch["feat"].numpy(), batch["segment"].numpy()
    student, teacher = TinyDecoder(*ws), TinyDecoder(*wt)
    for p in teacher.parameters():
        p.requires_grad_(False)
    settings = DistillSettings(grad=True, lambda_grad=LAMBDA_GRAD, seg_loss="ce", class_weight=CLASS_WEIGHT,
                               saliency_layers=(1, 2), saliency_detach_range=detach_range)
    total, logs = distillation_step(student, teacher, batch, settings, amp=False, timer=StepTimer())
    total.backward()

    t_feats, t_grads, _ = _activations(x, *wt, y)
    t_maps = _raw_maps(t_feats, _omegas(t_grads))
    hat_t = _normalised_maps(t_maps, _ranges(t_maps))
    s_feats, s_grads, seg = _activations(x, *ws, y)
    omega_s = _omegas(s_grads)  # held constant below (decision 16)
    range_s = _ranges(_raw_maps(s_feats, omega_s))  # held constant below with detach_range (decision 43)

    def l_grad(w: list[np.ndarray], omegas: list[np.ndarray]) -> float:
        maps = _raw_maps(_activations(x, *w, y)[0], omegas)
        hat_s = _normalised_maps(maps, range_s if detach_range else _ranges(maps))
        return sum(float(np.abs(t - s).sum()) / len(CLUSTER) for t, s in zip(hat_t, hat_s))

    want = l_grad(ws, omega_s)
    # every |hat_T - hat_S| is far from 0, so the central differences below stay off the L1 kinks
    s_maps = _raw_maps(s_feats, omega_s)
    assert min(np.abs(t - s).min() for t, s in zip(hat_t, _normalised_maps(s_maps, range_s))) > 0.1
    assert np.isclose(float(logs["grad"]), want, rtol=1e-5, atol=1e-7)
    assert np.isclose(float(logs["seg"]), seg, rtol=1e-6)
    assert np.isclose(float(total.detach()), seg + LAMBDA_GRAD * want, rtol=1e-5)

    def objective(w: list[np.ndarray], frozen: bool) -> float:
        omegas = omega_s if frozen else _omegas(_activations(x, *w, y)[1])
        return _activations(x, *w, y)[2] + LAMBDA_GRAD * l_grad(w, omegas)

    h = 1e-6
    gap = 0.0
    for j, param in enumerate((student.w1, student.w2, student.w3)):
        frozen, full = np.zeros_like(ws[j]), np.zeros_like(ws[j])
        for idx in np.ndindex(ws[j].shape):
            plus = [w.copy() for w in ws]
            minus = [w.copy() for w in ws]
            plus[j][idx] += h
            minus[j][idx] -= h
            frozen[idx] = (objective(plus, True) - objective(minus, True)) / (2 * h)
            full[idx] = (objective(plus, False) - objective(minus, False)) / (2 * h)
        got = param.grad.numpy()
        np.testing.assert_allclose(got, frozen, rtol=1e-4, atol=1e-6)
        gap = max(gap, float(np.abs(full - frozen).max()))
    # the check can tell the two readings apart: differentiating omega too (create_graph=True)
    # would give a clearly different gradient
    assert gap > 1e-2
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize("weighted", [False, True])
def test_distillation_step_kld_uses_the_class_weights_only_when_asked(weighted: bool) -> None:
    """Decision 44: ``kld_class_weights`` hands the CE's class weights to L_kld (reference twin)."""
    from reference.kld import kld as reference_kld

    batch, ws, wt = _setup()
    student, teacher = TinyDecoder(*ws), TinyDecoder(*wt)
    settings = DistillSettings(kld=True, seg_loss="ce", class_weight=CLASS_WEIGHT, kld_class_weights=weighted)
    _, logs = distillation_step(student, teacher, batch, settings, amp=False, timer=StepTimer())
    x, y = batch["feat"].numpy(), batch["segment"].numpy()
    logits = [_activations(x, *w, y)[0][1] @ w[2] for w in (ws, wt)]
    want, _ = reference_kld(*logits, y, class_weight=np.asarray(CLASS_WEIGHT) if weighted else None)
    assert np.isclose(float(logs["kld"]), want, rtol=1e-5)
