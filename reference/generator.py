"""DD3D's point-wise generator, modulated per synthetic cloud: paper Eq. (7)-(9), its forward pass.

The generator maps one noise scalar per point to a point, so a cloud of any size is drawn by
drawing that many scalars (Sec. 4.2); given (B, N, D) noise, D scalars a point (``sine_weights[0]``
then (H_1, D): D = 2 maps a square to a surface where one scalar draws a curve, decision 101's
option of DD3D). For clouds ``b = 1..B`` with noise ``z`` (B, N) and codes
``c`` (B, H_1) (the rows of each cloud's embedding: Eq. 8's one-hot ``m_1`` times ``w'_1``, class x
CPC of them in DD3D):

    m_1 = ReLU(c_b)                              modulator, Eq. (8): the code is its first layer
    m_i = ReLU(m_(i-1) V_i^T + v_i)              i = 2..L, width H_i
    h_0 = z_bn                                  one scalar per point
    h_i = sin(w_i (h_(i-1) W_i^T + b_i)) * m_i   sine layers, Eq. (7), modulated, Eq. (9)
    x_bn = tanh(h_L W_P^T)                       the point, in (-1, 1)^3; W_P has no bias (Eq. 7)

with ``w_1 = w0`` (SIREN's first-layer frequency: 100 for ModelNet40, 50 for ScanObjectNN, 400 for
ShapeNet-part in the paper's runs) and ``w_i = 1`` after it (a hidden frequency is a scale of
``W_i`` and ``b_i``). DD3D's generator has L = 2 sine layers of width 256, so one modulator layer
``V_2`` (decisions 76 and 92, the released CINR.py). Weights are given explicitly in
``torch.nn.Linear``'s layout, ``(out, in)``: ``sine_weights[0]`` is (H_1, 1), ``modulator_weights``
lists the L - 1 layers ``V_2 .. V_L`` (``modulator_weights[0]`` is (H_2, H_1)), ``out_weight`` (3, H_L).
Returns the (B, N, 3) clouds (B, N, D for a D-row ``out_weight``).

``generator_backward`` is the hand-written vector-Jacobian product of the forward (``fast``: autograd):
the gradients of ``<cotangent, points>`` with respect to every input, ReLU's subgradient at 0 taken
as 0 (torch's).
"""
from __future__ import annotations

import numpy as np

from reference.canonical import check_w0


def check_generator_shapes(
    noise: tuple[int, ...], codes: tuple[int, ...], sine_weights: list[tuple[int, ...]],
    sine_biases: list[tuple[int, ...]], modulator_weights: list[tuple[int, ...]],
    modulator_biases: list[tuple[int, ...]], out_weight: tuple[int, ...],
) -> None:
    """ValueError unless the shapes chain as the module docstring says (L >= 1 sine layers)."""
    problems = []
    if len(noise) not in (2, 3) or len(codes) != 2 or codes[0] != noise[0]:
        problems.append(f"noise must be (B, N) or (B, N, D) and codes (B, E), got {noise} and {codes}")
    layers = len(sine_weights)
    if layers < 1 or len(sine_biases) != layers or not len(modulator_weights) == len(modulator_biases) == layers - 1:
        problems.append(f"sine_weights and sine_biases must list the same number L >= 1 of layers and "
                        f"modulator_weights and modulator_biases L - 1, got {len(sine_weights)}, {len(sine_biases)}, "
                        f"{len(modulator_weights)}, {len(modulator_biases)}")
    else:
        width_in, mod_in = noise[2] if len(noise) == 3 else 1, codes[-1] if codes else -1
        for i in range(layers):
            width = sine_weights[i][0] if sine_weights[i] else -1
            want = [((width, width_in), sine_weights[i]), ((width,), sine_biases[i])]
            if i > 0:
                want += [((width, mod_in), modulator_weights[i - 1]), ((width,), modulator_biases[i - 1])]
            elif mod_in != width:
                want.append(((codes[0], width), codes))
            if any(w != g for w, g in want):
                problems.append(f"layer {i}: {[g for _, g in want]}; want {[w for w, _ in want]} (sine weight, bias"
                                f"{', modulator weight, bias' if i > 0 else ', codes'})")
            width_in = mod_in = width
        if len(out_weight) != 2 or out_weight[1] != width_in:
            problems.append(f"out_weight must be (D, {width_in}) (D = 3 for points), got {out_weight}")
    if problems:
        raise ValueError("generator weights do not chain: " + "; ".join(problems))


