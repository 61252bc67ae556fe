"""The documents keep the shape a reader relies on.

* README.md: at most 250 lines; the two set-up commands (install and run the demo; run the tests)
  stand in its first 60 lines; under "What you do with it" every task is one paragraph (at most 80
  words), at most one command block and a link to its page in ``docs/``, and every page of ``docs/``
  is linked from the README, so a fact that left the README is one link away.
* No prose paragraph of the README or of the pages that took its sections (``MOVED_PAGES``) is
  longer than 120 words.
* Every Markdown link of the README and the documents resolves: the file exists, and an anchor
  (``#...``) names a heading of that file as GitHub renders it (the decisions' index links so).
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

from markdown_anchors import anchors, local_links

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DECISIONS = ROOT / "docs" / "decisions.md"
COMMANDS = ('pip install torch==2.13.0 -e ".[test]" && python -m train.run --dataset synthetic',
            "python -m pytest tests benchmarks")
FIRST_SCREEN_LINES = 60
MAX_README_LINES = 250
MAX_PARAGRAPH_WORDS = 120
MAX_DECISION_LINES = 60
TASKS_HEADING = "## What you do with it"
MAX_TASK_WORDS = 80
# The pages that hold the README's former sections, under the README's paragraph rule.
MOVED_PAGES = tuple(ROOT / "docs" / f"{name}.md" for name in (
    "own-training-loop", "training", "predict", "cameras", "unlabelled", "studies", "benchmarks", "engines",
    "gpus-and-clusters"))

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


def test_the_readme_is_at_most_250_lines() -> None:
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move the detail to a page in docs/"


def test_no_paragraph_of_the_readme_or_its_moved_pages_is_longer_than_120_words() -> None:
    long = [(str(doc.relative_to(ROOT)), n, len(p.split())) for doc in (README, *MOVED_PAGES)
            for n, p in prose_paragraphs(doc.read_text(encoding="utf-8")) if len(p.split()) > MAX_PARAGRAPH_WORDS]
    assert not long, f"paragraphs over {MAX_PARAGRAPH_WORDS} words (file, line, words): {long}"


def readme_tasks() -> dict[str, str]:
    """The ``### `` subsections under the README's task heading: title -> body."""
    text = README.read_text(encoding="utf-8")
    assert f"\n{TASKS_HEADING}\n" in text, f"README.md has no section {TASKS_HEADING!r}"
    section = text.split(f"\n{TASKS_HEADING}\n", 1)[1].split("\n## ", 1)[0]
    return dict(part.split("\n", 1) for part in section.split("\n### ")[1:])


def test_every_readme_task_is_one_paragraph_one_command_and_a_link_to_its_page() -> None:
    tasks = readme_tasks()
    assert len(tasks) >= 9, f"the README's task list is short: {list(tasks)}"
    for title, body in tasks.items():
        paragraphs = prose_paragraphs(body)
        assert len(paragraphs) == 1, f"README task {title!r}: {len(paragraphs)} paragraphs, not one"
        assert len(paragraphs[0][1].split()) <= MAX_TASK_WORDS, f"README task {title!r}: over {MAX_TASK_WORDS} words"
        assert body.count("```") <= 2, f"README task {title!r}: more than one command block"
        pages = [link for link in local_links(body) if re.fullmatch(r"docs/[\w.-]+\.md", link)]
        assert pages, f"README task {title!r} links no page of docs/"


def test_every_page_of_docs_is_linked_from_the_readme() -> None:
    linked = {link.split("#")[0] for link in local_links(README.read_text(encoding="utf-8"))}
    pages = {str(page.relative_to(ROOT)) for page in (ROOT / "docs").glob("*.md")}
    assert pages - linked == set(), f"pages of docs/ the README does not link: {sorted(pages - linked)}"


def test_every_markdown_link_of_the_documents_resolves() -> None:
    documents = [README, *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "benchmarks").glob("*.md")),
                 *sorted((ROOT / "benchmarks" / "studies").rglob("*.md"))]  # the reports too
    broken = []
    for doc in documents:
        for link in local_links(doc.read_text(encoding="utf-8")):
            path, _, anchor = link.partition("#")
            target = (doc.parent / path).resolve() if path else doc
            if not target.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {link} (no such file)")
            elif anchor and target.suffix == ".md" and anchor not in anchors(target.read_text(encoding="utf-8")):
                broken.append(f"{doc.relative_to(ROOT)}: {link} (no such heading)")
    assert not broken, "links that do not resolve:\n" + "\n".join(broken)


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


def test_the_link_reader_finds_anchors_as_github_renders_them() -> None:
    text = ("# A page\n\n## 47. The batch plan, `train/`: built (once)\n\n## Same\n\n## Same\n\n"
            "```bash\n# not a heading [x](nowhere.md)\n```\n\nsee [a](other.md#top), [b](https://x.org/y.md)\n")
    assert anchors(text) == {"a-page", "47-the-batch-plan-train-built-once", "same", "same-1"}
    assert local_links(text) == ["other.md#top"]
