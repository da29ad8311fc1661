"""What every format's parser shares: the content types Engram reads, the Block and Extracted
an extraction yields, the errors it raises, and `visible` (whether a text shows anything)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
HTML = "text/html"
MARKDOWN = "text/markdown"
TEXT = "text/plain"

SUPPORTED = (PDF, DOCX, HTML, MARKDOWN, TEXT)


def visible(text: str) -> bool:
    """Whether `text` shows anything: str.strip() keeps zero-width spaces, joiners and BOMs
    (format characters), and a document of those was chunked and put before the model as an
    empty passage for any question."""
    return any(not c.isspace() and unicodedata.category(c) != "Cf" for c in text)


class UnsupportedType(Exception):
    """The bytes are none of the supported formats."""


class ExpandsTooFar(Exception):
    """A document that would unpack to more than the caller allows: a zip archive (DOCX) whose
    parts declare `size` bytes in all, or a PDF whose decompressed page contents or text passed
    the limit (`size`: what was read when extraction stopped, a lower bound)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"it unpacks to {size} bytes")
        self.size = size


class ExtractionError(Exception):
    """The bytes claim a supported format but cannot be read; the message says why."""


@dataclass
class Block:
    kind: str  # "heading" or "text"
    text: str
    level: int = 0  # heading level, 1 = top
    page: int | None = None


@dataclass
class Extracted:
    content_type: str
    blocks: list[Block] = field(default_factory=list)
    pages: int = 0
    title: str = ""
