"""Problem sizes of each benchmark: (smoke run, ``--benchmark`` run).

Full sizes are the paper's: Table 6 N (App. B.4), Figure 7 N at M = 128, Figure 8 N (App. D.3).
The smoke sizes only need to exercise every code path once, quickly.
"""
from __future__ import annotations

SIZES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "table6_n": ((12, 24), (30, 60, 100, 200, 400, 800, 1024)),
    "fig7_n": ((256, 512), (512, 1024, 2048, 4096, 8192, 16384, 32768)),
    "fig8_n": ((16, 32), (100, 200, 400, 800, 1024)),
}
