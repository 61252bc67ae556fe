"""Inference/training cost of a model on a batch: parameters, FLOPs, time, memory.

A tool, not part of the model: ``python -m train.cost KIND --points ...`` prints the report, and
``train.run`` takes the parameter count of its results table from here.

- ``count_parameters``: parameter count (compare with spec A9); ``trainable_only`` counts only
  the parameters that require a gradient (0 for a frozen teacher).
- ``count_flops``: FLOPs of one forward with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls
  of the linear layers and of the sparse convolutions, attention), split by top-level module.
- ``measure``: wall time of forward (and optionally forward+backward) and peak memory: CUDA from
  the caching allocator, CPU from the profiler's allocation events (live bytes, cumulative).
- ``lidar_like_batch``: the benchmark input, surface-like clouds (ground disc + boxes + poles)
  grid-sampled to one point per voxel, in the model's input format.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (a DistributedDataParallel wrapper counts its module's);
    with ``trainable_only``, only those that require a gradient."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, int]:
    """FLOPs (multiply-add = 2) of one forward, total and per top-level submodule name prefix."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(batch)
    per_module = {name: int(sum(c.values())) for name, c in counter.get_flop_counts().items()}
    out: dict[str, int] = {"total": int(counter.get_total_flops())}
    # Per top-level child (stem_conv, enc_blocks, ...): sum its outermost recorded modules
    # (containers such as ModuleList run no forward of their own and are not recorded).
    for name, flops in per_module.items():
        parts = name.split(".")
        if len(parts) < 2:
            continue
        outer = any(".".join(parts[:i]) in per_module for i in range(2, len(parts)))
        if not outer:
            out[parts[1]] = out.get(parts[1], 0) + flops
    return out


@dataclass
class CostReport:
    """Times are the minimum over the repeats (the least disturbed run on a shared machine);
    ``*_cpu_s`` is the process CPU time of that kind of run (all threads), also the minimum."""

    parameters: int
    forward_s: float
    forward_backward_s: float
    forward_cpu_s: float
    forward_backward_cpu_s: float
    peak_memory_bytes: int


