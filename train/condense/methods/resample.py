"""DD3D evaluated with its generator resampled, paper Sec. 5.4 ("Point-wise Generator", Table 6's
last column): the backbone trains on clouds drawn afresh from the generator instead of one fixed
draw, "generating different point clouds at each epoch" as data augmentation (decision 85).

Each time a training batch uses a synthetic cloud, the cloud is drawn from new uniform noise at the
set's resolution, put in the unit sphere as the condensed file's clouds are (classification,
decision 92) and passed through the rotator's sign step, and a part segmentation cloud's points get
the parts of the noise intervals they fall in, as :func:`train.condense.methods.dd3d.draw_set` draws the set. The noise comes from the training run's random stream (seeded by the run's seed,
:func:`train.condense.evaluation.training.train_backbone`), so a seed gives the same scores and every rank of
several processes draws the same global batch. The generator is ``generator.pt`` beside the
condensed file, as a dd3d run keeps it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from train.condense.files.condensed_file import CondensedSet
from train.condense.methods.dd3d import GENERATOR_NAME, Partition, draw_batch, load_generator, normalises_sets
from train.condense.matching.generator import PointGenerator
from train.condense.files.rotator import Rotator
from train.condense.evaluation.training import BatchSource, Clouds


def generator_source(generator: PointGenerator, rotator: Rotator, partition: Partition | None, points: int
                     ) -> BatchSource:
    """Training batches drawn from ``generator`` at ``points`` points, new noise at every call, on the
    generator's device (the noise drawn on the CPU, so any device draws the same)."""
    def draw(index: torch.Tensor, draws: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.no_grad():
            return draw_batch(generator, rotator, index, points, draws, partition, normalises_sets(partition))
    return draw


def resampled(clouds: Clouds, cset: CondensedSet, path: str | Path, device: torch.device) -> Clouds:
    """``clouds`` (the condensed set of the file ``path``) trained on fresh draws of the generator kept
    beside the file, drawn on ``device``; ValueError naming the file when its method keeps none or the
    generator's clouds are not the file's."""
    method = cset.provenance["method"]
    if method != "dd3d":
        raise ValueError(f"{path}: a {method} set has no generator to resample (--resample needs a dd3d run's "
                         f"condensed.npz)")
    generator, rotator, labels, partition = load_generator(Path(path).parent / GENERATOR_NAME)
    if not np.array_equal(labels, cset.labels) or (partition is None) != (cset.parts is None):
        raise ValueError(f"{path}: the generator beside it draws other clouds than the file holds")
    source = generator_source(generator.to(device), rotator.to(device), partition, clouds.points.shape[1])
    return dataclasses.replace(clouds, source=source)
