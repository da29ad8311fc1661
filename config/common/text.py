"""Short forms of long text, for the names the admin shows and for conversation titles."""

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
