"""Runs that live on clusters (decision 46): a scheduler's SIGTERM in the middle of an epoch stops
a run after the step in flight with one checkpoint and exit status 75, and ``--resume`` finishes it
with the weights of the uninterrupted run; a 2-node torchrun run (two launches on loopback, gloo)
equals the single 2-process launch, and one preempted the same way resumes on one node with
``--procs 2`` to those weights too; ``--resume`` with another number of processes continues,
re-sharding the unfinished epoch; a run whose output goes to a file writes plain progress lines, no
carriage return.

The runs are subprocesses at the tiny budget of ``test_train_support`` (3 training scans, batch 2:
2 steps per epoch, 3 epochs, no pictures), started through ``tests/signalled_run.py``, which has
the launcher signalled in the middle of step 3 (epoch 2 of 3) and, for the ``--procs`` launcher,
once more while the checkpoint is written; in a third run (and in the preempted 2-node run) every
process is signalled once more as it exits, after its run has stopped: a signal that came late
killed a process there now and then (about one run in fifteen on a loaded machine), and this makes
that moment certain, so that the exit status 75 cannot be had by luck. The same runs end with one
more all-reduce whose gloo thread frees its tensor as the rank leaves, the moment that aborted a
rank now and then (SIGABRT, the launcher said 134), and check that no rank's interpreter finalizes while gloo's threads
run, which every rank did before (decision 46). Each run's output goes to a
file, as under SLURM. One uninterrupted single launch (started with ``--resume`` as a requeue script
starts it) is the reference every other run is compared with. Most of a run's cost is the start of
its processes (about 3.5 CPU-seconds each here: torch, the compiler modules its optimiser imports,
the compiled kernels; 21 processes in all), so each run is made once and serves every claim it can.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from test_train_support import TINY_MODEL, tiny_config, tiny_data_folder
from train.runtime.checkpoint import content_digest, load_checkpoint
from train.runtime.distributed import ResumableDistributedSampler
from train.engine.loop import FINAL, LAST
from train.runtime.preemption import PREEMPTED_EXIT, Preempted, watch

ROOT = Path(__file__).resolve().parents[1]
ENTRY = Path(__file__).with_name("signalled_run.py")
pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs POSIX signals")
RUN = dict(stage="student", epochs=3, iters_per_epoch=None, procs=2, plots=False, progress=True, progress_steps=1,
           student_overrides={**TINY_MODEL, "drop_path": 0.3, "deterministic": False})
AT = 3  # the step the launcher is signalled in: the first of epoch 2


def _config(base: Path, name: str, **values: Any) -> Path:
    cfg = tiny_config(base, out=str(base / name), data_root=str(base / "data"), **{**RUN, **values})
    path = base / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def _start(args: list[str], log: Path, **env: str) -> subprocess.Popen:
    """``python ARGS`` with the variables ``env`` set (the ``SIGNAL_`` ones of ``tests/signalled_run.py``
    only from there), writing stdout and stderr to ``log``."""
    child = {k: v for k, v in os.environ.items() if not k.startswith("SIGNAL_")}
    child["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [child.get("PYTHONPATH")])])
    child.update(env)
    with log.open("wb") as fh:
        return subprocess.Popen([sys.executable, *args], env=child, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)


def _finish(runs: list[subprocess.Popen], logs: list[Path]) -> list[tuple[int, str]]:
    """The exit status and the log of each started run (all ended first), which wrote no carriage
    return and in which no process aborted (``terminate called``: a C++ thread left running)."""
    try:
        codes = [run.wait(timeout=300) for run in runs]
    finally:
        for run in runs:
            run.kill()  # only one that ran past the timeout is still there
    texts = [log.read_bytes() for log in logs]
    assert not any(b"\r" in text or b"terminate called" in text for text in texts), texts
    return [(code, text.decode()) for code, text in zip(codes, texts)]


def _train(config: Path, *args: str, **env: str) -> tuple[int, str]:
    """A single launch (``--procs`` of the config) of ``config``; its log is ``<config>.log`` (overwritten)."""
    log = config.with_suffix(".log")
    return _finish([_start([str(ENTRY), "--config", str(config), *args], log, **env)], [log])[0]


def _two_nodes(config: Path, **env: str) -> list[tuple[int, str]]:
    """Two torchrun launches of one process each on ``config`` (``procs: 1``), joined by a c10d
    rendezvous on loopback; with ``SIGNAL_AT`` rank 0's torchrun is signalled (it passes SIGTERM on
    to its process; the other node's process stops after the same step by the vote). Each process
    has the intra-op threads a process of ``--procs 2`` gets, so the runs compute alike on any machine."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = ["-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", config.stem, str(ENTRY), "--config", str(config)]
    logs = [config.with_name(f"{config.stem}_node{n}.log") for n in range(2)]
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    return _finish([_start(torchrun, log, OMP_NUM_THREADS=threads, **env) for log in logs], logs)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(out / "student" / FINAL)["model"]


