"""An exported model file (``python -m train.export_onnx``, decision 55): what its metadata holds,
and the file read back as a predictor for onnxruntime, without torch.

The metadata is one JSON document under the key :data:`METADATA_KEY` of the ONNX file's
``metadata_props`` (:func:`describe`): everything a user needs to label a scan without the
checkpoint: the data set, class names, voxel size, the box the points are clamped into before
grid sampling (``evaluation_box``: Waymo's and the synthetic set's, null for the others), input
channels, the feature column and its scale, the data set's label map (raw id -> class, -1
ignored), a scan folder's description, the
preset and architecture, the plan's settings (curves, patch size, kernel sizes, the plan items, and
per level the curves whose patch rows the blocks read, :func:`curves_read`) and every graph input (``train.models.graph_inputs``), the precision and the opset. ``docs/deploy.md``
lists the fields. A file written before ``evaluation_box`` was recorded (the same format 1) is
read with its data set's box, as it was labelled then; a file whose box is not the one this
version's pipeline of its data set applies is refused in one line.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from train.data.lidar.folder import FolderDescription, folder_description
from train.data.labels import NUSCENES_LEARNING_MAP, SEMANTIC_KITTI_LEARNING_MAP, WAYMO_LEARNING_MAP, class_names
from train.data.lidar.nuscenes import NUSCENES_INTENSITY_SCALE
from train.data.transforms import evaluation_box
from train.models.graph_inputs import GraphInput, graph_input
from train.runtime.checkpoint_errors import CheckpointError, CheckpointMissingError, one_line

METADATA_KEY = "topodistill"
FORMAT = 1
# The published sets' label maps (raw id -> train id) and the scale their strength is stored at.
LABEL_MAPS: dict[str, dict[int, int]] = {"waymo": WAYMO_LEARNING_MAP, "synthetic": WAYMO_LEARNING_MAP,
                                         "nuscenes": NUSCENES_LEARNING_MAP,
                                         "semantic_kitti": SEMANTIC_KITTI_LEARNING_MAP}
FEATURE_SCALES: dict[str, float] = {"waymo": 1.0, "synthetic": 1.0, "nuscenes": NUSCENES_INTENSITY_SCALE,
                                     "semantic_kitti": 1.0}


def describe(*, dataset: str, classes: tuple[str, ...], grid_size: float, in_channels: int,
             folder: FolderDescription | None, preset: str | None, config: dict[str, Any], items: list[list[Any]],
             inputs: list[GraphInput], precision: str, opset: int, source: str) -> str:
    """The metadata document of an exported model (module docstring), as JSON text."""
    if folder is not None:
        feature = {"column": folder.feature, "scale": folder.feature_scale}
        label_map = folder.label_map
    else:
        feature = {"column": "intensity", "scale": FEATURE_SCALES[dataset]}
        label_map = LABEL_MAPS[dataset]
    kernels = sorted({item[2] for item in items if item[0] == "rulebook"})
    return json.dumps({
        "format": FORMAT, "dataset": dataset, "class_names": list(classes), "grid_size": grid_size,
        "evaluation_box": _plain_box(evaluation_box(dataset)),
        "in_channels": in_channels, "feature": feature, "label_map": {str(k): v for k, v in label_map.items()},
        "folder": None if folder is None else folder.plain(), "preset": preset, "config": config,
        "plan": {"orders": list(config["orders"]), "patch_size": config["patch_size"], "kernel_sizes": kernels,
                 "items": items, "curves_read": curves_read(config)},
        "inputs": [spec.plain() for spec in inputs], "outputs": [{"name": "logits", "dtype": "float32",
                                                                  "shape": ["points_l0", len(classes)]}],
        "precision": precision, "opset": opset, "source": source,
    }, indent=1)


def curves_read(config: dict[str, Any]) -> list[list[str]]:
    """Per level, the curves whose rows of ``patches_l{l}_gather`` / ``_scatter`` the exported graph
    reads, in ``orders``' order: block i of a stage (encoder or decoder) at level l reads row
    ``i % len(orders)`` (spec A2, no shuffle at inference); [] at a level without blocks. The other
    rows are inputs all the same (the plan builds every curve; pooling numbers clusters along the
    first curve either way)."""
    orders, decoder = list(config["orders"]), list(config["dec_depths"])
    blocks = [max(depth, decoder[s] if s < len(decoder) else 0) for s, depth in enumerate(config["enc_depths"])]
    return [orders[:min(count, len(orders))] for count in blocks]


def _plain_box(box: tuple[tuple[float, ...], tuple[float, ...]] | None) -> dict[str, list[float]] | None:
    return None if box is None else {"low": list(box[0]), "high": list(box[1])}


@dataclass(frozen=True)
class OnnxPredictor:
    """An exported model in an onnxruntime session, with what :class:`train.prediction.model.Predictor`
    tells of a checkpoint (data set, classes, voxel size, input channels, scan folder) and what the
    plan needs (curves, plan items, graph inputs)."""

    session: Any
    dataset: str
    class_names: tuple[str, ...]
    grid_size: float
    in_channels: int
    folder: FolderDescription | None
    orders: tuple[str, ...]
    items: tuple[tuple[Any, ...], ...]
    inputs: tuple[GraphInput, ...]
    precision: str


def load_onnx_predictor(path: str | Path, providers: list[str | tuple[str, dict[str, Any]]],
                        threads: int | None = None, dataset: str | None = None, grid_size: float | None = None
                        ) -> OnnxPredictor:
    """The exported model ``path`` in an onnxruntime session on ``providers`` (``threads``: its
    intra-op threads, None for onnxruntime's default). ``dataset`` and ``grid_size``, when given,
    must agree with the file's. One-line :class:`CheckpointError` for a missing file, a file that
    is no ONNX model and one without this project's metadata."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise CheckpointMissingError(f"{path}: no such file")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: not the notices of every session
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as err:  # onnxruntime reports an unreadable file as InvalidProtobuf, Fail, ...
        raise CheckpointError(f"{path} is not an ONNX model onnxruntime can load ({one_line(str(err))[:200]})") from None
    meta = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in meta:
        raise CheckpointError(f"{path} is an ONNX model without topodistill's metadata (classes, voxel size, plan "
                              "inputs): export one with python -m train.export_onnx")
    try:
        doc = json.loads(meta[METADATA_KEY])
        if doc["format"] != FORMAT:
            raise ValueError(f"metadata format {doc['format']}, this version reads {FORMAT}")
        inputs = tuple(graph_input(spec) for spec in doc["inputs"])
        folder = None if doc["folder"] is None else folder_description(doc["folder"], f"{path} (its scan folder)")
        classes = tuple(doc["class_names"])
        clamped = _plain_box(evaluation_box(str(doc["dataset"])))  # what the pipeline of its data set applies
        if doc.get("evaluation_box", clamped) != clamped:  # absent: a file written before the box was kept
            raise ValueError(f"evaluation_box {doc['evaluation_box']} of a {doc['dataset']} model, whose points this "
                             f"version clamps into {clamped}")
        predictor = OnnxPredictor(session, str(doc["dataset"]), classes, float(doc["grid_size"]),
                                  int(doc["in_channels"]), folder, tuple(doc["plan"]["orders"]),
                                  tuple(tuple(item) for item in doc["plan"]["items"]), inputs, str(doc["precision"]))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: its topodistill metadata is unreadable ({one_line(str(err))})") from None
    wired = [i.name for i in session.get_inputs()]
    if wired != [spec.name for spec in inputs]:
        raise CheckpointError(f"{path}: its graph's inputs {wired[:4]}... are not those its metadata lists")
    if dataset is not None and dataset != predictor.dataset and (
            "folder" in (dataset, predictor.dataset) or tuple(class_names(dataset)) != classes):
        raise CheckpointError(f"{path} was exported from a model of {predictor.dataset}, so it cannot label {dataset} "
                              "scans")
    if grid_size is not None and float(grid_size) != predictor.grid_size:
        raise CheckpointError(f"{path} was trained on {predictor.grid_size} m voxels; --grid-size {grid_size} does "
                              "not match")
    return predictor
