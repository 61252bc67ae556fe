"""The code the documents show runs as written.

* docs/own-training-loop.md (the README links it): its python block, saved as a script with no
  ``if __name__ == "__main__":`` guard and run by a fresh interpreter (so the persistence workers
  start as they would for a user), prints four finite loss values, L_topo above 0.
* docs/pointcept.md: its first python block (ours; the second is a sketch of Pointcept's side)
  loads a teacher saved in Pointcept's layout, and its three terms equal those of a training step
  (``train.engine.steps.distillation_step``) with the last decoder stage as the saliency layer.
* docs/deploy.md: its python block runs a tiny model exported by ``train.export_onnx`` as
  ``student.onnx`` through onnxruntime and gets a finite logit per voxel and class.
* docs/object-backbones.md: its python block, fed the ``points`` (B, N, 3) and one-hot ``category``
  (B, 16) its comments name, gives the classification logits (B, 40), then the part logits (B, N, 50).
* Every python block of the README and of ``docs/`` is one of these (``RUN_BLOCKS``) or a sketch
  named in ``SKETCH_BLOCKS``: a block added or moved to another page fails until a test runs it.
"""
from __future__ import annotations

import ast
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from train.engine.losses import segmentation_loss
from train.models import BatchPlan, build_model, to_pointcept
from train.engine.profiling import StepTimer
from train.engine.steps import DistillSettings, distillation_step

ROOT = Path(__file__).resolve().parents[1]
LOOP_PAGE = "docs/own-training-loop.md"
POINTCEPT_PAGE = "docs/pointcept.md"
DEPLOY_PAGE = "docs/deploy.md"
OBJECT_BACKBONES_PAGE = "docs/object-backbones.md"
# (page, index of the python block on it): the blocks this module runs, and the sketches it does not.
RUN_BLOCKS = {(LOOP_PAGE, 0), (POINTCEPT_PAGE, 0), (DEPLOY_PAGE, 0), (OBJECT_BACKBONES_PAGE, 0)}
SKETCH_BLOCKS = {(POINTCEPT_PAGE, 1)}  # Pointcept's side of the guide: needs Pointcept installed


