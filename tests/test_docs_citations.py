"""Every document reference in the code resolves inside the repository.

Docstrings and comments cite the numerical decisions as "decision 13", "decisions 6-10",
"decisions 2, 3, 6a and 6c" (``docs/decisions.md``, one ``## <id>.`` heading per decision) and the
PTv3 / data-set facts as "spec A5", "spec C and D", "spec A3-A4" (``docs/ptv3-and-datasets.md``,
one ``## <letter>.`` or ``### <letter><digit>.`` heading per section). These tests scan every
Python file of the packages, the tests and the benchmarks and fail when a cited decision or
section has no heading, when a cited ``docs/*.md`` file is missing, when a project issue-tracker
number is cited (readers of the repository do not have the tracker), or when a path points into
the project's shared folder outside the repository. Decision citations are checked in every text
file of the repository (code, documents, configs, kept studies), and ``docs/decisions.md`` opens
with an index of every decision (number, title, link to its heading) that must equal the one built
from its headings, so that it cannot drift.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from markdown_anchors import github_anchor

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("reference", "fast", "train", "benchmarks", "tests")
DECISIONS = ROOT / "docs" / "decisions.md"
SPEC = ROOT / "docs" / "ptv3-and-datasets.md"

# One decision id ("6", "6c") and the separators of a list of them ("6-10", "6a/6b", "2, 3 and 6c").
_ID = r"\d+[a-z]?\b"
_SEP = r"(?:\s*,\s*(?:and\s+)?|\s+and\s+|\s*/\s*|\s*-\s*)"
DECISION_CITE = re.compile(rf"\b[Dd]ecisions?(?:[ \t]*-[ \t]*|\s+)(?:#\s*)?(?P<ids>{_ID}(?:{_SEP}{_ID})*)")
# One section id ("D", "A5") and lists of them ("A3-A4", "A4/A6/A7", "A3, A6, A7", "C and D").
_SID = r"[A-Z]\d*\b"
SPEC_CITE = re.compile(rf"\bspec(?:\s+sections?)?\s+(?P<ids>{_SID}(?:{_SEP}{_SID})*)")
ISSUE_CITE = re.compile(r"\bissues?\s*#?\s*\d+", re.IGNORECASE)
OUTSIDE_PATH = re.compile(r"\.\./shared\b|/work[/]shared\b|\bshared/(?:docs|seeds|fixtures|hooks)\b")
DOC_PATH = re.compile(r"\bdocs/[\w.-]+\.md\b")

DECISION_HEADING = re.compile(r"^#{2,3} (\d+[a-z]?)\. (?=\S)", re.MULTILINE)
SPEC_HEADING = re.compile(r"^#{2,3} ([A-Z]\d*)\. (?=\S)", re.MULTILINE)


def _expand(ids: str, separators: str = _SEP) -> list[str]:
    """``"1-3, 6a/6b and 12"`` -> ``["1", "2", "3", "6a", "6b", "12"]``; ``"A3-A5"`` -> A3, A4, A5.

    A range expands when both ends share their form (two numbers, two letters of one number, or
    two digits after one letter); otherwise both ends are returned as they are."""
    parts = re.split(rf"({separators})", ids)
    out: list[str] = []
    i = 0
    while i < len(parts):
        item = parts[i]
        if i + 2 < len(parts) and parts[i + 1].strip() == "-":
            out.extend(_range(item, parts[i + 2]))
            i += 4  # past the range's upper end and the separator after it
        else:
            out.append(item)
            i += 2
    return out


def _range(lo: str, hi: str) -> list[str]:
    if lo.isdigit() and hi.isdigit() and int(lo) <= int(hi):
        return [str(v) for v in range(int(lo), int(hi) + 1)]
    a, b = re.fullmatch(r"(\d+)([a-z])", lo), re.fullmatch(r"(\d+)([a-z])", hi)
    if a and b and a[1] == b[1] and a[2] <= b[2]:
        return [a[1] + chr(c) for c in range(ord(a[2]), ord(b[2]) + 1)]
    a, b = re.fullmatch(r"([A-Z])(\d+)", lo), re.fullmatch(r"([A-Z])(\d+)", hi)
    if a and b and a[1] == b[1] and int(a[2]) <= int(b[2]):
        return [a[1] + str(v) for v in range(int(a[2]), int(b[2]) + 1)]
    return [lo, hi]


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def problems(text: str, where: str, decisions: set[str], sections: set[str]) -> list[str]:
    """Every unresolved citation or forbidden reference in ``text``, as ``where:line: message``."""
    found = []
    for m in DECISION_CITE.finditer(text):
        missing = [d for d in _expand(m["ids"]) if d not in decisions]
        if missing:
            found.append(f"{where}:{_line(text, m.start())}: {m[0]!r} cites decision(s) {missing}, "
                         f"which have no section in docs/decisions.md")
    for m in SPEC_CITE.finditer(text):
        missing = [s for s in _expand(m["ids"]) if s not in sections]
        if missing:
            found.append(f"{where}:{_line(text, m.start())}: {m[0]!r} cites section(s) {missing}, "
                         f"which docs/ptv3-and-datasets.md does not have")
    for m in ISSUE_CITE.finditer(text):
        found.append(f"{where}:{_line(text, m.start())}: {m[0]!r} cites the issue tracker; say what is meant")
    for m in OUTSIDE_PATH.finditer(text):
        found.append(f"{where}:{_line(text, m.start())}: {m[0]!r} points outside the repository; cite docs/")
    for m in DOC_PATH.finditer(text):
        if not (ROOT / m[0]).is_file():
            found.append(f"{where}:{_line(text, m.start())}: {m[0]} does not exist in the repository")
    return found


def _headings(path: Path, pattern: re.Pattern[str]) -> set[str]:
    return set(pattern.findall(path.read_text(encoding="utf-8")))


def _sources() -> list[Path]:
    return sorted(p for d in SCANNED for p in (ROOT / d).rglob("*.py"))


@pytest.fixture(scope="module")
def decision_ids() -> set[str]:
    return _headings(DECISIONS, DECISION_HEADING)


@pytest.fixture(scope="module")
def section_ids() -> set[str]:
    return _headings(SPEC, SPEC_HEADING)


def test_documents_have_the_numbered_sections_the_code_relies_on(decision_ids: set[str],
                                                                  section_ids: set[str]) -> None:
    assert {str(n) for n in range(1, 22)} | {"6a", "6b", "6c"} <= decision_ids
    assert {"A", "B", "C", "D", "E"} | {f"A{i}" for i in range(1, 10)} <= section_ids


def test_every_decision_starts_with_a_one_line_summary() -> None:
    text = DECISIONS.read_text(encoding="utf-8")
    for m in DECISION_HEADING.finditer(text):
        body = text[text.index("\n", m.end()):].lstrip("\n")  # the text under the heading line
        assert body.startswith("**Summary:**"), f"decision {m[1]} does not start with its summary"


def test_every_citation_in_the_code_resolves_inside_the_repository(decision_ids: set[str],
                                                                   section_ids: set[str]) -> None:
    sources = _sources()
    assert len(sources) > 50, "the scan found too few files; did the layout change?"
    found = []
    for path in sources:
        found += problems(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)), decision_ids, section_ids)
    assert not found, "unresolved citations:\n" + "\n".join(found)


def test_the_scanner_flags_each_kind_of_bad_reference(decision_ids: set[str], section_ids: set[str]) -> None:
    # The bad citations are assembled at run time so that this file's own text stays clean.
    d, s = "decision", "spec"
    bad = {
        f"see {d} 999": "decision(s) ['999']",
        f"see {d}s 6c and 6z": "decision(s) ['6z']",
        f"see {d}s 998-999": "decision(s) ['998', '999']",
        f"({d}-997)": "decision(s) ['997']",
        f"see {s} Z": "section(s) ['Z']",
        f"see {s} A8-A11": "section(s) ['A10', 'A11']",
        "as " + "issue" + " 7 asks": "issue tracker",
        "see ../" + "shared" + "/docs": "outside the repository",
        "see docs/" + "missing.md": "does not exist",
    }
    for text, message in bad.items():
        found = problems(text, "x.py", decision_ids, section_ids)
        assert len(found) >= 1 and message in found[0], (text, found)
    good = (f"{d}s 2, 3, 6a, 6b and 6c", f"{d}s 12-20", f"{d}s 6a/6b", f"the {d}-5 backward",
            f"{d}s 17, paper Table 10", f"{s} A3-A4", f"{s} A4/A6/A7", f"{s} sections C and D",
            f"{s} D, pitfall list", "docs/decisions.md", "ModelSpec(spec D)")
    for text in good:
        assert problems(text, "x.py", decision_ids, section_ids) == [], text


# ----------------------------------------------------------------------------- the documents themselves
DOCUMENTS = sorted({ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "benchmarks").glob("*.md")})
TABLE_FLAG = re.compile(r"--table[ =](?P<values>(?:\d+|unlabelled|cameras)(?:\|(?:\d+|unlabelled|cameras))*)")
COMMAND = re.compile(r"python -m (?P<module>(?:train|fast|benchmarks|reference)(?:\.\w+)+)")


def _is_command(module: str) -> bool:
    """Whether ``python -m module`` runs something: a module with a ``__main__`` guard, or a
    package with a ``__main__`` module; a module that moved runs under its old name (decision 82)."""
    import benchmarks
    import train.data
    module = {**train.data.MOVED, **benchmarks.MOVED}.get(module, module)
    path = ROOT.joinpath(*module.split("."))
    if path.with_suffix(".py").is_file():
        return 'if __name__ == "__main__"' in path.with_suffix(".py").read_text(encoding="utf-8")
    return (path / "__main__.py").is_file()


def test_every_table_value_and_command_the_documents_name_exists() -> None:
    from train.study.ablation import TABLES

    assert len(DOCUMENTS) > 8, "the scan found too few documents; did the layout change?"
    found = []
    for path in DOCUMENTS:
        text, where = path.read_text(encoding="utf-8"), str(path.relative_to(ROOT))
        for m in TABLE_FLAG.finditer(text):
            unknown = [v for v in m["values"].split("|") if _table(v) not in TABLES]
            if unknown:
                found.append(f"{where}:{_line(text, m.start())}: {m[0]!r}: train.study has no table {unknown}")
        for m in COMMAND.finditer(text):
            if not _is_command(m["module"]):
                found.append(f"{where}:{_line(text, m.start())}: {m[0]!r} is not a command of the repository")
    assert not found, "documents name what does not exist:\n" + "\n".join(found)


def test_every_study_table_is_named_where_the_documents_list_them() -> None:
    from train.study.ablation import TABLES

    lists = [m["values"] for path in DOCUMENTS for m in TABLE_FLAG.finditer(path.read_text(encoding="utf-8"))
             if "|" in m["values"]]
    assert lists and all({_table(v) for v in values.split("|")} == set(TABLES) for values in lists), lists


def _table(value: str) -> int | str:
    """A ``--table`` value as ``train.study`` reads it: a paper table's number, or a name."""
    return int(value) if value.isdigit() else value


