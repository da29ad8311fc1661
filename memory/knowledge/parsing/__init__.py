"""Text and structure out of uploaded bytes: PDF, DOCX, HTML, Markdown, plain text.

The type is decided by the content (magic bytes, zip structure, markup), never by the name a
client gave the file. Extraction yields Blocks (headings and paragraphs) so chunking can follow
the document's own structure.

The package's layers, each importing only those before it: `base` (content types, Block,
Extracted, errors), `text` (decoding), `kinds` (detection), one module per format (`pdf`,
`word`, `html`, `markdown`), and this module, which picks the format and cleans what it yields.
"""

from __future__ import annotations

from memory.knowledge.parsing import html, markdown, pdf, word
from memory.knowledge.parsing.base import (
    DOCX,
    HTML,
    MARKDOWN,
    PDF,
    SUPPORTED,
    TEXT,
    Block,
    ExpandsTooFar,
    Extracted,
    ExtractionError,
    UnsupportedType,
    visible,
)
from memory.knowledge.parsing.kinds import detect
from memory.knowledge.parsing.markdown import markdown_blocks
from memory.knowledge.parsing.text import decode_text

__all__ = [
    "DOCX",
    "HTML",
    "MARKDOWN",
    "PDF",
    "SUPPORTED",
    "TEXT",
    "Block",
    "ExpandsTooFar",
    "Extracted",
    "ExtractionError",
    "UnsupportedType",
    "decode_text",
    "detect",
    "extract",
    "markdown_blocks",
    "visible",
]


def extract(
    raw: bytes, content_type: str | None = None, *, max_expanded: int | None = None
) -> Extracted:
    """The document's blocks and title, as PostgreSQL text can hold them: a NUL (a PDF's text
    operator, UTF-16 text, a text file past the 8 kB that `decode_text` samples) failed the
    chunks' insert, and the document with it, whatever re-ran it.

    ExpandsTooFar when the document unpacks to more than `max_expanded` bytes."""
    from config.common.jsonbody import storable  # imports DRF: this module runs without Django

    content_type = content_type or detect(raw, max_expanded=max_expanded)
    extracted = _extract(raw, content_type, max_expanded=max_expanded)
    extracted.title = storable(extracted.title).strip()
    blocks = []
    for block in extracted.blocks:
        block.text = storable(block.text).strip()
        if visible(block.text):
            blocks.append(block)
    extracted.blocks = blocks
    return extracted


def _extract(raw: bytes, content_type: str, *, max_expanded: int | None) -> Extracted:
    if content_type == PDF:
        return pdf.extract(raw, max_expanded=max_expanded)
    if content_type == DOCX:
        return word.extract(raw)
    text = decode_text(raw)
    if text is None:
        raise ExtractionError("the text could not be decoded")
    if content_type == HTML:
        return html.extract(text)
    return markdown.extract(text, content_type=content_type)
