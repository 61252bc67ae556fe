"""Where the topological term's time goes in one full-objective training step (paper Algorithm 1 inside Eq. 8).

:func:`measure_split` runs ``train.engine.steps.distillation_step`` with and without L_topo, the
rounds interleaved, and splits the difference of the median steps, the measured cost of L_topo,
into the parts the training thread spends on it (read off the stamps of ``fast.TopoLossJob``'s
``timeline``, which never wait for the device):

* ``tps_queue``: queueing TPS on the device (copying the batch in and replaying its CUDA graph),
  with the teacher features' normalisation; 0 where TPS runs in the host workers (then it is part
  of their time beside the critical path);
* ``teacher_launch_rest`` / ``student_launch``: the rest of the teacher's start, and the student's
  (normalisation, the selected rows, the pinned copies started);
* ``wait``: the trainer blocked in ``loss()`` until every diagram is back;
* ``pwcd_forward``: routing (critical-edge lengths, Eq. 1) and the PWCD forward (Eq. 2-3), with the
  one copy of the diagrams to the device;
* ``entropy``: the gradient-entropy diagnostic (an extra autograd pass, decision 33);
* ``backward``: the backward pass's extra time (PWCD, routing and normalisation backward), from
  rounds synchronised before the backward.

Their sum is compared with the measured cost (``sum_vs_measured``); the remainder is device work on
the critical path that no host part shows, or (negative) host time hidden behind the device, and,
where the workers have fewer cores than they need beside the training process (a 2-core CPU), the
training process slowed down by them (``workers_total``: their core time per step).
Beside the critical path: when each model's features reached the host after their copy was
queued (``teacher_copy`` / ``student_copy``; on the CPU no copy, only the call), each worker's
time per cloud and the slowest worker's (``fast.persistence.pool.TaskTime``), and how long before the trainer asked the last diagram was
ready (``ready_before_wait``, negative: it waited).
"""
from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator
from typing import Any

from benchmarks.cpu.measure import sync
from fast.topo_loss import TopoLossJob

PARTS = ("tps_queue", "teacher_launch_rest", "student_launch", "wait", "pwcd_forward", "entropy", "backward")


class _RecordedJob(TopoLossJob):
    """A :class:`TopoLossJob` that adds itself to :data:`_jobs` (the step builds its own)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _jobs.append(self)


_jobs: list[TopoLossJob] = []


@contextlib.contextmanager
def _recording() -> Iterator[list[TopoLossJob]]:
    from train.engine import steps

    _jobs.clear()
    steps.TopoLossJob = _RecordedJob  # type: ignore[misc]
    try:
        yield _jobs
    finally:
        steps.TopoLossJob = TopoLossJob  # type: ignore[misc]


def _step(trainer: Any, batch: dict[str, Any], settings: Any, seed: int,
          sync_before_backward: bool) -> tuple[float, float]:
    """One optimisation step of ``benchmarks.gpu_campaign.training._Trainer``: (wall seconds of the whole step,
    seconds of the backward and optimiser when ``sync_before_backward``, else NaN)."""
    from train.engine.profiling import StepTimer

    device = trainer.device
    sync(device)
    start = time.perf_counter()
    total, _ = trainer.losses(batch, settings, StepTimer(enabled=False), seed)
    backward = float("nan")
    if sync_before_backward:
        sync(device)
        backward = time.perf_counter()
    trainer.update(total)
    sync(device)
    end = time.perf_counter()
    return end - start, (end - backward) if sync_before_backward else float("nan")


def _parts(job: TopoLossJob) -> dict[str, float]:
    """Seconds of each critical-path part of one step's job (without ``backward``) and of the parts beside it."""
    t = job.timeline
    tps_end = t.get("tps_queued", t["teacher_start"])
    parts = {
        "tps_queue": tps_end - t["teacher_start"],
        "teacher_launch_rest": t["teacher_launched"] - tps_end,
        "student_launch": t["student_launched"] - t["student_start"],
        "wait": t["diagrams_ready"] - t["wait_start"],
        "pwcd_forward": t["loss_built"] - t["diagrams_ready"],
        "entropy": t["entropy_done"] - t["entropy_start"],
        "teacher_copy": t["teacher_on_host"] - t["teacher_copy_start"],
        "student_copy": t["student_on_host"] - t["student_copy_start"],
    }
    times = [getattr(f, "task_time", None) for model in ("teacher", "student") for f in job.diagram_futures[model]]
    times = [x for x in times if x is not None]
    if times:
        per_worker: dict[int, float] = {}
        for x in times:
            per_worker[x.worker] = per_worker.get(x.worker, 0.0) + x.finished - x.started
        parts["cloud_mean"] = statistics.mean(x.finished - x.started for x in times)
        parts["cloud_max"] = max(x.finished - x.started for x in times)
        parts["slowest_worker"] = max(per_worker.values())
        parts["workers_total"] = sum(per_worker.values())
        parts["ready_before_wait"] = t["wait_start"] - max(x.finished for x in times)
    return parts