def _peak_cpu_bytes(fn: Callable[[], None]) -> int:
    """Peak live bytes allocated by torch on the CPU while ``fn`` runs (profiler memory events)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # Each event's self allocation (allocated minus freed inside it, children excluded; "[memory]"
    # events are frees/allocations outside any op) summed in start-time order gives the live bytes.
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    live = peak = 0
    for e in events:
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    return int(peak)


def measure(model: nn.Module, batch: dict[str, torch.Tensor], repeats: int = 1, backward: bool = True) -> CostReport:
    """Wall and CPU time of forward / forward+backward (minimum over ``repeats`` runs after one
    warm-up) and the peak memory of one forward(+backward). The model's train/eval mode is left as
    the caller set it.
    """
    device = batch["coord"].device

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def fwd() -> None:
        with torch.no_grad():
            model(batch)

    def fwd_bwd() -> None:
        out = model(batch)
        out.logits.float().square().mean().backward()
        model.zero_grad(set_to_none=True)

    def timed(fn: Callable[[], None]) -> tuple[float, float]:
        fn()  # warm-up
        sync()
        wall, cpu = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            sync()
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        return min(wall), min(cpu)

    forward_s, forward_cpu = timed(fwd)
    fb_s, fb_cpu = timed(fwd_bwd) if backward else (math.nan, math.nan)
    target = fwd_bwd if backward else fwd
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        target()
        sync()
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = _peak_cpu_bytes(target)
    return CostReport(count_parameters(model, trainable_only=True), forward_s, fb_s, forward_cpu, fb_cpu, int(peak))


def lidar_like_batch(
    points_per_cloud: list[int], in_channels: int = 4, grid_size: float = 0.05, seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """Grid-sampled surface clouds (one point per voxel) with features [x, y, z, strength, ...].

    Each cloud: a ground disc whose density falls with range (like a spinning LiDAR), a few box
    walls and vertical poles; exactly ``n`` distinct voxels are kept per cloud.
    """
    gen = torch.Generator().manual_seed(seed)
    coords, grids, feats, ends = [], [], [], []
    total = 0
    for n in points_per_cloud:
        pts = _surface_points(max(4 * n, 64), gen, radius=0.7 * math.sqrt(n) * grid_size)
        voxel = torch.floor(pts / grid_size).long()
        voxel -= voxel.min(0).values
        uniq = torch.unique(voxel, dim=0)
        if uniq.shape[0] < n:
            raise ValueError(f"could not draw {n} distinct voxels: lower points_per_cloud or grid_size")
        keep = torch.randperm(uniq.shape[0], generator=gen)[:n]
        grid = uniq[keep]
        grid -= grid.min(0).values
        coord = (grid.double() + torch.rand(n, 3, generator=gen, dtype=torch.float64)) * grid_size
        strength = torch.rand(n, 1, generator=gen, dtype=torch.float64)
        extra = torch.randn(n, max(in_channels - 4, 0), generator=gen, dtype=torch.float64)
        feat = torch.cat([coord, strength, extra], 1)[:, :in_channels]
        coords.append(coord.float())
        grids.append(grid)
        feats.append(feat.float())
        total += n
        ends.append(total)
    return {
        "coord": torch.cat(coords).to(device),
        "grid_coord": torch.cat(grids).to(device),
        "feat": torch.cat(feats).to(device),
        "offset": torch.tensor(ends, dtype=torch.long, device=device),
    }


def _surface_points(m: int, gen: torch.Generator, radius: float) -> torch.Tensor:
    """``m`` points: 60% ground disc (range-dependent density), 30% box walls, 10% poles."""
    n_ground, n_box = int(0.6 * m), int(0.3 * m)
    n_pole = m - n_ground - n_box
    r = radius * torch.rand(n_ground, generator=gen, dtype=torch.float64) ** 1.5
    phi = 2 * math.pi * torch.rand(n_ground, generator=gen, dtype=torch.float64)
    ground = torch.stack([r * torch.cos(phi), r * torch.sin(phi), 0.02 * torch.randn(n_ground, generator=gen, dtype=torch.float64)], 1)
    centres = (torch.rand(6, 2, generator=gen, dtype=torch.float64) - 0.5) * radius
    which = torch.randint(0, 6, (n_box,), generator=gen)
    u = torch.rand(n_box, 2, generator=gen, dtype=torch.float64)
    side = torch.randint(0, 2, (n_box,), generator=gen).bool()
    wall_x = torch.where(side, u[:, 0] * 0.2 * radius, torch.zeros(n_box, dtype=torch.float64))
    wall_y = torch.where(side, torch.zeros(n_box, dtype=torch.float64), u[:, 0] * 0.1 * radius)
    box = torch.stack([centres[which, 0] + wall_x, centres[which, 1] + wall_y, u[:, 1] * 0.1 * radius], 1)
    pole_c = (torch.rand(4, 2, generator=gen, dtype=torch.float64) - 0.5) * radius
    pw = torch.randint(0, 4, (n_pole,), generator=gen)
    ang = 2 * math.pi * torch.rand(n_pole, generator=gen, dtype=torch.float64)
    pole = torch.stack([pole_c[pw, 0] + 0.1 * torch.cos(ang), pole_c[pw, 1] + 0.1 * torch.sin(ang),
                        0.2 * radius * torch.rand(n_pole, generator=gen, dtype=torch.float64)], 1)
    return torch.cat([ground, box, pole])


def main(argv: list[str] | None = None) -> None:
    """``python -m train.cost KIND --points 20000 20000 [--threads 1]``: print the cost report."""
    import argparse

    from train.models import build_model

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("kind", help="model preset: teacher, student, teacher-demo, student-demo")
    parser.add_argument("--points", type=int, nargs="+", default=[20_000, 20_000], help="points per cloud")
    parser.add_argument("--classes", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = build_model(args.kind, args.classes).to(args.device).train()
    batch = lidar_like_batch(args.points, seed=args.seed, device=args.device)
    report = measure(model, batch, repeats=args.repeats)
    flops = count_flops(model.eval(), batch)
    print(
        f"{args.kind} points={args.points} threads={args.threads} device={args.device} "
        f"params={report.parameters:,} forward GFLOP={flops['total'] / 1e9:.1f} "
        f"(enc {flops.get('enc_blocks', 0) / 1e9:.1f}, dec {flops.get('dec_blocks', 0) / 1e9:.1f}) "
        f"fwd={report.forward_s:.2f}s fwd+bwd={report.forward_backward_s:.2f}s "
        f"(cpu {report.forward_backward_cpu_s:.2f}s) peak={report.peak_memory_bytes / 2**20:.0f} MiB"
    )


if __name__ == "__main__":
    main()
