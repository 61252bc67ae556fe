"""The README's section "Use the losses in your own training loop" runs as it is written: its
python block, saved as a script with no ``if __name__ == "__main__":`` guard and run by a fresh
interpreter (so the persistence workers start as they would for a user), prints four finite loss
values, L_topo among them above 0."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## Use the losses in your own training loop"


def readme_python_block(heading: str) -> str:
    """The first fenced python block of the README section under ``heading``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert heading + "\n" in text, f"README.md has no section {heading!r}"
    section = text.split(heading + "\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"^```python\n(.*?)^```$", section, re.DOTALL | re.MULTILINE)
    assert match, f"README.md section {heading!r} has no python block"
    return match.group(1)


def test_the_readme_distillation_step_runs_as_a_plain_script(tmp_path: Path) -> None:
    code = readme_python_block(HEADING)
    assert "__main__" not in code
    script = tmp_path / "distill_step.py"
    script.write_text(code, encoding="utf-8")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    values = dict(re.findall(r"(L_\w+) (\S+)", result.stdout))
    assert list(values) == ["L_seg", "L_topo", "L_grad", "L_kld"], result.stdout
    assert all(math.isfinite(float(v)) for v in values.values()) and float(values["L_topo"]) > 0
