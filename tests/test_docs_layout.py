"""The documents keep the shape a reader relies on.

* README.md: the two set-up commands (install and run the demo; run the tests) stand in its first
  60 lines, and no prose paragraph is longer than 120 words.
* docs/decisions.md: no decision is longer than 60 lines (its heading to the next heading of the
  same level); longer accounts live in ``docs/notes/`` and the decision links them.
* Every repository file the README or a document names by path (a Markdown file
  under ``docs/`` or ``benchmarks/``) exists, so a link moved to ``docs/`` or ``docs/notes/`` resolves.

A *paragraph* here is a block of consecutive non-blank lines outside code fences that is not a
heading, a table or an indented block; each item of a list (its first line and the lines
indented under it) counts as a paragraph of its own, so a list cannot hide a long text either.
Words are runs of non-space characters.
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DECISIONS = ROOT / "docs" / "decisions.md"
COMMANDS = ('pip install torch==2.13.0 -e ".[test]" && python -m train.run --dataset synthetic',
            "python -m pytest tests benchmarks")
FIRST_SCREEN_LINES = 60
MAX_PARAGRAPH_WORDS = 120
MAX_DECISION_LINES = 60

_LIST_ITEM = re.compile(r"^(?:[-*+]|\d+[.)])\s")


def prose_paragraphs(text: str) -> list[tuple[int, str]]:
    """``(first line number, text)`` of every prose paragraph of a Markdown text (module docstring)."""
    paragraphs: list[tuple[int, list[str]]] = []
    in_fence, current = False, None
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_fence, current = not in_fence, None
            continue
        stripped = line.strip()
        if in_fence or not stripped or stripped.startswith(("#", "|")) or (current is None and line.startswith("    ")):
            current = None
            continue
        if _LIST_ITEM.match(stripped) or current is None:
            current = (number, [])
            paragraphs.append(current)
        current[1].append(stripped)
    return [(number, " ".join(lines)) for number, lines in paragraphs]


def decision_lengths(text: str) -> dict[str, int]:
    """Lines of each ``## <id>. title`` section of ``docs/decisions.md``: its heading to the next
    heading of the same level, as the module docstring says, blank lines included (the count left
    out the blank line before the next heading, so two decisions of 61 lines passed as 60)."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("## ")] + [len(lines)]
    return {m[1]: end - start for start, end in zip(starts, starts[1:])
            if (m := re.match(r"## (\d+[a-z]?)\. ", lines[start]))}


def test_the_readme_shows_both_commands_on_its_first_screen() -> None:
    first_screen = "\n".join(README.read_text(encoding="utf-8").splitlines()[:FIRST_SCREEN_LINES])
    for command in COMMANDS:
        assert command in first_screen, f"README.md's first {FIRST_SCREEN_LINES} lines lack {command!r}"


def test_no_readme_paragraph_is_longer_than_120_words() -> None:
    long = [(n, len(p.split())) for n, p in prose_paragraphs(README.read_text(encoding="utf-8"))
            if len(p.split()) > MAX_PARAGRAPH_WORDS]
    assert not long, f"README.md paragraphs over {MAX_PARAGRAPH_WORDS} words (line, words): {long}"


def test_no_decision_is_longer_than_60_lines() -> None:
    lengths = decision_lengths(DECISIONS.read_text(encoding="utf-8"))
    assert len(lengths) > 40, "docs/decisions.md has too few decisions; did its headings change?"
    long = {d: n for d, n in lengths.items() if n > MAX_DECISION_LINES}
    assert not long, f"decisions over {MAX_DECISION_LINES} lines: {long}; move the account to docs/notes/"


def test_every_document_path_named_in_the_documents_exists() -> None:
    documents = [README, *sorted((ROOT / "docs").rglob("*.md"))]
    named = {(doc.relative_to(ROOT), m[0]) for doc in documents
             for m in re.finditer(r"\b(?:docs|benchmarks)/[\w./-]+\.md\b", doc.read_text(encoding="utf-8"))}
    assert len(named) > 10, "too few document paths found; did the documents change?"
    missing = sorted(f"{doc}: {path}" for doc, path in named if not (ROOT / path).is_file())
    assert not missing, "document paths that do not exist:\n" + "\n".join(missing)


def test_the_paragraph_reader_splits_as_documented() -> None:
    text = ("# Title\n\none two\nthree\n\n- item a\n  more a\n- item b\n\n| a | b |\n|---|---|\n\n"
            "```bash\nnot prose at all\n```\n\n    indented code\n\nlast\n")
    assert prose_paragraphs(text) == [(3, "one two three"), (6, "- item a more a"), (8, "- item b"), (19, "last")]
    assert decision_lengths("## 1. A\nx\n\n## 2. B\ny\nz\n\n\n## Other\n") == {"1": 3, "2": 5}
