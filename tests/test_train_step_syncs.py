"""A training step outside the model waits for the device only where it must (decision 39).

The model is a stand-in without a host synchronisation of its own (linear layers with PTv3's output
taps), so the counts are those of ``train.engine.steps``, ``train.engine.losses``, ``fast.kld``,
``fast.saliency``, ``train.engine.update`` and the log read alone, pinned one by one:

* segmentation step: the two skip flags (one read), the gradients' finiteness (one read, no AMP),
  the logged scalars (one read);
* KD + saliency step: the same three, plus one read for every finiteness decision of the step, one
  for L_kld's input checks and one for L_grad's.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from train.runtime.logging_utils import read_scalars
from train.models import ModelOutput
from train.engine.op_count import count_ops
from train.engine.optim import build_optimizer
from train.engine.profiling import StepTimer
from train.engine.steps import DistillSettings, distillation_step, segmentation_step
from train.engine.update import OK, apply_update, make_scaler

CLASSES = 5


class _StandIn(nn.Module):
    """Two "decoder stages" at input resolution and a classifier: PTv3's outputs, no host reads."""

    def __init__(self) -> None:
        super().__init__()
        self.block1 = nn.Linear(4, 16)
        self.block2 = nn.Linear(16, 64)
        self.head = nn.Linear(64, CLASSES)

    def forward(self, data: dict[str, torch.Tensor]) -> ModelOutput:
        f1 = torch.relu(self.block1(data["feat"]))
        f2 = torch.relu(self.block2(f1))
        index = torch.arange(data["feat"].shape[0])
        return ModelOutput(self.head(f2), f2, [f1, f2], [index, index], [data["offset"], data["offset"]])


def _batch() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    n = 40
    return {"coord": torch.rand(n, 3, generator=gen), "grid_coord": torch.zeros(n, 3, dtype=torch.long),
            "feat": torch.randn(n, 4, generator=gen), "offset": torch.tensor([15, 40]),
            "segment": torch.randint(-1, CLASSES, (n,), generator=gen)}


@pytest.mark.parametrize("kind", ["segmentation", "kd+saliency"])
def test_a_step_reads_the_device_only_where_it_must(kind: str) -> None:
    torch.manual_seed(0)
    student, teacher = _StandIn(), _StandIn().eval().requires_grad_(False)
    optimizer = build_optimizer(student)
    scaler, timer, batch = make_scaler(torch.device("cpu"), amp=False), StepTimer(), _batch()
    settings = DistillSettings(kld=True, grad=True, saliency_layers=(1, 2))
    outcomes: list[str] = []

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        if kind == "segmentation":
            loss, logs = segmentation_step(student, batch, False, timer)
        else:
            loss, logs = distillation_step(student, teacher, batch, settings, False, timer)
        outcomes.append(apply_update(loss, logs.pop("saliency_overflow", False), student, optimizer, scaler,
                                     None, timer))
        read_scalars(logs)

    step()  # the optimiser's state is made
    count = count_ops(step)
    assert outcomes == [OK, OK]
    assert count.syncs == (3 if kind == "segmentation" else 6), count.by_sync
    assert count.by_op["_fused_adamw_"] == len(optimizer.param_groups)  # one optimiser kernel per group


def test_read_scalars_reads_every_logged_value_at_once() -> None:
    logs = {"loss": torch.tensor(1.5), "seg": torch.tensor(0.25, dtype=torch.float64), "flag": torch.tensor(1.0)}
    count = count_ops(lambda: read_scalars({k: v * 1 for k, v in logs.items()}))
    assert count.syncs == 1
    assert read_scalars(logs) == {"loss": 1.5, "seg": 0.25, "flag": 1.0} and read_scalars({}) == {}
