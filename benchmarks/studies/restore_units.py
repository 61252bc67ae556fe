"""A kept study's units written back as finished unit folders, so that a study can go on from it on
a fresh machine (run folders do not outlive a machine; benchmarks/CONDENSE-STUDY.md, section 6, "The
feature reading's size effect").

    python -m benchmarks.studies.restore_units KEPT OUT

KEPT is a kept study folder (its ``study.json``); OUT gets ``units/<unit>/result.json`` for every
row and ``units/<set>/shape_gap.json`` for every row that has its shape gaps (Table 7 and 9), and
the kept ``study.json``. A file OUT already holds with the same content is left as it is, so that
two kept studies sharing units (a study kept a seed at a time, restored over the study its units
without the term came from) restore into one OUT; one with other content is refused. A study run
with ``--out OUT`` then reads those units as finished and runs only the others; its report pairs
the new units with the restored ones. Pair gains only within one machine kind: the same unit does
not give the same bits on an Intel and an AMD CPU (its means agreed within 0.6 OA points in
CONDENSE-STUDY section 16.1, but not bit for bit).
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from train.condense.studies.study import SHAPE_NAME, Unit
from train.runtime.files import atomic_write


def _as_read(text: str) -> Any:
    """A unit's file as the study reads it: a result's unit with today's fields (a study kept before
    a field existed and one written after hold the same unit)."""
    value = json.loads(text)
    return {**value, "unit": asdict(Unit(**value["unit"]))} if "unit" in value else value


def restore_units(kept: Path, out: Path) -> int:
    """Write ``kept``'s rows into ``out`` (module docstring); the number of unit folders written.
    FileExistsError, before anything is written, where ``out`` holds one of their files with other
    content (a finished unit is never overwritten)."""
    record = json.loads((kept / "study.json").read_text())
    written: dict[Path, str] = {}
    for rows in record["results"].values():
        for row in rows:
            unit = Unit(**row["unit"])
            path = out / "units" / unit.name / "result.json"
            if "shape" in row:  # only Table 7's or 9's row of a unit shared with another table has it
                written[out / "units" / unit.set_name / SHAPE_NAME] = json.dumps(row["shape"])
            if path in written:  # a unit shared by two tables: its row again, under another table
                continue
            written[path] = json.dumps({key: value for key, value in row.items() if key != "shape"}, indent=1)
    for path, text in list(written.items()):
        if path.exists():
            if _as_read(path.read_text()) != _as_read(text):
                raise FileExistsError(f"{path} exists with other content: restore into an --out that does not hold "
                                      "this unit")
            del written[path]
    for path, text in written.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(text.encode(), path)
    atomic_write((kept / "study.json").read_bytes(), out / "study.json")
    return sum(path.name == "result.json" for path in written)


if __name__ == "__main__":
    print(f"{restore_units(Path(sys.argv[1]), Path(sys.argv[2]))} units restored into {sys.argv[2]}")
