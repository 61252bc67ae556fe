"""``python -m benchmarks.label_install``: the labelling machine's install line of ``docs/deploy.md``
(``pip install -r requirements-label.txt && pip install --no-deps .``), checked in a fresh virtual
environment: it brings no torch (``import torch`` fails there), and ``python -m train.predict``
labels a scan with an exported ``.onnx`` file there as it does here.

Here (with torch): a randomly initialised ``student-demo`` model of the synthetic set's classes is
saved as ``train.run`` saves ``model_final.pt`` and exported (``python -m train.export_onnx``), a
LiDAR-like scan is written (``train.evaluation.cost.lidar_like_batch``'s features) and labelled through the
file. There: a new venv (``python -m venv``, no system packages), the install line run from the
repository root, then the same labelling from outside the repository (so the installed package is
the one imported). Prints each step with its time; exits 1 on a failed step. Needs the package
index the machine's pip reads (PyPI), as the CI install does; ``.ci/run`` runs it after the tests.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
INSTALL_LINE = "pip install -r requirements-label.txt && pip install --no-deps ."
POINTS = 20_000


def exported_model(folder: Path) -> Path:
    """A random ``student-demo`` model of the synthetic set exported to ``folder/model.onnx``."""
    import torch

    from train.data.labels import WAYMO_CLASSES
    from train.engine.loop import ModelSpec
    from train.export_onnx import main as export_main
    from train.runtime.checkpoint import save_checkpoint

    torch.manual_seed(0)
    spec = ModelSpec("student-demo", len(WAYMO_CLASSES), {})
    save_checkpoint(folder / "model_final.pt", spec.build(), None, None, None, 1, 1,
                    {"dataset": "synthetic", "grid_size": 0.1}, {"model_spec": spec.__dict__, "stage": "student"})
    if export_main(["--checkpoint", str(folder / "model_final.pt"), "--out", str(folder / "model.onnx")]) != 0:
        raise SystemExit("label_install: the export failed")
    return folder / "model.onnx"


def write_scan_file(folder: Path) -> None:
    from train.data.lidar.scan_files import write_scan
    from train.evaluation.cost import lidar_like_batch

    points = lidar_like_batch([POINTS], seed=0)["feat"].numpy()  # x, y, z, strength
    write_scan(folder / "scans" / "scan.npy", points, ("x", "y", "z", "intensity"))


def step(what: str, argv: Sequence[str] | str, cwd: Path, env: dict[str, str], expect_failure: bool = False) -> str:
    """Run ``argv`` (a list, or a shell line), print its time and outcome; exit 1 if it does not do
    what is expected of it."""
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, env=env, shell=isinstance(argv, str), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    failed = result.returncode != 0
    print(f"label_install: {what}: {'ok' if failed == expect_failure else 'FAILED'} ({seconds:.1f} s)", flush=True)
    if failed != expect_failure:
        print(result.stdout[-3000:] + result.stderr[-3000:], file=sys.stderr)
        raise SystemExit(1)
    return result.stdout + result.stderr


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.label_install", description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="build the venv and files in this folder (kept) instead of a temporary one")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(args.keep or temporary).absolute()
        work.mkdir(parents=True, exist_ok=True)
        model = exported_model(work)
        write_scan_file(work)
        here = {**os.environ, "PYTHONPATH": str(ROOT)}
        predict = ["-m", "train.predict", "--checkpoint", str(model), "--input", str(work / "scans"), "--no-progress"]
        step("label here (with torch installed)", [sys.executable, *predict, "--out", str(work / "here")], work, here)
        env_dir = work / "venv"
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
        bin_dir = env_dir / ("Scripts" if os.name == "nt" else "bin")
        there = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
        there.update(PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", VIRTUAL_ENV=str(env_dir),
                     PIP_DISABLE_PIP_VERSION_CHECK="1")
        step(f"install: {INSTALL_LINE}", INSTALL_LINE, ROOT, there)
        python = str(bin_dir / "python")
        step("import torch in the venv fails", [python, "-c", "import torch"], work, there, expect_failure=True)
        said = step("label in the venv", [python, *predict, "--out", str(work / "there")], work, there)
        print(f"label_install: {said.strip().splitlines()[-1]}")
        same = np.array_equal(np.load(work / "here" / "scan.npy"), np.load(work / "there" / "scan.npy"))
        print(f"label_install: the venv's labels of the {POINTS:,}-point scan equal those labelled here: {same}")
        packages = step("pip list in the venv", [python, "-m", "pip", "list", "--format", "freeze"], work, there)
        print("label_install: installed: " + ", ".join(line for line in packages.split() if "==" in line))
        return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
