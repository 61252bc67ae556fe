"""Dataset condensation of object point clouds (the DD3D task; ``docs/condense.md``, decisions
70-73), in rooms by purpose (decision 100), each importing only from the rooms before it here:

- ``evaluation``: how a set is judged (augmentation, training, recipes, protocol, metrics);
- ``files``: the condensed-set file, the frame a set lives in, its data, a distillation's checkpoint;
- ``matching``: what the distillations stand on (matching loops, the persistence term, DD3D's
  generator, the released settings, the coreset feature network);
- ``methods``: one module a method, the methods by name and ``condense_set``;
- ``studies``: the paper's tables, the coreset table, pictures, a set's shape gaps;
- ``cli``: the command ``python -m train.condense`` (``__main__``) and its guards.

The room imports the runtime, the object data sets, the object backbones, the study's interval
(``train.study.report.mean_ci``) and the pictures' off-screen matplotlib
(``train.evaluation.palette``); nothing outside it imports it. Modules that moved into the rooms
keep their old import paths (``train.condense.study`` is ``train.condense.studies.study``; the
table :data:`MOVED`, through ``train.runtime.moved_modules``), so a user's script still works; the
repository itself names only the new paths (``tests/test_train_layout.py``).
"""
from __future__ import annotations

from train.runtime.moved_modules import alias_moved_modules

_ROOMS = {
    "evaluation": ("augment", "training", "recipes", "protocol", "metrics"),
    "files": ("condensed_file", "distill_checkpoint", "data", "rotator"),
    "matching": ("matching_loops", "topology_term", "generator", "released", "features"),
    "methods": ("coreset", "explicit", "dd3d", "trajectory", "resample"),
    "studies": ("study", "table", "pictures", "shape_gap"),
    "cli": ("command", "out_folder", "stop"),
}
MOVED = {f"train.condense.{module}": f"train.condense.{room}.{module}"
         for room, modules in _ROOMS.items() for module in modules}  # old -> new (decision 100)

alias_moved_modules(MOVED)