def _assert_same_run(a: Path, b: Path) -> None:
    """The same final weights and the same training log."""
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a / "student" / "train_log.csv").read_text() == (b / "student" / "train_log.csv").read_text()


def _preempted_line(out: Path) -> str:
    return (f"train.run: preempted by SIGTERM at step {AT}: checkpoint {out / 'student' / LAST} written; rerun "
            f"with --resume to continue (exit status {PREEMPTED_EXIT})")


def _stopped_at_the_step(out: Path, log: str) -> dict[str, str]:
    """Checks that a run signalled in step ``AT`` printed one line naming its checkpoint, which holds
    that step, and wrote no final weights; returns the checkpoint's content digest per entry, but
    for the config (which names the run's folder and launcher), taken before a resume replaces it."""
    assert [line for line in log.splitlines() if line.startswith("train.run: preempted")] == [_preempted_line(out)], log
    state = load_checkpoint(out / "student" / LAST)
    assert int(state["step"]) == AT
    assert not (out / "student" / FINAL).exists()
    return {key: content_digest({key: value}) for key, value in state.items() if key not in ("config", "digest")}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_data_folder(tmp_path_factory, "preemption")


@pytest.fixture(scope="module")
def single(base: Path) -> Path:
    """The uninterrupted 2-process run of one launch, started with ``--resume`` (no checkpoint yet)."""
    code, log = _train(_config(base, "single"), "--resume")
    assert code == 0, log
    return base / "single"


@pytest.fixture(scope="module")
def preempted(base: Path) -> dict[str, str]:
    """A 2-process run of the ``--procs`` launcher, signalled in step 3 and again during its save,
    which exits with status 75 (its checkpoint's digests, see :func:`_stopped_at_the_step`)."""
    code, log = _train(_config(base, "preempted"), SIGNAL_AT=str(AT), SIGNAL_AGAIN="1")
    assert code == PREEMPTED_EXIT, log
    return _stopped_at_the_step(base / "preempted", log)


@pytest.fixture(scope="module")
def two_nodes_preempted(base: Path) -> dict[str, str]:
    """A 2-node run whose rank 0's torchrun is signalled in step 3, and each process once more as it
    exits, after one more all-reduce (its checkpoint's digests): both processes outlive that
    signal without finalizing their interpreter, and the other node's torchrun, which reports its
    process's status, saw 75 (rank 0's torchrun, signalled, exits 1)."""
    nodes = _two_nodes(_config(base, "two_nodes_preempted", procs=1), SIGNAL_AT=str(AT), SIGNAL_LATE="1",
                       SIGNAL_AT_EXIT="1")
    _outlived_the_late_signal(nodes[0][1], "rank 0")
    _outlived_the_late_signal(nodes[1][1], "rank 1")
    _left_without_finalizing(nodes[0][1] + nodes[1][1])
    assert f"exitcode  : {PREEMPTED_EXIT} " in nodes[1][1], nodes[1][1]
    return _stopped_at_the_step(base / "two_nodes_preempted", "\n".join(log for _, log in nodes))


@pytest.fixture(scope="module")
def late(base: Path) -> tuple[int, str]:
    """A 2-process run of the ``--procs`` launcher signalled in step 3, whose every process is
    signalled once more as it exits, and whose ranks run one more all-reduce as they exit (with
    rank 1 keeping the GIL from its gloo thread: ``SIGNAL_AT_EXIT`` of ``tests/signalled_run.py``)."""
    return _train(_config(base, "late"), SIGNAL_AT=str(AT), SIGNAL_LATE="1", SIGNAL_AT_EXIT="1")


def _outlived_the_late_signal(log: str, *processes: str) -> None:
    assert all(f"signalled_run: {p} outlived a late SIGTERM" in log.splitlines() for p in processes), log


