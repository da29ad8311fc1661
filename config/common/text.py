"""Text as Engram keeps it: short forms of long text (the names the admin shows, conversation
titles), passages with their lines. Text from outside made storable:
config.common.jsonbody.storable."""

from __future__ import annotations

import re

_BLANK_RUN = re.compile(r"\n{3,}")


def shorten(text: str, limit: int) -> str:
    """`text` on one line, cut to at most `limit` characters at a word boundary, with "…"."""
    line = " ".join(text.split())
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 3:  # a very long first word is cut inside it rather than dropped
        cut = cut[:space]
    return cut.rstrip(" ,;:.-–—") + "…"


def tidy_lines(text: str) -> str:
    """`text` with its line structure: trailing spaces off each line, runs of blank lines cut to
    one, none at either end. Indentation and single line breaks stay: a code block, a table or a
    list read as run-on text once flattened to one line."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return _BLANK_RUN.sub("\n\n", "\n".join(lines)).strip("\n")
