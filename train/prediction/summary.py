"""What a prediction run did, in one line (decision 50); shared by the PyTorch loop
(:mod:`train.prediction.run`) and the onnxruntime loop (:mod:`train.prediction.onnx_run`), which never
imports torch (decision 55)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PredictionSummary:
    """What a run did: scans labelled now, already labelled before (skipped), unreadable (named on
    stderr), points labelled now, and the wall time of the labelling."""

    labelled: int
    already: int
    bad: int
    points: int
    seconds: float

    def line(self) -> str:
        done = f"labelled {self.labelled} scans ({self.already} already labelled, {self.bad} unreadable skipped)"
        if not self.labelled:
            return done
        return (f"{done} in {self.seconds:.1f} s: {self.labelled / self.seconds:.2f} scans/s, "
                f"{self.points / self.seconds:,.0f} points/s, {1000.0 * self.seconds / self.labelled:.1f} ms per scan")
