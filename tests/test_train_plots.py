"""What the run's pictures (``train.evaluation.plots``) choose to draw, checked on the figures' artists, not
their pixels: ``curves.png`` leaves out the counters that stayed 0 and names them in one line of
text, and adds a panel of each loss term's share of the gradient when ``gradnorm_<term>`` columns
were logged; ``bev.png``'s legend lists only the classes drawn, its grid fits the scene's shape and
its markers shrink as the points grow in number."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from train.runtime.logging_utils import MetricLogger
from train.evaluation.plots import (bev_columns, bev_legend, bev_marker_area, curve_columns, gradient_shares, plot_bev,
                         plot_curves, quiet_columns_text)

NAN = math.nan


def _figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The figures ``train.evaluation.plots`` closes from now on (it closes each one after saving it)."""
    import matplotlib

    matplotlib.use("Agg")  # as train.evaluation.plots does: headless
    import matplotlib.pyplot as plt

    figures: list[Any] = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: (figures.append(fig), real_close(fig)))
    return figures


def _log(folder: Path, rows: list[dict[str, float]]) -> Path:
    logger = MetricLogger(folder, tensorboard=False, tables=("train",))
    for step, row in enumerate(rows, start=1):
        logger.log(step, {"epoch": 0, "lr": 0.01, **row})
    logger.close()
    return folder


def _titles(fig: Any) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def test_curves_name_the_counters_that_stayed_zero_in_one_line_and_draw_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    teacher = _log(tmp_path / "teacher", [{"loss": 2.0 / s, "skipped_nonfinite": 0.0, "skipped_overflow": 0.0}
                                          for s in range(1, 5)])
    distill = _log(tmp_path / "distill", [
        {"loss": 3.0 / s, "skipped_nonfinite": 0.0, "skipped_overflow": float(s == 3), "topo": 0.1,
         "topo_h1_over_budget_teacher": 0.0, "topo_h1_over_budget_student": 0.0, "unused": 0.0}
        for s in range(1, 5)])
    figures = _figures(monkeypatch)
    plot_curves(tmp_path / "curves.png", {"teacher": teacher, "distilled": distill},
                {"teacher": {"miou": 0.5}, "distilled": {"miou": 0.4}})
    (fig,) = figures
    # the overflow counter left 0 once (in one model): it keeps its panel
    assert _titles(fig) == ["validation mIoU % (star: final evaluation)", "loss", "skipped_overflow", "topo"]
    texts = [t.get_text() for t in fig.texts]
    assert texts == ["Whole run: no skipped steps (NaN/Inf), no H1 over budget (teacher, student), unused = 0"]


def test_curve_columns_split_drawn_zero_and_never_finite_columns() -> None:
    data = {"a": {"step": np.arange(3.0), "loss": np.array([1.0, 2.0, NAN]), "skipped_scans": np.zeros(3)},
            "b": {"step": np.arange(2.0), "gradnorm_topo": np.array([NAN, NAN]), "skipped_scans": np.array([0.0, NAN])}}
    assert curve_columns(data) == (["loss"], ["skipped_scans"], ["gradnorm_topo"])
    assert quiet_columns_text(["skipped_scans"], ["gradnorm_topo"]) == \
        "Whole run: no skipped scans (unreadable), gradnorm_topo: no finite value"
    assert quiet_columns_text([]) == ""


def test_gradient_shares_are_each_terms_fraction_of_the_summed_norms_at_the_logged_steps() -> None:
    cols = {"step": np.array([1.0, 2.0, 3.0, 4.0]),
            "gradnorm_seg": np.array([1.0, NAN, 3.0, 2.0]),
            "gradnorm_topo": np.array([3.0, NAN, 1.0, NAN]),  # step 4: topo left out (an overflow)
            "loss": np.ones(4)}
    shares = gradient_shares(cols)
    assert list(shares) == ["seg", "topo"]
    assert shares["seg"][0].tolist() == [1.0, 3.0] and shares["seg"][1].tolist() == [0.25, 0.75]
    assert shares["topo"][1].tolist() == [0.75, 0.25]
    assert gradient_shares({"step": cols["step"], "gradnorm_seg": cols["gradnorm_seg"]}) == {}


def test_curves_draw_a_gradient_share_panel_per_model_that_logged_term_gradients(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    every_other = [{"loss": 1.0, "gradnorm_seg": 1.0 if s % 2 else NAN, "gradnorm_kld": 3.0 if s % 2 else NAN}
                   for s in range(1, 6)]
    dirs = {"student": _log(tmp_path / "student", [{"loss": 1.0}] * 5), "kd": _log(tmp_path / "kd", every_other)}
    figures = _figures(monkeypatch)
    plot_curves(tmp_path / "curves.png", dirs, {"student": {"miou": 0.3}, "kd": {"miou": 0.3}})
    (fig,) = figures
    titles = _titles(fig)
    assert titles == ["validation mIoU % (star: final evaluation)", "kd: share of gradient norm", "gradnorm_kld",
                      "gradnorm_seg", "loss"]
    share = fig.axes[1]
    lines = {line.get_label(): (line.get_xdata().tolist(), line.get_ydata().tolist()) for line in share.lines}
    assert lines == {"kld": ([1.0, 3.0, 5.0], [0.75] * 3), "seg": ([1.0, 3.0, 5.0], [0.25] * 3)}
    # a column logged every other step is drawn through its logged steps (NaN rows left out)
    (norm_line,) = fig.axes[titles.index("gradnorm_kld")].lines
    assert norm_line.get_xdata().tolist() == [1.0, 3.0, 5.0]


def test_bev_legend_lists_only_the_drawn_classes_most_ground_truth_points_first() -> None:
    names = [f"class{i}" for i in range(6)]
    labels = {"ground truth": np.array([3, 3, 3, 1, -1, 1, 3]), "model": np.array([3, 3, 5, 1, 1, 1, 3])}
    assert bev_legend(labels, "ground truth", names) == [
        (3, "class3"), (1, "class1"), (5, "class5 (predicted only)"), (-1, "no label")]


def test_bev_figure_legend_holds_the_legend_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    xy = np.concatenate([[[-60.0, -15.0], [60.0, 15.0]], rng.uniform([-60.0, -15.0], [60.0, 15.0], size=(498, 2))])
    labels = {"ground truth": rng.integers(0, 2, 500), "teacher": rng.integers(0, 3, 500)}
    names = [f"class{i}" for i in range(22)]
    figures = _figures(monkeypatch)
    plot_bev(tmp_path / "bev.png", xy, labels, names)
    (fig,) = figures
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [text for _, text in bev_legend(labels, "ground truth", names)]
    assert _titles(fig) == ["ground truth", "teacher"]
    from matplotlib.text import Text

    assert any("120 m x 30 m" in t.get_text() for t in fig.findobj(Text))  # the scene's extent


def test_bev_grid_gives_a_wide_street_one_column_and_a_square_scene_three() -> None:
    assert bev_columns(5, 5.0) == 1
    assert bev_columns(5, 1.0) == 3
    assert bev_columns(2, 1.0) == 2


def test_bev_markers_shrink_with_the_number_of_points_within_visible_bounds() -> None:
    areas = [bev_marker_area(n, 200_000.0) for n in (10, 2_000, 6_000, 30_000, 10_000_000)]
    assert areas == sorted(areas, reverse=True)
    assert areas[0] == 30.0 and areas[-1] == 0.3
