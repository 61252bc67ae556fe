"""``--procs N``: the CLI starts N local processes joined as one process group (like torchrun)."""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

from train.runtime.distributed import init_from_env, spawn_local
from train.runtime.preemption import PREEMPTED_EXIT


def _entry(argv: list[str]) -> int:
    """Each rank writes what it sees: rank, world size, and the all-reduced sum of the ranks."""
    info = init_from_env("cpu")
    total = torch.tensor([float(info.rank)])
    torch.distributed.all_reduce(total)
    Path(argv[0], f"rank{info.rank}.txt").write_text(f"{info.rank} {info.world_size} {float(total)} "
                                                      f"{torch.get_num_threads()}")
    torch.distributed.destroy_process_group()
    return int(argv[1]) if info.rank == 1 else 0


def test_spawn_local_joins_the_processes_in_one_group_and_passes_exit_codes(tmp_path: Path) -> None:
    assert spawn_local(_entry, [str(tmp_path), "0"], 2) == 0
    seen = sorted((tmp_path / f"rank{r}.txt").read_text().split() for r in range(2))
    assert [s[:3] for s in seen] == [["0", "2", "1.0"], ["1", "2", "1.0"]]
    assert spawn_local(_entry, [str(tmp_path), "3"], 2) == 3  # a failing rank fails the launch


def _stops_then_rank_1_aborts(argv: list[str]) -> int:
    """Rank 0 stops with 75; rank 1 waits until the launcher has reaped rank 0 (its /proc entry is
    gone), so that status is the first the launcher saw, and then aborts (SIGABRT)."""
    pid_file = Path(argv[0], "rank0.pid")
    if os.environ["RANK"] == "0":
        pid_file.write_text(str(os.getpid()))
        return PREEMPTED_EXIT
    deadline = time.monotonic() + 60
    while (not pid_file.exists() or Path("/proc", pid_file.read_text()).exists()) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGABRT)
    return 0


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="waits on /proc")
def test_a_launch_exits_75_only_when_every_process_did(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A rank that dies after its peer stopped with 75 (here of SIGABRT, as a C++ thread left
    running aborts a process) fails the launch: a requeue script must not take it for a clean stop."""
    assert spawn_local(_stops_then_rank_1_aborts, [str(tmp_path)], 2) == 128 + signal.SIGABRT
    assert "rank 1 was killed by SIGABRT" in capsys.readouterr().err


if __name__ == "__main__":  # pragma: no cover
    sys.exit(0)
