"""Text as Engram keeps it: short forms of long text (the names the admin shows, conversation
titles). Text from outside made storable: config.common.jsonbody.storable."""

from __future__ import annotations


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
