"""Wall-clock split of a training step (``--profile``): teacher forward, student forward and
backward, the topological term (launch and wait), saliency, KL and the optimiser step.

:class:`StepTimer` accumulates named sections. On CUDA it synchronises the device at section
boundaries when enabled, so a section's time is the work it launched, not just the launch. When
disabled it adds nothing but a context manager that does no timing.
"""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator

import torch


class StepTimer:
    def __init__(self, enabled: bool = False, device: torch.device | None = None) -> None:
        self.enabled = enabled
        self._sync = enabled and device is not None and device.type == "cuda"
        self.total: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)
        self.steps = 0

    def step_done(self) -> None:
        """Mark the end of one training step (the unit of :meth:`per_step_ms`)."""
        self.steps += 1

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        if self._sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self._sync:
                torch.cuda.synchronize()
            self.total[name] += time.perf_counter() - t0
            self.count[name] += 1

    def per_step_ms(self) -> dict[str, float]:
        """Mean milliseconds per training step spent in each section (a section may run several
        times in one step), and their sum under "total"."""
        steps = max(self.steps, 1)
        out = {k: 1000.0 * v / steps for k, v in self.total.items()}
        out["total"] = sum(out.values())
        return out

    def reset(self) -> None:
        self.total.clear()
        self.count.clear()
        self.steps = 0

    def summary(self, title: str = "step profile") -> str:
        if not self.total:
            return f"{title}: nothing timed"
        per_step = self.per_step_ms()
        width = max(len(k) for k in per_step)
        lines = [f"{title} (mean ms per step over {self.steps} steps):"]
        for k, v in per_step.items():
            lines.append(f"  {k:<{width}}  {v:10.1f}")
        return "\n".join(lines)
