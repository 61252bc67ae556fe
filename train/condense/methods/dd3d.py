"""DD3D, paper Sec. 4 and Eq. (10): the point-wise generator (:mod:`train.condense.matching.generator`)
trained by gradient matching (:func:`train.condense.matching.matching_loops.match_gradients`) through the
rotator (:mod:`train.condense.files.rotator`), and the generator kept to draw the set at any resolution
(decision 78).

Every synthetic cloud of class k is drawn from fresh uniform noise at the training clouds'
resolution each time it is used and passed through the rotator's sign step; each real batch is put
on its principal axes (once, for the whole split) and passed through the same sign step; the Adam
step moves the generator (and the learned sign's ``w``) with the released optimiser of the task
(decision 92). As the released code (decision 92): the clouds the network trains on between two
outer steps are re-centred and scaled into the unit sphere before the sign step
(:func:`unit_sphere`), the matched ones are not; for part segmentation the real batches are
perturbed (:func:`train.condense.evaluation.augment.released_augment`, the released evaluation's perturbation) and the part segmenter's batch-norm statistics
come from a few real clouds a class. The condensed set is one draw of every cloud (noise from the
seed) after the sign step, re-centred and scaled into the unit sphere before it for classification
(``gm_inr.py`` evaluates so), as drawn for part segmentation (``seg_inr.py`` evaluates so). ``<folder>/generator.pt``
keeps the generator, the rotator and what rebuilds them (rank 0 writes it: several processes share
the classes and hold the same generator, decision 84); :func:`load_generator` reads it back and
:func:`draw_set` draws the set again at any resolution.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from train.condense.evaluation.augment import released_augment
from train.condense.files.condensed_file import FILE_NAME, CondensedSet, read_condensed
from train.condense.files.distill_checkpoint import Checkpoint
from train.condense.matching.controls import StepNorms, matched_strength
from train.condense.matching.generator import DATASET_W0, PointGenerator
from train.condense.matching.matching_loops import (STATISTICS_CLOUDS, Batch, ClassClouds, DistillSpec, match_gradients,
                                          real_sampler, to_device)
from train.condense.matching.released import generator_adam, loops_of, task_of
from train.condense.files.rotator import Rotator, principal_axes
from train.data.objects import ObjectSet
from train.runtime.distributed import DistInfo
from train.runtime.files import atomic_write

GENERATOR_NAME = "generator.pt"
RADIUS_EPS = 1e-4  # added to a cloud's radius before it is divided by it (provider.py's normalize_data)


class GeneratorFileError(ValueError):
    """A generator file that cannot be used (its message names the file)."""


Partition = list[tuple[torch.Tensor, torch.Tensor]]  # per synthetic cloud: its part ids, their noise intervals' ends


def part_partition(train: ObjectSet, labels: np.ndarray) -> Partition | None:
    """Sec. 4.3, Fig. 2: per synthetic cloud of class k, the part ids of k and the upper ends of their
    intervals of [0, 1), each as wide as the part's share of the class's real points (decision 81)."""
    if train.parts is None:
        return None
    partition = []
    for k in labels:
        ids = np.flatnonzero(train.part_classes == k)
        counts = np.array([(train.parts[train.labels == k] == p).sum() for p in ids], dtype=np.float64)
        partition.append((torch.from_numpy(ids), torch.from_numpy(np.cumsum(counts) / counts.sum())))
    return partition


def noise_parts(noise: torch.Tensor, index: torch.Tensor, partition: Partition) -> torch.Tensor:
    """The (B, N) part of every point: the interval its noise scalar falls in, for clouds ``index``."""
    out = []
    for z, row in zip(noise, index.tolist()):
        ids, ends = partition[row]
        slot = torch.searchsorted(ends.to(z), z, right=True).clamp_max(len(ids) - 1)
        out.append(ids.to(z.device)[slot])
    return torch.stack(out)


def unit_sphere(clouds: torch.Tensor) -> torch.Tensor:
    """Every (B, N, 3) cloud re-centred on its mean point and divided by its largest distance from it
    plus :data:`RADIUS_EPS`."""
    centred = clouds - clouds.mean(dim=1, keepdim=True)
    return centred / (centred.norm(dim=-1).amax(dim=1)[:, None, None] + RADIUS_EPS)


def draw_batch(generator: PointGenerator, rotator: Rotator, index: torch.Tensor, points: int,
               draws: torch.Generator, partition: Partition | None, normalise: bool) -> Batch:
    """The clouds ``index`` from fresh noise (in the unit sphere where ``normalise``) after the sign
    step, with their points' parts (or None)."""
    shape = (len(index), points) if generator.noise_dims == 1 else (len(index), points, generator.noise_dims)
    noise = to_device(torch.rand(shape, generator=draws), generator.out.weight.device)
    clouds = generator(noise, to_device(index, noise.device))
    clouds = rotator(unit_sphere(clouds) if normalise else clouds)
    return clouds, None if partition is None else noise_parts(noise, index, partition)


