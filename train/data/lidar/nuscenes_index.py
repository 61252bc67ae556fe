"""Where the LIDAR_TOP keyframes of nuScenes are, read once per process (spec section G).

Two sources list the keyframes:

- the official tables of a version, ``<root>/<version>/{sample_data,sample,scene,lidarseg}.json``
  (:func:`table_index`; the LIDAR_TOP sweeps between the keyframes, which carry no labels, by
  :func:`sweep_index`, read only when asked for: ``--unlabelled-split sweeps``, decision 57).
  ``sample_data.json`` holds every sensor reading (about 2.6M records, 1.2 GB, in v1.0-trainval)
  and is not parsed whole: it is read in pieces and only the records whose ``filename`` starts
  with ``samples/LIDAR_TOP/`` (about 34k) are decoded. The records of these tables are flat JSON
  objects (no nested objects), which is what lets a record be cut out between the braces around
  its filename;
- Pointcept's info files, ``info/nuscenes_infos_<K>sweeps_<split>.pkl`` (:func:`info_index`), read
  with the restricted unpickler of :mod:`train.data.restricted_pickle`.

Both results are cached for the life of the process, keyed by the files' paths, sizes and
modification times, so every split and every test-time view of a run shares one index and an
edited file is read again.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from ..restricted_pickle import RefusedPickleError, load_data_pickle
from ..validation import CorruptFileError, layout_error

NUSCENES_LAYOUT = """  <root>/
    samples/LIDAR_TOP/<name>.pcd.bin                float32 x5 (x, y, z, intensity, ring)
    lidarseg/<version>/<lidar_token>_lidarseg.bin   uint8, one raw label per point
    <version>/sample_data.json, lidarseg.json       (lidarseg.json absent for v1.0-test)
    <version>/sample.json, scene.json               (scene of every keyframe)
    <version>/calibrated_sensor.json, ego_pose.json (cameras only, with samples/CAM_*/, sweeps/CAM_*/)
    splits/<split>.txt                              optional: scene names replacing a split's list
  or Pointcept's layout:
    info/nuscenes_infos_10sweeps_<split>.pkl        (split: train, val, test)
    raw/samples/..., raw/lidarseg/...               the files the info paths point at"""

LIDAR_KEYFRAME_PREFIX = "samples/LIDAR_TOP/"
LIDAR_SWEEP_PREFIX = "sweeps/LIDAR_TOP/"
_CHUNK_BYTES = 1 << 24
T = TypeVar("T")
_CACHE: dict[tuple[Any, ...], Any] = {}


@dataclass(frozen=True)
class KeyFrame:
    """One LIDAR_TOP keyframe: its files (relative to the data root, or to Pointcept's ``raw/``),
    its sample_data token and its scene name (None in Pointcept's layout)."""

    points: str
    label: str | None
    token: str
    scene: str | None


@dataclass(frozen=True)
class TableIndex:
    """The LIDAR_TOP keyframes of one version (sorted by point file name) and its scene names."""

    keyframes: tuple[KeyFrame, ...]
    scenes: frozenset[str]
    labelled: bool


@functools.cache
def official_splits() -> dict[str, tuple[str, ...]]:
    """The official scene lists (train, val, test, mini_train, mini_val) shipped with the package."""
    text = resources.files(__package__).joinpath("nuscenes_splits.json").read_text()
    return {name: tuple(scenes) for name, scenes in json.loads(text)["splits"].items()}


def cached(kind: str, files: Sequence[Path], build: Callable[[], T]) -> T:
    signature = []
    for path in files:
        stat = path.stat() if path.is_file() else None
        signature.append((str(path.resolve()), stat and (stat.st_size, stat.st_mtime_ns)))
    key = (kind, tuple(signature))
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]


def corrupt_table(path: Path, problem: str) -> CorruptFileError:
    return CorruptFileError(f"nuScenes table {str(path)!r} {problem}; re-extract the metadata "
                            f"archive of this version")


def read_table(path: Path, keys: Sequence[str]) -> list[dict]:
    """A whole (small) nuScenes JSON table, checking every record has ``keys``."""
    if not path.is_file():
        raise layout_error(f"nuscenes file {str(path)!r} is missing", NUSCENES_LAYOUT)
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise corrupt_table(path, f"is not valid JSON ({err})") from err
    if not isinstance(rows, list):
        raise corrupt_table(path, "must be a JSON list of records")
    for i, row in enumerate(rows):
        lacking = [k for k in keys if not isinstance(row, dict) or k not in row]
        if lacking:
            raise corrupt_table(path, f"record {i} lacks {lacking}")
    return rows


def sample_data_rows(path: Path, prefix: str) -> list[dict]:
    """The records of ``sample_data.json`` whose filename starts with ``prefix``.

    Reads the file in pieces that end at a record's closing brace; in each piece every occurrence
    of the quoted filename prefix is cut out between the braces around it and decoded alone.
    """
    if not path.is_file():
        raise layout_error(f"nuscenes file {str(path)!r} is missing", NUSCENES_LAYOUT)
    needle = b'"' + prefix.encode()
    keys = ("token", "sample_token", "filename", "is_key_frame")
    rows: list[dict] = []
    with path.open("rb") as fh:
        text = fh.read(_CHUNK_BYTES).lstrip()
        if not text.startswith(b"["):
            raise corrupt_table(path, "must be a JSON list of records (it does not start with '[')")
        text, at_end = text[1:], False
        while not at_end:
            more = fh.read(_CHUNK_BYTES)
            at_end = not more
            text += more
            cut = text.rfind(b"}") + 1
            hit = text.find(needle, 0, cut)
            while hit >= 0:
                start, end = text.rfind(b"{", 0, hit), text.find(b"}", hit, cut) + 1
                row = _json_object(text[start:end]) if start >= 0 else None
                lacking = keys if row is None else [k for k in keys if k not in row]
                if lacking:
                    raise corrupt_table(path, f"holds a record that is not a JSON object with the keys "
                                         f"{list(lacking)} near {text[hit:hit + 80]!r}")
                rows.append(row)
                hit = text.find(needle, end, cut)
            text = text[cut:]
    if text.strip() != b"]":
        raise corrupt_table(path, "does not end with the ']' that closes its list (truncated?)")
    return rows


def _json_object(text: bytes) -> dict | None:
    """``text`` decoded if it is one JSON object in UTF-8, else None."""
    try:
        row = json.loads(text)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return None
    return row if isinstance(row, dict) else None


def table_index(root: Path, version: str) -> TableIndex:
    """The LIDAR_TOP keyframes of ``root/version``'s tables, with scene and label file (cached)."""
    folder = root / version
    names = ("sample_data", "sample", "scene", "lidarseg")
    files = [folder / f"{name}.json" for name in names]
    return cached("tables", files, lambda: _build_table_index(folder))


def _build_table_index(folder: Path) -> TableIndex:
    sample_data = folder / "sample_data.json"
    keyframes = [r for r in sample_data_rows(sample_data, LIDAR_KEYFRAME_PREFIX)
                 if r["is_key_frame"] and str(r["filename"]).startswith(LIDAR_KEYFRAME_PREFIX)]
    scene_of = SceneOf(folder)
    lidarseg_path = folder / "lidarseg.json"
    labelled = lidarseg_path.is_file()
    labels = ({r["sample_data_token"]: r["filename"]
               for r in read_table(lidarseg_path, ("sample_data_token", "filename"))}
              if labelled else {})
    index = []
    for r in sorted(keyframes, key=lambda r: r["filename"]):
        scene = scene_of(r, "keyframe")
        if labelled and r["token"] not in labels:
            raise layout_error(f"nuScenes keyframe {r['token']} ({r['filename']}) has no "
                               f"entry in {str(lidarseg_path)!r}", NUSCENES_LAYOUT)
        index.append(KeyFrame(r["filename"], labels.get(r["token"]), r["token"], scene))
    return TableIndex(tuple(index), scene_of.scenes, labelled)


class SceneOf:
    """The scene name of a sample_data record, through ``sample.json`` and ``scene.json``."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.sample_path = folder, folder / "sample.json"
        self.name = {r["token"]: r["name"] for r in read_table(folder / "scene.json", ("token", "name"))}
        self.sample_scene = {r["token"]: r["scene_token"]
                             for r in read_table(self.sample_path, ("token", "scene_token"))}
        self.scenes = frozenset(self.name.values())

    def __call__(self, row: dict, what: str) -> str:
        scene_token = self.sample_scene.get(row["sample_token"])
        if scene_token not in self.name:
            raise layout_error(f"nuScenes {what} {row['token']} ({row['filename']}) belongs to no "
                               f"scene of {str(self.folder / 'scene.json')!r} through "
                               f"{str(self.sample_path)!r}", NUSCENES_LAYOUT)
        return self.name[scene_token]


def sweep_index(root: Path, version: str) -> tuple[KeyFrame, ...]:
    """The LIDAR_TOP sweeps of ``root/version`` that are not keyframes (``is_key_frame`` false; no
    label file: ``label`` None), with their scenes, sorted by point file name (cached)."""
    folder = root / version
    files = [folder / f"{name}.json" for name in ("sample_data", "sample", "scene")]
    return cached("sweeps", files, lambda: _build_sweep_index(folder))


def _build_sweep_index(folder: Path) -> tuple[KeyFrame, ...]:
    rows = [r for r in sample_data_rows(folder / "sample_data.json", LIDAR_SWEEP_PREFIX)
            if not r["is_key_frame"] and str(r["filename"]).startswith(LIDAR_SWEEP_PREFIX)]
    scene_of = SceneOf(folder)
    return tuple(KeyFrame(r["filename"], None, r["token"], scene_of(r, "sweep"))
                 for r in sorted(rows, key=lambda r: r["filename"]))


def info_index(path: Path) -> tuple[KeyFrame, ...]:
    """The keyframes one Pointcept info file lists (cached), sorted by point file name.

    Each record is a dict with ``lidar_path`` (relative to the raw data root), ``lidar_token`` and,
    outside the test split, ``gt_segment_path``; its sweeps, poses and boxes are not used.
    """
    return cached("info", [path], lambda: _build_info_index(path))


def _build_info_index(path: Path) -> tuple[KeyFrame, ...]:
    what = "Pointcept nuScenes info file"
    records = load_data_pickle(path, what)
    if not isinstance(records, list):
        raise RefusedPickleError(f"{what} {str(path)!r} must hold a list of sample dicts, not a "
                                 f"{type(records).__name__}; re-create it with Pointcept's "
                                 f"preprocess_nuscenes_info.py")
    frames = []
    for i, r in enumerate(records):
        lacking = [k for k in ("lidar_path", "lidar_token")
                   if not isinstance(r, dict) or not isinstance(r.get(k), str)]
        label = r.get("gt_segment_path") if isinstance(r, dict) else None
        if lacking or not isinstance(label, (str, type(None))):
            raise RefusedPickleError(f"{what} {str(path)!r}: record {i} lacks the text fields "
                                     f"{lacking or ['gt_segment_path']}; re-create it with "
                                     f"Pointcept's preprocess_nuscenes_info.py")
        frames.append(KeyFrame(r["lidar_path"], label, r["lidar_token"], None))
    return tuple(sorted(frames, key=lambda f: f.points))