# ----------------------------------------------------------------------------- the decisions' index
INDEX_HEADING, TOPICS_HEADING = "## Index", "## By topic"


def _section(text: str, heading: str) -> str:
    """The lines under a ``## `` heading of ``docs/decisions.md``, to the next ``## `` heading."""
    assert f"\n{heading}\n" in text, f"docs/decisions.md has no {heading!r} section"
    return text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]


def decision_index(text: str) -> list[str]:
    """The index rows ``| [id](#anchor) | title |`` of every decision heading, by number (6, 6a, 6b, 7)."""
    found = [(m[1], m[2]) for m in re.finditer(r"^#{2,3} (\d+[a-z]?)\. (\S.*)$", text, re.MULTILINE)]
    found.sort(key=lambda item: (int(re.match(r"\d+", item[0])[0]), item[0]))
    return [f"| [{i}](#{github_anchor(f'{i}. {title}')}) | {title} |" for i, title in found]


def test_the_decision_index_lists_every_decision_by_number_title_and_link(decision_ids: set[str]) -> None:
    text = DECISIONS.read_text(encoding="utf-8")
    assert text.index(f"\n{INDEX_HEADING}\n") < text.index("\n## 1. "), "the index must stand before decision 1"
    rows = [line for line in _section(text, INDEX_HEADING).splitlines() if line.startswith("| [")]
    expected = decision_index(text)
    assert len(expected) == len(decision_ids) and all(row.count("|") == 3 for row in expected), "a title holds a |"
    assert rows == expected, ("docs/decisions.md's index differs from its headings; its rows should read:\n"
                              + "\n".join(expected))


