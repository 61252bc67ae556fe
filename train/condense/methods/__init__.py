"""The methods' room: one module a method or family (``coreset``: Random, Herding, K-Center;
``explicit``: GM and DM on explicit clouds; ``trajectory``: TM; ``dd3d``: DD3D and its generator's
file, with ``resample``, a DD3D set drawn afresh at every use), and here the methods by name
(:data:`METHODS`) and :func:`condense_set`, which runs one and returns the condensed set with its
provenance (decisions 70 and 71). A new method is one module here and its line in
:data:`METHODS`. Imports the files, evaluation and matching rooms of ``train.condense``.

A method takes :class:`MethodInputs` (the ``train`` split, CPC, seed, the feature space on demand,
the processes, the distillation settings, the run folder and the rotator) and returns the condensed
points, labels and parts, class by class, and for a distillation its record for the file's
provenance (:func:`distill_record`). Every method works in the rotator's frame (decision 86):
:func:`condense_set` puts the ``train`` split there before a method that does not train the
rotator runs, DD3D puts its real and synthetic clouds there itself (and trains a learned sign),
and the file records the frame so that an evaluation puts its clouds there too. The coreset
baselines (:mod:`train.condense.methods.coreset`) pick real clouds; the distillation methods synthesise
them: gradient and distribution matching on explicit clouds (:mod:`train.condense.methods.explicit`),
trajectory matching (:mod:`train.condense.methods.trajectory`, decision 79) and DD3D
(:mod:`train.condense.methods.dd3d`, decision 78). A distillation without ``iterations`` runs the data set's
released count, and the file's provenance records what it ran (:func:`distill_record`: its loops,
decision 92; the clouds' optimiser and each iteration's matching loss, decision 93).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from train.condense.files.condensed_file import CondensedSet, current_commit
from train.condense.methods.coreset import Rule, herding_order, kcenter_order, random_order, select_per_class
from train.condense.files.data import DataSpec, clouds_of, in_frame, pick
from train.condense.methods.dd3d import distill_dd3d
from train.condense.files.distill_checkpoint import CHECKPOINT_NAME, Checkpoint
from train.condense.methods.explicit import check_init, cloud_step, distill_explicit
from train.condense.matching.features import embed, feature_network
from train.condense.matching.controls import CONTROLS, StepNorms, check_ratio
from train.condense.matching.matching_loops import DistillSpec, check_processes
from train.condense.matching.released import generator_adam, iterations_for, loops_of, task_of
from train.condense.files.rotator import Rotator, frame_record, rotator_kind
from train.condense.matching.topology_term import FEATURE_SMALLEST_CPC, PART_READINGS, reading_acts
from train.condense.evaluation.training import TrainSpec
from train.condense.methods.trajectory import check_one_process, distill_trajectories
from train.data.objects import ObjectSet
from train.data.objects.load import GENERATED_SETS
from train.runtime.distributed import DistInfo

Arrays = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]  # points, labels, parts
Record = dict[str, Any] | None  # a distillation's record in the provenance, None for a coreset


@dataclass(frozen=True)
class MethodInputs:
    """What a method is given: the ``train`` split, CPC, its seed, ``features()`` (the (S, 1024)
    feature of every training cloud, the feature network trained or read from its cache on the
    first call), the processes it runs in, the distillation settings, the run folder and the
    rotator (``train`` is already in its frame unless the method is dd3d)."""

    train: ObjectSet
    cpc: int
    seed: int
    features: Callable[[], np.ndarray]
    info: DistInfo
    distill: DistillSpec
    folder: Path
    rotator: Rotator


Method = Callable[[MethodInputs], tuple[Arrays, Record]]
EXPLICIT = ("gm", "dm", "tm")  # the methods that optimise explicit clouds


def coreset(rule: Rule, uses_features: bool) -> Method:
    """A coreset method: ``rule``'s first CPC clouds of every class, in the feature space if it uses one."""
    def method(inputs: MethodInputs) -> tuple[Arrays, Record]:
        space = inputs.features() if uses_features else np.empty((len(inputs.train), 0))
        return pick(inputs.train, select_per_class(inputs.train.labels, space, inputs.cpc, rule, inputs.seed)), None
    return method


