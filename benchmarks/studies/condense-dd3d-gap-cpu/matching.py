"""DD3D against the baselines, measurement 3: how well does each finished set match the real
gradients, measured on the same networks and the same real batches?

Every method's training history (``distill.pt``'s mean D an iteration) is taken on its own
networks and real batches: GM's starts at Random's clouds, DD3D's at noise, and their fresh
networks differ (the generator's initialisation draws from the same seed first), so the two
curves do not compare. Here the sets a study folder finished (``shapes``, aligned, CPC 1) are
scored by Eq. (10)'s D (``fast.gradient_match_distance`` of each class's gradients,
:func:`train.condense.matching.matching_loops.class_gradients`, summed over the classes) on
``--networks`` fresh lightweight PointNets (torch seed ``10_000 * seed + n``) in training mode,
each with one real batch a class (32 clouds, the same for every candidate: its gradients are taken
once a network): a fresh network is what every outer iteration starts from, and at CPC 1 aligned
the network's 1e-3 SGD takes one step on the 13 synthetic clouds between two outer steps, so it
stays close to fresh. The candidates of a seed:

- ``random``: Random's clouds (GM's start); ``bootstrap``: each of them with its points drawn
  with replacement from it (one i.i.d. draw, what a perfect point-wise generator draws);
- ``gm``, ``dm``: the finished explicit clouds; ``gm bootstrap``: GM's clouds redrawn as
  ``bootstrap`` redraws Random's (the same picks): what a perfect point-wise generator of GM's
  finished set would draw;
- ``dd3d drawn``: DD3D's condensed set (one draw, in the unit sphere: what is evaluated);
- ``dd3d matched``: a fresh draw of DD3D's generator for every network, not normalised (what
  its loop matches); ``dd3d fresh, sphere``: the same draws put in the unit sphere (what its
  inner loop and the resampled evaluation see).

    OMP_NUM_THREADS=1 python benchmarks/studies/condense-dd3d-gap-cpu/matching.py STUDY_OUT --points 64 --seeds 0 1 2

``STUDY_OUT`` is a ``train.condense study`` folder holding the aligned CPC 1 units of random, gm,
dm and dd3d at ``--points`` (the 400-iteration units: ``--preset cpu --iterations 400``). Writes
``matching-p<points>.json`` beside this file: per seed and candidate the mean D over the networks
(and per network), its difference from Random's on the same networks with that difference's
standard error, and each method's history at iterations 1, 40, 200 and the last.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from train.condense.files.condensed_file import read_condensed
from train.condense.files.data import DataSpec
from fast import gradient_match_distance
from train.condense.matching.matching_loops import ClassClouds, class_gradients, fresh_network, real_sampler
from train.condense.methods.dd3d import GENERATOR_NAME, draw_batch, load_generator, unit_sphere
from train.condense.studies.study import PRESETS, Unit
from train.data.objects import ObjectSet

REAL_BATCH = 32  # real clouds a class, as the loops (DistillSpec.real_batch)
HISTORY_AT = (1, 40, 200)  # iterations whose training D is reported, beside the last


def fixed(clouds: torch.Tensor, labels: np.ndarray) -> ClassClouds:
    """Class k -> its clouds of a finished set (CPC 1: one), the same every call."""
    return lambda k: (clouds[torch.from_numpy(np.flatnonzero(labels == k))], None)


def folder_of(out: Path, method: str, seed: int, points: int) -> Path:
    """The aligned CPC 1 unit folder of ``method`` at ``seed`` in the study folder ``out``."""
    return out / "units" / Unit(1, method, "aligned", 1, seed, points, points).name


def scores(out: Path, train: ObjectSet, seed: int, points: int, networks: int) -> dict[str, list[float]]:
    """D summed over the classes, per network, of every candidate of ``seed`` (module docstring)."""
    sets = {m: read_condensed(folder_of(out, m, seed, points) / "condensed.npz") for m in ("random", "gm", "dm", "dd3d")}
    labels = sets["random"].labels
    if any(not np.array_equal(s.labels, labels) for s in sets.values()):
        raise ValueError(f"seed {seed}: the sets' labels differ")
    random = torch.from_numpy(sets["random"].points).float()
    picks = torch.from_numpy(np.random.default_rng([seed, 93]).integers(0, points, random.shape[:2]))
    gm = torch.from_numpy(sets["gm"].points).float()
    rows_of = torch.arange(len(random))[:, None]
    candidates = {"random": fixed(random, labels), "bootstrap": fixed(random[rows_of, picks], labels),
                  "gm": fixed(gm, labels), "gm bootstrap": fixed(gm[rows_of, picks], labels),
                  "dm": fixed(torch.from_numpy(sets["dm"].points).float(), labels),
                  "dd3d drawn": fixed(torch.from_numpy(sets["dd3d"].points).float(), labels)}
    generator, rotator, gen_labels, _ = load_generator(folder_of(out, "dd3d", seed, points) / GENERATOR_NAME)
    if rotator.kind != "none" or not np.array_equal(gen_labels, labels):
        raise ValueError(f"seed {seed}: the generator is not the aligned set's")
    rows = {int(k): torch.from_numpy(np.flatnonzero(labels == k)) for k in np.unique(labels)}
    classes = sorted(rows)
    result: dict[str, list[float]] = {}
    for n in range(networks):
        noise = torch.Generator().manual_seed(10_000 * seed + n)
        with torch.no_grad():
            matched = {k: draw_batch(generator, rotator, rows[k], points, noise, None, False)[0] for k in classes}
        candidates["dd3d matched"] = lambda k, m=matched: (m[k], None)
        candidates["dd3d fresh, sphere"] = lambda k, m=matched: (unit_sphere(m[k]), None)
        torch.manual_seed(10_000 * seed + n)
        net = fresh_network(len(train.class_names), torch.device("cpu"))
        real = real_sampler(torch.from_numpy(train.points), train.labels, REAL_BATCH,
                            torch.Generator().manual_seed(10_000 * seed + n))
        targets = {k: class_gradients(net, real(k), k) for k in classes}
        for name, synthetic in candidates.items():
            total = sum(float(gradient_match_distance(class_gradients(net, synthetic(k), k), targets[k]))
                        for k in classes)
            result.setdefault(name, []).append(total)
    return result


def histories(out: Path, seed: int, points: int) -> dict[str, dict[str, float]]:
    """Each method's training D (``distill.pt``'s history) at :data:`HISTORY_AT` and the last iteration."""
    found = {}
    for method in ("gm", "dd3d"):
        saved = torch.load(folder_of(out, method, seed, points) / "distill.pt", map_location="cpu", weights_only=True)
        history = saved["history"]
        found[method] = {str(i): round(float(history[i - 1]), 1) for i in (*HISTORY_AT, len(history))}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--points", type=int, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--networks", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train = DataSpec(PRESETS["cpu"].dataset, setting="aligned", points=args.points).load("train")
    record = {"networks": args.networks, "real_batch": REAL_BATCH, "seeds": {}}
    for seed in args.seeds:
        per_network = scores(args.out, train, seed, args.points, args.networks)
        random = np.asarray(per_network["random"])
        record["seeds"][str(seed)] = {
            "d": {name: {"mean": float(np.mean(v)), "minus_random": float(np.mean(np.asarray(v) - random)),
                         "minus_random_se": float(np.std(np.asarray(v) - random, ddof=1) / np.sqrt(len(v))),
                         "per_network": [round(x, 3) for x in v]}
                  for name, v in per_network.items()},
            "history": histories(args.out, seed, args.points)}
        print(seed, {name: round(v["mean"], 1) for name, v in record["seeds"][str(seed)]["d"].items()}, flush=True)
    path = Path(__file__).parent / f"matching-p{args.points}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
