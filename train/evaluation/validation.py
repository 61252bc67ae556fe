"""The validation passes made during training (decision 35): every ``--eval-every-epochs`` epochs
the model's mIoU and accuracy on the validation split, evaluated as the final evaluation is
(:func:`train.evaluation.evaluate.evaluate`), without disturbing the training it interrupts.

The training loop of the engine does not import this room (decision 49): the runner hands
:func:`train.engine.loop.train_stage` the pass as a function of the model, built by
:func:`validator`.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from train.config import RunConfig
from train.evaluation.evaluate import evaluate
from train.runtime.checkpoint import rng_state, set_rng_state


def validation_pass(model: nn.Module, views: Sequence[Dataset], cfg: RunConfig, num_classes: int,
                    device: torch.device, collate_fn: Callable) -> dict[str, float]:
    """Validation mIoU and accuracy of ``model`` in the middle of training, on every process (the
    scans are shared out and the counts all-reduced). The pass draws from the global random
    generators (a DataLoader seeds itself from torch's); their states are put back afterwards, and
    :func:`train.evaluation.evaluate.evaluate` puts back the model's train mode (decision 35)."""
    state = rng_state()
    try:
        acc = evaluate(model, views, num_classes, device, collate_fn, cfg.eval_max_scans, cfg.num_workers)
    finally:
        set_rng_state(state)
    return {"val_miou": acc.miou(), "val_accuracy": acc.accuracy()}


def validator(views: Sequence[Dataset], cfg: RunConfig, num_classes: int, device: torch.device,
              collate_fn: Callable) -> Callable[[nn.Module], dict[str, float]]:
    """The ``validate(model)`` that :func:`train.engine.loop.train_stage` runs every
    ``--eval-every-epochs`` epochs: :func:`validation_pass` on ``views`` (the validation split)."""
    return functools.partial(validation_pass, views=views, cfg=cfg, num_classes=num_classes, device=device,
                             collate_fn=collate_fn)