def generator_forward(
    noise: np.ndarray, codes: np.ndarray, sine_weights: list[np.ndarray], sine_biases: list[np.ndarray],
    modulator_weights: list[np.ndarray], modulator_biases: list[np.ndarray], out_weight: np.ndarray, w0: float,
) -> np.ndarray:
    """The (B, N, 3) points generated from (B, N) (or (B, N, D)) noise for clouds of (B, H_1) codes."""
    inputs = _checked(noise, codes, sine_weights, sine_biases, modulator_weights, modulator_biases, out_weight)
    return _forward(*inputs, check_w0(w0))[0]


def _checked(noise: np.ndarray, codes: np.ndarray, *weights: np.ndarray | list[np.ndarray]) -> tuple:
    """The generator's inputs as float64 arrays (lists as lists), their shapes checked."""
    z, m = np.asarray(noise, dtype=np.float64), np.asarray(codes, dtype=np.float64)
    sw, sb, mw, mb, w_out = ([np.asarray(a, dtype=np.float64) for a in w] if isinstance(w, list) else
                             np.asarray(w, dtype=np.float64) for w in weights)
    check_generator_shapes(z.shape, m.shape, [a.shape for a in sw], [a.shape for a in sb],
                           [a.shape for a in mw], [a.shape for a in mb], w_out.shape)
    return z, m, sw, sb, mw, mb, w_out


def _forward(z: np.ndarray, codes: np.ndarray, sw: list[np.ndarray], sb: list[np.ndarray], mw: list[np.ndarray],
             mb: list[np.ndarray], w_out: np.ndarray, omega: float) -> tuple[np.ndarray, list]:
    """The points and, per layer, what the backward pass reads: (h_(i-1), sine argument, sine, m_(i-1), ReLU input,
    m_i); layer 0's ReLU input is the codes (m_0 unused)."""
    h, m, saved = (z[:, :, None] if z.ndim == 2 else z), codes, []
    for i in range(len(sw)):
        pre = codes if i == 0 else m @ mw[i - 1].T + mb[i - 1]
        m_next = np.maximum(pre, 0.0)
        arg = (omega if i == 0 else 1.0) * (h @ sw[i].T + sb[i])
        phi = np.sin(arg)
        saved.append((h, arg, phi, m, pre, m_next))
        h, m = phi * m_next[:, None, :], m_next
    return np.tanh(h @ w_out.T), saved + [h]


def generator_backward(
    noise: np.ndarray, codes: np.ndarray, sine_weights: list[np.ndarray], sine_biases: list[np.ndarray],
    modulator_weights: list[np.ndarray], modulator_biases: list[np.ndarray], out_weight: np.ndarray, w0: float,
    cotangent: np.ndarray,
) -> tuple:
    """Gradients of ``<cotangent, generator_forward(...)>`` for (B, N, 3) ``cotangent``, in the order of the
    arguments: (noise, codes, sine_weights, sine_biases, modulator_weights, modulator_biases, out_weight),
    the lists as lists."""
    z, m0, sw, sb, mw, mb, w_out = _checked(noise, codes, sine_weights, sine_biases, modulator_weights,
                                            modulator_biases, out_weight)
    omega = check_w0(w0)
    points, saved = _forward(z, m0, sw, sb, mw, mb, w_out, omega)
    d_out = np.asarray(cotangent, dtype=np.float64) * (1.0 - points**2)  # through tanh
    d_w_out = np.einsum("bno,bnh->oh", d_out, saved[-1])
    d_h, d_m = d_out @ w_out, np.zeros_like(saved[-2][5])  # d_m: into m_i from the modulator layer above
    layers = len(sw)
    d_sw, d_sb, d_mw, d_mb = [None] * layers, [None] * layers, [None] * (layers - 1), [None] * (layers - 1)
    for i in reversed(range(layers)):
        h_prev, arg, phi, m_prev, pre, m_i = saved[i]
        scale = omega if i == 0 else 1.0
        d_arg = d_h * m_i[:, None, :] * np.cos(arg)
        d_pre = (d_m + np.sum(d_h * phi, axis=1)) * (pre > 0)
        d_sw[i], d_sb[i] = scale * np.einsum("bnh,bnk->hk", d_arg, h_prev), scale * d_arg.sum(axis=(0, 1))
        d_h = scale * d_arg @ sw[i]
        if i > 0:
            d_mw[i - 1], d_mb[i - 1] = d_pre.T @ m_prev, d_pre.sum(axis=0)
            d_m = d_pre @ mw[i - 1]
        else:
            d_m = d_pre  # the codes are layer 1's ReLU input
    return (d_h[:, :, 0] if z.ndim == 2 else d_h), d_m, d_sw, d_sb, d_mw, d_mb, d_w_out
