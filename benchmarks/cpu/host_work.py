"""Host work of one paper-size training step, part by part, and the step time it implies on a GPU node.

Every part is measured in CPU seconds of the measuring process (``time.process_time``) with one
torch thread, so the figures are core-seconds and do not depend on other jobs as much as wall time
(a shared machine still slows a core down: the medians of several rounds are reported):

* ``transforms_nuscenes_s`` / ``transforms_waymo_s``: ``build_transforms(..., train=True)`` of one
  raw scan of nuScenes size (34,720 points) / Waymo size (177,000 points): rotation, scale, flip,
  jitter, grid sampling at 5 cm, features;
* ``collate_nuscenes_s`` / ``collate_waymo_s``: ``train.data.collate.collate`` of the step's 4 scans;
* ``plan_s``: the batch plan of the step's 4 nuScenes-size scans with every item the paper teacher
  and student read (``train.engine.input_pipeline.planned_collate`` minus the collate), and
  ``plan_lidar_like_s`` of ``train.evaluation.cost.lidar_like_batch`` 4 x 30,000 (the figure the issue of
  decision 47 was measured on); ``pack_s``: packing it into the one buffer a loader worker hands
  over (``BatchPlan.__getstate__``);
* ``main_plan_s``: the training process's own plan work per step: unpacking the buffer and making
  every device view the two models read (``DevicePlan``);
* ``main_outside_ops_ce_s`` / ``main_outside_ops_kd_s``: the training process's time outside
  PyTorch ops in a student CE step and a KD + saliency step (the step code of ``train.engine.steps`` and
  ``train.engine.update``, paper presets at 4 x 3,000 points, where the op count is that of the paper
  size): the step's wall time minus the time covered by its ``aten::`` ops under
  ``torch.profiler`` (which adds its own cost per op, so this is an upper bound); on a GPU the host
  does this work while the device computes;
* ``tps_cloud_s`` / ``tps_cloud_shell_s``: host TPS (Algorithm 5) of one 20,000 x 64 cloud to
  1,024 points (``fast.persistence.sampling.tps_indices``) of latent-family features (structured,
  like a network's) / shell-family features (unstructured: the kernel's worst case);
  ``persistence_diagram_s``:
  H0 + H1 of one 1,024 x 64 cloud (``fast.persistence.compute_diagrams`` in this process, the native
  engine).

:func:`implied_step_s` turns them into the shortest step the host allows on a node with ``cores``
cores per GPU: the training process does its own part on one core, and the loader workers and the
persistence pool share the other ``cores - 1`` (the work-conserving bound: the OS spreads the
processes over the free cores); a step cannot be shorter than either share.
"""
from __future__ import annotations

import pickle
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

PAPER: dict[str, Any] = {"scans": 4, "nuscenes_points": 34_720, "waymo_points": 177_000, "plan_points": 30_000,
                         "tps_points": 20_000, "channels": 64, "m": 1024, "clouds": 12, "diagrams": 24,
                         "step_points": 3_000, "teacher": "teacher", "student": "student", "rounds": 5}
SMOKE: dict[str, Any] = {"scans": 2, "nuscenes_points": 2_000, "waymo_points": 4_000, "plan_points": 1_500,
                         "tps_points": 1_000, "channels": 16, "m": 64, "clouds": 12, "diagrams": 24,
                         "step_points": 300, "teacher": "teacher-demo", "student": "student-demo", "rounds": 1}
NUM_CLASSES = 16


