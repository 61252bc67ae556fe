"""The evaluation recipes by name (decision 94): how a backbone is trained on a condensed (or the
full) set, chosen with ``--recipe`` and recorded by name and values in every result file.

- ``cpu`` (decision 73): a fixed number of Adam steps (300; the study's cpu preset 100) at batch
  32, learning rate 1e-3 on a cosine to 0, no weight decay, decision 72's augmentation, the last
  step scored. The same for both tasks.
- ``paper``: DD3D's released evaluation (``utils.py`` of the authors' code, read for its values).
  Classification (``evaluate_synset``): Adam at 1e-3 with weight decay 5e-4, a cosine per pass to
  1e-4, batches of 256 (the whole set when smaller), the released augmentation (one scale in
  [0.8, 1.25], jitter, small rotation), 201 passes (the loop ``range(Epoch + 1)`` with
  ``epoch_eval_train`` 200, the cosine's ``T_max`` 200 reaching 1e-4 at the last pass); the test
  split scored after every pass for the best-test-epoch number the released code reports.
  Part segmentation (``evaluate_segment``): SGD at 1e-2, momentum 0.9, weight decay 1e-2, a cosine
  to 1e-3, batches of 32, no augmentation, 1,001 passes (``Epoch`` 1000), the last pass scored
  (the released code reports no best epoch there).

Here the score is always the last step's model; the best test epoch is kept apart, for a
comparison with the paper's numbers only (decision 94).
"""
from __future__ import annotations

from dataclasses import replace

from train.condense.evaluation.training import TrainSpec

RECIPES = ("cpu", "paper")
PAPER = {
    "classification": TrainSpec(steps=None, epochs=201, lr=1e-3, batch_size=256, weight_decay=5e-4, lr_end=1e-4,
                                augmentation="released", test_every=1, recipe="paper"),
    "parts": TrainSpec(steps=None, epochs=1001, lr=1e-2, batch_size=32, weight_decay=1e-2, lr_end=1e-3,
                       optimizer="sgd", augmentation="none", recipe="paper"),
}


def named_recipe(name: str, task: str, model: str = "pointnet") -> TrainSpec:
    """The recipe ``name`` (:data:`RECIPES`) for ``task`` (classification or parts) with ``model``."""
    if name not in RECIPES:
        raise ValueError(f"recipe {name!r} is not one of {', '.join(RECIPES)}")
    if task not in PAPER:
        raise ValueError(f"task {task!r} is not one of {', '.join(PAPER)}")
    return replace(TrainSpec() if name == "cpu" else PAPER[task], model=model)
