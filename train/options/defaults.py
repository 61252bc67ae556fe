"""The defaults of ``python -m train.run`` that depend on the data set and the machine: the synthetic
demo's budget, whether a run trains on CUDA, the processes and DataLoader workers (decision 39),
the checkpoint interval and the output and data paths; filled into a :class:`RunConfig` whose
options were left unset (the option table, :mod:`train.config`, says what each one means).
"""
from __future__ import annotations

import os
from pathlib import Path

from train.config import RESOLVED_DEFAULTS, SYNTHETIC_DEMO, RunConfig


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def runs_on_cuda(cfg: RunConfig) -> bool:
    """Whether a run of ``cfg`` trains on CUDA (``--device cuda``, or ``auto`` with a GPU present)."""
    return cfg.device == "cuda" or (cfg.device == "auto" and _has_cuda())


def default_num_workers(cores: int, ranks: int) -> int:
    """DataLoader workers of one training process on a GPU node (decision 39): the cores shared out
    over the ``ranks`` processes of the node, one kept for the process itself, at least 1 and at
    most 8 (past that, augmentation of a 12-scan batch outpaces a step anyway)."""
    return max(1, min(8, cores // max(ranks, 1) - 1))


def loader_workers(cuda: bool, ranks: int) -> int:
    """The default ``--num-workers`` of a process: :func:`default_num_workers` of this machine's
    cores on CUDA, none on a CPU (the CPU demo is tuned for that)."""
    from fast.persistence import available_cores

    return default_num_workers(available_cores(), ranks) if cuda else 0


def ranks_per_node(procs: int) -> int:
    """Training processes on this node: torchrun's LOCAL_WORLD_SIZE, else ``--procs`` (all local)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", procs))


def fill_defaults(cfg: RunConfig) -> None:
    """Fill the options left unset: the synthetic demo's budget, the other runs' defaults, then the
    ones that depend on the machine (processes, loader workers, checkpoint interval) and the paths."""
    from train.runtime.distributed import under_external_launcher

    for k, v in (SYNTHETIC_DEMO if cfg.dataset == "synthetic" else {}).items():
        if getattr(cfg, k) is None:
            setattr(cfg, k, v)
    for k, v in RESOLVED_DEFAULTS.items():
        if getattr(cfg, k) is None:
            setattr(cfg, k, v)
    if cfg.teacher_epochs is None:
        cfg.teacher_epochs = cfg.epochs
    if cfg.procs is None:
        cpu_demo = cfg.dataset == "synthetic" and not runs_on_cuda(cfg)
        two = cpu_demo and (os.cpu_count() or 1) >= 2 and cfg.batch_size % 2 == 0 and not under_external_launcher()
        cfg.procs = 2 if two else 1
    if cfg.num_workers is None:
        cfg.num_workers = loader_workers(runs_on_cuda(cfg), ranks_per_node(cfg.procs))
    if cfg.checkpoint_minutes is None:
        cfg.checkpoint_minutes = 30.0 if runs_on_cuda(cfg) else 0.0
    if cfg.out is None and cfg.dataset is not None:
        cfg.out = str(Path("runs") / cfg.dataset)
    if cfg.data_root is None and cfg.dataset is not None:
        cfg.data_root = str(Path("data") / cfg.dataset)