def normalises_sets(partition: Partition | None) -> bool:
    """Whether a drawn set is put in the unit sphere: for classification, not for part segmentation
    (whose generator keeps a ``partition``; module docstring)."""
    return partition is None


def draw_set(generator: PointGenerator, rotator: Rotator, points: int, seed: int, partition: Partition | None = None
             ) -> tuple[np.ndarray, np.ndarray | None]:
    """Every synthetic cloud at ``points`` points (noise from ``seed``) after the sign step, (M, points, 3),
    and their parts (M, points) where there is a ``partition``; in the unit sphere for classification."""
    draws = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        clouds, parts = draw_batch(generator, rotator, torch.arange(generator.codes.num_embeddings), points, draws,
                                   partition, normalises_sets(partition))
    return clouds.cpu().numpy().astype(np.float32), None if parts is None else parts.cpu().numpy().astype(np.int64)


def distill_dd3d(train: ObjectSet, cpc: int, seed: int, spec: DistillSpec, info: DistInfo, folder: Path,
                 rotator: Rotator, checkpoint: Checkpoint | None = None, norms: list[StepNorms] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[float]]:
    """DD3D on ``train`` through ``rotator`` (on ``info.device``; a learned sign is trained in
    place) with the released loops and optimiser (decision 92): the drawn set, its labels, its
    parts (part segmentation) and the history of D; the generator saved in ``folder``. With
    ``spec.control`` or ``spec.topo_ratio`` the matched steps' gradient norms are appended to ``norms``
    (:class:`train.condense.matching.controls.MatchedStrength`; a cloud's start is its code drawn by
    the initial generator from noise of ``seed``, before any checkpoint is restored)."""
    classes = np.unique(train.labels)
    labels = np.repeat(classes, cpc).astype(np.int64)
    torch.manual_seed(seed)
    draws = torch.Generator().manual_seed(seed)
    generator = PointGenerator(len(labels), DATASET_W0[train.name], noise_dims=spec.noise_dims).to(info.device)
    real_points = torch.from_numpy(train.points)
    real_points = real_points if rotator.kind == "none" else principal_axes(real_points)
    real_parts = None if train.parts is None else torch.from_numpy(train.parts).to(info.device)
    real_points = real_points.to(info.device)
    real = real_sampler(real_points, train.labels, spec.real_batch, draws, real_parts)
    rows = {int(k): torch.from_numpy(np.flatnonzero(labels == k)) for k in classes}
    partition = part_partition(train, labels)
    resolution = train.points.shape[1]
    adam = generator_adam(task_of(train))
    optimizer = torch.optim.Adam([*generator.parameters(), *rotator.parameters()], lr=adam.lr,
                                 weight_decay=adam.weight_decay)

    def framed(sampler: ClassClouds, perturbed: bool) -> ClassClouds:
        def batch(k: int) -> Batch:
            clouds, parts = sampler(k)
            return (released_augment(rotator(clouds), draws) if perturbed else rotator(clouds)), parts
        return batch

    def drawn(normalise: bool) -> ClassClouds:
        return lambda k: draw_batch(generator, rotator, rows[k], resolution, draws, partition, normalise)
    starts = None
    if spec.control == "start":
        with torch.no_grad():
            start_noise = torch.Generator().manual_seed(seed)
            starts = {k: draw_batch(generator, rotator, rows[k], resolution, start_noise, partition, False)[0]
                      for k in sorted(rows)}
    strength = matched_strength(spec.control, spec.topo_ratio, [*generator.parameters(), *rotator.parameters()],
                                starts, norms)
    real_batch = framed(real, perturbed=partition is not None)
    statistics = None if partition is None else framed(
        real_sampler(real_points, train.labels, STATISTICS_CLOUDS, draws, real_parts), perturbed=False)
    history = match_gradients(optimizer, sorted(rows), len(train.class_names), loops_of(train, cpc), real_batch,
                              drawn(False), spec, draws, info, checkpoint, desc=f"DD3D CPC {cpc}",
                              num_parts=None if partition is None else len(train.part_classes),
                              inner_set=drawn(True), statistics=statistics, strength=strength)
    if info.is_main:
        save_generator(generator, rotator, labels, partition, folder / GENERATOR_NAME)
    points, parts = draw_set(generator, rotator, resolution, seed, partition)
    return points, labels, parts, history