def test_the_index_builder_numbers_links_and_orders_as_github_renders() -> None:
    text = "## 6. B\n\n## 6a. A `x/y`, z: w\n\n### 10. C (d)\n\n## 2. E\n\n## Other\n"
    assert decision_index(text) == ["| [2](#2-e) | E |", "| [6](#6-b) | B |",
                                    "| [6a](#6a-a-xy-z-w) | A `x/y`, z: w |", "| [10](#10-c-d) | C (d) |"]


def test_the_topic_table_lists_every_decision(decision_ids: set[str]) -> None:
    rows = [line.split("|") for line in _section(DECISIONS.read_text(encoding="utf-8"), TOPICS_HEADING).splitlines()
            if line.startswith("| ") and not line.startswith("| group")]
    listed = {i for row in rows for i in re.findall(_ID, row[2])}
    assert listed == decision_ids, (f"not in the topic table: {sorted(decision_ids - listed)}; "
                                    f"in it without a section: {sorted(listed - decision_ids)}")


# ----------------------------------------------------------------------------- every file of the repository
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".txt", ".ini", ".cfg"}
# Left out: hidden folders (.git, caches, virtual environments, copies), and what .gitignore keeps out of
# the repository (outputs, caches, installs; names at any depth, paths from the root).
IGNORED_NAMES = {"__pycache__"}
IGNORED_PATHS = {"build", "dist", "runs", "outputs", "data", "benchmarks/results"}


