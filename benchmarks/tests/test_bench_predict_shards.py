"""Labelling on several processes (``train.predict`` under torchrun, decision 77): scans/s with one
process and with two, each process pinned to one thread (OMP_NUM_THREADS=1, as torchrun sets it);
on a machine with GPUs, with 1, 2, 4 and 8 processes as far as there are GPUs (a GPU each).

Group ``predict-shards``: the whole command on scan files (``.bin``, LiDAR-like surface clouds of
``train.evaluation.cost.lidar_like_batch``, one point per 5 cm voxel) with a randomly initialised
model saved as ``train.run`` saves one: ``python -m train.predict`` for one process,
``python -m torch.distributed.run --standalone --nproc_per_node 2 -m train.predict`` for two. Each
round labels into an empty ``--out``. Recorded: the run's own scans/s (its summary line: the
labelling, from the first scan read to the last file written, of the slowest shard) and the wall
time of the command (process starts, imports and model loading included). ``--benchmark``: the
paper's student preset on 16 scans of 30,000 points (128 where there are GPUs); the smoke run: the
demo student on 4 scans of 2,000 points.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from train.data.lidar.scan_files import write_scan
from train.engine.loop import ModelSpec
from train.evaluation.cost import lidar_like_batch
from train.runtime.checkpoint import save_checkpoint

GPUS = torch.cuda.device_count()
SIZES = {True: ("student", 128 if GPUS else 16, 30_000), False: ("student-demo", 4, 2_000)}  # preset, scans, points
GRID = 0.05
NUM_CLASSES = 22  # the synthetic set's (Waymo's) classes
REPO = Path(__file__).resolve().parents[2]  # the repository root: benchmarks/tests/ is two below it


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory, full_run: bool) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("predict_shards")
    preset, scans, points = SIZES[full_run]
    for s in range(scans):
        feat = lidar_like_batch([points], grid_size=GRID, seed=s)["feat"]
        write_scan(root / "scans" / f"{s:04d}.bin", feat[:, :4].numpy())
    torch.manual_seed(0)
    spec = ModelSpec(preset, NUM_CLASSES, {})
    save_checkpoint(root / "model.pt", spec.build(), None, None, None, 1, 1,
                    {"dataset": "synthetic", "grid_size": GRID}, {"model_spec": spec.__dict__, "stage": "student"})
    return {"root": root, "preset": preset, "scans": scans, "points": points}


@pytest.mark.parametrize("procs", [1, 2, 4, 8])
def test_predict_shards(benchmark: Any, job: dict[str, Any], procs: int, full_run: bool,
                        thread_info: dict[str, Any]) -> None:
    if procs > (GPUS or 2):
        pytest.skip(f"{procs} processes need {procs} GPUs ({GPUS} here; a CPU is measured with 1 and 2)")
    benchmark.group = "predict-shards"
    out = job["root"] / f"out{procs}"
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)] if procs > 1 else []
    command = [sys.executable, *launcher, "-m", "train.predict", "--checkpoint", str(job["root"] / "model.pt"),
               "--input", str(job["root"] / "scans"), "--out", str(out), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    walls: list[float] = []

    def label() -> str:
        t0 = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
        walls.append(time.perf_counter() - t0)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    stdout = benchmark.pedantic(label, setup=lambda: shutil.rmtree(out, ignore_errors=True),
                                rounds=2 if full_run else 1)
    summary = [line for line in stdout.splitlines() if "outputs in" in line][-1]
    match = re.search(r"labelled (\d+) scans .* ([\d.]+) scans/s", summary)
    assert match is not None and int(match.group(1)) == job["scans"], summary
    benchmark.extra_info.update(thread_info)
    benchmark.extra_info.update(processes=procs, gpus=GPUS, preset=job["preset"], scans=job["scans"],
                                points=job["points"], scans_per_s=float(match.group(2)),
                                command_scans_per_s=job["scans"] / min(walls), wall_s=min(walls))
