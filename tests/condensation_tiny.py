"""The tiny data of the distillation tests (decisions 78-80): three classes of the generated shapes at
32 points, and the matching losses measured on fixed probe networks (fresh PointNets of fixed
seeds) with every real cloud of a class against its synthetic ones; a run stopped after its second
checkpoint. Shared by tests/test_condense_gm.py, tests/test_condense_dd3d.py and
tests/test_condense_topology.py."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
import torch

from train.condense.cli.command import main
from train.condense.files.distill_checkpoint import Checkpoint
from train.condense.matching.matching_loops import class_mean_distance, fresh_network, gradient_match_loss
from train.data.objects import ObjectSet, load_objects
from train.runtime.distributed import DistInfo

CPU = DistInfo(0, 1, 0, torch.device("cpu"))
CLASSES = [0, 1, 2]


def tiny_set() -> ObjectSet:
    """The first three classes of the shapes' training split, 32 points a cloud (3 or 4 clouds a class)."""
    full = load_objects("shapes", split="train", points=32, size=4)
    keep = full.labels < len(CLASSES)
    return dataclasses.replace(full, points=full.points[keep], labels=full.labels[keep],
                               class_names=full.class_names[:len(CLASSES)])


def probe(train: ObjectSet, points: np.ndarray, labels: np.ndarray, loss: str) -> float:
    """The mean matching loss (``gm``: Eq. 10's summed D; ``dm``: the class-mean distance) over four fixed networks."""
    values = []
    for seed in range(4):
        torch.manual_seed(100 + seed)
        net = fresh_network(len(CLASSES), torch.device("cpu"))
        real = lambda k: (torch.from_numpy(train.points[train.labels == k]), None)  # noqa: E731
        synthetic = lambda k: (torch.from_numpy(points[labels == k]), None)  # noqa: E731
        match = gradient_match_loss if loss == "gm" else class_mean_distance
        values.append(match(net, CLASSES, real, synthetic).item())
    return float(np.mean(values))


class Interrupted(Exception):
    """A run stopped after a checkpoint (as a preemption would)."""


def stop_after_second_checkpoint(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the command ``argv``, checkpointing every iteration, and stop it right after the
    checkpoint of its second iteration."""
    stop_run_after_second_checkpoint(lambda: main(argv), monkeypatch)


def stop_run_after_second_checkpoint(run: Callable[[], object], monkeypatch: pytest.MonkeyPatch) -> None:
    """Call ``run`` (a distillation inside), checkpointing every iteration, and stop it right after
    the checkpoint of its second iteration."""
    save = Checkpoint.save_if_due

    def save_then_stop(self: Checkpoint, iteration: int, *rest: object) -> None:
        save(dataclasses.replace(self, every=1), iteration, *rest)
        if iteration == 2:
            raise Interrupted
    with monkeypatch.context() as patch:
        patch.setattr(Checkpoint, "save_if_due", save_then_stop)
        with pytest.raises(Interrupted):
            run()
