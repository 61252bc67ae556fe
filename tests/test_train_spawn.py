"""``--procs N``: the CLI starts N local processes joined as one process group (like torchrun)."""
from __future__ import annotations

import os
import signal
import subprocess
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


_LEAVING = """
import atexit, sys, threading, time
from train.runtime.leaving import leave
atexit.register(print, "atexit function ran")
threading.Thread(target=lambda: (time.sleep(0.2), print("thread finished"))).start()
sys.stdout.write("buffered line\\n")  # a pipe: block-buffered, not yet written
leave(75)
print("not reached")
"""


def test_leave_ends_a_process_after_its_threads_its_atexit_functions_and_its_buffered_output() -> None:
    """``train.runtime.leaving.leave`` skips only the interpreter's finalization: what a normal exit
    does in Python (threads joined, ``atexit`` functions, streams flushed) still happens, then the
    process ends with the status it was given."""
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # the output is buffered
    done = subprocess.run([sys.executable, "-c", _LEAVING], cwd=root, capture_output=True, text=True, timeout=60,
                          env={**env, "PYTHONPATH": str(root)})
    assert done.returncode == PREEMPTED_EXIT, done.stderr
    assert done.stdout.splitlines() == ["buffered line", "thread finished", "atexit function ran"], done


if __name__ == "__main__":  # pragma: no cover
    sys.exit(0)
