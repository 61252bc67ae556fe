"""DD3D Figure 6 (``train.condense.studies.pictures``): ``python -m train.condense show`` draws a real cloud
and each condensed set's cloud a class into a PNG of one panel a set (and the real column) by one a
class, and refuses bad input in one line."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from train.condense.cli.command import main
from train.condense.studies.pictures import DPI, PANEL_INCHES

TINY = ["--dataset", "shapes", "--size", "4", "--points", "32", "--device", "cpu", "--cpc", "1", "--method", "random"]


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two Random sets of classification (seeds 0 and 1) and one of part segmentation."""
    root = tmp_path_factory.mktemp("sets")
    for name, extra in (("a", []), ("b", ["--seed", "1"]), ("parts", ["--task", "parts"])):
        assert main([*TINY, *extra, "--out", str(root / name)]) == 0
    return root


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's header."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_show_draws_a_panel_per_set_and_class(sets: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "figure.png"
    argv = ["show", "--from", str(sets / "a" / "condensed.npz"), str(sets / "b" / "condensed.npz"), "--names", "A",
            "B", "--classes", "chair", "mug", "--out", str(out)]
    assert main(argv) == 0
    assert "real shapes clouds beside 2 condensed set file(s)" in capsys.readouterr().out
    panel = round(PANEL_INCHES * DPI)
    assert png_size(out) == (3 * panel, 2 * panel)  # real, A, B by chair, mug
    parts = tmp_path / "parts.png"
    assert main(["show", "--from", str(sets / "parts" / "condensed.npz"), "--out", str(parts)]) == 0
    assert png_size(parts) == (2 * panel, 3 * panel)  # real, Random by the first three classes


@pytest.mark.parametrize("argv, words", [
    (["--from", "A", "--classes", "chair", "spoon", "--out", "OUT.png"], "class 'spoon' is not one of chair, "),
    (["--from", "A", "B", "--names", "one", "--out", "OUT.png"], "1 names for 2 sets"),
    (["--from", "A", "--out", "OUT.jpg"], "OUT.jpg: the picture is a .png file"),
    (["--from", "A", "PARTS", "--out", "OUT.png"], "the Random set's classes or task are not those of the first"),
    (["--from", "A", "NOPE", "--out", "OUT.png"], "NOPE"),
])
def test_show_refuses_bad_input_in_one_line(sets: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                            argv: list[str], words: str) -> None:
    swap = {"A": sets / "a" / "condensed.npz", "B": sets / "b" / "condensed.npz",
            "PARTS": sets / "parts" / "condensed.npz", "NOPE": tmp_path / "nope.npz", "OUT.png": tmp_path / "f.png",
            "OUT.jpg": tmp_path / "f.jpg"}
    capsys.readouterr()
    assert main(["show", *[str(swap.get(a, a)) for a in argv]]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("python -m train.condense show: error: ")
    assert words.replace("OUT", str(tmp_path / "f")).replace("NOPE", str(tmp_path / "nope.npz")) in err
    assert not (tmp_path / "f.png").exists()


def test_show_diagrams_draws_the_terms_diagrams_of_each_sets_cloud_beside_the_real_ones(
        sets: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    import train.condense.studies.pictures as pictures
    from train.condense.files.condensed_file import read_condensed
    from train.condense.matching.topology_term import DEFAULT_M, target_diagrams
    from train.data.objects import load_objects
    drawn: dict = {}
    draw = pictures.plot_diagrams

    def keep(path: Path, teacher: object, students: dict, **kwargs: object) -> None:
        drawn.update(teacher=teacher, students=students, **kwargs)
        draw(path, teacher, students, **kwargs)
    monkeypatch.setattr(pictures, "plot_diagrams", keep)
    out = tmp_path / "diagrams.png"
    assert main(["show", "--diagrams", "--from", str(sets / "a"), str(sets / "b"), "--names", "A", "B",
                 "--classes", "mug", "--out", str(out)]) == 0
    assert "real shapes diagrams beside 2 condensed set file(s)" in capsys.readouterr().out
    assert png_size(out) == (round(2 * 4.4 * 90), round(8.4 * 90)) and drawn["reference"] == "real mug"
    real = load_objects("shapes", split="train", points=32, size=4)
    mug = real.class_names.index("mug")
    clouds = [real.points[real.labels == mug][0]] + [
        read_condensed(sets / name / "condensed.npz").points[read_condensed(sets / name / "condensed.npz").labels == mug][0]
        for name in ("a", "b")]
    wanted = target_diagrams([c.astype(np.float64) for c in clouds], DEFAULT_M)
    for got, want in zip([drawn["teacher"], drawn["students"]["A"], drawn["students"]["B"]], wanted):
        np.testing.assert_array_equal(got.h0_pairs, want.h0_pairs)
        np.testing.assert_array_equal(got.h1_pairs, want.h1_pairs)
    assert main(["show", "--diagrams", "--from", str(sets / "a"), "--classes", "mug", "chair", "--out",
                 str(tmp_path / "two.png")]) == 2
    assert capsys.readouterr().err.strip().endswith("the diagrams are drawn for one class; 2 are named")
