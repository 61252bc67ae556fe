"""Why the feature reading costs GM a point and DD3D 12 at CPC 10 (benchmarks/CONDENSE-STUDY.md,
sections 5 and 6): is it the sizes of the two sets it compares?

The feature reading (decision 96) compares the Rips diagram of a class's 32 real global features
with that of its CPC synthetic ones, each set normalised over itself. H0's deaths are the edges of
a set's minimum spanning tree, and at a fixed scale those shrink as a set grows, so ten features
drawn from the very distribution of the 32 have another diagram than the 32: the term would
penalise a synthetic set that *is* ten real clouds. This script measures that on real clouds
alone (no distillation), with fresh matching networks as gradient matching draws them:

- ``T(32, 10)``: the term between a real batch of 32 and ten other real clouds of the class (what a
  perfect CPC 10 set would pay), against ``T(10, 10)`` (a real batch of ten, the same size),
  ``T(32, 32)`` and ``T=(32, 10)``, the ``feature_equal`` reading (the batch's three sets of ten);
- the H0 deaths' mean of the normalised sets of ten and of 32;
- the pull: the ten clouds moved by Adam on the term alone (``steps`` steps of lr 1e-3: GM's cloud
  optimiser at a study's ten iterations, one step an iteration), by ``feature`` (the 32 as the
  target) and by ``feature_equal``; the ten features' H0 mean death, nearest-neighbour share of
  the set's scale and the term, before and after.

    OMP_NUM_THREADS=1 python benchmarks/studies/condense-topo-cpc10-cpu/feature_cardinality.py [--nets 3] [--steps 10]

Prints JSON (means over classes and networks, and per class); kept in feature-cardinality.json.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from train.condense.files.data import DataSpec
from train.condense.matching.matching_loops import fresh_network
from train.condense.studies.study import PRESETS
from train.condense.matching.topology_term import DEFAULT_M, feature_term, target_diagrams

REAL_BATCH, CPC = 32, 10


def h0_mean_death(features: torch.Tensor) -> float:
    """The mean H0 death of a (n, C) set normalised over itself (its MST's mean edge)."""
    return float(target_diagrams([features.detach().double().numpy()], DEFAULT_M)[0].h0_pairs[:, 1].mean())


def nn_share(features: torch.Tensor) -> float:
    """The mean nearest-neighbour distance of a (n, C) set over its RMS distance from its mean."""
    x = features.detach().double()
    d = torch.cdist(x, x) + torch.diag(torch.full((len(x),), float("inf"), dtype=x.dtype))
    return float(d.min(1).values.mean() / (x - x.mean(0)).pow(2).sum(1).mean().sqrt())


def pull(net: torch.nn.Module, target: torch.Tensor, start: torch.Tensor, steps: int, equal: bool) -> dict[str, float]:
    """The ten clouds ``start`` moved by Adam (lr 1e-3) on the feature term against ``target``."""
    clouds = start.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([clouds], lr=1e-3)
    before = net.embed(clouds).detach()
    t0 = float(feature_term(net, target, clouds, equal=equal).detach())
    for _ in range(steps):
        optimiser.zero_grad()
        feature_term(net, target, clouds, equal=equal).backward()
        optimiser.step()
    after = net.embed(clouds).detach()
    return {"term_before": t0, "term_after": float(feature_term(net, target, clouds, equal=equal).detach()),
            "h0_before": h0_mean_death(before), "h0_after": h0_mean_death(after),
            "nn_before": nn_share(before), "nn_after": nn_share(after),
            "moved": float((clouds.detach() - start).norm(dim=-1).mean())}


def measure(nets: int, steps: int) -> dict[str, object]:
    plan = PRESETS["cpu"]
    real = DataSpec(plan.dataset, plan.root, "aligned", "classification", size=plan.size,
                    points=plan.points).load("train")
    rows = []
    for seed in range(nets):
        torch.manual_seed(seed)
        net = fresh_network(len(real.class_names), torch.device("cpu"))
        rng = np.random.default_rng(seed)
        for k, name in enumerate(real.class_names):
            ids = rng.permutation(np.flatnonzero(real.labels == k))
            need = 2 * REAL_BATCH + CPC
            if len(ids) < need:
                raise ValueError(f"class {name} has {len(ids)} training clouds, the script needs {need}")
            batch = torch.from_numpy(real.points[ids[:REAL_BATCH]])
            other = torch.from_numpy(real.points[ids[REAL_BATCH:2 * REAL_BATCH]])
            ten = torch.from_numpy(real.points[ids[2 * REAL_BATCH:need]])
            with torch.no_grad():
                feats = {"32": net.embed(batch), "10": net.embed(ten)}
                terms = {"T(32,10)": float(feature_term(net, batch, ten)),
                         "T(10,10)": float(feature_term(net, batch[:CPC], ten)),
                         "T(32,32)": float(feature_term(net, batch, other)),
                         "T=(32,10)": float(feature_term(net, batch, ten, equal=True))}
            rows.append({"net": seed, "class": name, **terms,
                         "h0_mean_death_32": h0_mean_death(feats["32"]), "h0_mean_death_10": h0_mean_death(feats["10"]),
                         "nn_share_32": nn_share(feats["32"]), "nn_share_10": nn_share(feats["10"]),
                         "pull_feature": pull(net, batch, ten, steps, False),
                         "pull_feature_equal": pull(net, batch, ten, steps, True)})

    def mean(key: str, sub: str | None = None) -> float:
        return float(np.mean([r[key] if sub is None else r[key][sub] for r in rows]))
    summary = {key: mean(key) for key in ("T(32,10)", "T(10,10)", "T(32,32)", "T=(32,10)", "h0_mean_death_32",
                                          "h0_mean_death_10", "nn_share_32", "nn_share_10")}
    for target in ("pull_feature", "pull_feature_equal"):
        summary[target] = {sub: mean(target, sub) for sub in rows[0][target]}
    return {"data": f"{plan.dataset}, {plan.points} points, aligned, train split", "nets": nets, "steps": steps,
            "real_batch": REAL_BATCH, "cpc": CPC, "m": DEFAULT_M, "mean": summary, "rows": rows}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(json.dumps(measure(args.nets, args.steps), indent=1))
