"""A trained model written as an ONNX file that labels scans without this package's PyTorch
(``python -m train.export_onnx``, decision 55).

The model is read as ``train.predict`` reads it (:func:`train.prediction.model.load_predictor`: a
``model_final.pt``, a ``checkpoint_last.pt`` or a Pointcept checkpoint with its data set and
preset), traced by :func:`train.models.onnx_graph.export_graph`, given its metadata
(:func:`train.prediction.onnx_file.describe`), checked by ``onnx.checker`` and written whole
(:func:`train.runtime.files.atomic_write`); an existing file is replaced only when asked.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from train.models.onnx_graph import OPSET, export_graph, export_items
from train.models.ptv3 import PRESETS, PTv3
from train.prediction.model import load_predictor
from train.prediction.onnx_file import METADATA_KEY, describe
from train.runtime.checkpoint_errors import CheckpointError, one_line
from train.runtime.files import atomic_write

# PTv3Config fields that do not change the network's arithmetic (training and backend choices).
_NOT_ARCHITECTURE = ("drop_path", "conv_backend", "attn_backend")


def preset_of(model: PTv3) -> str | None:
    """The preset whose architecture ``model`` has, or None (a model built with overrides)."""
    config = dataclasses.asdict(model.config)
    for name, preset in PRESETS.items():
        fields = {**config, **{key: tuple(v) if isinstance(v, list) else v for key, v in preset.items()}}
        if all(fields[key] == config[key] for key in config if key not in _NOT_ARCHITECTURE):
            return name
    return None


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, half: bool, overwrite: bool, dataset: str | None,
                      preset: str | None, grid_size: float | None, data_root: str | None) -> int:
    """Write the model of ``checkpoint`` to ``out`` (a ``.onnx`` file) and return its size in bytes.
    One-line ``ValueError`` / :class:`CheckpointError` for an ``out`` that exists (without
    ``overwrite``) or is no ``.onnx`` path, a file that is no model, and an architecture that cannot
    be exported (with the exporter's reason)."""
    import onnx

    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ValueError(f"--out {out}: the file's name must end in .onnx (train.predict reads it by that suffix)")
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder: name the .onnx file to write")
    if out.exists() and not overwrite:
        raise ValueError(f"--out {out} exists: pass --overwrite to replace it")
    predictor = load_predictor(checkpoint, torch.device("cpu"), dataset, preset, grid_size, data_root)
    model = predictor.model
    try:
        data, inputs = export_graph(model, half)
    except Exception as err:  # the tracer or a symbolic function refused an operation of this architecture
        raise CheckpointError(f"{checkpoint}: its architecture cannot be exported to ONNX "
                              f"({type(err).__name__}: {one_line(str(err))[:300]})") from None
    graph = onnx.load_from_string(data)
    config = {key: list(v) if isinstance(v, tuple) else v for key, v in dataclasses.asdict(model.config).items()}
    meta = graph.metadata_props.add()
    meta.key = METADATA_KEY
    meta.value = describe(dataset=predictor.dataset, classes=predictor.class_names, grid_size=predictor.grid_size,
                          in_channels=predictor.in_channels, folder=predictor.folder, preset=preset_of(model),
                          config=config, items=[list(item) for item in export_items(model)], inputs=inputs,
                          precision="float16" if half else "float32", opset=OPSET, source=Path(checkpoint).name)
    graph.producer_name = "topodistill"
    onnx.checker.check_model(graph, full_check=True)
    data = graph.SerializeToString()
    atomic_write(data, out)
    return len(data)
