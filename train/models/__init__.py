"""Point Transformer V3 teacher and student in plain PyTorch (spec A, issue 5).

Modules: ``serialization`` (space-filling curves), ``point`` (batch structure), ``sparse_conv``
(pure-PyTorch submanifold conv), ``attention`` (serialized patch attention), ``blocks`` (block,
pooling, unpooling), ``ptv3`` (the network, presets, ``build_model``), ``cost`` (parameters,
FLOPs, latency, peak memory).
"""
from train.models.ptv3 import PRESETS, PTv3, PTv3Config, ModelOutput, build_model

__all__ = ["PRESETS", "PTv3", "PTv3Config", "ModelOutput", "build_model"]