def repository_text_files() -> list[Path]:
    """Every text file of the repository that a citation can stand in, outputs and caches left out."""
    found = []
    for folder, subfolders, files in os.walk(ROOT):
        here = Path(folder).relative_to(ROOT).as_posix()
        subfolders[:] = [name for name in subfolders if name not in IGNORED_NAMES and not name.startswith(".")
                         and not name.endswith(".egg-info")
                         and f"{here}/{name}".removeprefix("./") not in IGNORED_PATHS]
        found += [Path(folder, name) for name in files if Path(name).suffix in TEXT_SUFFIXES]
    return sorted(found)


def test_every_decision_cited_anywhere_in_the_repository_resolves(decision_ids: set[str]) -> None:
    files = repository_text_files()
    names = {str(path.relative_to(ROOT)) for path in files}
    assert {"README.md", "pyproject.toml", "docs/slurm.sh", "configs/nuscenes-distill.yaml",
            "benchmarks/STUDY.md", "train/run.py", "tests/fixtures/real/README.md"} <= names, "the scan missed files"
    found = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        for m in DECISION_CITE.finditer(text):
            missing = [d for d in _expand(m["ids"]) if d not in decision_ids]
            if missing:
                found.append(f"{path.relative_to(ROOT)}:{_line(text, m.start())}: {m[0]!r} cites decision(s) {missing}")
    assert not found, "decisions cited that docs/decisions.md does not have:\n" + "\n".join(found)
