"""The condensed-set file (train.condense.files.condensed_file, decision 70): what is written is read back
bit for bit with its provenance, without pickles; a malformed file is refused in one line naming
it; a failed write leaves the previous file."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from train.condense.files.condensed_file import (FILE_NAME, CondensedFileError, CondensedSet, read_condensed,
                                           write_condensed)


def provenance(**change: object) -> dict[str, object]:
    base = {"method": "herding", "dataset": "shapes", "setting": "rotated", "task": "classification", "cpc": 2,
            "seed": 3, "data_seed": 0, "size": 20, "commit": "abc123", "class_names": ["a", "b", "c"],
            "part_names": None, "frame": {"rotator": "fixed", "w0": 1.0, "decoder": None}, "distill": None}
    return {**base, **change}


def a_set(parts: bool = False) -> CondensedSet:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(6, 16, 3)).astype(np.float32)
    labels = np.repeat(np.arange(3), 2).astype(np.int64)
    if not parts:
        return CondensedSet(points, labels, provenance())
    return CondensedSet(points, labels, provenance(task="parts", part_names=["a/x", "a/y", "b/x", "c/x"]),
                        rng.integers(0, 4, size=(6, 16)).astype(np.int64))


@pytest.mark.parametrize("parts", [False, True])
def test_written_set_is_read_back_exactly_with_its_provenance(tmp_path: Path, parts: bool) -> None:
    cset = a_set(parts)
    path = write_condensed(cset, tmp_path / "out")
    assert path == tmp_path / "out" / FILE_NAME
    back = read_condensed(path)
    assert back.points.dtype == np.float32 and np.array_equal(back.points, cset.points)
    assert back.labels.dtype == np.int64 and np.array_equal(back.labels, cset.labels)
    assert back.provenance == cset.provenance
    assert (back.parts is None) == (not parts)
    if parts:
        assert back.parts.dtype == np.int64 and np.array_equal(back.parts, cset.parts)
    with np.load(path, allow_pickle=False) as raw:  # a plain npz: nothing needs pickle
        assert set(raw.files) == {"points", "labels", "provenance"} | ({"parts"} if parts else set())
        assert json.loads(str(raw["provenance"]))["method"] == "herding"


def _npz(path: Path, **arrays: object) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("change, words", [
    ({"points": np.zeros((6, 16, 3), np.float64)}, "points must be (M, N, 3) float32"),
    ({"points": np.full((6, 16, 3), np.nan, np.float32)}, "NaN"),
    ({"labels": np.zeros(5, np.int64)}, "labels must be (6,) int64"),
    ({"labels": np.array([0, 0, 1, 1, 2, 3])}, "labels must lie in [0, 3)"),
    ({"labels": np.array([0, 0, 0, 1, 1, 2])}, "more than cpc 2"),
    ({"provenance": np.array(json.dumps({**provenance(), "cpc": "2"}))}, "provenance cpc '2'"),
    ({"provenance": np.array(json.dumps({k: v for k, v in provenance().items() if k != "commit"}))}, "exactly"),
    ({"provenance": np.array("{not json")}, "not JSON"),
    ({"provenance": np.array([1, 2])}, "one JSON string"),
    ({"parts": np.zeros((6, 16), np.int64)}, "needs parts and part names exactly when"),
    ({"extra": np.zeros(2)}, "got ['extra'"),
])
def test_a_malformed_file_is_refused_in_one_line_naming_it(tmp_path: Path, change: dict, words: str) -> None:
    cset = a_set()
    arrays = {"points": cset.points, "labels": cset.labels, "provenance": np.array(json.dumps(cset.provenance)),
              **change}
    path = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(CondensedFileError) as err:
        read_condensed(path)
    message = str(err.value)
    assert message.startswith(str(path)) and "\n" not in message and words in message


def test_an_object_array_is_refused_without_unpickling(tmp_path: Path) -> None:
    cset = a_set()
    path = _npz(tmp_path / "obj.npz", points=cset.points, labels=cset.labels,
                provenance=np.array([{"method": "x"}], dtype=object))
    with pytest.raises(CondensedFileError, match="not a readable .npz file"):
        read_condensed(path)


def test_not_a_zip_and_a_missing_file_are_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    for path in (tmp_path / "junk.npz", tmp_path / "absent.npz"):
        with pytest.raises(CondensedFileError) as err:
            read_condensed(path)
        assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_the_writer_refuses_what_the_reader_would_and_keeps_the_previous_file(tmp_path: Path) -> None:
    good = write_condensed(a_set(), tmp_path / FILE_NAME)
    before = good.read_bytes()
    bad = CondensedSet(a_set().points, np.array([0, 0, 0, 1, 1, 2]), provenance())
    with pytest.raises(CondensedFileError, match="more than cpc"):
        write_condensed(bad, good)
    assert good.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [FILE_NAME]
    with zipfile.ZipFile(io.BytesIO(before)) as z:  # the file is the npz of the good set
        assert sorted(z.namelist()) == ["labels.npy", "points.npy", "provenance.npy"]
