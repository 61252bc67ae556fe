"""Text, copies and pictures written whole (decision 99): the reports, configurations, logs copied
aside and figures of the commands, each through :func:`train.runtime.files.atomic_write`, so that a
refusal, a stop (Ctrl-C, SIGTERM), ``kill -9``, an exception or a full disk while one is written
leaves the file it would replace readable and byte-identical (at most a stray temporary file beside
it), and a full disk is the one-line :class:`train.runtime.files.NoRoomError`.

matplotlib is never imported here: :func:`save_figure` takes the figure its caller drew.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from train.runtime.files import atomic_write


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """``path`` holds ``text`` (UTF-8), written whole."""
    atomic_write(text.encode(), path)


def copy_file(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """``target`` holds the bytes of ``source``, written whole (``shutil.copyfile`` truncates the
    target before it copies)."""
    atomic_write(Path(source).read_bytes(), target)


def save_figure(figure: Any, path: str | os.PathLike[str], **options: Any) -> None:
    """matplotlib's ``figure.savefig(path, **options)``, in the format of ``path``'s suffix, drawn in
    memory and then written whole."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=Path(path).suffix.lstrip(".").lower() or None, **options)
    atomic_write(buffer.getbuffer(), path)
