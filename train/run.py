"""``python -m train.run``: train the PTv3 teacher, distill it into the student, evaluate, report.

Stages (paper Sec. 3 and Table 5): ``teacher`` (L_seg = CE + Lovasz), ``student``
(L_seg only), ``kd`` (+ l_kld L_kld), ``distill`` (+ l_topo L_topo + l_grad L_grad), ``all`` (the
teacher, then the three students distilled from it, then one table). Each stage writes its
checkpoints, CSV/TensorBoard logs and an evaluation report (JSON + markdown) under
``<out>/<stage>/``; ``all`` also writes ``<out>/results.{json,md}`` and prints the table, and the
run's pictures (``train.evaluation.plots``: diagrams, bird's-eye view, curves, per-class IoU) unless
``--no-plots``. The resolved configuration is saved as ``<out>/config.yaml``.

``--dataset synthetic`` (the README's main command) first generates the synthetic LiDAR set in the
Waymo layout if it is not cached, and uses a CPU demo budget (see ``train.config.SYNTHETIC_DEMO``)
and the ``teacher-demo`` / ``student-demo`` presets on a CPU. Under ``torchrun`` every process runs
this same entry point (DistributedDataParallel, see :mod:`train.runtime.distributed`).
"""
from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning. Measured here on the loaded 2-core machine: a
# teacher-demo step took ~40 s with torch's default (2 spinning threads) and ~4 s with one thread;
# with this policy 2 threads run as fast as one (1.4 s vs 1.3 s with one competing process). Must
# be set before torch starts its thread pool, i.e. before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if __name__ == "__main__":  # --help and malformed flags are answered before torch is imported (decision 38)
    from train.options.resolve import build_parser

    build_parser().parse_args()

import sys
from pathlib import Path
from typing import Sequence

from train.options.resolve import resolve
from train.runner.stages import RUN_ERRORS, keep_caches_under, run
from train.runtime.distributed import launch
from train.runtime.preemption import parse_signals


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: options resolved and every input checked (:func:`train.runner.preflight.check_inputs`)
    before any work starts, by the launching process only; a refusal is one line, exit code 2."""
    from train.runner.preflight import check_inputs
    from train.runtime.logging_utils import refuse
    from train.runtime.distributed import SPAWNED_ENV

    try:
        cfg = resolve(argv)
        if SPAWNED_ENV not in os.environ:  # the launching process checked them for its ranks
            check_inputs(cfg)
    except (ValueError, FileNotFoundError) as err:
        return refuse(f"train.run: error: {err}")
    keep_caches_under(Path(cfg.out))
    return launch(main, sys.argv[1:] if argv is None else argv, cfg.procs, cfg.device, cfg.deterministic,
                  lambda info: run(cfg, info), "train.run", RUN_ERRORS, parse_signals(cfg.preempt_signal))


if __name__ == "__main__":
    sys.exit(main())
