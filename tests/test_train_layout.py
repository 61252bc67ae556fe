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
- every package of ``train`` has a docstring (what it holds and what it may import);
- inside ``train.data`` the same, one level down (decision 82): every module lies in one room of
  :data:`DATA_ROOMS` (the checks, the cameras, the samples, the LiDAR data sets, the simulator, the
  object data sets), ``train/data/`` itself holds no other loose module than the checks and the
  samples, and no module imports a data room above its own;
- inside ``train.condense`` the same (decision 100): every module lies in one room of
  :data:`CONDENSE_ROOMS` (evaluation, files, matching, methods, studies, the command),
  ``train/condense/`` holds no loose module but its ``__main__``, and no module imports a
  condensation room above its own;
- the modules that moved (``train.data.MOVED``, ``train.condense.MOVED``, ``benchmarks.MOVED``)
  still import under their old names, as the same module object (these are imported), and no
  file of the repository imports an old name.
"""
from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import benchmarks
import train.condense
import train.data
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

# The rooms of ``train.data`` from the bottom up (decision 82).
DATA_ROOMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("checks", ("train.data.validation", "train.data.labels", "train.data.restricted_pickle")),
    ("cameras", ("train.data.cameras",)),
    ("samples", ("train.data.base", "train.data.transforms", "train.data.collate", "train.data.mixed")),
    ("lidar", ("train.data.lidar",)),
    ("synthetic", ("train.data.synthetic",)),
    ("objects", ("train.data.objects",)),
)

# The rooms of ``train.condense`` from the bottom up (decision 100); ``__main__`` is its command.
CONDENSE_ROOMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("evaluation", ("train.condense.evaluation",)),
    ("files", ("train.condense.files",)),
    ("matching", ("train.condense.matching",)),
    ("methods", ("train.condense.methods",)),
    ("studies", ("train.condense.studies",)),
    ("cli", ("train.condense.cli",)),
)


def room_of(module: str, rooms: tuple[tuple[str, tuple[str, ...]], ...] = ROOMS,
            commands: tuple[str, ...] = COMMANDS) -> int | None:
    """The height of ``module``'s room among ``rooms`` (0 = the bottom, ``len(rooms)`` = the
    commands); None for the package itself and for modules outside the rooms."""
    if module in commands:
        return len(rooms)
    for height, (_, members) in enumerate(rooms):
        if any(module == m or module.startswith(m + ".") for m in members):
            return height
    return None


def violations(graph: dict[str, set[str]], rooms: tuple[tuple[str, tuple[str, ...]], ...] = ROOMS,
               commands: tuple[str, ...] = COMMANDS) -> list[str]:
    """Each import of ``graph`` (module -> modules it imports) that runs up to a higher room of
    ``rooms`` or names one of ``commands``, as one line."""
    found = []
    for module, targets in sorted(graph.items()):
        here = room_of(module, rooms, commands)
        for target in sorted(targets):
            there = room_of(target, rooms, commands)
            if target in commands and target != module:
                found.append(f"{module} imports the command {target}")
            elif here is not None and there is not None and there > here:
                found.append(f"{module} ({rooms[here][0]}) imports {target} ({rooms[there][0]}), a room above it")
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


def test_every_module_of_train_data_lies_in_one_data_room() -> None:
    graph = {m: t for m, t in _train_graph().items() if m.startswith("train.data.")}
    homeless = sorted(m for m in graph if room_of(m, DATA_ROOMS, ()) is None)
    assert not homeless, f"modules of train.data in no room of DATA_ROOMS (decision 82): {homeless}"
    for room, members in DATA_ROOMS:
        for member in members:
            assert member in graph, f"data room {room}: {member} does not exist"


def test_train_data_holds_no_loose_module_but_the_checks_and_the_samples() -> None:
    loose = {f"train.data.{p.stem}" for p in (ROOT / "train" / "data").glob("*.py")} - {"train.data.__init__"}
    allowed = {m for room, members in DATA_ROOMS if room in ("checks", "samples") for m in members}
    assert loose <= allowed, f"loose modules in train/data/ (move them into a room): {sorted(loose - allowed)}"


def test_no_module_of_train_data_imports_a_data_room_above_its_own() -> None:
    graph = {m: t for m, t in _train_graph().items() if m.startswith("train.data.")}
    found = violations(graph, DATA_ROOMS, ())
    assert not found, "imports against the order of the data rooms (decision 82):\n" + "\n".join(found)


def test_the_data_order_check_finds_the_cameras_importing_a_data_set() -> None:
    planted = {"train.data.cameras.camera": {"train.data.lidar.nuscenes_index", "train.data.validation"},
               "train.data.lidar.nuscenes": {"train.data.cameras.camera", "train.data.base"}}
    assert violations(planted, DATA_ROOMS, ()) == [
        "train.data.cameras.camera (cameras) imports train.data.lidar.nuscenes_index (lidar), a room above it"]


def test_every_module_of_train_condense_lies_in_one_condensation_room() -> None:
    graph = {m: t for m, t in _train_graph().items() if m.startswith("train.condense.")}
    homeless = sorted(m for m in graph if m != "train.condense.__main__" and room_of(m, CONDENSE_ROOMS, ()) is None)
    assert not homeless, f"modules of train.condense in no room of CONDENSE_ROOMS (decision 100): {homeless}"
    for room, members in CONDENSE_ROOMS:
        for member in members:
            assert member in graph, f"condensation room {room}: {member} does not exist"
    loose = {p.stem for p in (ROOT / "train" / "condense").glob("*.py")} - {"__init__", "__main__"}
    assert not loose, f"loose modules in train/condense/ (move them into a room): {sorted(loose)}"


def test_no_module_of_train_condense_imports_a_condensation_room_above_its_own() -> None:
    graph = {m: t for m, t in _train_graph().items() if m.startswith("train.condense.")}
    found = violations(graph, CONDENSE_ROOMS, ("train.condense.__main__",))
    assert not found, "imports against the order of the condensation rooms (decision 100):\n" + "\n".join(found)


def test_the_condensation_order_check_finds_a_method_importing_the_study() -> None:
    planted = {"train.condense.methods.dd3d": {"train.condense.studies.study", "train.condense.files.rotator"},
               "train.condense.files.data": {"train.condense.evaluation.training"}}
    assert violations(planted, CONDENSE_ROOMS, ()) == [
        "train.condense.methods.dd3d (methods) imports train.condense.studies.study (studies), a room above it"]


def _moved() -> dict[str, str]:
    return {**train.data.MOVED, **train.condense.MOVED, **benchmarks.MOVED}


def test_benchmarks_holds_no_loose_module_but_its_two_commands_and_the_suite_set_up() -> None:
    loose = {p.name for p in (ROOT / "benchmarks").glob("*.py")}
    allowed = {"__init__.py", "conftest.py", "gpu.py", "report.py"}
    assert loose <= allowed, (f"loose modules in benchmarks/ (decision 82: measured code in cpu/, tests in tests/, "
                              f"the campaign in gpu_campaign/, RESULTS.md's sections in report_writers/): "
                              f"{sorted(loose - allowed)}")


def test_every_moved_module_still_imports_under_its_old_name() -> None:
    for old, new in _moved().items():
        assert importlib.import_module(old) is importlib.import_module(new) is sys.modules[old], old
        assert sys.modules[new].__spec__.name == new, f"{new} lost its own spec to the alias {old}"
    from train.data.cameras import Camera, read_camera_list  # the former module train.data.cameras
    from train.data.cameras.camera import Camera as moved, read_camera_list as moved_reader
    assert (Camera, read_camera_list) == (moved, moved_reader)


def test_no_file_of_the_repository_imports_a_moved_module_by_its_old_name() -> None:
    old = "|".join(re.escape(name) for name in sorted(_moved(), key=len, reverse=True))
    pattern = re.compile(rf"^\s*(?:from|import)\s+({old})(?![\w.])|\"-m\", \"({old})\"", re.MULTILINE)
    parents = {name.rpartition(".")[0] for name in _moved()}
    children = "|".join(re.escape(name.rpartition(".")[2]) for name in _moved())
    from_parent = re.compile(rf"^\s*from\s+({'|'.join(map(re.escape, parents))})\s+import\s+\(?\s*({children})\b",
                             re.MULTILINE)
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        if ".git" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        found += [f"{path.relative_to(ROOT)}: {m.group(0).strip()}" for m in pattern.finditer(text)]
        found += [f"{path.relative_to(ROOT)}: {m.group(0).strip()}" for m in from_parent.finditer(text)]
    assert not found, "old module paths (use the new ones of train.data.MOVED / train.condense.MOVED / benchmarks.MOVED):\n" + "\n".join(found)


def test_a_command_run_by_its_old_path_is_the_command_at_its_new_path() -> None:
    helps = [subprocess.run([sys.executable, "-m", name, "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120) for name in ("train.data.synthesize", "train.data.synthetic.synthesize")]
    assert helps[0].returncode == 0, helps[0].stderr
    assert helps[0].stdout == helps[1].stdout and "usage: python -m train.data.synthesize" in helps[0].stdout