def _left_without_finalizing(log: str) -> None:
    """No rank's interpreter finalized (``tests/signalled_run.py`` names the threads then alive)."""
    assert "finalized with threads" not in log, log


def test_a_run_logging_to_a_file_writes_plain_lines_and_a_resume_without_checkpoint_says_so(
        base: Path, single: Path) -> None:
    lines = (base / "single.log").read_text().splitlines()
    assert f"student: --resume found no checkpoint in {single / 'student'}: starting the stage" in lines
    progress = [line for line in lines if line.startswith("student ")]
    assert [line.split()[1] for line in progress] == [f"{k}/6" for k in range(1, 7)]
    assert all(" loss=" in line and " lr=" in line and " it/s " in line and " left " in line for line in progress)


def test_a_two_node_torchrun_run_equals_the_single_launch(base: Path, single: Path) -> None:
    nodes = _two_nodes(_config(base, "two_nodes", procs=1))
    assert [code for code, _ in nodes] == [0, 0], nodes
    _assert_same_run(single, base / "two_nodes")


def test_a_signal_reaching_the_processes_as_they_exit_leaves_the_exit_status_75(
        base: Path, late: tuple[int, str]) -> None:
    """A preemption signal that reaches the processes after their run stopped (a second SIGTERM
    the launcher passes on late, or one a scheduler sends to every process of the job) changes
    nothing: every process exits 75, and so does the launcher. With the default action put back
    when the run stopped, it killed the process (the launcher exited 143), and the launcher itself
    (which put its own back after its ranks ended) died of it with 143."""
    code, log = late
    assert code == PREEMPTED_EXIT, log
    _outlived_the_late_signal(log, "rank 0", "rank 1", "the launching process")
    _stopped_at_the_step(base / "late", log)


def test_a_rank_leaves_without_finalizing_its_interpreter_while_gloo_threads_run(late: tuple[int, str]) -> None:
    """gloo's threads outlive ``destroy_process_group`` once DDP was built; a ``pt_gloo_runloop``
    thread that frees a tensor as its rank's interpreter finalizes is ended by CPython with
    ``pthread_exit`` and the rank aborts ("terminate called without an active exception", the
    launcher exited 134 in five of six such runs before the ranks left with ``os._exit``). Every
    rank reached that finalization with those threads alive; now none finalizes, and the run exits 75."""
    code, log = late
    _left_without_finalizing(log)
    assert code == PREEMPTED_EXIT, log


def test_sigterm_mid_epoch_to_either_launcher_checkpoints_the_step_with_the_same_state(
        preempted: dict[str, str], two_nodes_preempted: dict[str, str]) -> None:
    """The ``--procs`` launcher and torchrun stop the run at the same step with the same model,
    optimiser, scheduler and per-process random and data states, so the resume below stands for both."""
    assert preempted == two_nodes_preempted


def test_a_two_node_run_preempted_mid_epoch_resumes_on_one_node_to_the_weights_of_the_single_launch(
        base: Path, single: Path, two_nodes_preempted: dict[str, str]) -> None:
    code, log = _train(_config(base, "two_nodes_preempted", procs=2), "--resume")
    assert code == 0, log
    _assert_same_run(single, base / "two_nodes_preempted")


def test_a_resume_on_another_number_of_processes_continues_resharded(base: Path, preempted: dict[str, str]) -> None:
    out = base / "preempted"
    code, log = _train(_config(base, "preempted", procs=1), "--resume")
    assert code == 0, log
    warnings = [line for line in log.splitlines() if "no longer bit-identical" in line]
    assert len(warnings) == 1 and "written by 2 process(es) and this run has 1" in warnings[0]
    assert int(load_checkpoint(out / "student" / FINAL)["step"]) == 6
    rows = (out / "student" / "train_log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, 7))


def test_a_process_stopped_by_a_preemption_ignores_the_signals_until_it_exits(tmp_path: Path) -> None:
    """A single process (no rank) that stopped on a signal exits 75 next: a late second signal must
    not kill it there, where the handler it had before (the default action) put back let it end
    with 143; a block that ends otherwise gives the handler back."""
    before = signal.getsignal(signal.SIGUSR1)
    try:
        with watch([signal.SIGUSR1]):
            pass
        assert signal.getsignal(signal.SIGUSR1) == before
        with pytest.raises(Preempted), watch([signal.SIGUSR1]):
            raise Preempted(signal.SIGUSR1, AT, tmp_path / LAST)
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR1, before)


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
