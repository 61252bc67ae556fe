"""Device-agnostic PyTorch fast path of the distillation losses (CPU and CUDA), used by training.

Each public function has a numpy twin of the same name in ``reference/`` and a test comparing the
two on fresh random inputs.
"""
from __future__ import annotations

import importlib
from typing import Any

# Public name -> defining submodule, resolved on first access (PEP 562). The entries are filled in
# as the modules land; see fast/<module>.py for each function's docstring.
_EXPORTS: dict[str, str] = {
    "saliency_loss": "fast.saliency",
    "kld": "fast.kld",
    "H1Engine": "fast.engine",
    "CloudPersistence": "fast.engine",
    "PersistencePool": "fast.engine",
    "giotto_h1": "fast.engine",
    "submit_diagrams": "fast.engine",
    "compute_diagrams": "fast.engine",
    "budget_miss_count": "fast.engine",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fast' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
