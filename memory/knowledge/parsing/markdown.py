"""Markdown and plain text: front matter (its title), ATX and setext headings, paragraphs, and
fenced code kept as one block whose '#' lines are no headings."""

from __future__ import annotations

import re

from memory.knowledge.parsing.base import Block, Extracted

# The closing #s are taken off in _atx_text: `(.*?)\s*#*\s*$` tried every split of a run of
# spaces between its three parts at each character, cubic (a 10 kB heading line of spaces
# outlasted the ingestion's hard time limit), and it cut a word's own '#' ("C#").
_ATX = re.compile(r"^\s{0,3}(#{1,6})\s+(.*)$")
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_SETEXT = re.compile(r"^\s{0,3}(=+|-+)\s*$")


# A static site's page (Jekyll, Hugo, Docusaurus, MkDocs) opens with its metadata between two
# `---` lines (YAML) or two `+++` lines (TOML). Read as Markdown, its lines were the first
# passage and the first heading below them the title ("Exceptions" for a page titled "Refund
# policy" in its front matter).
_FRONT_MATTER_KEY = re.compile(r"^[A-Za-z0-9_.-]+[ \t]*[:=]([ \t]|$)")
_FRONT_MATTER_TITLE = re.compile(r"^title[ \t]*[:=][ \t]*(.*?)[ \t]*$", re.IGNORECASE)
_FRONT_MATTER_LINES = 200


def front_matter(text: str) -> tuple[str, str]:
    """(its `title`, the text after it) for a text opening with front matter; else ("", text).
    Each of its lines is a key, an indented or list line (a value's), a comment or blank: a
    text opening with a thematic break keeps it."""
    lines = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    fence = lines[0].rstrip()
    if fence not in ("---", "+++"):
        return "", text
    closes = (fence, "...") if fence == "---" else (fence,)
    title, keys = "", 0
    for number, line in enumerate(lines[1:_FRONT_MATTER_LINES], start=1):
        if line.rstrip() in closes:
            if not keys:
                return "", text
            return title, "\n".join(lines[number + 1 :])
        if _FRONT_MATTER_KEY.match(line):
            keys += 1
            if not title and (match := _FRONT_MATTER_TITLE.match(line)):
                title = match.group(1).strip("\"'")
                title = "" if title[:1] in ("|", ">") else title  # a block scalar's
        elif line.strip() and line[0] not in " \t-#[":
            return "", text  # prose: not front matter
    return "", text


def _atx_text(rest: str) -> str:
    """An ATX heading's text without its closing sequence: #s alone or after a space."""
    rest = rest.strip()
    bare = rest.rstrip("#")
    return bare.strip() if not bare or bare[-1] in " \t" else rest


def markdown_blocks(text: str) -> list[Block]:
    """Headings (ATX and setext) and paragraphs; fenced code stays one block, its '#' no heading."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks: list[Block] = []
    para: list[str] = []
    fence: str | None = None

    def flush() -> None:
        joined = "\n".join(para).strip()
        para.clear()
        if joined:
            blocks.append(Block("text", joined))

    for line in lines:
        if fence is not None:
            para.append(line)
            if line.strip().startswith(fence):
                fence = None
                flush()
            continue
        if match := _FENCE.match(line):
            flush()
            fence = match.group(1)
            para.append(line)
            continue
        if match := _ATX.match(line):
            flush()
            if heading := _atx_text(match.group(2)):
                blocks.append(Block("heading", heading, level=len(match.group(1))))
            continue
        if setext := _SETEXT.match(line):
            if len(para) == 1 and para[0].strip():
                level = 1 if setext.group(1).startswith("=") else 2
                blocks.append(Block("heading", para.pop().strip(), level=level))
                continue
            if not para:
                continue  # a thematic break
        if not line.strip():
            flush()
            continue
        para.append(line.rstrip())
    flush()
    return blocks


def extract(text: str, *, content_type: str) -> Extracted:
    """A Markdown or plain text document (plain text is Markdown without its markup): the title
    its front matter gives, and its blocks."""
    title, text = front_matter(text)
    return Extracted(content_type=content_type, blocks=markdown_blocks(text), title=title)
