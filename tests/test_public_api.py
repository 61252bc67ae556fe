"""The public entry points named in README.md resolve to the functions, in both packages.

Several functions share their name with the submodule that defines them (``reference/pwcd.py``
defines ``pwcd``); importing the submodule must not replace the package attribute with the module.
"""
from __future__ import annotations

import importlib
import inspect
import types

import pytest

TWINS = ["pwcd", "tps", "normalize", "topo_loss", "saliency_loss", "kld"]


@pytest.mark.parametrize("package", ["reference", "fast"])
def test_public_names_stay_functions_after_submodule_imports(package: str) -> None:
    pkg = importlib.import_module(package)
    for name in pkg.__all__:
        getattr(pkg, name)  # resolve lazily exported names first
    for module in ("pwcd", "tps", "normalize", "topo_loss", "saliency", "kld"):
        importlib.import_module(f"{package}.{module}")
    for name in pkg.__all__:
        assert not isinstance(getattr(pkg, name), types.ModuleType), f"{package}.{name} is a module"


@pytest.mark.parametrize("name", TWINS)
def test_every_fast_function_has_a_reference_twin(name: str) -> None:
    import fast
    import reference

    assert callable(getattr(fast, name)) and callable(getattr(reference, name))


# (reference function, fast function): the fast twin takes the reference's arguments, in the same
# order and with the same defaults, and may add device-side options after them (engine, pool, ...).
SAME_ARGUMENTS = [
    ("topo_loss", "topo_loss"),
    ("saliency_loss", "saliency_loss"),
    ("kld", "kld"),
    ("pwcd", "pwcd"),
]


@pytest.mark.parametrize(("ref_name", "fast_name"), SAME_ARGUMENTS)
def test_fast_twin_takes_the_reference_arguments_in_order(ref_name: str, fast_name: str) -> None:
    import fast
    import reference

    ref = inspect.signature(getattr(reference, ref_name)).parameters
    fst = inspect.signature(getattr(fast, fast_name)).parameters
    assert list(fst)[: len(ref)] == list(ref)
    assert [p.default for p in list(fst.values())[: len(ref)]] == [p.default for p in ref.values()]
