"""``train`` is built of rooms by purpose, each importing only from itself and the rooms below it,
with the commands people type on top (decision 49).

Claims checked by reading the sources with ``ast`` (nothing is imported; imports inside functions
count, as a lazy import is a dependency all the same):
- every module of ``train`` lies in exactly one room of :data:`ROOMS` or is a command of
  :data:`COMMANDS`, and ``train/`` itself holds no other loose module than the commands and the
  option table;
- no module imports from a room above its own: the engine imports neither the evaluation, the
  runner, the study nor a command, the evaluation not the runner or the study, and so on; with
  the rooms in one order, no two rooms import each other;
- no module imports a command module;
- every package of ``train`` has a docstring (what it holds and what it may import).
"""
from __future__ import annotations

import ast
from pathlib import Path

from test_persistence_layout import imports_in, module_name

ROOT = Path(__file__).resolve().parents[1]

# The rooms from the bottom up: (room, the modules and packages it holds).
ROOMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("runtime", ("train.runtime",)),
    ("option table", ("train.config", "train.option_names")),
    ("options", ("train.options",)),
    ("models", ("train.models",)),
    ("data", ("train.data",)),
    ("engine", ("train.engine",)),
    ("evaluation", ("train.evaluation",)),
    ("runner", ("train.runner",)),
    ("prediction", ("train.prediction",)),
    ("study", ("train.study",)),
    ("condense", ("train.condense",)),
)
# The commands people type, above every room; nothing imports them.
COMMANDS: tuple[str, ...] = ("train.run", "train.predict", "train.image_labels", "train.image_teacher", "train.cost",
                             "train.export_pointcept", "train.export_onnx", "train.topo_diagnostic",
                             "train.study.__main__", "train.condense.__main__")


def room_of(module: str) -> int | None:
    """The height of ``module``'s room (0 = the bottom, ``len(ROOMS)`` = the commands); None for the
    ``train`` package itself and for modules outside ``train``."""
    if module in COMMANDS:
        return len(ROOMS)
    for height, (_, members) in enumerate(ROOMS):
        if any(module == m or module.startswith(m + ".") for m in members):
            return height
    return None


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Each import of ``graph`` (module -> modules it imports) that runs up to a higher room or
    names a command, as one line."""
    found = []
    for module, targets in sorted(graph.items()):
        here = room_of(module)
        for target in sorted(targets):
            there = room_of(target)
            if target in COMMANDS and target != module:
                found.append(f"{module} imports the command {target}")
            elif here is not None and there is not None and there > here:
                found.append(f"{module} ({ROOMS[here][0]}) imports {target} ({ROOMS[there][0]}), a room above it")
    return found


def _train_graph() -> dict[str, set[str]]:
    paths = sorted((ROOT / "train").rglob("*.py"))
    known = {module_name(p) for p in paths}
    graph = {}
    for path in paths:
        name = module_name(path)
        targets = imports_in(path.read_text(encoding="utf-8"), name, path.name == "__init__.py", known)
        graph[name] = {t for t in targets if t == "train" or t.startswith("train.")}
    return graph


def test_every_module_of_train_lies_in_one_room_or_is_a_command() -> None:
    graph = _train_graph()
    assert len(graph) > 60, "the scan found too few modules; did the layout change?"
    homeless = sorted(m for m in graph if m != "train" and room_of(m) is None)
    assert not homeless, f"modules in no room of ROOMS (give each a room, decision 49): {homeless}"
    for room, members in ROOMS:
        for member in members:
            assert member in graph, f"room {room}: {member} does not exist"
    assert all(c in graph for c in COMMANDS), "a command module is missing"


def test_train_holds_no_loose_module_but_the_commands_and_the_option_table() -> None:
    loose = {p.stem for p in (ROOT / "train").glob("*.py")} - {"__init__"}
    allowed = {c.split(".")[1] for c in COMMANDS if c.count(".") == 1} | {"config", "option_names"}
    assert loose <= allowed, f"loose modules in train/ (move them into a room): {sorted(loose - allowed)}"


def test_no_module_of_train_imports_a_room_above_its_own_or_a_command() -> None:
    found = violations(_train_graph())
    assert not found, "imports against the order of the rooms (decision 49):\n" + "\n".join(found)


def test_every_package_of_train_has_a_docstring() -> None:
    for init in sorted((ROOT / "train").rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert len(doc.split()) >= 10, f"{init.relative_to(ROOT)}: the package says nothing of what it holds"


def test_the_order_check_finds_an_engine_module_importing_the_study_and_a_command() -> None:
    planted = {
        "train.engine.loop": {"train.study.units", "train.runtime.checkpoint", "train.data.base"},
        "train.evaluation.evaluate": {"train.engine.steps", "train.runner.datasets"},
        "train.study.ablation": {"train.run", "train.runner.stages"},
        "train.run": {"train.runner.stages"},
    }
    assert violations(planted) == [
        "train.engine.loop (engine) imports train.study.units (study), a room above it",
        "train.evaluation.evaluate (evaluation) imports train.runner.datasets (runner), a room above it",
        "train.study.ablation imports the command train.run",
    ]
