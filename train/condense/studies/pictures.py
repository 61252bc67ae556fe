"""Pictures of real and condensed clouds side by side, DD3D Sec. 5.6, Figure 6: one row per class,
the first column a real training cloud of the class, then the first cloud of the class in each
condensed set (Random, GM, DM, TM, DD3D or any condensed-set file), as 3-D scatter plots.

Every panel has equal axes spanning the same cube (the largest coordinate of all the clouds shown),
the same view angle and small points, coloured by part where the sets have parts and by height
otherwise; its title names the set and the class. The picture is ``PANEL_INCHES * DPI`` pixels a
panel, drawn off-screen (matplotlib's Agg, :func:`train.evaluation.palette.pyplot`).
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from train.condense.files.condensed_file import CondensedSet
from train.data.objects import ObjectSet
from train.condense.matching.topology_term import DEFAULT_M, target_diagrams
from train.evaluation.palette import class_colours, pyplot
from train.evaluation.plots import plot_diagrams
from train.runtime.files import atomic_write
from train.runtime.out_paths import check_file_out

PANEL_INCHES = 2.5
DPI = 100
VIEW = (20.0, -60.0)  # elevation and azimuth, degrees
POINT_SIZE = 2.0
ZOOM = 1.15  # the cube a little larger than matplotlib's default in its panel
DEFAULT_CLASSES = 3  # rows when no classes are named: the data set's first ones
# the paper's names of the methods' columns (another method keeps its own name)
METHOD_NAMES = {"random": "Random", "herding": "Herding", "kcenter": "K-Center", "gm": "GM", "dm": "DM", "tm": "TM",
                "dd3d": "DD3D"}

Panel = tuple[np.ndarray, np.ndarray | None]  # one cloud (N, 3) and its points' parts (N,) or None


def column_names(sets: Sequence[CondensedSet], names: Sequence[str] | None) -> list[str]:
    """The title of each set's column: ``names``, or the methods' names; ValueError when the counts differ."""
    if names is None:
        return [METHOD_NAMES.get(s.provenance["method"], s.provenance["method"]) for s in sets]
    if len(names) != len(sets):
        raise ValueError(f"{len(names)} names for {len(sets)} sets: give one a set")
    return list(names)


def class_ids(real: ObjectSet, classes: Sequence[str] | None) -> list[int]:
    """The ids of the ``classes`` named (default: the first ones); ValueError naming an unknown one."""
    if classes is None:
        return list(range(min(DEFAULT_CLASSES, len(real.class_names))))
    unknown = [c for c in classes if c not in real.class_names]
    if unknown:
        raise ValueError(f"class {unknown[0]!r} is not one of {', '.join(real.class_names)}")
    return [real.class_names.index(c) for c in classes]


def first_cloud(points: np.ndarray, labels: np.ndarray, parts: np.ndarray | None, k: int, what: str) -> Panel:
    """The first cloud of class ``k`` and its parts; ValueError naming ``what`` when it has none."""
    rows = np.flatnonzero(labels == k)
    if len(rows) == 0:
        raise ValueError(f"{what} has no cloud of class {k}")
    return points[rows[0]], None if parts is None else parts[rows[0]]


def _draw_panel(ax: Any, panel: Panel, colours: np.ndarray | None, limit: float, title: str) -> None:
    """One cloud in a cube of half-side ``limit``, coloured by part (``colours``) or by height."""
    cloud, parts = panel
    by_height = {"c": cloud[:, 2], "cmap": "viridis", "vmin": -limit, "vmax": limit}
    colour = by_height if parts is None or colours is None else {"c": colours[parts]}
    ax.scatter(cloud[:, 0], cloud[:, 1], cloud[:, 2], s=POINT_SIZE, linewidths=0, depthshade=False, **colour)
    for axis in "xyz":
        getattr(ax, f"set_{axis}lim")(-limit, limit)
        getattr(ax, f"set_{axis}ticklabels")([])
    ax.set_box_aspect((1, 1, 1), zoom=ZOOM)
    ax.view_init(*VIEW)
    ax.set_title(title, fontsize=9)


def _checked(real: ObjectSet, sets: Sequence[CondensedSet], titles: Sequence[str]) -> None:
    """ValueError naming the first set whose classes or task are not those of ``real``."""
    for cset, title in zip(sets, titles):
        if tuple(cset.provenance["class_names"]) != real.class_names or (cset.parts is None) != (real.parts is None):
            raise ValueError(f"the {title} set's classes or task are not those of the first set ({real.name})")


def draw_clouds(real: ObjectSet, sets: Sequence[CondensedSet], out: str | Path, names: Sequence[str] | None = None,
                classes: Sequence[str] | None = None) -> Path:
    """Figure 6 for ``classes`` (names; default the first three) into the PNG ``out``: the real split
    ``real``'s first cloud of each class beside each set's first one (module docstring); ValueError
    for a set of other classes, an unknown class, a count of names that is not the sets' or an
    ``out`` that is not a .png."""
    out = Path(out)
    check_file_out(out, ".png", "picture")
    titles = ["real", *column_names(sets, names)]
    _checked(real, sets, titles[1:])
    ids = class_ids(real, classes)
    rows = [[first_cloud(real.points, real.labels, real.parts, k, f"the real {real.split} split")]
            + [first_cloud(s.points, s.labels, s.parts, k, f"the {title} set") for s, title in zip(sets, titles[1:])]
            for k in ids]
    limit = max(float(np.abs(cloud).max()) for row in rows for cloud, _ in row)
    colours = None if real.part_names is None else class_colours(len(real.part_names))
    plt = pyplot()
    fig = plt.figure(figsize=(PANEL_INCHES * len(titles), PANEL_INCHES * len(rows)), dpi=DPI)
    fig.subplots_adjust(left=0.0, right=1.0, bottom=0.0, top=0.95, wspace=0.0, hspace=0.15)
    for r, (k, row) in enumerate(zip(ids, rows)):
        for c, (title, panel) in enumerate(zip(titles, row)):
            ax = fig.add_subplot(len(rows), len(titles), r * len(titles) + c + 1, projection="3d")
            _draw_panel(ax, panel, colours, limit, f"{title}: {real.class_names[k]}")
    picture = io.BytesIO()
    fig.savefig(picture, format="png", dpi=DPI)
    plt.close(fig)
    atomic_write(picture.getbuffer(), out)
    return out


def draw_diagrams(real: ObjectSet, sets: Sequence[CondensedSet], out: str | Path, names: Sequence[str] | None = None,
                  classes: Sequence[str] | None = None) -> Path:
    """The persistence diagrams (H0, H1) of each set's first cloud of one class (``classes``: one
    name; default the first class) beside those of the real split's first cloud of it (the clouds
    :func:`draw_clouds` draws), each normalised and cut to the persistence term's M points as the
    term does (:func:`train.condense.matching.topology_term.target_diagrams`), in the topological
    distillation's diagram picture (:func:`train.evaluation.plots.plot_diagrams`) into the PNG
    ``out``; ValueError as :func:`draw_clouds`, and for more than one class."""
    out = Path(out)
    check_file_out(out, ".png", "picture")
    if classes is not None and len(classes) != 1:
        raise ValueError(f"the diagrams are drawn for one class; {len(classes)} are named")
    titles = column_names(sets, names)
    _checked(real, sets, titles)
    k = class_ids(real, classes)[0]
    clouds = [first_cloud(real.points, real.labels, real.parts, k, f"the real {real.split} split")[0]] + [
        first_cloud(s.points, s.labels, s.parts, k, f"the {title} set")[0] for s, title in zip(sets, titles)]
    diagrams = target_diagrams([np.asarray(cloud, dtype=np.float64) for cloud in clouds], DEFAULT_M)
    plot_diagrams(out, diagrams[0], dict(zip(titles, diagrams[1:])), reference=f"real {real.class_names[k]}",
                  title=f"H0 and H1 of the first {real.class_names[k]} cloud of each set (normalised, "
                        f"{DEFAULT_M} TPS points), the real cloud's in each panel")
    return out
