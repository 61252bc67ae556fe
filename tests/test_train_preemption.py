"""Runs that live on clusters (decision 46): a scheduler's SIGTERM in the middle of an epoch stops
a 2-process run after the step in flight with one checkpoint and exit status 75, and ``--resume``
finishes it with the weights of the uninterrupted run; a 2-node torchrun run (two launches on
loopback, gloo) preempted the same way resumes on one node with ``--procs 2`` to those weights too;
``--resume`` with another number of processes continues, re-sharding the unfinished epoch; a run
whose output goes to a file writes plain progress lines, no carriage return.

The runs are subprocesses at the tiny budget of ``test_train_support`` (3 training scans, batch 2:
2 steps per epoch, 3 epochs), started through ``tests/signalled_run.py``, which has the launcher
signalled in the middle of step 3 (epoch 2 of 3) and once more while the checkpoint is written.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from test_train_support import TINY_MODEL, tiny_config, tiny_data
from train.checkpoint import load_checkpoint
from train.distributed import ResumableDistributedSampler
from train.loop import FINAL, LAST
from train.preemption import PREEMPTED_EXIT

ROOT = Path(__file__).resolve().parents[1]
ENTRY = Path(__file__).with_name("signalled_run.py")
pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs POSIX signals")
RUN = dict(stage="student", epochs=3, iters_per_epoch=None, procs=2,
           student_overrides={**TINY_MODEL, "drop_path": 0.3, "deterministic": False})
AT = 3  # the step the launcher is signalled in: the first of epoch 2


def _config(base: Path, name: str, **values: Any) -> Path:
    cfg = tiny_config(base, out=str(base / name), data_root=str(base / "data"), **{**RUN, **values})
    path = base / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def _run(args: list[str], signal_at: int | None = None, **env: str) -> subprocess.CompletedProcess:
    child = {k: v for k, v in os.environ.items() if not k.startswith("SIGNAL_")}
    child["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [child.get("PYTHONPATH")])])
    if signal_at is not None:
        child.update(SIGNAL_AT=str(signal_at), SIGNAL_AGAIN="1")
    child.update(env)
    return subprocess.run(args, env=child, cwd=ROOT, capture_output=True, text=True, timeout=300)


def _train(config: Path, *args: str, signal_at: int | None = None) -> subprocess.CompletedProcess:
    return _run([sys.executable, str(ENTRY), "--config", str(config), *args], signal_at)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(out / "student" / FINAL)["model"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _preempted_line(out: Path) -> str:
    return (f"train.run: preempted by SIGTERM at step {AT}: checkpoint {out / 'student' / LAST} written; rerun "
            f"with --resume to continue (exit status {PREEMPTED_EXIT})")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("preemption")
    tiny_data(tiny_config(root, data_root=str(root / "data")))
    return root


@pytest.fixture(scope="module")
def whole(base: Path) -> Path:
    """The uninterrupted 2-process run."""
    done = _train(_config(base, "whole"))
    assert done.returncode == 0, done.stderr
    return base / "whole"


@pytest.fixture(scope="module")
def preempted(base: Path) -> Path:
    """A 2-process run signalled in step 3 (and again during its save): a copy of its folder."""
    config = _config(base, "preempted")
    done = _train(config, signal_at=AT)
    assert done.returncode == PREEMPTED_EXIT, done.stderr
    out = base / "preempted"
    assert [line for line in done.stderr.splitlines() if "preempted" in line] == [_preempted_line(out)]
    assert int(load_checkpoint(out / "student" / LAST)["step"]) == AT
    assert not (out / "student" / FINAL).exists()
    shutil.copytree(out, base / "preempted_copy")
    return config


def test_sigterm_mid_epoch_checkpoints_the_step_and_resume_equals_the_uninterrupted_run(
        base: Path, whole: Path, preempted: Path) -> None:
    done = _train(preempted, "--resume")
    assert done.returncode == 0, done.stderr
    _assert_same_weights(whole, base / "preempted")
    log = (base / "preempted" / "student" / "train_log.csv").read_text()
    assert log == (whole / "student" / "train_log.csv").read_text()


def test_a_resume_on_another_number_of_processes_continues_resharded(base: Path, preempted: Path) -> None:
    out = base / "preempted_copy"
    config = _config(base, "preempted_copy", procs=1)
    done = _train(config, "--resume")
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "no longer bit-identical" in line]
    assert len(warnings) == 1 and "written by 2 process(es) and this run has 1" in warnings[0]
    assert int(load_checkpoint(out / "student" / FINAL)["step"]) == 6
    rows = (out / "student" / "train_log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, 7))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_two_node_torchrun_run_preempted_resumes_on_one_node_to_the_same_weights(base: Path, whole: Path) -> None:
    """Two torchrun launches of one process each, joined by a c10d rendezvous on loopback; rank 0's
    torchrun is signalled in step 3 (it passes SIGTERM on to its process; the other node's process
    stops after the same step by the vote); then ``--procs 2`` on one node finishes the run."""
    config = _config(base, "two_nodes", procs=1)
    port = _free_port()
    child = {k: v for k, v in os.environ.items() if not k.startswith("SIGNAL_")}
    child.update(PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [child.get("PYTHONPATH")])]),
                 SIGNAL_AT=str(AT), OMP_NUM_THREADS="1")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "preemption",
                str(ENTRY), "--config", str(config)]
    nodes = [subprocess.Popen(torchrun, env=child, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    logs = [node.communicate(timeout=300)[0] for node in nodes]
    out = base / "two_nodes"
    assert sum(line == _preempted_line(out) for log in logs for line in log.splitlines()) == 1, logs
    assert int(load_checkpoint(out / "student" / LAST)["step"]) == AT
    done = _train(_config(base, "two_nodes", procs=2), "--resume")
    assert done.returncode == 0, done.stderr
    _assert_same_weights(whole, out)


def test_a_run_logging_to_a_file_writes_plain_lines_and_a_resume_without_checkpoint_says_so(base: Path) -> None:
    config = _config(base, "to_file", procs=1, epochs=1, progress=True, progress_steps=1)
    log = base / "to_file.log"
    with log.open("wb") as fh:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        code = subprocess.run([sys.executable, "-m", "train.run", "--config", str(config), "--resume"], env=env,
                              cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, timeout=300).returncode
    text = log.read_bytes()
    assert code == 0, text.decode()
    assert b"\r" not in text
    lines = text.decode().splitlines()
    assert f"student: --resume found no checkpoint in {base / 'to_file' / 'student'}: starting the stage" in lines
    progress = [line for line in lines if line.startswith("student ")]
    assert [line.split()[1] for line in progress] == ["1/2", "2/2"]
    assert all(" loss=" in line and " lr=" in line and " it/s " in line and " left " in line for line in progress)


@pytest.mark.parametrize("size", [3, 7, 10])
@pytest.mark.parametrize("old,new", [(2, 1), (1, 2), (2, 3), (3, 2), (2, 2)])
def test_a_resharded_epoch_deals_out_exactly_the_rest_of_the_epochs_list(size: int, old: int, new: int) -> None:
    """After p steps of batch B the first p*B entries of the epoch's list (padded for the run that
    began it) are used; the rest goes to the new processes, each entry once, padded only to a
    multiple of the new count; with the same count each process gets DistributedSampler's shard."""
    data = list(range(size))
    batch = old * new  # per-process batches of new (old run) and old (new run) scans
    lists = [list(iter(_sampler(data, old, r))) for r in range(old)]
    padded = [lists[k % old][k // old] for k in range(old * len(lists[0]))]  # the epoch's list
    for steps in range(-(-len(padded) // batch)):
        rest = padded[steps * batch:]
        shards = [_shard(data, new, r, steps * batch // new, old) for r in range(new)]
        assert [shards[k % new][k // new] for k in range(len(rest))] == rest
        assert len({len(s) for s in shards}) == 1 and sum(map(len, shards)) - len(rest) < new
        if old == new:
            assert shards == [lists[r][steps * batch // new:] for r in range(new)]


def _sampler(data: list[int], world: int, rank: int) -> ResumableDistributedSampler:
    sampler = ResumableDistributedSampler(data, world, rank, shuffle=True, seed=5)  # type: ignore[arg-type]
    sampler.set_epoch(2)
    return sampler


def _shard(data: list[int], world: int, rank: int, start: int, list_world: int) -> list[int]:
    sampler = _sampler(data, world, rank)
    sampler.set_start(start, list_world)
    assert len(sampler) == len(list(iter(sampler)))
    return list(iter(sampler))
