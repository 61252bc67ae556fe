"""DD3D, paper Sec. 4 and Eq. (10): the point-wise generator (:mod:`train.condense.generator`)
trained by gradient matching (:func:`train.condense.matching_loops.match_gradients`) through the
rotator (:mod:`train.condense.rotator`), and the generator kept to draw the set at any resolution
(decision 78).

Every synthetic cloud of class k is drawn from fresh uniform noise at the training clouds'
resolution each time it is used and passed through the rotator's sign step; each real batch is put
on its principal axes (once, for the whole split) and passed through the same sign step; the Adam
step moves the generator (and the learned sign's ``w``). The condensed set is one draw of every
cloud (noise from the seed) as the network saw it, after the sign step. ``<folder>/generator.pt``
keeps the generator, the rotator and what rebuilds them; :func:`load_generator` reads it back
and :func:`draw_set` draws the set again at any resolution.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from train.condense.distill_checkpoint import Checkpoint
from train.condense.generator import DATASET_W0, PointGenerator
from train.condense.matching_loops import DistillSpec, match_gradients, real_sampler
from train.condense.rotator import SETTING_ROTATOR, Rotator, check_rotator, principal_axes
from train.data.objects import ObjectSet
from train.runtime.distributed import DistInfo
from train.runtime.files import atomic_write

GENERATOR_NAME = "generator.pt"


class GeneratorFileError(ValueError):
    """A generator file that cannot be used (its message names the file)."""


def draw_set(generator: PointGenerator, rotator: Rotator, points: int, seed: int) -> np.ndarray:
    """Every synthetic cloud at ``points`` points (noise from ``seed``), after the sign step: (M, points, 3)."""
    draws = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        index = torch.arange(generator.codes.num_embeddings)
        return rotator(generator.draw(index, points, draws)).cpu().numpy().astype(np.float32)


def distill_dd3d(train: ObjectSet, cpc: int, seed: int, spec: DistillSpec, info: DistInfo, folder: Path,
                 checkpoint: Checkpoint | None = None) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """DD3D on ``train``: the drawn set, its labels and the history of D; the generator saved in ``folder``."""
    if info.world_size > 1:
        raise ValueError("dd3d runs in one process (the classes are not shared over ranks yet)")
    kind = check_rotator(SETTING_ROTATOR[train.setting] if spec.rotator is None else spec.rotator)
    classes = np.unique(train.labels)
    labels = np.repeat(classes, cpc).astype(np.int64)
    torch.manual_seed(seed)
    draws = torch.Generator().manual_seed(seed)
    generator = PointGenerator(len(labels), DATASET_W0[train.name]).to(info.device)
    rotator = Rotator(kind).to(info.device)
    real_points = torch.from_numpy(train.points)
    real_points = real_points if kind == "none" else principal_axes(real_points)
    real = real_sampler(real_points.to(info.device), train.labels, spec.real_batch, draws)
    rows = {int(k): torch.from_numpy(np.flatnonzero(labels == k)) for k in classes}
    resolution = train.points.shape[1]
    optimizer = torch.optim.Adam([*generator.parameters(), *rotator.parameters()], lr=spec.lr,
                                 weight_decay=spec.weight_decay)
    history = match_gradients(optimizer, sorted(rows), len(train.class_names), cpc, lambda k: rotator(real(k)),
                              lambda k: rotator(generator.draw(rows[k], resolution, draws)), spec, draws,
                              info.device, checkpoint, desc=f"DD3D CPC {cpc}")
    save_generator(generator, rotator, labels, folder / GENERATOR_NAME)
    return draw_set(generator, rotator, resolution, seed), labels, history


def save_generator(generator: PointGenerator, rotator: Rotator, labels: np.ndarray, path: Path) -> None:
    """The generator, the rotator and what rebuilds them, in one file written atomically."""
    buffer = io.BytesIO()
    torch.save({"w0": generator.w0, "rotator": rotator.kind, "labels": labels.tolist(),
                "generator": {k: v.cpu() for k, v in generator.state_dict().items()},
                "rotator_state": {k: v.cpu() for k, v in rotator.state_dict().items()}}, buffer)
    atomic_write(buffer.getbuffer(), path)


def load_generator(path: Path) -> tuple[PointGenerator, Rotator, np.ndarray]:
    """The generator, rotator and cloud labels of a file :func:`save_generator` wrote; GeneratorFileError otherwise."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        generator = PointGenerator(len(saved["labels"]), saved["w0"])
        generator.load_state_dict(saved["generator"])
        rotator = Rotator(saved["rotator"])
        rotator.load_state_dict(saved["rotator_state"])
    except FileNotFoundError:
        raise GeneratorFileError(f"{path}: no generator here (only dd3d keeps one)") from None
    except Exception as err:  # torch raises many kinds for a damaged or foreign file
        raise GeneratorFileError(f"{path}: not a generator file of train.condense ({type(err).__name__})") from None
    return generator.eval(), rotator.eval(), np.asarray(saved["labels"], dtype=np.int64)
