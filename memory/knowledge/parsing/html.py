"""HTML through BeautifulSoup (lxml): headings, text blocks, code and table rows, walked without
recursion so deeply nested markup cannot pass Python's recursion limit."""

from __future__ import annotations

import re
from collections.abc import Iterator

from memory.knowledge.parsing.base import HTML, Block, Extracted

_HTML_SKIP = {"script", "style", "noscript", "template", "svg", "nav", "footer", "head", "form"}
_HTML_BLOCK = {
    "p",
    "div",
    "li",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "pre",
    "blockquote",
    "table",
    "tr",
    "section",
    "article",
    "main",
    "header",
    "aside",
    "figure",
    "figcaption",
    "address",
    "br",
    "hr",
    "caption",
}


_END, _FLUSH = object(), object()  # extract's markers: children done; a block element ended


def extract(text: str) -> Extracted:
    """An HTML document's <title>, headings and text blocks; code in <pre> keeps its lines,
    a table row is one `a | b` line, navigation, scripts and forms are left out."""
    from bs4 import BeautifulSoup, Comment, NavigableString, Tag

    soup = BeautifulSoup(text, "lxml")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    blocks: list[Block] = []
    buffer: list[str] = []

    def flush() -> None:
        joined = re.sub(r"\s+", " ", " ".join(buffer)).strip().rstrip("|").strip()
        buffer.clear()
        if joined:
            blocks.append(Block("text", joined))

    # Walked with a stack of the open elements' children, not by recursion: a document of a
    # few thousand nested <div>s (55 kB) passed Python's recursion limit and failed to ingest.
    # A block element's children are followed by _FLUSH, which ends its text block.
    stack: list[Iterator[object]] = [iter((soup.body or soup).children)]
    while stack:
        child = next(stack[-1], _END)
        if child is _END:
            stack.pop()
        elif child is _FLUSH:
            flush()
        elif isinstance(child, Comment):
            continue
        elif isinstance(child, NavigableString):
            buffer.append(str(child))
        elif not isinstance(child, Tag) or child.name in _HTML_SKIP:
            continue
        elif re.fullmatch(r"h[1-6]", child.name):
            flush()
            heading = child.get_text(" ", strip=True)
            if heading:
                blocks.append(Block("heading", heading, level=int(child.name[1])))
        elif child.name == "pre":  # code: its lines and indentation as written
            flush()
            code = child.get_text().strip("\n")
            if code.strip():
                blocks.append(Block("text", code))
        elif child.name in ("td", "th"):
            buffer.append(child.get_text(" ", strip=True) + " |")
        elif child.name in _HTML_BLOCK:
            flush()
            stack += [iter((_FLUSH,)), iter(child.children)]
        else:
            stack.append(iter(child.children))
    flush()
    return Extracted(content_type=HTML, blocks=blocks, title=title)