def measure_split(trainer: Any, batch: dict[str, Any], with_topo: Any, without_topo: Any, rounds: int,
                  deadline: float) -> dict[str, Any]:
    """The split of L_topo's cost per step (module docstring): medians over ``rounds`` rounds (fewer
    if ``deadline``, a ``time.monotonic`` value, passes), in milliseconds (``split_rows`` makes its tables)."""
    for settings in (without_topo, with_topo):  # warm-up: kernels, the CUDA graph, allocator, workers
        _step(trainer, batch, settings, 0, False)
    walls: dict[str, list[float]] = {"without": [], "with": []}
    backward: dict[str, list[float]] = {"without": [], "with": []}
    parts: dict[str, list[float]] = {}
    done = 0
    with _recording() as jobs:
        for r in range(rounds):
            if time.monotonic() > deadline:
                break
            for name, settings in (("without", without_topo), ("with", with_topo)):
                walls[name].append(_step(trainer, batch, settings, r, False)[0])
            for name, settings in (("without", without_topo), ("with", with_topo)):
                backward[name].append(_step(trainer, batch, settings, r, True)[1])
            done += 1
        for job in jobs[::2]:  # the unsynchronised rounds' jobs
            for key, value in _parts(job).items():
                parts.setdefault(key, []).append(value)
    ms = {key: 1000 * statistics.median(values) for key, values in parts.items()}
    ms["backward"] = 1000 * (statistics.median(backward["with"]) - statistics.median(backward["without"]))
    measured = 1000 * (statistics.median(walls["with"]) - statistics.median(walls["without"]))
    total = sum(ms[p] for p in PARTS)
    return {
        "rounds": done,
        "step_without_ms": 1000 * statistics.median(walls["without"]),
        "step_with_ms": 1000 * statistics.median(walls["with"]),
        "measured_ms": measured,
        "parts_ms": ms,
        "sum_ms": total,
        "sum_vs_measured": total / measured if measured > 0 else float("nan"),
    }


PART_LABELS = {
    "tps_queue": "TPS queued by the trainer (with the teacher's normalisation)",
    "teacher_launch_rest": "rest of the teacher's start (selected rows, copy to the host started)",
    "student_launch": "student's start (normalisation, selected rows, copy started)",
    "wait": "trainer waits for the diagrams",
    "pwcd_forward": "diagrams to the device, routing (Eq. 1) and PWCD forward (Eq. 2-3)",
    "entropy": "gradient-entropy diagnostic (decision 33)",
    "backward": "extra backward: PWCD, routing, normalisation (synchronised rounds)",
}
BESIDE_LABELS = {
    "teacher_copy": "teacher features on the host, after their copy was queued",
    "student_copy": "student features on the host, after their copy was queued",
    "cloud_mean": "one cloud's diagrams in a worker (mean)",
    "cloud_max": "one cloud's diagrams in a worker (longest)",
    "slowest_worker": "the busiest worker's time this step",
    "workers_total": "all workers' time this step (core-ms taken beside the training thread)",
    "ready_before_wait": "last diagram ready before the trainer asked (negative: it waited)",
}


def split_rows(split: dict[str, Any]) -> tuple[list[list[Any]], list[list[Any]]]:
    """The two tables of a split: the critical-path parts with their sum against the measured cost,
    and the parts beside the critical path."""
    ms = split["parts_ms"]
    critical = [[PART_LABELS[p], ms[p]] for p in PARTS]
    critical += [["sum of the parts", split["sum_ms"]],
                 ["L_topo measured (step with - step without, medians)", split["measured_ms"]],
                 ["sum / measured", split["sum_vs_measured"]]]
    beside = [[label, ms[key]] for key, label in BESIDE_LABELS.items() if key in ms]
    return critical, beside
