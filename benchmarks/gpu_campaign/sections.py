"""The sections of the GPU campaign (``python -m benchmarks.gpu``), by name, in the order it runs them.

Every section runs in its own child process (started by ``benchmarks.gpu``), gets its sizes (the
campaign's or the smoke run's), the device and a soft deadline, and writes what it measured to a
:class:`benchmarks.gpu_campaign.record.Recorder` as it goes, so a section stopped at its time box still
reports the rows it finished. A section reports tables (``{"title", "header", "rows"}``) and notes
that the campaign's report prints as they are, plus the raw numbers.

What each section measures (paper references in brackets), and where it lives:

* ``cuda_tests`` (``benchmarks.gpu_campaign.cuda_tests``) - ``pytest -m cuda``: every CUDA-only test;
* ``step_kernels`` (``benchmarks.gpu_campaign.training``) - the student CE, KD + saliency and full-objective
  (Eq. 8) steps at the paper presets, each as ``train.engine.loop`` runs it with the batch plan built
  ahead (as the loader's workers build it): wall time, kernel time and the GPU's busy share
  (torch.profiler), and the host work beside them;
* ``tps`` (``benchmarks.gpu_campaign.topo``) - TPS of a training batch (Algorithm 5): the former
  one-program Triton kernel against the kernel split over programs (at several chunk sizes) and
  the host workers, the same indices asserted;
* ``cost`` (``benchmarks.gpu_campaign.models``) - paper Tables 8 and 9: teacher vs student inference
  latency at 30,000 points, throughput, peak memory, parameters and GFLOPs;
* ``topo_step`` (``benchmarks.gpu_campaign.training``) - the topological term's cost inside a training
  step, TPS in the host workers and on the device; target: at most 100 ms per step;
* ``engine_paths`` (``benchmarks.gpu_campaign.topo``) - ``fast.topo_loss`` forward + backward by
  persistence path (worker pool, device batch) and the default it recommends;
* ``distill`` (``benchmarks.gpu_campaign.training``) - a few hundred distillation steps (Eq. 8) with their
  per-section profile;
* ``condense`` (``benchmarks.gpu_campaign.condense``) - one outer iteration of dataset condensation
  (DD3D against explicit gradient matching, CPC 1 and 10, 1,024 points, 40 classes' sizes): time
  and peak memory;
* ``table6`` (``benchmarks.gpu_campaign.topo``) - paper Table 6 (App. B.4) rows of ``fast.topo_loss`` on
  the device;
* ``accelerators`` (``benchmarks.gpu_campaign.models``) - flash-attn vs PyTorch SDPA and spconv vs our
  sparse convolution, where those packages are installed.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from benchmarks.gpu_campaign.condense import condense
from benchmarks.gpu_campaign.cuda_tests import cuda_tests
from benchmarks.gpu_campaign.models import accelerators, cost
from benchmarks.gpu_campaign.record import Recorder
from benchmarks.gpu_campaign.topo import engine_paths, table6, tps
from benchmarks.gpu_campaign.training import distill, step_kernels, topo_split, topo_step

SECTIONS: dict[str, Callable[[dict[str, Any], torch.device, Recorder, float], None]] = {
    "cuda_tests": cuda_tests,
    "step_kernels": step_kernels,
    "tps": tps,
    "cost": cost,
    "topo_step": topo_step,
    "topo_split": topo_split,
    "engine_paths": engine_paths,
    "distill": distill,
    "condense": condense,
    "table6": table6,
    "accelerators": accelerators,
}
"""Section name -> function, in the order the campaign runs them (most important first)."""