def loss_line(record: dict[str, Any]) -> str:
    """One line of whether a distillation's matching loss fell: the mean of its first and of its
    last tenth of the iterations (each iteration draws a fresh network, so one is noisy)."""
    loss = record["loss"]
    tenth = max(1, len(loss) // 10)
    first, last = float(np.mean(loss[:tenth])), float(np.mean(loss[-tenth:]))
    clouds = f"; clouds {record['optimizer']} lr {record['lr']:g}" if "optimizer" in record else ""
    return (f"matching loss {first:.4g} -> {last:.4g} (x{last / first:.2f}; mean of the first and last {tenth} of "
            f"{len(loss)} iterations{clouds})")


def distillation(name: str) -> Method:
    """A distillation method: synthetic clouds (part segmentation, Eq. 11: gm and dd3d, decision 81),
    checkpointed in the run folder (decision 80)."""
    def method(inputs: MethodInputs) -> tuple[Arrays, Record]:
        train, spec = inputs.train, inputs.distill
        content = hashlib.sha1(train.points.tobytes() + train.labels.tobytes()).hexdigest()
        run = {"method": name, "cpc": inputs.cpc, "seed": inputs.seed,
               "data": [train.name, train.setting, task_of(train), content],
               "spec": key_settings(spec), "rotator": inputs.rotator.kind,
               "clouds": cloud_step(name, spec) if name in EXPLICIT else None}
        checkpoint = Checkpoint(inputs.folder / CHECKPOINT_NAME, json.dumps(run, sort_keys=True), spec.checkpoint_every,
                                spec.resume, last=spec.iterations)
        args = (train, inputs.cpc, inputs.seed, spec, inputs.info)
        norms: list[StepNorms] = []
        if name == "tm":
            points, labels, history = distill_trajectories(*args, checkpoint)
            parts = None
        elif name == "dd3d":
            points, labels, parts, history = distill_dd3d(*args, inputs.folder, inputs.rotator, checkpoint, norms)
        else:
            points, labels, parts, history = distill_explicit(*args, name, checkpoint, norms)
        return (points, labels, parts), distill_record(name, train, inputs.cpc, spec, history, norms)
    return method


def settled(spec: DistillSpec, train: ObjectSet) -> DistillSpec:
    """``spec`` with the released iterations of ``train``'s data set and task where it names none."""
    return spec if spec.iterations is not None else replace(spec, iterations=iterations_for(train.name, task_of(train)))


def distill_record(method: str, train: ObjectSet, cpc: int, spec: DistillSpec, history: list[float],
                   norms: list[StepNorms] | None = None) -> dict[str, Any]:
    """What a distillation ran, for the provenance: its outer ``iterations``, real batch and network
    lr; gm and dd3d their ``loops`` (outer steps, inner epochs, inner batch, the network's and the
    synthetic parameters' lr cuts, decision 92); dd3d its generator's ``adam``, explicit clouds
    their ``init``, ``optimizer`` and ``lr`` (decision 93); and ``loss``, each iteration's mean
    matching loss (D for gm and dd3d), so that a reader sees whether it fell; with a control or a
    ratio (decisions 101 and 102) ``strength_norms``, the mean over the matched steps this process
    ran of the gradient norms of the matching distance (with a ratio), of the persistence term and
    of the control unscaled (with a control), and the number of ``steps``."""
    record: dict[str, Any] = {"iterations": spec.iterations, "real_batch": spec.real_batch, "net_lr": spec.net_lr}
    if method in ("gm", "dd3d"):
        record["loops"] = asdict(loops_of(train, cpc))
    if method == "dd3d":
        record["adam"] = asdict(generator_adam(task_of(train)))
        if spec.noise_dims != 1:
            record["noise_dims"] = spec.noise_dims
    else:
        optimizer, lr = cloud_step(method, spec)
        record.update(init=spec.init, optimizer=optimizer, lr=lr)
    if norms:
        means = {name: float(np.mean(values)) for name, values in zip(StepNorms._fields, zip(*norms))
                 if not np.isnan(values).any()}
        record["strength_norms"] = {**means, "steps": len(norms)}
    return {**record, "loss": history}


METHODS: dict[str, Method] = {
    "random": coreset(random_order, uses_features=False),
    "herding": coreset(herding_order, uses_features=True),
    "kcenter": coreset(kcenter_order, uses_features=True),
    "gm": distillation("gm"),
    "dm": distillation("dm"),
    "tm": distillation("tm"),
    "dd3d": distillation("dd3d"),
}
DISTILLATIONS = ("gm", "dm", "tm", "dd3d")
FEATURE_METHODS = ("herding", "kcenter")  # the methods that train the feature network (coreset(uses_features=True))
TOPO_DISTILLATIONS = ("gm", "dd3d")  # gradient matching's persistence term (decision 96)
TOPO_FIELDS = ("topo", "topo_weight", "topo_ratio", "control")


def key_settings(spec: DistillSpec) -> dict[str, Any]:
    """The settings that identify a distillation (its checkpoint's key): all but ``resume`` and the
    clouds' optimiser options (the key holds the resolved optimiser, decision 93), and the
    persistence term's only when it is on (so a run without it keeps its key)."""
    off = ("resume", "cloud_optimizer", "cloud_lr", *(TOPO_FIELDS if spec.topo is None else ()),
           *(f for f in ("control", "topo_ratio") if getattr(spec, f) is None),
           *(("noise_dims",) if spec.noise_dims == 1 else ()))
    return {k: v for k, v in asdict(spec).items() if k not in off}
PART_DISTILLATIONS = ("gm", "dd3d")  # the paper's Table 2
ROTATOR_TRAINERS = ("dd3d",)  # the methods that train a learned sign themselves


def check_classes(train: ObjectSet, cpc: int) -> None:
    """ValueError in one line naming the class when one of ``train``'s classes has no clouds, or
    fewer than ``cpc``: a condensed set holds CPC clouds of every class, never fewer in silence."""
    counts = np.bincount(train.labels, minlength=len(train.class_names))
    empty = [name for name, count in zip(train.class_names, counts) if count == 0]
    if empty:
        raise ValueError(f"class {empty[0]!r} of {train.name} has no clouds in its {train.split} split"
                         + (f" ({len(empty)} classes have none)" if len(empty) > 1 else "")
                         + ": a condensed set needs every class; check the download (docs/objects.md)")
    fewest = int(np.argmin(counts))
    if counts[fewest] < cpc:
        larger = " or a larger --size (a generated set)" if train.name in GENERATED_SETS else ""
        raise ValueError(f"cpc {cpc} is more than class {train.class_names[fewest]!r} of {train.name} holds "
                         f"({counts[fewest]} clouds in its {train.split} split): give a CPC of {counts[fewest]} "
                         f"or less{larger}")


def checked_split(data: DataSpec, method: str, cpc: int, distill: DistillSpec = DistillSpec(),
                  rotator: str | None = None, train: ObjectSet | None = None, processes: int = 1
                  ) -> tuple[ObjectSet, str]:
    """The ``train`` split a run of ``method`` condenses (``data``'s, read unless given) and its
    frame's kind, after every refusal of the run that its settings, that split and its ``processes``
    can give, in one line (the method, CPC, the classes' counts, the task, the start, the persistence
    term, a learned sign, the processes): :func:`condense_set` runs it, and the command runs it
    before it touches the run folder (decisions 90 and 99)."""
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {', '.join(METHODS)}")
    if isinstance(cpc, bool) or not isinstance(cpc, int) or cpc < 1:
        raise ValueError(f"cpc must be a positive integer, got {cpc!r}")
    objects = data.load("train") if train is None else train  # checks the setting, which keys the rotator
    check_classes(objects, cpc)
    if method in DISTILLATIONS and objects.parts is not None and method not in PART_DISTILLATIONS:
        raise ValueError(f"{method} distils classification sets only (part segmentation: "
                         f"{', '.join(PART_DISTILLATIONS)})")
    if distill.topo is not None and method not in TOPO_DISTILLATIONS:
        raise ValueError(f"--topo is an option of {', '.join(TOPO_DISTILLATIONS)}")
    if distill.control is not None and distill.topo is None:
        raise ValueError("--control takes the persistence term's place at its strength: give --topo and "
                         "--topo-weight or --topo-ratio, the term it controls")
    if distill.topo_ratio is not None:
        check_ratio(distill.topo_ratio, distill.topo, distill.topo_weight)
    if distill.noise_dims != 1 and (method != "dd3d" or objects.parts is not None):
        raise ValueError("--noise-dims is DD3D's generator's, on classification sets (a part segmentation set's "
                         "parts are intervals of one noise scalar)")
    if distill.control is not None and distill.control not in CONTROLS:
        raise ValueError(f"--control must be one of {', '.join(CONTROLS)}, got {distill.control!r}")
    if distill.topo is not None and distill.topo not in PART_READINGS and objects.parts is not None:
        raise ValueError(f"--topo {distill.topo} reads the classification network's global feature; a part "
                         "segmentation set takes --topo shape (its diagrams per part)")
    if distill.topo is not None and not reading_acts(distill.topo, cpc):
        raise ValueError(f"--topo {distill.topo} compares the diagram of a class's {cpc} synthetic clouds' features "
                         f"with the real ones'; below {FEATURE_SMALLEST_CPC} a class that diagram is the same whatever "
                         f"the clouds (one has no pair, two normalised lie 2 apart) and the term does nothing: give "
                         f"--cpc {FEATURE_SMALLEST_CPC} or more, or --topo shape")
    if method in EXPLICIT:
        check_init(distill.init, objects.parts is not None)
    if method == "tm":
        check_one_process(processes)
    elif method in DISTILLATIONS:
        check_processes(processes, len(objects.class_names))
    kind = rotator_kind(objects.setting, rotator)
    if kind == "learned" and method not in ROTATOR_TRAINERS:
        raise ValueError(f"the learned sign is trained by {', '.join(ROTATOR_TRAINERS)}; {method} takes the rotator "
                         "none, pca or fixed")
    return objects, kind


def condense_set(data: DataSpec, method: str, cpc: int, seed: int, recipe: TrainSpec, cache: Path, info: DistInfo,
                 train: ObjectSet | None = None, distill: DistillSpec = DistillSpec(), rotator: str | None = None
                 ) -> CondensedSet:
    """``method`` at ``cpc`` clouds per class on ``data``'s ``train`` split (read unless given),
    refused as :func:`checked_split` says; ``recipe`` and ``cache`` those of the feature network
    (:mod:`train.condense.matching.features`), the cache's folder the run's (a generator is kept there);
    ``distill`` the distillation settings; ``rotator`` the frame's kind (None: the setting's,
    :func:`rotator_kind`)."""
    objects, kind = checked_split(data, method, cpc, distill, rotator, train, info.world_size)
    frame = Rotator(kind).to(info.device)
    if method not in ROTATOR_TRAINERS:
        objects = in_frame(objects, frame)
    clouds = clouds_of(objects)
    distill = settled(distill, objects)

    def features() -> np.ndarray:
        net = feature_network(clouds, recipe, seed, {**data.key(), "rotator": kind}, cache, info)
        return embed(net, objects.points, info.device)

    inputs = MethodInputs(objects, cpc, seed, features, info, distill, cache.parent, frame)
    (points, labels, parts), record = METHODS[method](inputs)
    provenance = {"method": method, "dataset": data.dataset, "setting": data.setting, "task": data.task,
                  "cpc": cpc, "seed": seed, "data_seed": data.data_seed, "size": data.size,
                  "commit": current_commit(), "class_names": list(objects.class_names),
                  "part_names": None if objects.part_names is None else list(objects.part_names),
                  "frame": frame_record(frame), "distill": record,
                  **({} if distill.topo is None else
                     {"topo": {"reading": distill.topo, **({"weight": distill.topo_weight} if distill.topo_ratio is None
                                                           else {"ratio": distill.topo_ratio}),
                               **({} if distill.control is None else {"control": distill.control})}})}
    return CondensedSet(points.astype(np.float32), labels.astype(np.int64), provenance,
                        None if parts is None else parts.astype(np.int64))
