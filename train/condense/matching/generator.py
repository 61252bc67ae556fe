"""DD3D's point-wise generator as a module, paper Eq. (7)-(9): a code per synthetic cloud (Eq. 8's
one-hot times ``w'_1``, an embedding row) whose ReLU is the first modulator, one ReLU modulator
layer more per further sine layer, sine layers modulated after the sine and a linear map without
bias to tanh'ed points; its forward is ``fast.generator_forward`` (decision 76), so the twin the
tests compare with ``reference.generator_forward`` is what trains.

The released code's sizes and initialisation (CINR.py's SirenNet and SirenWrapper, decision 92):
two sine layers of width 256, codes of width 256, so one 256 x 256 modulator layer. SIREN's
initialisation (Sitzmann et al. 2020, Sec. 3.2): the first sine layer's weights and biases uniform
in (-1, 1) (its input is one noise scalar, its frequency ``w0``), the hidden sine layers' and the
output map's weights (and the hidden biases) uniform in +-sqrt(6 / width) (their frequency 1,
decision 76); the modulator layer as ``torch.nn.Linear``, codes standard normal.
The noise is uniform in [0, 1) (Eq. 7's ``z_1``), one scalar per point, so a cloud of any size is
drawn by drawing that many scalars (:func:`train.condense.methods.dd3d.draw_batch`). With
``noise_dims`` 2 (``--noise-dims 2``, decision 101) a point takes two scalars, uniform in the unit
square: the generator maps a surface where one scalar draws a curve; its first layer is then
(width, 2), initialised U(+-1/2) (SIREN's first layer: U(+-1 / fan_in)).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from fast import generator_forward
from reference.canonical import check_w0

WIDTH = 256
LAYERS = 2
NOISE_DIMS = (1, 2)  # noise scalars a point: the released one (a curve), or two (a surface; decision 101)
# w0 of the first sine layer by data set (decision 78: the released code's 100 ModelNet40, 50
# ScanObjectNN, 400 ShapeNet-part; the generated shapes as ModelNet40, LiDAR cuts as the scans)
DATASET_W0 = {"modelnet40": 100.0, "shapes": 100.0, "shapenet_part": 400.0, "scanobjectnn": 50.0,
              "scanobjectnn_obj_only": 50.0, "scanobjectnn_pb_t50_rs": 50.0, "semantic_kitti_objects": 50.0,
              "lidar_objects": 50.0}


class PointGenerator(nn.Module):
    """``clouds`` synthetic clouds, each a code; ``forward(noise (B, N) or (B, N, noise_dims), index (B,))``
    -> (B, N, 3) points."""

    def __init__(self, clouds: int, w0: float, width: int = WIDTH, layers: int = LAYERS, noise_dims: int = 1):
        super().__init__()
        if noise_dims not in NOISE_DIMS:
            raise ValueError(f"noise_dims must be one of {NOISE_DIMS}, got {noise_dims!r}")
        self.w0, self.noise_dims = check_w0(w0), noise_dims
        self.codes = nn.Embedding(clouds, width)
        self.sines = nn.ModuleList(nn.Linear(noise_dims if i == 0 else width, width) for i in range(layers))
        self.modulators = nn.ModuleList(nn.Linear(width, width) for _ in range(layers - 1))
        self.out = nn.Linear(width, 3, bias=False)
        with torch.no_grad():
            hidden = math.sqrt(6.0 / width)
            for i, layer in enumerate(self.sines):
                bound = 1.0 / noise_dims if i == 0 else hidden
                layer.weight.uniform_(-bound, bound)
                layer.bias.uniform_(-bound, bound)
            self.out.weight.uniform_(-hidden, hidden)

    def forward(self, noise: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return generator_forward(noise, self.codes(index), [s.weight for s in self.sines], [s.bias for s in self.sines],
                                 [m.weight for m in self.modulators], [m.bias for m in self.modulators],
                                 self.out.weight, self.w0)
