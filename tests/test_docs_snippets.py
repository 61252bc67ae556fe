"""The code the documents show runs as written.

* README.md, "Use the losses in your own training loop": its python block, saved as a script with
  no ``if __name__ == "__main__":`` guard and run by a fresh interpreter (so the persistence
  workers start as they would for a user), prints four finite loss values, L_topo above 0.
* docs/pointcept.md: its first python block (ours; the second is a sketch of Pointcept's side)
  loads a teacher saved in Pointcept's layout, and its three terms equal those of a training step
  (``train.engine.steps.distillation_step``) with the last decoder stage as the saliency layer.
"""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from train.engine.losses import segmentation_loss
from train.models import BatchPlan, build_model, to_pointcept
from train.engine.profiling import StepTimer
from train.engine.steps import DistillSettings, distillation_step

ROOT = Path(__file__).resolve().parents[1]
README_HEADING = "## Use the losses in your own training loop"


def python_blocks(text: str) -> list[str]:
    """The fenced python blocks of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```$", text, re.DOTALL | re.MULTILINE)


def readme_section(heading: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert heading + "\n" in text, f"README.md has no section {heading!r}"
    return text.split(heading + "\n", 1)[1].split("\n## ", 1)[0]


def test_the_readme_distillation_step_runs_as_a_plain_script(tmp_path: Path) -> None:
    (code,) = python_blocks(readme_section(README_HEADING))
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
    blocks = python_blocks((ROOT / "docs" / "pointcept.md").read_text(encoding="utf-8"))
    assert "pointcept" not in blocks[0].replace("load_teacher", "")  # ours: no Pointcept import
    guide: dict = {}
    exec(compile(blocks[0], "docs/pointcept.md", "exec"), guide)
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
