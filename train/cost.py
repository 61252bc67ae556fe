"""``python -m train.cost KIND``: parameters, FLOPs, time and peak memory of a model preset on a
LiDAR-like batch; the measurements are :mod:`train.evaluation.cost`."""
from __future__ import annotations

from train.evaluation.cost import main

if __name__ == "__main__":
    main()
