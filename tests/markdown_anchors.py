"""Headings, anchors and links of a Markdown text, as GitHub renders them (for the docs tests).

GitHub gives each heading an anchor: its text in lower case, every character that is not a letter,
digit, ``-``, ``_`` or space dropped, each space turned into ``-``; a heading whose anchor is taken
already gets ``-1``, ``-2``, ... Lines inside code fences are not headings.
"""
from __future__ import annotations

import re

LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading's text (without its leading ``#``)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(text: str) -> list[str]:
    """The text of every heading of a Markdown text, outside code fences, in order."""
    found, in_fence = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        elif not in_fence and (m := re.match(r"#{1,6} (.+)$", line)):
            found.append(m[1])
    return found


def anchors(text: str) -> set[str]:
    """Every anchor a link into this text may name, duplicates numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    out = set()
    for heading in headings(text):
        base = github_anchor(heading)
        count = seen.get(base, 0)
        out.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return out


def local_links(text: str) -> list[str]:
    """The targets of the text's Markdown links that point inside the repository (no scheme)."""
    outside_code = re.sub(r"^```.*?^```$", "", text, flags=re.DOTALL | re.MULTILINE)
    return [m["target"] for m in LINK.finditer(outside_code) if not re.match(r"[a-z]+:", m["target"])]
