"""Old import paths of modules that moved to another room: one finder answers each old name with the
module now at the new one (decision 82).

A package that moved modules calls :func:`alias_moved_modules` once, in its ``__init__``, with its
table of old -> new dotted names. Then an old name imports the moved module itself, one object under
both names (``import train.data.nuscenes``, ``from train.data.nuscenes import NuScenesDataset``, a
pickle or checkpoint naming a class by its old module), and ``python -m OLD`` runs the new module
as ``python -m NEW`` would (a documented command keeps its name). No shim file per module: the
table is the one place that says where each module went. The finder is consulted only for names
no file answers, after Python's own finders.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Mapping
from types import CodeType, ModuleType


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds and loads an old dotted name as the module at its new name."""

    def __init__(self) -> None:
        self.moved: dict[str, str] = {}

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        new = self.moved.get(fullname)
        if new is None:
            return None
        found = importlib.util.find_spec(new)
        if found is None:
            raise ModuleNotFoundError(f"{fullname} moved to {new}, which is not found", name=fullname)
        return importlib.util.spec_from_loader(fullname, self, origin=found.origin)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.moved[spec.name])
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system set the old name's spec on the module; it keeps its own.
        module.__spec__ = module.__spec__.loader_state

    def get_code(self, fullname: str) -> CodeType:
        """What ``python -m OLD`` runs: the new module as ``__main__``, with its own file and package."""
        new = self.moved[fullname]
        return compile(f"import runpy\nrunpy.run_module({new!r}, run_name='__main__', alter_sys=True)\n",
                       f"<{fullname}, moved to {new}>", "exec")


_FINDER = _MovedModuleFinder()


def alias_moved_modules(moved: Mapping[str, str]) -> None:
    """Let each old dotted name of ``moved`` (old -> new) import the module at its new name."""
    _FINDER.moved.update(moved)
    if _FINDER not in sys.meta_path:
        sys.meta_path.append(_FINDER)
