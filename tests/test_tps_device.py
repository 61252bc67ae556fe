"""The Triton TPS kernel (``fast.tps_device``) returns ``reference.tps_cloud``'s indices bit for bit.

On the CPU the kernel runs in Triton's interpreter (``TRITON_INTERPRET=1``, read when the kernel
is defined, hence a child process); on CUDA it runs compiled (marked ``cuda``). Both skip where
Triton is not installed (CUDA builds of torch bring it; the ``test`` extra installs it on Linux
x86-64, so that the CPU runs the interpreter tests), and the interpreter tests skip where that
Triton's interpreter cannot run the kernel's loops (``_interpreter_problem``).
The clouds: skips active (clusters), many exactly tied distances (an integer grid), duplicated
points, a remainder after the eight partial sums (13 channels), fewer than eight channels, the
largest block (128 channels), tiny and huge scales, and clouds with no more points than ``m``.

``--topo-tps auto`` (``fast.tps.auto_tps_place``, decision 42): the choice is tested on the CPU
with its inputs injected (on CUDA or not, Triton or not, the self-check's verdict), the real
self-check in the interpreter and on a mismatch, and the one line training prints.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from reference.tps import tps_cloud

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
REPO = Path(__file__).resolve().parent.parent


def _run_in_interpreter(code: str, *args: str, **options: Any) -> subprocess.CompletedProcess:
    """``code`` in a child process with Triton's interpreter (read when a kernel is defined) and
    this repository on its path; ``options`` for ``subprocess.run`` (by default it raises when the
    child fails, and gives it 900 s)."""
    path = os.pathsep.join([str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    return subprocess.run([sys.executable, "-c", code, *args], env={**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": path},
                          **{"check": True, "timeout": 900, **options})


# A loop whose bound is a kernel argument, as in the TPS kernel. Triton's interpreter before 3.7
# holds such an argument as a one-element array and turns it into an integer with int(), which
# numpy 2.4 refuses ("only 0-dimensional arrays can be converted to Python scalars"); measured with
# Triton 3.3.1 and 3.6.0 (fail) and 3.7.1, 3.8.0, 3.9.0 (pass) on numpy 2.4.6.
_PROBE = """
import torch
import triton
import triton.language as tl

@triton.jit
def count_blocks(n, out_ptr):
    total = 0
    for lo in range(0, n, 4):
        total += 1
    tl.store(out_ptr, total)

out = torch.zeros(1, dtype=torch.int64)
count_blocks[(1,)](9, out)
assert out.item() == 3, out
"""


@functools.lru_cache(maxsize=None)
def _interpreter_problem() -> str:
    """Why this Triton's interpreter cannot run the TPS kernel's loops here, or "" if it can."""
    done = _run_in_interpreter(_PROBE, check=False, capture_output=True, text=True, timeout=300)
    if done.returncode == 0:
        return ""
    import triton

    last = (done.stderr.strip().splitlines() or ["no message"])[-1]
    return (f"Triton {triton.__version__}'s interpreter cannot run a loop bounded by a kernel argument with numpy "
            f"{np.__version__} ({last}); Triton 3.7 or newer can")


@pytest.fixture
def interpreter() -> None:
    """Skips a test of the kernel in Triton's interpreter where the interpreter cannot run it."""
    problem = _interpreter_problem()
    if problem:
        pytest.skip(problem)


def _clouds() -> list[np.ndarray]:
    rng = np.random.default_rng(33)
    centres = rng.normal(size=(5, 64)) * 4.0
    clustered = centres[rng.integers(5, size=700)] + rng.normal(size=(700, 64))
    grid = rng.integers(-2, 3, size=(1100, 5)).astype(np.float64)  # ties across blocks of points
    duplicated = rng.normal(size=(200, 8))
    duplicated[rng.integers(200, size=100)] = duplicated[rng.integers(200, size=100)]
    return [clustered, grid, duplicated, rng.normal(size=(150, 13)), rng.normal(size=(120, 3)),
            rng.normal(size=(90, 128)), clustered[:300] * 1e-120, clustered[:300] * 1e120, rng.normal(size=(20, 64))]


