"""Reading the options of ``python -m train.run``: the command-line parser built from the option table
(:mod:`train.config`, one flag per field in its ``--help`` section), the YAML file of ``--config``,
their precedence (defaults <- file <- command line), the defaults filled in
(:mod:`train.options.defaults`), the checks (:mod:`train.options.checks`), and the resolved
configuration written back as YAML. Builds the parser without importing torch, fast or scipy
(decision 38).
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any, NoReturn, Sequence

from train.config import (CHOICES, FIELDS, GROUP_OF, GROUPS, HELP, OUT_CONTENTS, PREEMPT_SIGNALS, RunConfig,
                          default_text)
from train.options.checks import validate
from train.options.defaults import fill_defaults


def _key(name: str) -> str:
    return name.replace("-", "_")


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML config file into a dict of field values; unknown keys are errors."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {p} does not exist; pass an existing YAML file to --config")
    import yaml  # imported here: library users of RunConfig (e.g. benchmarks.gpu) need no YAML

    with p.open() as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {p} must hold a mapping of option: value, got {type(data).__name__}")
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = _key(str(k))
        if key == "config":
            raise ValueError(f"config file {p}: 'config' cannot be set inside a config file")
        if key not in FIELDS:
            raise ValueError(
                f"config file {p}: unknown option {k!r}; valid options: {', '.join(sorted(FIELDS))}"
            )
        out[key] = _file_value(p, key, v)
    return out


def _file_value(path: Path, key: str, value: Any) -> Any:
    """``value`` of field ``key`` as the command line would read it. YAML 1.1 reads a number without
    a dot (``2e-3``, ``1e1``) and ``none`` as strings: a numeric field reads them as its number, an
    optional one reads ``none`` (or ``null``) as unset, and a list field reads a single value as a
    list of one (``preempt_signal: none``)."""
    kind = FIELDS[key].type
    if kind.startswith("list") and not isinstance(value, list):
        return [value]
    if not isinstance(value, str) or kind.split(" |")[0] not in ("int", "float"):
        return value
    if kind.endswith("| None") and value.strip().lower() in ("none", "null"):
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if kind.startswith("int") and number.is_integer():
        return int(number)
    if kind.startswith("float") and not math.isnan(number):
        return number
    optional = " (or none)" if kind.endswith("| None") else ""
    raise ValueError(f"config file {path}: {key} must be {'an integer' if kind.startswith('int') else 'a number'}"
                     f"{optional}, got {value!r}")


class _OneLineParser(argparse.ArgumentParser):
    """Reports a malformed command line in one line (argparse prints the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """CLI parser with one flag per :class:`RunConfig` field, in the sections of :data:`GROUPS`;
    unset flags stay absent. Builds without importing torch, fast or scipy."""
    p = _OneLineParser(
        prog="python -m train.run",
        usage="python -m train.run --dataset NAME [--stage STAGE] [options]",
        description="Train a PTv3 teacher and distill it into the PTv3 student "
        "(L = L_seg + l_topo L_topo + l_grad L_grad + l_kld L_kld). Paper values are cited from "
        "the paper; design choices from docs/decisions.md, PTv3 and data-set facts from "
        "docs/ptv3-and-datasets.md.",
        epilog=OUT_CONTENTS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    sections = {title: p.add_argument_group(title, about) for title, about in GROUPS.items()}
    sections["output"].add_argument("--config", help="YAML file of options (the command line overrides it)")
    for name, f in FIELDS.items():
        if name in ("teacher_overrides", "student_overrides"):
            continue  # mappings: config file only
        group = sections[GROUP_OF[name]]
        flag = "--" + name.replace("_", "-")
        helptext = f"{HELP[name]} (default: {default_text(name)})".replace("%", "%%")
        choices = CHOICES.get(name)
        if choices is not None:
            group.add_argument(flag, choices=choices, help=helptext)
        elif f.type in ("bool", "bool | None"):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, help=helptext)
        elif name == "preempt_signal":
            group.add_argument(flag, nargs="+", choices=(*PREEMPT_SIGNALS, "none"), metavar="SIG", help=helptext)
        elif name in ("topo_dims", "saliency_layers"):
            group.add_argument(flag, type=int, nargs="+", metavar="K", help=helptext)
        elif f.type in ("int", "int | None"):
            group.add_argument(flag, type=int, metavar="N", help=helptext)
        elif f.type in ("float", "float | None"):
            group.add_argument(flag, type=float, metavar="X", help=helptext)
        else:
            group.add_argument(flag, type=str, metavar=name.split("_")[-1].upper(), help=helptext)
    return p


def resolve(argv: Sequence[str] | None = None) -> RunConfig:
    """Defaults <- YAML config file <- command line, then dataset budget defaults, then validation."""
    ns = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {}
    cfg_path = ns.pop("config", None)
    if cfg_path is not None:
        values.update(load_yaml(cfg_path))
    values.update(ns)
    return finalize(values)


def finalize(values: dict[str, Any]) -> RunConfig:
    """Build a config from field values, fill the dataset-dependent defaults and validate it."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; valid options: {', '.join(sorted(FIELDS))}")
    cfg = RunConfig(**values)
    fill_defaults(cfg)
    validate(cfg)
    return cfg

def save_config(cfg: RunConfig, path: str | os.PathLike[str]) -> None:
    """Write the resolved configuration as YAML (re-runnable with ``--config``)."""
    import yaml

    from train.runtime.whole_files import write_text

    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))  # whole, or the old one kept (decision 99)
