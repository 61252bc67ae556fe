"""The model a prediction runs and what it expects of its inputs (decision 50).

A ``model_final.pt`` or ``checkpoint_last.pt`` written by ``python -m train.run`` names the data
set it was trained on and its voxel size (its run config), so its classes and its input features
(xyz and the data set's strength) are known; a Pointcept PTv3 checkpoint names neither, so the
data set and the preset are given (``--dataset``, ``--preset``) and the voxel size is spec D's
0.05 m unless ``--grid-size`` says otherwise. A model trained on a scan folder (``--dataset
folder``, decision 51) expects that folder's classes, feature and frame (decision 53): its
checkpoints keep the folder's description (:class:`train.data.lidar.folder.FolderDescription`; one kept
before the frame was read in the sensor frame it was trained in); an older one without it is read
with the ``dataset.yaml`` of ``--data-root`` or of the folder it was trained on. Every refusal is one
line naming the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from train.runtime.checkpoint import read_weights
from train.runtime.checkpoint_errors import CheckpointError
from train.data.lidar.folder import SPEC_FILE, FolderDescription, folder_description, read_folder_spec
from train.data.labels import class_names
from train.engine.loop import ModelSpec, model_from_weights
from train.models.pointcept import is_pointcept_state_dict

POINTCEPT_GRID_SIZE = 0.05  # spec D's voxel size, which Pointcept's LiDAR configs use
POINTCEPT_PRESET = "teacher"  # the architecture a Pointcept checkpoint is built as unless --preset says


@dataclass(frozen=True)
class Predictor:
    """A model in eval mode on its device with the data set whose classes it predicts, the voxel
    size its scans are grid-sampled at and the number of input channels it reads; for a scan
    folder's model, the folder's description (``folder``; None for the other data sets)."""

    model: nn.Module
    dataset: str
    class_names: tuple[str, ...]
    grid_size: float
    in_channels: int
    folder: FolderDescription | None


def same_classes(a: str, b: str) -> bool:
    """Whether data sets ``a`` and ``b`` share their classes and their strength feature (the
    synthetic set is written in Waymo's form)."""
    return tuple(class_names(a)) == tuple(class_names(b))


def load_predictor(path: str | Path, device: torch.device, dataset: str | None = None, preset: str | None = None,
                   grid_size: float | None = None, data_root: str | None = None) -> Predictor:
    """The model of checkpoint ``path`` on ``device`` (module docstring). ``dataset`` and
    ``grid_size`` must agree with what a native checkpoint names; a Pointcept checkpoint needs
    ``dataset`` (for a scan folder also ``data_root``) and is built as ``preset`` (default
    :data:`POINTCEPT_PRESET`); a ``preset`` given for a native checkpoint, which names its own
    architecture, could not act and is refused (decision 99)."""
    state, refused = read_weights(path)
    weights = state.get("state_dict") if isinstance(state, dict) else None
    pointcept = isinstance(weights, dict) and is_pointcept_state_dict(weights)
    if preset is not None and not pointcept:
        raise CheckpointError(f"--preset names the architecture of a Pointcept checkpoint; {path} is not one (its "
                              "architecture is its own), so --preset would change nothing")
    preset = preset or POINTCEPT_PRESET
    if dataset is None and pointcept:
        raise CheckpointError(f"{path} is a Pointcept checkpoint, which does not name its data set: pass --dataset "
                              "(and --preset, its architecture)")
    folder = _folder(path, {}, {}, data_root) if pointcept and dataset == "folder" else None
    spec = ModelSpec(preset, len(_classes(dataset, folder)), {}) if pointcept else None
    model, _, config = model_from_weights(path, state, refused, spec)
    trained_on = config.get("dataset")
    if trained_on is None and dataset is None:
        raise CheckpointError(f"{path} does not name the data set it was trained on: pass --dataset")
    if trained_on is not None and dataset is not None and trained_on != dataset and (
            "folder" in (trained_on, dataset) or not same_classes(trained_on, dataset)):
        raise CheckpointError(f"{path} was trained on {trained_on}, so it cannot label {dataset} scans")
    chosen = dataset if dataset is not None else trained_on
    if chosen == "folder" and folder is None:
        extra = state.get("extra")
        folder = _folder(path, extra if isinstance(extra, dict) else {}, config, data_root)
    classes = _classes(chosen, folder)
    if model.num_classes != len(classes):
        raise CheckpointError(f"{path} predicts {model.num_classes} classes, {chosen} has {len(classes)}")
    trained_grid = config.get("grid_size")
    if trained_grid is not None and grid_size is not None and float(trained_grid) != float(grid_size):
        raise CheckpointError(f"{path} was trained on {trained_grid} m voxels; --grid-size {grid_size} does not match")
    grid = float(trained_grid if trained_grid is not None else grid_size if grid_size is not None
                 else POINTCEPT_GRID_SIZE)
    model.to(device).eval()
    model.deterministic = True  # a fixed serialization order, as in evaluation
    for p in model.parameters():
        p.requires_grad_(False)
    return Predictor(model, chosen, classes, grid, model.in_channels, folder)


def _classes(dataset: str, folder: FolderDescription | None) -> tuple[str, ...]:
    return folder.classes if folder is not None else tuple(class_names(dataset))


def _folder(path: str | Path, extra: dict, config: dict, data_root: str | None) -> FolderDescription:
    """The scan folder description a model expects: the one its checkpoint keeps, else (an older
    checkpoint, a Pointcept one) the ``dataset.yaml`` of ``data_root`` or of the run's data root."""
    if "folder" in extra:
        try:
            return folder_description(extra["folder"], f"{path} (its scan folder description)")
        except ValueError as err:
            raise CheckpointError(str(err)) from None
    root = data_root if data_root is not None else config.get("data_root")
    if not isinstance(root, str) or not (Path(root) / SPEC_FILE).is_file():
        raise CheckpointError(f"{path} keeps no scan folder description (classes, feature) and "
                              f"{'no --data-root was given' if root is None else f'{root} holds no {SPEC_FILE}'}: "
                              f"pass --dataset folder --data-root with the folder (its {SPEC_FILE}) the model was "
                              "trained on")
    return read_folder_spec(root).description
