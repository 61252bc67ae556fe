"""Several processes (train.condense.evaluation.training, decision 73): two gloo ranks on the CPU train the
same backbone as one process, to float rounding (each rank adds its rows' share of one global
batch, the gradients summed), and evaluate to the same predictions;
``python -m train.condense evaluate --procs 2`` reports the full set's scores of one process."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp

from train.condense.cli.command import main
from train.condense.evaluation.training import Clouds, TrainSpec, build, predict, train_backbone
from train.runtime.distributed import DistInfo, cleanup, init_from_env
from train.runtime.leaving import leave

SPEC = TrainSpec(steps=4, lr=3e-3, batch_size=5)  # 5 clouds a step: 3 on rank 0, 2 on rank 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def joined_rank(rank: int, world: int, port: int) -> DistInfo:
    """This spawned process as rank ``rank`` of a ``world``-process gloo group on ``port``, one thread."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    return init_from_env("cpu")


def clouds(seed: int) -> Clouds:
    rng = np.random.default_rng(seed)
    return Clouds(rng.normal(size=(11, 24, 3)).astype(np.float32), rng.integers(0, 3, 11).astype(np.int64), 3)


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    info = joined_rank(rank, world, port)
    try:
        model = train_backbone(clouds(0), SPEC, 7, info, show=False)
        predicted = predict(model, clouds(1), info)
        torch.save({"model": model.state_dict(), "predicted": torch.from_numpy(predicted)}, Path(out) / f"rank{rank}.pt")
    finally:
        cleanup()
    leave(0)  # as a rank of a run ends: gloo's threads outlive the group (decision 46)


def test_two_gloo_ranks_train_and_predict_as_one_process(tmp_path: Path) -> None:
    one = DistInfo(0, 1, 0, torch.device("cpu"))
    single = train_backbone(clouds(0), SPEC, 7, one, show=False)
    mp.spawn(_rank_main, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    torch.manual_seed(7)  # the weights train_backbone starts from with seed 7 (a recipe has a step or more)
    init = build(clouds(0), SPEC.model).state_dict()
    moved = 0.0
    for name, value in single.state_dict().items():
        assert torch.equal(r0["model"][name], r1["model"][name]), f"ranks disagree on {name}"
        torch.testing.assert_close(r0["model"][name], value, rtol=1e-4, atol=1e-6, msg=f"2 ranks differ on {name}")
        moved += float((value - init[name]).abs().sum())
    assert moved > 0
    expected = torch.from_numpy(predict(single, clouds(1), one))
    assert torch.equal(r0["predicted"], r1["predicted"])
    # The ranks' weights equal one process's to rounding and they predict other batches (float32 products
    # of other shapes; logits 1.9e-6 apart on a Xeon): the same class wherever one process's top two are 1e-3 apart
    # (all 11 clouds here, the closest 0.038).
    with torch.no_grad():
        top2 = single.eval()(torch.from_numpy(clouds(1).points)).topk(2, dim=1).values
    clear = top2[:, 0] - top2[:, 1] > 1e-3
    assert int(clear.sum()) >= 9 and torch.equal(r0["predicted"][clear], expected[clear])


def test_full_set_evaluation_in_two_processes_reports_one_processs_scores(tmp_path: Path) -> None:
    common = ["evaluate", "--from", "full", "--dataset", "shapes", "--size", "3", "--points", "32", "--runs", "2",
              "--steps", "3", "--batch-size", "6", "--device", "cpu"]
    assert main([*common, "--out", str(tmp_path / "one.json")]) == 0
    # the module as people run it: the started processes must import its main (not __main__'s)
    two = subprocess.run([sys.executable, "-m", "train.condense", *common, "--procs", "2", "--out",
                          str(tmp_path / "two.json")], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    assert "shapes aligned, frame none, full train split (39 clouds), pointnet, 3 steps, lr 0.001, 2 runs, test split" in two.stdout
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert len(one["runs"]) == 2
    for a, b in zip(one["runs"], two["runs"]):
        assert abs(a["oa"] - b["oa"]) <= 1.0 / 13 + 1e-9  # at most one of the 13 test clouds flips (rounding)