def cpu_seconds(fn: Callable[[], Any], rounds: int) -> float:
    """Median CPU seconds of this process over ``rounds`` calls of ``fn`` (after one warm-up call)."""
    fn()
    times = []
    for _ in range(rounds):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def raw_scan(points: int, seed: int) -> dict[str, Any]:
    """A raw LiDAR-like scan of ``points`` points: a ground disc whose density falls with range
    (2-70 m), building walls and poles; strength in [0, 1), labels of 16 classes."""
    rng = np.random.default_rng(seed)
    ground, walls = int(0.6 * points), int(0.3 * points)
    poles = points - ground - walls
    r = 2.0 * (35.0 ** rng.random(ground))  # density ~ 1/r between 2 and 70 m
    a = rng.uniform(0, 2 * np.pi, ground)
    parts = [np.stack([r * np.cos(a), r * np.sin(a), rng.normal(0, 0.03, ground)], 1)]
    centre = rng.uniform(-40, 40, (12, 2))
    which = rng.integers(0, 12, walls)
    along = rng.uniform(-8, 8, walls)
    parts.append(np.stack([centre[which, 0] + along, centre[which, 1] + rng.normal(0, 0.02, walls),
                           rng.uniform(0, 6, walls)], 1))
    base = rng.uniform(-30, 30, (20, 2))
    which = rng.integers(0, 20, poles)
    parts.append(np.stack([base[which, 0] + rng.normal(0, 0.05, poles), base[which, 1] + rng.normal(0, 0.05, poles),
                           rng.uniform(0, 5, poles)], 1))
    return {"coord": np.concatenate(parts).astype(np.float32), "strength": rng.random((points, 1)).astype(np.float32),
            "segment": rng.integers(0, NUM_CLASSES, points), "name": f"scan-{seed}"}


def _pipeline(dataset: str) -> Callable[[dict[str, Any], np.random.Generator], dict[str, Any]]:
    from train.data.transforms import build_transforms

    return build_transforms(dataset, train=True)


def _transformed(dataset: str, points: int, scans: int) -> list[dict[str, Any]]:
    transform = _pipeline(dataset)
    return [transform(raw_scan(points, seed), np.random.default_rng(seed)) for seed in range(scans)]


def _outside_ops_s(step: Callable[[], None], rounds: int) -> float:
    """Median over ``rounds`` of ``step()``'s wall time minus the time covered by its ``aten::`` ops
    (the union of their intervals under ``torch.profiler``: nested ops, and ops inside custom
    autograd functions or named ranges, counted once)."""
    from torch.profiler import ProfilerActivity, profile

    step()
    outside = []
    for _ in range(rounds):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            step()
            wall = time.perf_counter() - start
        spans = sorted((e.time_range.start, e.time_range.end) for e in prof.events() if e.name.startswith("aten::"))
        covered, reach = 0.0, float("-inf")
        for begin, end in spans:
            if end > reach:
                covered += end - max(begin, reach)
                reach = end
        outside.append(max(wall - covered / 1e6, 0.0))
    return statistics.median(outside)


def measure_parts(size: dict[str, Any]) -> dict[str, float]:
    """Every part of the module docstring at ``size`` (:data:`PAPER` or :data:`SMOKE`), in seconds."""
    return {**loader_parts(size), **outside_ops_parts(size, torch.device("cpu")), **pool_parts(size)}


def loader_parts(size: dict[str, Any]) -> dict[str, float]:
    """The loader's parts (transforms, collate, plan, packing) and the training process's plan work."""
    from train.evaluation.cost import lidar_like_batch
    from train.data.collate import collate
    from train.engine.input_pipeline import planned_collate
    from train.models import build_model
    from train.models.plan import BatchPlan

    rounds = size["rounds"]
    parts: dict[str, float] = {}
    for dataset, points in (("nuscenes", size["nuscenes_points"]), ("waymo", size["waymo_points"])):
        raw = raw_scan(points, 0)
        transform = _pipeline(dataset)
        parts[f"transforms_{dataset}_s"] = cpu_seconds(lambda: transform(dict(raw), np.random.default_rng(0)), rounds)
        scans = _transformed(dataset, points, size["scans"])
        parts[f"collate_{dataset}_s"] = cpu_seconds(lambda: collate(scans), rounds)

    models = [build_model(size["teacher"], NUM_CLASSES), build_model(size["student"], NUM_CLASSES)]
    cpu = torch.device("cpu")
    planner = planned_collate(lambda samples: samples[0], models, cpu)
    batch = collate(_transformed("nuscenes", size["nuscenes_points"], size["scans"]))
    parts["plan_s"] = cpu_seconds(lambda: planner([batch]), rounds)
    lidar = lidar_like_batch([size["plan_points"]] * size["scans"], seed=1)
    parts["plan_lidar_like_s"] = cpu_seconds(
        lambda: BatchPlan(lidar["grid_coord"], lidar["offset"], planner.orders, planner.items), rounds)
    plan = planner([batch])["plan"]
    parts["pack_s"] = cpu_seconds(plan.__getstate__, rounds)
    state = plan.__getstate__()

    def arrive() -> None:  # what the training process does with a worker's plan before and in a step
        moved = BatchPlan.__new__(BatchPlan)
        moved.__setstate__(state)
        _device_views(moved, planner.items, cpu)

    parts["main_plan_s"] = cpu_seconds(arrive, rounds)
    parts["plan_bytes"] = float(len(pickle.dumps(state["skeleton"])) + state["buffer"].numel())
    return parts


