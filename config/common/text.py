"""Text as Engram keeps it: short forms of long text (the names the admin shows, conversation
titles), and text from outside made storable (`storable`)."""

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


def storable(text: str) -> str:
    """`text` as PostgreSQL can store it and the tokenizer can read it: NULs dropped, a lone
    UTF-16 surrogate replaced by U+FFFD. For text Engram did not parse itself (a tool's answer,
    a model's arguments); a client's body is refused instead (config.common.jsonbody)."""
    text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a surrogate pair split in two code points is joined again
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text