def redrawn(folder: Path, points: int, seed: int) -> CondensedSet:
    """The condensed set of the dd3d run in ``folder`` drawn again from its generator at ``points``
    points (noise from ``seed``), with the provenance of its ``condensed.npz``."""
    distilled = read_condensed(folder / FILE_NAME)
    generator, rotator, labels, partition = load_generator(folder / GENERATOR_NAME)
    clouds, parts = draw_set(generator, rotator, points, seed, partition)
    return CondensedSet(clouds, labels, distilled.provenance, parts)


def save_generator(generator: PointGenerator, rotator: Rotator, labels: np.ndarray, partition: Partition | None,
                   path: Path) -> None:
    """The generator, the rotator and what rebuilds them, in one file written atomically."""
    buffer = io.BytesIO()
    parts = None if partition is None else [[ids.tolist(), ends.tolist()] for ids, ends in partition]
    torch.save({"w0": generator.w0, "noise_dims": generator.noise_dims, "rotator": rotator.kind,
                "labels": labels.tolist(), "partition": parts,
                "generator": {k: v.cpu() for k, v in generator.state_dict().items()},
                "rotator_state": {k: v.cpu() for k, v in rotator.state_dict().items()}}, buffer)
    atomic_write(buffer.getbuffer(), path)


def load_generator(path: Path) -> tuple[PointGenerator, Rotator, np.ndarray, Partition | None]:
    """The generator, rotator, cloud labels and part partition of a file :func:`save_generator` wrote;
    GeneratorFileError otherwise."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        generator = PointGenerator(len(saved["labels"]), saved["w0"], noise_dims=saved.get("noise_dims", 1))
        generator.load_state_dict(saved["generator"])
        rotator = Rotator(saved["rotator"])
        rotator.load_state_dict(saved["rotator_state"])
        partition = None if saved["partition"] is None else [
            (torch.tensor(ids, dtype=torch.long), torch.tensor(ends, dtype=torch.float64))
            for ids, ends in saved["partition"]]
    except FileNotFoundError:
        raise GeneratorFileError(f"{path}: no generator here (only dd3d keeps one)") from None
    except Exception as err:  # torch raises many kinds for a damaged or foreign file
        raise GeneratorFileError(f"{path}: not a generator file of train.condense ({type(err).__name__})") from None
    return generator.eval(), rotator.eval(), np.asarray(saved["labels"], dtype=np.int64), partition
