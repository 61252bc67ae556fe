"""The feature space of the Herding and K-Center baselines (decision 71): the 1,024-wide global
feature (``PointNetClassifier.embed``) of the paper's lightweight PointNet trained with the
protocol's recipe on the full ``train`` split, in eval mode.

The network is trained once and cached in one file (``feature_net.pt`` of the run folder): its
weights and the JSON key of what produced it (the data, the recipe, the seed). A cache whose key
differs is trained anew and replaced; it is read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from train.condense.evaluation.training import Clouds, TrainSpec, build, train_backbone
from train.runtime.distributed import DistInfo, barrier
from train.runtime.files import atomic_write

FEATURE_MODEL = "pointnet"
CACHE_NAME = "feature_net.pt"
EMBED_CHUNK = 64


class FeatureCacheError(ValueError):
    """A feature cache that cannot be read (its message names the file)."""


def _cached(path: Path, key: str) -> dict[str, torch.Tensor] | None:
    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a damaged file
        raise FeatureCacheError(f"{path}: not a readable feature cache ({type(err).__name__}); delete it") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("key"), str) or not isinstance(saved.get("state"), dict):
        raise FeatureCacheError(f"{path}: not a feature cache of train.condense (no key and state); delete it")
    return saved["state"] if saved["key"] == key else None


def check_cache(path: Path) -> None:
    """FeatureCacheError in one line when ``path`` exists and is no readable feature cache: checked
    before a run starts (decision 99), not when its first feature is asked for."""
    _cached(path, "")


def feature_network(train: Clouds, spec: TrainSpec, seed: int, data_key: dict[str, object], cache: Path,
                    info: DistInfo) -> torch.nn.Module:
    """The feature PointNet of ``train``: read from ``cache`` when its key matches, else trained and cached."""
    recipe = replace(spec, model=FEATURE_MODEL, test_every=0)
    key = json.dumps({"data": data_key, "recipe": recipe.record(), "seed": seed}, sort_keys=True)
    classes = Clouds(train.points, train.labels, train.num_classes)  # a classifier, also for part data
    state = _cached(cache, key)
    if state is None:
        model = train_backbone(classes, recipe, seed, info, desc="feature network")
        if info.is_main:
            buffer = io.BytesIO()
            torch.save({"key": key, "state": {k: v.cpu() for k, v in model.state_dict().items()}}, buffer)
            atomic_write(buffer.getbuffer(), cache)
        barrier()
        return model
    model = build(classes, FEATURE_MODEL).to(info.device)
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def embed(model: torch.nn.Module, points: np.ndarray, device: torch.device) -> np.ndarray:
    """(S, 1024) float64 global features of ``points`` (S, N, 3)."""
    model.eval()
    out = [model.embed(torch.from_numpy(points[i:i + EMBED_CHUNK]).to(device)).cpu().double().numpy()
           for i in range(0, len(points), EMBED_CHUNK)]
    return np.concatenate(out)