def python_blocks(text: str) -> list[str]:
    """The fenced python blocks of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```$", text, re.DOTALL | re.MULTILINE)


def page_blocks(page: str) -> list[str]:
    return python_blocks((ROOT / page).read_text(encoding="utf-8"))


def test_every_python_block_of_the_documents_is_run_here_or_named_a_sketch() -> None:
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    blocks = {(str(doc.relative_to(ROOT)), i) for doc in documents
              for i, _ in enumerate(python_blocks(doc.read_text(encoding="utf-8")))}
    known = RUN_BLOCKS | SKETCH_BLOCKS
    assert blocks == known, (f"python blocks no test runs: {sorted(blocks - known)}; "
                             f"listed but gone: {sorted(known - blocks)}")


def test_the_loop_page_distillation_step_runs_as_a_plain_script(tmp_path: Path) -> None:
    (code,) = page_blocks(LOOP_PAGE)
    assert "__main__" not in code
    script = tmp_path / "distill_step.py"
    script.write_text(code, encoding="utf-8")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    values = dict(re.findall(r"(L_\w+) (\S+)", result.stdout))
    assert list(values) == ["L_seg", "L_topo", "L_grad", "L_kld"], result.stdout
    assert all(math.isfinite(float(v)) for v in values.values()) and float(values["L_topo"]) > 0


def _batch(num_classes: int) -> dict[str, torch.Tensor]:
    """Two voxelised clouds (300 and 200 points), labelled, in the PTv3 layout."""
    g = torch.Generator().manual_seed(0)
    voxels = torch.cat([torch.randperm(24 * 24 * 6, generator=g)[:n] for n in (300, 200)])
    grid = torch.stack([voxels // 144, voxels // 6 % 24, voxels % 6], dim=1)
    coord = (grid + torch.rand(grid.shape, generator=g)) * 0.25
    feat = torch.cat([coord, torch.rand(500, 1, generator=g)], dim=1)
    offset = torch.tensor([300, 500])
    return {"coord": coord, "grid_coord": grid, "feat": feat, "offset": offset,
            "segment": torch.randint(num_classes, (500,), generator=g), "plan": BatchPlan(grid, offset)}


def test_the_pointcept_guide_terms_equal_a_training_step_with_the_last_saliency_layer(tmp_path: Path) -> None:
    blocks = page_blocks(POINTCEPT_PAGE)
    assert "pointcept" not in blocks[0].replace("load_teacher", "")  # ours: no Pointcept import
    guide: dict = {}
    exec(compile(blocks[0], POINTCEPT_PAGE, "exec"), guide)
    k = 5
    torch.manual_seed(0)
    checkpoint = tmp_path / "model" / "model_best.pth"
    checkpoint.parent.mkdir()
    torch.save({"epoch": 1, "state_dict": to_pointcept(build_model("teacher-demo", k))}, checkpoint)
    teacher = guide["load_teacher"](str(checkpoint), k, preset="teacher-demo")
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    teacher.deterministic = True  # both passes below see the same serialization order
    student = build_model("student-demo", k, deterministic=True, drop_path=0.0)
    batch = _batch(k)

    def criteria(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return segmentation_loss(logits, labels, kind="ce")[0]

    s_out = student({key: batch[key] for key in ("coord", "grid_coord", "feat", "offset", "plan")})
    terms = guide["distillation_terms"](teacher, batch, s_out.embedding, s_out.logits,
                                        criteria(s_out.logits.float(), batch["segment"]), criteria, m=64, seed=3)
    settings = DistillSettings(kld=True, topo=True, grad=True, topo_m=64, saliency_layers=(4,), seg_loss="ce",
                               topo_time_budget=None)
    _, logs = distillation_step(student, teacher, batch, settings, amp=False, timer=StepTimer(), topo_seed=3)
    for name, value in zip(("topo", "grad", "kld"), terms):
        assert value.requires_grad and float(value.detach()) > 0, name
        torch.testing.assert_close(value.detach(), logs[name], rtol=0.0, atol=0.0, msg=name)


def test_the_deploy_page_runs_an_exported_file_with_onnxruntime(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from test_onnx_export import export
    from test_predict import write_model
    from test_train_support import tiny_config
    from train.data.labels import WAYMO_CLASSES

    write_model(tmp_path / "model_final.pt", len(WAYMO_CLASSES), tiny_config(tmp_path).to_dict())
    assert export("--checkpoint", tmp_path / "model_final.pt", "--out", tmp_path / "student.onnx") == 0
    (code,) = page_blocks(DEPLOY_PAGE)
    monkeypatch.chdir(tmp_path)  # the block opens "student.onnx" where it runs
    port: dict = {}
    exec(compile(code, DEPLOY_PAGE, "exec"), port)
    assert port["logits"].shape == (3, len(WAYMO_CLASSES)) and np.isfinite(port["logits"]).all()


def test_the_object_backbones_page_gives_class_then_part_logits_of_the_shapes_it_names() -> None:
    (code,) = page_blocks(OBJECT_BACKBONES_PAGE)
    torch.manual_seed(0)
    page: dict = {"points": torch.randn(2, 1024, 3), "category": F.one_hot(torch.tensor([3, 7]), 16).float()}
    shapes = []
    for statement in ast.parse(code).body:  # one statement at a time: the block assigns logits twice
        exec(compile(ast.Module([statement], []), OBJECT_BACKBONES_PAGE, "exec"), page)
        if "logits" in ast.unparse(statement).split("=")[0]:
            shapes.append(tuple(page["logits"].shape))
    assert shapes == [(2, 40), (2, 1024, 50)]
