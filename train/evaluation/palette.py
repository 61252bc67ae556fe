"""The colours of the pictures' classes and matplotlib's off-screen backend, without torch: the
prediction's PLY outputs use the same palette (``train.prediction.layouts``), also where torch is
never imported (decision 55)."""
from __future__ import annotations

from typing import Any

import numpy as np


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def class_colours(num_classes: int) -> np.ndarray:
    """One RGB colour per class (tab20, then tab20b: 40 distinct), black for the ignore label (index -1)."""
    plt = pyplot()
    palette = [c[:3] for name in ("tab20", "tab20b") for c in plt.get_cmap(name).colors]
    return np.array([palette[i % len(palette)] for i in range(num_classes)] + [(0.0, 0.0, 0.0)])
