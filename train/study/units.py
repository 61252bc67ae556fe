"""Study units kept outside the run folder, so that a study outlives one machine's session.

A unit of :mod:`train.study` (one trained model) is finished when its folder holds ``result.json``.
A converged study takes longer than a session of a shared machine, and its run folder (weights,
checkpoints) is not kept. ``--keep-units DIR`` keeps the text of every finished unit (:data:`KEPT`:
its result and its validation log, no weights) in ``DIR`` as the unit finishes
(:func:`keep_units`) and copies it back into the run folder when a study starts
(:func:`restore_units`), so that ``DIR``, committed, carries the study from one session to the
next: a kept unit is not trained again.

The one exception is a unit whose weights the rows need (the study's teacher): it is trained again
(:func:`needs_retraining` moves its kept result aside as :data:`REFERENCE`), and
:func:`check_reproduced` stops the study unless the new result equals the kept one bit for bit
(``--deterministic`` on the same kind of CPU gives the same model), since every kept row was
distilled from the model that gave the kept result.

Bit for bit across sessions needs the same arithmetic, and the machines a session gets differ:
torch's vector kernels round differently with AVX-512 than with AVX2 (``benchmarks/STUDY.md``
section 2.6), and so do numpy's float64 sin/cos/exp, which draw the synthetic scenes.
:func:`pin_vector_isa` makes ``python -m train.study`` use the AVX2 kernels of torch, MKL, oneDNN
and numpy on every x86 machine that has AVX2; on an AVX2 machine that changes no bit (MKL's AVX2
path measured equal to its default there; the AVX-512 kernels of the others are never chosen). With
it, a 2-core AVX-512 EPYC trained the 12-scene study's teacher to the same validation passes, bit
for bit, as the AVX2 machine that kept it (``docs/notes/converged-study.md``).
"""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

from train.runtime.whole_files import copy_file

RESULT = "result.json"
REFERENCE = "result.reference.json"
VAL_LOG = "val_log.csv"
TRAIN_LOG = "train_log.csv"  # MetricLogger's "train" table: one row a step
# the kept validation log of a unit trained again, which each new validation pass must equal
REFERENCE_VAL_LOG = "val_log.reference.csv"
# the per-step TRAIN_LOG is left out (up to 0.7 MB a unit): the result holds what the report
# reads of it (its early and late means, ``terms``)
KEPT: tuple[str, ...] = (RESULT, VAL_LOG)
_RESULT_LAST: tuple[str, ...] = tuple(sorted(KEPT, key=lambda name: name == RESULT))  # the order they are copied in
# what a unit's result must reproduce: the evaluations, not the wall time or the log's path
COMPARED: tuple[str, ...] = ("val", "test")


# env var -> value: the AVX2 kernels of torch's ATen dispatch, of MKL's BLAS (conditional
# numerical reproducibility), of oneDNN's JIT kernels (torch runs GELU through oneDNN on CPU: on an
# AVX-512 machine, pinned only in the other three, the teacher's first validation pass came out
# 0.21196 instead of the AVX2 machine's 0.21377, and equal bit for bit with this pin) and of numpy's
# dispatched loops (its AVX-512 targets turned off: named X86_V4 / AVX512_ICL / AVX512_SPR from
# numpy 2.4 on, AVX512F ... before; numpy skips, with an ImportWarning, the names its version does
# not dispatch). torch, MKL and oneDNN read theirs when each first runs, numpy when it is imported;
# inherited by the DDP ranks
AVX2_PIN: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL",
}


