"""PDF: each page's text through pypdf, its decompressed contents and text counted against the
caller's limit as they are read, the lines reflowed into paragraphs."""

from __future__ import annotations

import io
import re

from memory.knowledge.parsing.base import PDF, Block, ExpandsTooFar, Extracted, ExtractionError


def _paragraphs(text: str, page: int | None = None) -> list[Block]:
    parts = re.split(r"\n\s*\n", text.replace("\r\n", "\n").replace("\r", "\n"))
    blocks = []
    for part in parts:
        cleaned = re.sub(r"[ \t]+", " ", part).strip()
        if cleaned:
            blocks.append(Block("text", cleaned, page=page))
    return blocks


class _Expansion:
    """What a PDF has unpacked to so far, against the limit (a DOCX declares its parts' sizes
    up front; a PDF's streams are only known decompressed). pypdf stops each stream at 75 MB,
    but not their sum: a small file of many highly compressed streams took the worker's
    memory, its decoded streams kept by the reader and its text in the blocks."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.size = 0

    def add(self, size: int) -> None:
        self.size += size
        if self.limit is not None and self.size > self.limit:
            raise ExpandsTooFar(self.size)

    def page_text(self, page) -> str:
        """The page's text, its content streams counted as they are decompressed and its text
        as pypdf reports it: it stops at the limit, not after reading the whole page."""
        from pypdf.generic import StreamObject

        contents = page.get("/Contents")
        contents = contents.get_object() if contents is not None else None
        for item in contents if isinstance(contents, list) else [contents]:
            stream = item.get_object() if item is not None else None
            if isinstance(stream, StreamObject):  # decoded once: extract_text reuses it
                self.add(len(stream.get_data()))

        def count(text: str, *_: object) -> None:
            self.add(len(text))  # past the limit, every later piece raises again

        text = page.extract_text(visitor_text=count) or ""
        # pypdf logs and swallows an error inside a form XObject; the page's next piece stops
        # it (a small form drawn thousands of times made megabytes of text), else this does.
        self.add(0)
        return text


def extract(raw: bytes, *, max_expanded: int | None = None) -> Extracted:
    """A PDF's text, its hard-wrapped lines joined into paragraphs, each block with its page;
    ExtractionError for an encrypted, damaged or empty file, ExpandsTooFar past `max_expanded`
    bytes of decompressed contents or text."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    expansion = _Expansion(max_expanded)
    try:
        reader = PdfReader(io.BytesIO(raw), strict=False)
        if reader.is_encrypted:
            try:
                if not reader.decrypt(""):
                    raise ExtractionError("the PDF is encrypted with a password")
            except NotImplementedError as exc:
                raise ExtractionError(f"the PDF's encryption is not supported: {exc}") from None
        pages = list(reader.pages)
        blocks: list[Block] = []
        for number, page in enumerate(pages, start=1):
            blocks += _paragraphs(_reflow(expansion.page_text(page)), page=number)
        title = ""
        if reader.metadata and reader.metadata.title:
            title = str(reader.metadata.title).strip()
    except (ExtractionError, ExpandsTooFar):
        raise
    except (
        PyPdfError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        OSError,
        NotImplementedError,  # a stream filter pypdf does not know: its words name it
    ) as exc:
        raise ExtractionError(f"the PDF could not be read: {_reason(exc)}") from None
    except Exception as exc:  # an `assert` or IndexError deep in pypdf: a damaged file too,
        # whose message ("mypy") says nothing to its owner; escaping, it failed the document
        # as a crash to "re-run", which cannot help
        raise ExtractionError(
            f"the PDF could not be read: it is damaged ({type(exc).__name__} in pypdf)"
        ) from None
    if not pages:
        raise ExtractionError("the PDF has no pages")
    return Extracted(content_type=PDF, blocks=blocks, pages=len(pages), title=title)


def _reflow(text: str) -> str:
    """Join a PDF page's hard-wrapped lines into paragraphs (blank-line separated).

    A line ends its paragraph when it is blank, or when it ends a sentence well short of the
    page's line width; a word hyphenated across lines is joined again.
    """
    lines = [line.rstrip() for line in text.replace("\r", "").split("\n")]
    width = max((len(line) for line in lines), default=0)
    out: list[str] = []
    current = ""
    for line in lines:
        stripped = line.strip()
        if not stripped:
            if current:
                out.append(current)
            current = ""
            continue
        if current.endswith("-") and stripped[:1].islower():
            current = current[:-1] + stripped
        else:
            current = f"{current} {stripped}" if current else stripped
        if stripped[-1] in ".!?:" and len(line) < 0.8 * width:
            out.append(current)
            current = ""
    if current:
        out.append(current)
    return "\n\n".join(out)


def _reason(exc: Exception) -> str:
    message = str(exc).strip() or type(exc).__name__
    return message[:300]
