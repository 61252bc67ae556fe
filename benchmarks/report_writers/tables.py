"""Cells, tables and benchmark records for ``benchmarks/RESULTS.md``: the pieces every section of
:mod:`benchmarks.report` is made of."""
from __future__ import annotations

import math
from typing import Any


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b <= 0:
        return "-"
    r = a / b
    return f"{r:,.0f}x" if r >= 100 else f"{r:.3g}x"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def median(bench: dict[str, Any]) -> float:
    return float(bench["stats"]["median"])


def by_group(benchmarks: list[dict[str, Any]], group: str) -> list[dict[str, Any]]:
    return [b for b in benchmarks if b.get("group") == group]
