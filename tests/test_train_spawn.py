"""``--procs N``: the CLI starts N local processes joined as one process group (like torchrun)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from train.runtime.distributed import init_from_env, spawn_local


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(0)