def outside_ops_parts(size: dict[str, Any], device: torch.device) -> dict[str, float]:
    """The training process's time outside ops in a student CE and a KD + saliency step on ``device``."""
    from benchmarks.cpu.step_ops import build_rig, measurements

    rig = build_rig({"teacher": size["teacher"], "student": size["student"], "clouds": size["scans"],
                     "points": size["step_points"]}, device, amp=device.type == "cuda")
    steps = measurements(rig)
    return {"main_outside_ops_ce_s": _outside_ops_s(steps["student CE step"], size["rounds"]),
            "main_outside_ops_kd_s": _outside_ops_s(steps["KD + saliency step"], size["rounds"])}


def pool_parts(size: dict[str, Any]) -> dict[str, float]:
    """The persistence pool's parts: host TPS of one cloud, H0 + H1 of one subsampled cloud."""
    from benchmarks.cpu.clouds import teacher_features
    from fast.persistence import PersistencePool, compute_diagrams, tps_indices

    features = teacher_features(size["tps_points"], "latent", np.random.default_rng(0), size["channels"])
    shell = teacher_features(size["tps_points"], "shell", np.random.default_rng(0), size["channels"])
    cloud = features[tps_indices(features, size["m"], 0)]
    in_process = PersistencePool(workers=0)  # every part in this process, where its CPU time is counted
    return {"tps_cloud_s": cpu_seconds(lambda: tps_indices(features, size["m"], 0), size["rounds"]),
            "tps_cloud_shell_s": cpu_seconds(lambda: tps_indices(shell, size["m"], 0), size["rounds"]),
            "persistence_diagram_s": cpu_seconds(lambda: compute_diagrams([cloud], "native", in_process),
                                                 size["rounds"])}


def _device_views(plan: Any, items: tuple[Any, ...], device: torch.device) -> None:
    """Every device view a float32 forward of models reading ``items`` makes (``DevicePlan``)."""
    from train.models.device_plan import on_device

    views = on_device(plan, device)
    for key in items:
        views.view(key, torch.float32)
    for level in range(len(plan.levels)):
        for name in ("offset", "index") + (("cluster",) if level else ()):
            views.level_tensor(level, name)


def step_work(parts: dict[str, float], dataset: str, scans: int, topo: bool, clouds: int, diagrams: int,
              host_tps: bool) -> dict[str, float]:
    """Core-seconds per step: ``main`` (the training process, serial) and ``parallel`` (loader
    workers and persistence pool); ``topo``: with L_topo (``diagrams`` diagrams per step, and
    ``clouds`` TPS runs on the host when ``host_tps``)."""
    loader = scans * parts[f"transforms_{dataset}_s"] + parts[f"collate_{dataset}_s"] + parts["plan_s"] + parts["pack_s"]
    persistence = (diagrams * parts["persistence_diagram_s"] + (clouds * parts["tps_cloud_s"] if host_tps else 0.0)
                   if topo else 0.0)
    return {"main": parts["main_plan_s"] + parts["main_outside_ops_kd_s"], "parallel": loader + persistence}


def implied_step_s(work: dict[str, float], cores: int) -> float:
    """The shortest step the host allows with ``cores`` cores per GPU (module docstring)."""
    if cores < 2:
        raise ValueError(f"a GPU node needs at least 2 cores per GPU for this estimate, got {cores}")
    return max(work["main"], work["parallel"] / (cores - 1))