def cpu_has_avx2(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether ``cpuinfo`` (Linux's flag listing) names AVX2; False where there is no such file."""
    return cpuinfo.is_file() and "avx2" in cpuinfo.read_text().split()


def pin_vector_isa(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """Set :data:`AVX2_PIN` (values given already are kept) where the CPU has AVX2; returns what it
    set. numpy has been imported by then, so a caller that gets a non-empty answer starts its
    process again with the pin in place (``train.study``'s ``__main__``; the tests call the study
    in-process, so only that ``__main__`` calls this)."""
    if not cpu_has_avx2(cpuinfo):
        return {}
    pinned = {k: v for k, v in AVX2_PIN.items() if k not in os.environ}
    os.environ.update(pinned)
    return pinned


def _finished_units(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob(RESULT))


def keep_units(out: Path, dest: Path) -> list[Path]:
    """Copy the kept files of every finished unit under ``out`` to the same place under ``dest``;
    returns the units (relative to ``out``) whose files were new or changed there."""
    copied: list[Path] = []
    for unit in _finished_units(out):
        rel = unit.relative_to(out)
        changed = False
        for name in _RESULT_LAST:
            src, dst = unit / name, dest / rel / name
            if src.is_file() and (not dst.is_file() or dst.read_bytes() != src.read_bytes()):
                dst.parent.mkdir(parents=True, exist_ok=True)
                copy_file(src, dst)
                changed = True
        if changed:
            copied.append(rel)
    return copied


def restore_units(dest: Path, out: Path) -> list[Path]:
    """Copy every unit kept in ``dest`` into ``out`` where ``out`` has not finished it; returns the
    units restored (relative). A unit finished under ``out`` is left as it is."""
    restored: list[Path] = []
    for kept in _finished_units(dest):
        rel = kept.relative_to(dest)
        if (out / rel / RESULT).is_file():
            continue
        (out / rel).mkdir(parents=True, exist_ok=True)
        for name in _RESULT_LAST:  # a unit is finished once its result is there: copied last
            if (kept / name).is_file():
                copy_file(kept / name, out / rel / name)
        restored.append(rel)
    return restored


def needs_retraining(unit_dir: Path, final: str) -> bool:
    """A finished unit without its weights ``final`` (restored from kept units) must be trained again:
    its result is moved aside as :data:`REFERENCE`, for :func:`check_reproduced`, and its validation
    log copied as :data:`REFERENCE_VAL_LOG`, for :func:`follow_kept_log`. Returns whether."""
    if (unit_dir / final).is_file() or not (unit_dir / RESULT).is_file():
        return False
    (unit_dir / RESULT).replace(unit_dir / REFERENCE)
    if (unit_dir / VAL_LOG).is_file():
        copy_file(unit_dir / VAL_LOG, unit_dir / REFERENCE_VAL_LOG)
    return True


def follow_kept_log(unit_dir: Path) -> Callable[[int, dict[str, float]], None] | None:
    """For a unit trained again (:func:`needs_retraining`): the check of each validation pass, by its
    step, against the kept run's (:data:`REFERENCE_VAL_LOG`; None where there is none). The first pass
    that differs stops the unit with a ``ValueError``, after minutes instead of at the end
    (:func:`check_reproduced`): on another machine's arithmetic the teacher takes a different path
    from its first pass on. A step the kept log has no pass for is not checked."""
    path = unit_dir / REFERENCE_VAL_LOG
    if not path.is_file():
        return None
    with path.open(newline="") as fh:
        kept = {int(row["step"]): row for row in csv.DictReader(fh)}

    def same(logged: str, value: float) -> bool:
        old = float(logged)  # written as repr: exact
        return old == value or (math.isnan(old) and math.isnan(value))

    def follow(step: int, values: dict[str, float]) -> None:
        row = kept.get(step)
        if row is None:
            return
        differ = [k for k in values if k in row and not same(row[k], values[k])]
        if differ:
            said = ", ".join(f"{k} {float(values[k])!r} now vs {row[k]} kept" for k in differ)
            raise ValueError(
                f"{unit_dir} was trained again for its weights and its validation pass at step {step} differs "
                f"from the kept run's ({said}): this machine's arithmetic is not the one that kept the unit, so "
                "it was stopped there. Run on the same kind of CPU with --deterministic, or delete the kept "
                "study units and start the study again")

    return follow


def evaluations_differ(reference: dict[str, Any], result: dict[str, Any]) -> list[str]:
    """The evaluations (:data:`COMPARED`) in which ``result`` differs from ``reference``, in every
    field the reference recorded (a newer result may add one, such as each scan's counts)."""
    differ = []
    for k in COMPARED:
        kept, new = reference.get(k), result.get(k)
        if isinstance(kept, dict) and isinstance(new, dict):
            new = {name: new.get(name) for name in kept}
        # compared as JSON text: a class absent from a split has IoU NaN, and NaN != NaN
        if json.dumps(kept, sort_keys=True) != json.dumps(new, sort_keys=True):
            differ.append(k)
    return differ


def check_reproduced(result: dict[str, Any], unit_dir: Path) -> None:
    """Refuse a retrained unit whose evaluations differ from its :data:`REFERENCE` (if it has one)."""
    path = unit_dir / REFERENCE
    if not path.is_file():
        return
    reference = json.loads(path.read_text())
    differ = evaluations_differ(reference, result)
    if differ:
        miou = ", ".join(f"{k} mIoU {reference.get(k, {}).get('miou')} kept vs {result.get(k, {}).get('miou')} now"
                         for k in differ) + f"; CPU kernels {reference.get('cpu')} kept, {result.get('cpu')} now"
        raise ValueError(
            f"{unit_dir} was trained again for its weights and did not reproduce its kept result ({miou}): "
            "the kept units that depend on it were trained from another model. Run on the same kind of CPU "
            "with --deterministic, or delete the kept study units and start the study again")
