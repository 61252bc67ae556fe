"""The input pipeline on a GPU keeps up (decision 39): DataLoader workers by default on CUDA only
(from the node's cores and its ranks), and batches handed out on the device, in order, unchanged,
with the next one's copy already issued on CUDA."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fast.persistence
import train.options.defaults
from test_train_support import tiny_config
from train.engine.input_pipeline import device_batches, planned_collate
from train.options.defaults import default_num_workers, ranks_per_node


@pytest.mark.parametrize(("cores", "ranks", "workers"), [(16, 1, 8), (16, 4, 3), (16, 8, 1), (4, 1, 3), (2, 1, 1),
                                                         (1, 1, 1), (64, 1, 8)])
def test_default_workers_share_the_cores_out_over_the_ranks(cores: int, ranks: int, workers: int) -> None:
    assert default_num_workers(cores, ranks) == workers


def test_ranks_per_node_come_from_torchrun_or_procs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert ranks_per_node(3) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert ranks_per_node(1) == 4


def test_num_workers_default_is_zero_on_a_cpu_and_shared_cores_on_cuda(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert tiny_config(tmp_path, device="cpu").num_workers == 0
    assert tiny_config(tmp_path, device="cpu", num_workers=3).num_workers == 3
    monkeypatch.setattr(train.options.defaults, "_has_cuda", lambda: True)
    monkeypatch.setattr(fast.persistence, "available_cores", lambda: 12)  # read by fill_defaults after parsing
    assert tiny_config(tmp_path, device="auto", procs=2).num_workers == 5
    assert tiny_config(tmp_path, device="auto", procs=2, num_workers=0).num_workers == 0


def _batches() -> list[dict]:
    return [{"feat": torch.full((3, 2), float(i)), "grid_coord": torch.tensor([[0, 0, 0], [1, 0, 0], [i, 2, 0]]),
             "offset": torch.tensor([3]), "skipped": [f"scan {i}"]} for i in range(3)]


def test_device_batches_on_a_cpu_are_the_batches() -> None:
    got = list(device_batches(_batches(), torch.device("cpu")))
    assert [b["skipped"] for b in got] == [["scan 0"], ["scan 1"], ["scan 2"]]
    for i, b in enumerate(got):
        assert torch.equal(b["feat"], torch.full((3, 2), float(i))) and b["feat"].device.type == "cpu"
    assert list(device_batches([], torch.device("cpu"))) == []


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_batches_on_cuda_arrive_in_order_and_whole() -> None:
    device = torch.device("cuda")
    pinned = [{k: (v.pin_memory() if isinstance(v, torch.Tensor) else v) for k, v in b.items()} for b in _batches()]
    for i, b in enumerate(device_batches(pinned, device)):
        assert b["feat"].is_cuda and b["skipped"] == [f"scan {i}"]
        assert torch.equal(b["feat"].cpu(), torch.full((3, 2), float(i)))


def test_every_batch_is_planned_where_it_is_collated_and_the_plan_shared_by_teacher_and_student() -> None:
    """The collate function of a stage attaches the batch's BatchPlan with what both models read
    (decision 47); device_batches hands it on and model_inputs gives the same object to every model."""
    from train.models import build_model
    from train.models.plan import BatchPlan
    from train.engine.steps import model_inputs

    from train.evaluation.cost import lidar_like_batch

    batch = lidar_like_batch([40, 30], seed=1)
    models = [build_model("teacher-demo", 3), build_model("student-demo", 3)]
    collate = planned_collate(lambda samples: dict(samples[0]), models, torch.device("cpu"))
    (moved,) = list(device_batches([collate([batch])], torch.device("cpu")))
    plan = moved["plan"]
    assert isinstance(plan, BatchPlan) and (plan.num_points, plan.num_clouds) == (70, 2)
    assert set(collate.items) == {*models[0].plan_items(torch.device("cpu")), *models[1].plan_items(torch.device("cpu"))}
    assert set(collate.items) <= set(plan._items)
    assert model_inputs(moved)["plan"] is plan and model_inputs(moved)["plan"] is model_inputs(moved)["plan"]
    assert "plan" not in model_inputs(batch)


class _EpochTagged(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.epoch = -1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> tuple[int, int]:
        return self.epoch, index

    def __len__(self) -> int:
        return 6


def test_persistent_loader_workers_read_each_epochs_items_with_that_epoch() -> None:
    from train.runtime.distributed import ResumableDistributedSampler
    from train.engine.input_pipeline import EpochDataset, EpochSampler

    dataset = _EpochTagged()
    sampler = ResumableDistributedSampler(dataset, 1, 0, shuffle=True, seed=0)
    loader = torch.utils.data.DataLoader(EpochDataset(dataset), batch_size=2, sampler=EpochSampler(sampler),
                                         num_workers=2, persistent_workers=True, collate_fn=list)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        items = [item for batch in loader for item in batch]
        assert items == [(epoch, index) for index in sampler]
