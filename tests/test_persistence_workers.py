"""Each process's persistence pool gets its share of the cores (decision 6c).

Several ranks on one machine must not oversubscribe it.

``fast.persistence.worker_share``: the affinity mask divided among the ``LOCAL_WORLD_SIZE``
processes of a launch (torchrun, ``--procs``), the mask itself when a launcher already narrowed
it, at least one worker; ``--topo-workers`` (``set_default_workers``) overrides it. Checked with
a faked machine, then in a real 2-process launch.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from fast.persistence import default_pool, set_default_workers, worker_share
from train.options.resolve import resolve
from train.runtime.distributed import init_from_env, spawn_local


@pytest.mark.parametrize(
    ("cpus", "mask", "local_world", "share"),
    [
        (8, 8, None, 8),  # one process: every core it may run on
        (8, 8, "4", 2),  # torchrun --nproc_per_node=4 on 8 cores
        (8, 8, "16", 1),  # more processes than cores: still one worker each
        (8, 3, "4", 3),  # the launcher pinned this rank to 3 cores: that mask is its share
    ],
)
def test_worker_share_divides_the_cores_among_the_local_processes(
    monkeypatch: pytest.MonkeyPatch, cpus: int, mask: int, local_world: str | None, share: int
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(mask)), raising=False)
    if local_world is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_world)
    assert worker_share() == share


def _entry(argv: list[str]) -> int:
    """Each rank writes the size of its default pool, as sized by default and by --topo-workers."""
    info = init_from_env("cpu")
    cfg = resolve(["--dataset", "synthetic", "--topo-workers", "3"])
    set_default_workers(None)
    shared = default_pool().workers
    set_default_workers(cfg.topo_workers)
    Path(argv[0], f"rank{info.rank}.txt").write_text(f"{shared} {default_pool().workers}")
    import torch.distributed

    torch.distributed.destroy_process_group()
    return 0


def test_two_process_launch_gives_each_pool_its_share_and_topo_workers_overrides(tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    full_mask = cores >= (os.cpu_count() or cores)
    expected = max(cores // 2, 1) if full_mask else cores
    assert spawn_local(_entry, [str(tmp_path)], 2) == 0
    for rank in range(2):
        assert (tmp_path / f"rank{rank}.txt").read_text().split() == [str(expected), "3"]


@pytest.mark.parametrize(
    ("share", "workers", "clouds", "size"),
    [
        (16, None, 8, 8),  # the GPU host, 4 scans a step: 8 workers (of 2 threads each, decision 89)
        (2, None, 8, 2),  # the 2-core CPU demo: its share, as before
        (16, None, 40, 16),  # more clouds than cores: the share
        (16, None, None, None),  # no step size given: the pool's own default (the share)
        (16, 3, 8, 3),  # --topo-workers overrides
    ],
)
def test_training_gives_each_cloud_of_a_step_a_worker_up_to_the_share(
    monkeypatch: pytest.MonkeyPatch, share: int, workers: int | None, clouds: int | None, size: int | None
) -> None:
    import train.engine.steps

    sizes: list[int | None] = []
    monkeypatch.setattr(train.engine.steps, "worker_share", lambda: share)
    monkeypatch.setattr(train.engine.steps, "set_default_workers", sizes.append)
    monkeypatch.setattr(train.engine.steps, "default_pool", lambda: None)
    train.engine.steps.start_persistence(workers, clouds)
    assert sizes == [size]
    assert [train.engine.steps.step_clouds(b, w) for b, w in ((4, 1), (4, 2), (1, 2))] == [8, 4, 2]
