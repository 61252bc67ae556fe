"""Shared helpers of the training tests: a tiny synthetic set and tiny model overrides.

The set is made by the real simulator (``train.data.synthetic.ensure_synthetic_dataset``) with a
coarse sensor so a scan has a few hundred points; the models keep the PTv3 layout (three encoder
stages, two decoder stages, 64-channel embedding) with a handful of channels, so a training step
takes a fraction of a second on one core.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import train.engine.loop

from train.config import RunConfig
from train.options.resolve import finalize
from train.runner.datasets import SplitData, prepare_splits
from train.runtime.distributed import DistInfo

class Killed(Exception):
    """Stands for a process killed just after it wrote a checkpoint."""


def run_killed_after_checkpoint(monkeypatch: pytest.MonkeyPatch, step: int, launch: Callable[[], Any]) -> None:
    """Run ``launch`` (a training run) as if its process were killed right after the training
    checkpoint of ``step`` was written: ``train.engine.loop.save_checkpoint`` raises :class:`Killed`
    after writing it; restored afterwards."""
    real_save = train.engine.loop.save_checkpoint

    def save_then_die(path, model, optimizer, scheduler, scaler, at, *args, **kwargs):  # type: ignore[no-untyped-def]
        real_save(path, model, optimizer, scheduler, scaler, at, *args, **kwargs)
        if at == step and optimizer is not None:
            raise Killed

    monkeypatch.setattr(train.engine.loop, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        launch()
    monkeypatch.setattr(train.engine.loop, "save_checkpoint", real_save)


TINY_MODEL: dict[str, Any] = dict(
    enc_depths=(1, 1, 1), enc_channels=(8, 16, 16), enc_heads=(1, 1, 2),
    dec_depths=(1, 1), dec_channels=(64, 16), dec_heads=(2, 1), drop_path=0.0, patch_size=64,
)


def tiny_config(tmp_path: Path, **values: Any) -> RunConfig:
    """A resolved synthetic config at a tiny budget (overridable through ``values``)."""
    base: dict[str, Any] = dict(
        dataset="synthetic", data_root=str(tmp_path / "data"), out=str(tmp_path / "out"),
        synthetic_scenes=5, synthetic_beams=8, synthetic_azimuth_steps=64, grid_size=0.3,
        epochs=1, teacher_epochs=1, batch_size=2, iters_per_epoch=2, device="cpu", deterministic=True,
        teacher_overrides=dict(TINY_MODEL), student_overrides=dict(TINY_MODEL), saliency_layers=[1, 2],
        topo_m=32, topo_time_budget=None, latency_runs=1, tensorboard=False, progress=False, seed=0, procs=1,
        class_weights="none",
    )
    base.update(values)
    return finalize(base)


def tiny_data(cfg: RunConfig) -> SplitData:
    import torch

    return prepare_splits(cfg, DistInfo(0, 1, 0, torch.device("cpu")))


def tiny_data_folder(tmp_path_factory: Any, name: str) -> Path:
    """A new folder ``name`` holding the tiny synthetic set under ``data/`` (for a module fixture)."""
    root = tmp_path_factory.mktemp(name)
    tiny_data(tiny_config(root, data_root=str(root / "data")))
    return root


def record_calls(monkeypatch: Any, module: Any, name: str) -> list[Path]:
    """Wrap ``module.name`` (a function whose third argument is a folder) so that the folders it is
    called with are listed in the returned list."""
    calls: list[Path] = []
    real = getattr(module, name)

    def recording(first: Any, second: Any, folder: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(Path(folder))
        return real(first, second, folder, *args, **kwargs)

    monkeypatch.setattr(module, name, recording)
    return calls


def test_tiny_synthetic_set_has_labelled_scans_in_every_split(tmp_path: Path) -> None:
    data = tiny_data(tiny_config(tmp_path))
    assert len(data.train) == 3 and len(data.val_views(False)[0]) == 1 and len(data.eval_views("test", False)[0]) == 1
    assert int((data.eval_views("test", False)[0][0]["segment"] >= 0).sum()) > 0
    batch = data.collate([data.train[0], data.train[1]])
    assert batch["offset"].tolist()[-1] == batch["coord"].shape[0]
    assert int((batch["segment"] >= 0).sum()) > 0
    assert np.all(batch["inverse"].numpy() < batch["coord"].shape[0])