def _batches(steps: int = 40) -> list[tuple[list[np.ndarray], int, int]]:
    """(clouds of one batch, m, seed): a batch has one channel count; ``steps``: the longer m."""
    clouds = _clouds()
    by_c: dict[int, list[np.ndarray]] = {}
    for cloud in clouds:
        by_c.setdefault(cloud.shape[1], []).append(cloud)
    every_step = [np.random.default_rng(34).normal(size=(30, 64))]  # m = N - 1: the loop to its end
    return [(group, m, seed) for group in by_c.values() for m, seed in ((1, 0), (steps, 3))] + [(every_step, 29, 7)]


def _check(batches: list[tuple[list[np.ndarray], int, int]], run: list[list[np.ndarray]]) -> None:
    for (group, m, seed), got in zip(batches, run):
        for b, cloud in enumerate(group):
            np.testing.assert_array_equal(got[b], tps_cloud(cloud, m, seed + b), err_msg=f"{cloud.shape} m={m}")


_CHILD = """
import json
import sys
import numpy as np
import torch
import fast.tps_device
data = np.load(sys.argv[1])
out = {}
for i, (kernel, m, seed, n_clouds, options) in enumerate(json.loads(sys.argv[3])):
    group = [data[f"b{i}c{j}"] for j in range(n_clouds)]
    rows = getattr(fast.tps_device, kernel)(torch.tensor(np.concatenate(group)),
                                            list(np.cumsum([len(c) for c in group])), m, seed, **options)
    out.update({f"b{i}c{j}": r.numpy() for j, r in enumerate(rows)})
np.savez(sys.argv[2], **out)
"""
Run = tuple[str, list[np.ndarray], int, int, dict[str, int]]  # kernel, clouds of one batch, m, seed, options


def _in_interpreter(tmp_path: Path, runs: list[Run]) -> list[list[np.ndarray]]:
    """The indices of every run's batch, each computed by its kernel function of ``fast.tps_device``
    in Triton's interpreter (one child process for all runs)."""
    clouds = {f"b{i}c{j}": c for i, (_, group, _, _, _) in enumerate(runs) for j, c in enumerate(group)}
    np.savez(tmp_path / "in.npz", **clouds)
    plan = [(kernel, m, seed, len(group), options) for kernel, group, m, seed, options in runs]
    _run_in_interpreter(_CHILD, str(tmp_path / "in.npz"), str(tmp_path / "out.npz"), json.dumps(plan))
    out = np.load(tmp_path / "out.npz")
    return [[out[f"b{i}c{j}"] for j in range(len(group))] for i, (_, group, _, _, _) in enumerate(runs)]


# Chunks of 256 rows (one block), so that the clouds of :func:`_batches` span up to 5 programs.
# SMALL (below): chunks of 40 rows, not a multiple of the block, so that every program's last block
# is partial (16 + 16 + 8 rows).
SMALL = {"rows_per_program": 40, "block": 16}


@needs_triton
@pytest.mark.parametrize("kernel, options, steps", [("tps_device", {"rows_per_program": 256}, 16),
                                                    ("tps_device_one_program", {}, 40)],
                         ids=["split over programs", "one program per cloud"])
def test_tps_kernels_in_the_interpreter_return_the_reference_indices(tmp_path: Path, interpreter: None, kernel: str,
                                                                    options: dict[str, int], steps: int) -> None:
    # the split kernel's 2 m launches each copy every argument in the interpreter: fewer steps
    batches = _batches(steps)
    _check(batches, _in_interpreter(tmp_path, [(kernel, group, m, seed, options) for group, m, seed in batches]))


# Cases only a kernel that splits a cloud over programs can get wrong. Their clouds are integer
# grids, whose distances tie exactly, and each test first checks, by replaying the reference, that
# at some step the cloud's maximum is held by points of two chunks (so the pick's tie rule decides
# the index: a pick that took the last of the tied chunks fails every one of these tests).


def _steps(cloud: np.ndarray, m: int, seed: int) -> list[tuple[int, np.ndarray]]:
    """The reference's steps 1 .. m-1 of ``cloud``: (the index picked, every row holding the maximum)."""
    idx = tps_cloud(cloud, m, seed)
    d_min = np.full(len(cloud), np.inf)
    steps = []
    for k in range(1, m):
        d_min = np.minimum(d_min, np.linalg.norm(cloud - cloud[idx[k - 1]], axis=1))
        d_min[idx[:k]] = -np.inf
        steps.append((int(idx[k]), np.flatnonzero(d_min == d_min.max())))
    return steps


def _ties_across_chunks(cloud: np.ndarray, m: int, seed: int, rows: int) -> int:
    """How many steps of the reference find the maximum in more than one chunk of ``rows`` rows."""
    return sum(len(np.unique(tied // rows)) > 1 for _, tied in _steps(cloud, m, seed))


def _grid(seed: int, n: int, columns: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-3, 4, size=(n, columns)).astype(np.float64)


TINY = {"rows_per_program": 8, "block": 8}  # 300 rows: 38 chunks, two blocks of the pick's 32 chunk maxima
SPLIT_CASES: dict[str, tuple[list[np.ndarray], int, int, dict[str, int]]] = {
    "tie across chunks": ([_grid(40, 200, 3)], 24, 1, SMALL),
    "tie across blocks of chunk maxima": ([_grid(41, 300, 2)], 16, 2, TINY),
    "pick in a program's last partial block": ([_grid(42, 160, 4)], 16, 3, SMALL),
    "clouds of very different sizes": ([_grid(43, 400, 3), _grid(44, 45, 3), _grid(45, 130, 3), _grid(46, 15, 3)],
                                       20, 4, SMALL),
    "m = N - 1": ([_grid(47, 45, 3)], 44, 5, SMALL),
}


@pytest.fixture(scope="module")
def split_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[np.ndarray]]:
    """Every case of :data:`SPLIT_CASES` through ``tps_device`` in the interpreter, in one child."""
    if _interpreter_problem():
        pytest.skip(_interpreter_problem())
    runs = [("tps_device", group, m, seed, options) for group, m, seed, options in SPLIT_CASES.values()]
    return dict(zip(SPLIT_CASES, _in_interpreter(tmp_path_factory.mktemp("split"), runs)))


def _check_case(name: str, got: dict[str, list[np.ndarray]]) -> None:
    group, m, seed, options = SPLIT_CASES[name]
    assert any(_ties_across_chunks(cloud, m, seed + b, options["rows_per_program"]) for b, cloud in enumerate(group)
               if len(cloud) > m), "the case lost its tie across chunks"
    _check([(group, m, seed)], [got[name]])


@needs_triton
def test_split_kernel_takes_the_first_of_maxima_tied_across_chunks(split_runs: dict[str, list[np.ndarray]]) -> None:
    _check_case("tie across chunks", split_runs)


@needs_triton
def test_split_kernel_takes_the_first_of_maxima_tied_across_blocks_of_chunk_maxima(
        split_runs: dict[str, list[np.ndarray]]) -> None:
    group, m, seed, options = SPLIT_CASES["tie across blocks of chunk maxima"]
    first_block = 32 * options["rows_per_program"]  # rows of the pick's first block of chunk maxima
    assert any(tied[0] < first_block <= tied[-1] for _, tied in _steps(group[0], m, seed)), "no tie across blocks"
    _check_case("tie across blocks of chunk maxima", split_runs)


@needs_triton
def test_split_kernel_finds_the_maximiser_in_a_programs_last_partial_block(
        split_runs: dict[str, list[np.ndarray]]) -> None:
    group, m, seed, options = SPLIT_CASES["pick in a program's last partial block"]
    full_blocks = options["rows_per_program"] // options["block"] * options["block"]  # 32 of 40 rows
    assert any(picked % options["rows_per_program"] >= full_blocks for picked, _ in _steps(group[0], m, seed))
    _check_case("pick in a program's last partial block", split_runs)


@needs_triton
def test_split_kernel_samples_clouds_of_very_different_sizes_in_one_launch(
        split_runs: dict[str, list[np.ndarray]]) -> None:
    _check_case("clouds of very different sizes", split_runs)


@needs_triton
def test_split_kernel_runs_every_step_when_m_is_n_minus_one(split_runs: dict[str, list[np.ndarray]]) -> None:
    _check_case("m = N - 1", split_runs)


# One process's batches of one shape (m, channels, sampled clouds, chunking) share one set of
# buffers (fast.tps_device.launches_for): a batch that fits after a larger one leaves chunks and rows
# unused; a larger one than the capacity gets new buffers; the same batch again gives the same rows.
_AGAIN_CHILD = """
import numpy as np
import torch
import fast.tps_device as td
from reference.tps import tps_cloud
rng = np.random.default_rng(48)
sizes = [(120, 90), (700, 30), (40, 1300), (120, 90), (10, 33)]
held = []
for i, (a, b) in enumerate(sizes):
    clouds = [rng.integers(-3, 4, size=(a, 3)).astype(np.float64), rng.normal(size=(b, 3))]
    got = td.tps_device(torch.tensor(np.concatenate(clouds)), [a, a + b], 12, i, rows_per_program=40, block=16)
    for j, cloud in enumerate(clouds):
        assert np.array_equal(got[j].numpy(), tps_cloud(cloud, 12, i + j)), (i, j, got[j], tps_cloud(cloud, 12, i + j))
    held.append({shape.clouds: launches.capacity for shape, launches in td._launches.items()})
assert held == [{2: 1024}, {2: 1024}, {2: 2048}, {2: 2048}, {2: 2048, 1: 1024}], held
"""


@needs_triton
def test_split_launches_serve_batches_of_other_sizes_and_run_again_to_the_same_indices(interpreter: None) -> None:
    # launch() resets the working memory first, so a CUDA graph captured around it can be replayed
    _run_in_interpreter(_AGAIN_CHILD)


@pytest.mark.cuda
@needs_triton
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tps_kernels_on_cuda_return_the_reference_indices() -> None:
    from fast.tps_device import tps_device, tps_device_one_program

    kernels = {"one program": tps_device_one_program, "split": tps_device,
               "split, small chunks": functools.partial(tps_device, **SMALL)}
    for name, kernel in kernels.items():
        out = []
        for group, m, seed in _batches():
            feats = torch.tensor(np.concatenate(group), device="cuda")
            out.append([t.cpu().numpy() for t in kernel(feats, list(np.cumsum([len(c) for c in group])), m, seed)])
        _check(_batches(), out)
        for case, (group, m, seed, options) in SPLIT_CASES.items():
            feats = torch.tensor(np.concatenate(group), device="cuda")
            got = kernel(feats, list(np.cumsum([len(c) for c in group])), m, seed)
            _check([(group, m, seed)], [[t.cpu().numpy() for t in got]])
        # the training size's shape: every step of a long loop on a 64-d cloud with skips active
        cloud = _clouds()[0]
        got = kernel(torch.tensor(cloud, device="cuda"), [len(cloud)], len(cloud) - 1, 5)
        np.testing.assert_array_equal(got[0].cpu().numpy(), tps_cloud(cloud, len(cloud) - 1, 5), err_msg=name)


@pytest.mark.cuda
@needs_triton
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tps_batches_of_one_shape_on_two_streams_in_turn_give_the_reference_indices() -> None:
    # one set of buffers and one CUDA graph serve both streams: a batch queued on the other stream
    # waits on the device until the last batch's indices have been copied out of the buffers
    from fast.tps_device import tps_device

    rng = np.random.default_rng(49)
    streams = [torch.cuda.current_stream(), torch.cuda.Stream()]
    batches = [[rng.normal(size=(n, 16)) for n in sizes] for sizes in ([900, 700], [400, 1000], [950, 300])] * 2
    got = []
    for i, clouds in enumerate(batches):
        with torch.cuda.stream(streams[i % 2]):
            feats = torch.tensor(np.concatenate(clouds), device="cuda")
            got.append(tps_device(feats, list(np.cumsum([len(c) for c in clouds])), 64, i))
    torch.cuda.synchronize()
    for i, clouds in enumerate(batches):
        for b, cloud in enumerate(clouds):
            np.testing.assert_array_equal(got[i][b].cpu().numpy(), tps_cloud(cloud, 64, i + b), err_msg=f"{i}, {b}")


@needs_triton
def test_tps_kernel_refuses_more_columns_than_one_summation_block_and_bad_chunks() -> None:
    from fast.tps_device import tps_device, tps_device_one_program

    for kernel in (tps_device, tps_device_one_program):
        with pytest.raises(ValueError, match="at most 128 columns"):
            kernel(torch.zeros((10, 129), dtype=torch.float64), [10], 4, 0)
        with pytest.raises(ValueError, match="float64"):
            kernel(torch.zeros((10, 8), dtype=torch.float32), [10], 4, 0)
    for options in ({"rows_per_program": 0}, {"block": 24}, {"block": 4}):
        with pytest.raises(ValueError, match="power-of-two block"):
            tps_device(torch.zeros((10, 8), dtype=torch.float64), [10], 4, 0, **options)


@needs_triton
@pytest.mark.parametrize("columns", [13, 64])
def test_tps_kernels_compile_for_an_h100_without_contraction_and_with_exact_square_roots(columns: int) -> None:
    # Compiled ahead of time for sm_90 (no GPU needed): the interpreter cannot show what the
    # compiler does to the arithmetic. A fused multiply-add or an approximate square root would
    # change distances in their last bit, and with them the indices of near-ties.
    import re

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from fast import tps_device

    blocks = {"BLOCK": tps_device.BLOCK, "CENTRE_BLOCK": tps_device._CENTRE_BLOCK,
              "PART_BLOCK": tps_device._PART_BLOCK}
    kernels = {  # kernel -> its pointer arguments' kinds, then its integer arguments
        tps_device._one_program_kernel: ("*fp64 *i64 *i64 *i64 *fp64 *i64 *fp64 *i64 *fp64 *fp64", "m"),
        tps_device._scan_kernel: ("*fp64 *i64 *i64 *i64 *i64 *fp64 *i64 *fp64 *i64 *fp64 *fp64 *fp64 *i64", "k m"),
        tps_device._pick_kernel: ("*fp64 *i64 *i64 *i64 *fp64 *i64 *i64 *fp64 *fp64 *fp64", "k m"),
    }
    for kernel, (pointers, integers) in kernels.items():
        names = kernel.arg_names
        kinds = pointers.split() + ["i32"] * len(integers.split())
        constexprs = {"C": columns, **{name: blocks[name] for name in names if name in blocks}}
        signature = {**dict(zip(names, kinds)), **{name: "constexpr" for name in constexprs}}
        assert list(signature) == names, names
        source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
        ptx = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=tps_device._OPTIONS).asm["ptx"]
        f64_ops = set(re.findall(r"\b([a-z]+(?:\.[a-z]+)*)\.f64\b", ptx))
        assert not {op for op in f64_ops if op.startswith(("fma", "mad"))}, (kernel, f64_ops)
        assert {op for op in f64_ops if op.startswith("sqrt")} == {"sqrt.rn"}, (kernel, f64_ops)
        assert {"add.rn", "mul.rn", "sub.rn"} <= f64_ops, (kernel, f64_ops)  # rounded one by one: not fused


_JOB_CHILD = """
import numpy as np
import torch
from fast.persistence import PersistencePool
from fast.topo_loss import TopoLossJob

rng = np.random.default_rng(5)
sizes = (150, 90, 40)  # the last cloud has fewer points than m: all of its rows are kept
teacher = torch.tensor(rng.normal(size=(sum(sizes), 16)))
student = torch.tensor(rng.normal(size=(sum(sizes), 16)), requires_grad=True)
ends = list(np.cumsum(sizes))
pool = PersistencePool(workers=0)
out = {}
for place in ("host", "device"):
    student.grad = None
    job = TopoLossJob(teacher, ends, m=48, seed=3, pool=pool, tps_on=place)
    loss = job.submit_student(student).loss()
    loss.backward()
    out[place] = (loss.item(), student.grad.clone())
assert out["host"][0] == out["device"][0] and out["host"][0] > 0, out
assert torch.equal(out["host"][1], out["device"][1])
"""


@needs_triton
def test_topo_loss_job_with_tps_on_the_device_equals_tps_on_the_host(interpreter: None) -> None:
    # the same rows, so the same diagrams, loss and gradient (Triton's interpreter on the CPU)
    _run_in_interpreter(_JOB_CHILD)


def test_topo_loss_job_refuses_an_unknown_or_unusable_tps_place() -> None:
    from fast.topo_loss import TopoLossJob

    feats = torch.zeros((10, 4), dtype=torch.float64)
    with pytest.raises(ValueError, match="tps_on must be one of"):
        TopoLossJob(feats, [10], m=4, tps_on="gpu")
    if os.environ.get("TRITON_INTERPRET") != "1":  # CPU features: no Triton, or Triton without a device
        with pytest.raises(ValueError, match="tps_on='device'"):
            TopoLossJob(feats, [10], m=4, tps_on="device")


# --topo-tps auto


def _never_checked() -> str:
    raise AssertionError("the self-check runs only on CUDA with Triton")


def test_auto_tps_place_is_the_host_kernel_off_cuda_or_without_triton_and_never_checks_there() -> None:
    from fast.tps import choose_tps_place

    assert choose_tps_place(False, True, _never_checked) == ("host", "the features are not on a CUDA device")
    place, why = choose_tps_place(True, False, _never_checked)
    assert place == "host" and "Triton is not installed" in why


def test_auto_tps_place_is_the_device_kernel_only_when_its_self_check_passes() -> None:
    from fast.tps import choose_tps_place

    assert choose_tps_place(True, True, lambda: "")[0] == "device"
    place, why = choose_tps_place(True, True, lambda: "its indices differ from the host kernel's on check cloud 1")
    assert place == "host" and why.endswith("(its indices differ from the host kernel's on check cloud 1)")


@needs_triton
def test_auto_tps_place_runs_the_self_check_once_per_device_and_channel_count(monkeypatch: pytest.MonkeyPatch) -> None:
    tps_module = importlib.import_module("fast.tps")  # the module: ``fast.tps`` is the function

    calls: list[tuple[torch.device, int]] = []
    monkeypatch.setattr(tps_module, "device_self_check", lambda device, columns: calls.append((device, columns)) or "")
    tps_module.auto_tps_place.cache_clear()
    try:
        cuda = torch.device("cuda", 0)  # a device object only: nothing runs on it
        assert [tps_module.auto_tps_place(cuda, 64)[0] for _ in range(3)] == ["device"] * 3
        assert tps_module.auto_tps_place(cuda, 13)[0] == "device"
        assert tps_module.auto_tps_place(torch.device("cpu"), 64)[0] == "host"
    finally:
        tps_module.auto_tps_place.cache_clear()
    assert calls == [(cuda, 64), (cuda, 13)]


@needs_triton
def test_device_self_check_reports_the_column_limit_and_an_index_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    import fast.tps_device
    from fast.tps import device_self_check

    assert "at most 128 columns" in device_self_check(torch.device("cpu"), 129)  # refused before any launch

    def reversed_rows(feats: torch.Tensor, ends: list[int], m: int, seed: int, **options: int) -> list[torch.Tensor]:
        return [torch.arange(m - 1, -1, -1) for _ in ends]

    monkeypatch.setattr(fast.tps_device, "tps_device", reversed_rows)
    assert device_self_check(torch.device("cpu"), 8) == "its indices differ from the host kernel's on check cloud 0"


@needs_triton
def test_device_self_check_passes_in_the_interpreter(interpreter: None) -> None:
    # the real check batch through the kernel (Triton's interpreter on the CPU) and the host kernel
    _run_in_interpreter("import torch\nfrom fast.tps import device_self_check\n"
                        "problems = [device_self_check(torch.device('cpu'), c) for c in (3, 64)]\n"
                        "assert problems == ['', ''], problems\n")


def test_training_says_once_on_cuda_where_auto_runs_tps_and_nothing_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    import train.engine.steps as steps

    monkeypatch.setattr(steps, "auto_tps_place", lambda device, columns: (
        ("host", "the Triton kernel failed its start-up check (CompilationError: no sm_200)")
        if device.type == "cuda" else ("host", "the features are not on a CUDA device")))
    steps._auto_tps_place.cache_clear()
    try:
        assert steps._auto_tps_place(torch.device("cpu"), 64) == "host"
        assert capsys.readouterr().err == ""
        assert [steps._auto_tps_place(torch.device("cuda", 0), 64) for _ in range(2)] == ["host", "host"]
    finally:
        steps._auto_tps_place.cache_clear()
    assert capsys.readouterr().err == ("--topo-tps auto: TPS runs in the host workers: the Triton kernel failed its "
                                       "start-up check (CompilationError: no sm_200)\n")


@pytest.mark.cuda
@needs_triton
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_tps_place_picks_the_device_kernel_on_this_gpu() -> None:
    from fast.tps import auto_tps_place

    assert auto_tps_place(torch.device("cuda", torch.cuda.current_device()), 64) == (
        "device", "the Triton kernel compiled for this GPU and returned the host kernel's indices on a check batch")
