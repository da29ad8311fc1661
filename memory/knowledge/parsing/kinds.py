"""What a file is, by its content (magic bytes, zip structure, markup), never by the name a
client gave it: `detect` returns one of the supported content types, or raises UnsupportedType
naming what the file is instead (a legacy Office file, an image, RTF, SVG), and ExpandsTooFar
for a Word document whose parts declare more than the caller allows."""

from __future__ import annotations

import io
import re
import zipfile

from memory.knowledge.parsing.base import (
    DOCX,
    HTML,
    MARKDOWN,
    PDF,
    TEXT,
    ExpandsTooFar,
    UnsupportedType,
)
from memory.knowledge.parsing.text import decode_text

# A comment's text cannot contain "-->", so each comment matches one way: with `.*?` a run of
# comments could be grouped 2^n ways, each tried before a file that is not HTML was let go
# (a 4 kB upload of "<!---->" held a web process for ever).
_HTML_START = re.compile(
    rb"^\s*(<\?xml[^>]*>\s*)?(<!--(?:[^-]|-(?!->))*-->\s*)*<(!doctype\s+html|html|head|body)\b",
    re.IGNORECASE,
)
_HTML_TAGS = re.compile(rb"<(p|div|h[1-6]|ul|ol|li|table|article|section|br)\b[^>]*>", re.I)
# A list item's indentation is spaces and tabs: `\s*` ran on across the following lines at
# every line start, quadratic in a run of blank lines (20 kB of them: 5 s of a web process).
_MD_FEATURES = re.compile(
    r"^(#{1,6}\s+\S|```|~~~|[ \t]*[-*+]\s+\S|[ \t]*\d+[.)]\s+\S|>\s|.*\]\(\S+\)|={3,}\s*$|-{3,}\s*$)",
    re.MULTILINE,
)
# Markdown's own structure, which HTML has no use for: an ATX heading or a code fence opening a
# line. Markdown embeds HTML (a README's centered logo and title, a guide naming `<p>`), and its
# tags made such a file HTML: BeautifulSoup then joined its code blocks and headings into one
# line and dropped the tags it named (tests/test_collections_extract.py).
_MD_STRUCTURE = re.compile(r"^[ \t]{0,3}(#{1,6}[ \t]+\S|```|~~~)", re.MULTILINE)
# Where an HTML fragment's own text keeps its lines (a shell comment in <pre> is no heading).
_HTML_VERBATIM = re.compile(r"<(/?)(pre|script|style|textarea)\b", re.IGNORECASE)
_CODE_SPAN = re.compile(rb"`[^`\n]*`")


def _outside_verbatim(text: str) -> str:
    """`text` without what its <pre>, <script>, <style> and <textarea> elements hold: one pass
    over their tags, never a search from each opening tag for its end."""
    kept: list[str] = []
    depth, start = 0, 0
    for tag in _HTML_VERBATIM.finditer(text):
        if tag.group(1):  # a closing tag
            if depth:
                depth -= 1
                if not depth:
                    start = tag.end()
        else:
            if not depth:
                kept.append(text[start : tag.start()])
            depth += 1
    if not depth:
        kept.append(text[start:])
    return "".join(kept)


def _is_html(head: bytes, text: str) -> bool:
    """An HTML document, or a fragment of HTML tags that is not Markdown with tags in it."""
    if _HTML_START.match(head):
        return True
    if len(_HTML_TAGS.findall(_CODE_SPAN.sub(b"", head))) < 3:
        return False
    return not _MD_STRUCTURE.search(_outside_verbatim(text[:20000]))


# Formats written as text that Engram does not read: their markup was indexed as the document's
# words ("{\\rtf1\\ansi\\ansicpg1252 ... \\f0\\fs24 \\cf0 The boiler room key ...").
_OTHER_MARKUP = [
    (re.compile(rb"^\s*\{\\rtf"), "an RTF document"),
    (re.compile(rb"^\s*%!PS"), "a PostScript file"),
    (
        re.compile(
            rb"^\s*(<\?xml[^>]*>\s*)?(<!--(?:[^-]|-(?!->))*-->\s*)*(<!doctype\s+svg[^>]*>\s*)?<svg\b",
            re.I,
        ),
        "an SVG image",
    ),
]


# Binary files people upload by mistake, named so the refusal says what to do: a Word 97-2003
# .doc was "binary content that is not PDF or DOCX".
_BINARY_FORMATS = [
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "a legacy Office file (.doc, .xls, .ppt): save it as DOCX or PDF",
    ),
    (b"\x89PNG", "an image (PNG): Engram does not read text in images"),
    (b"\xff\xd8\xff", "an image (JPEG): Engram does not read text in images"),
]


def _binary_format(raw: bytes) -> str:
    named = (name for magic, name in _BINARY_FORMATS if raw.startswith(magic))
    return next(named, "binary content that is not PDF or DOCX")


def _markup_format(head: bytes) -> str | None:
    """What `head` opens, when it is one of the text formats Engram does not read."""
    head = head.lstrip(b"\xef\xbb\xbf")
    return next((name for pattern, name in _OTHER_MARKUP if pattern.match(head)), None)


def detect(raw: bytes, *, max_expanded: int | None = None, text: bool = False) -> str:
    """The content type of `raw`, by content; UnsupportedType when it is none we read, and
    ExpandsTooFar for a Word document whose parts unpack to more than `max_expanded` bytes
    (deflate packs up to ~1,000:1: a 10 MB upload could unpack to 10 GB in the worker).

    `text`: `raw` is a text the client sent as text (a JSON body's `text`, UTF-8), never a
    PDF or a Word document: one opening with "%PDF-" was read as a PDF, and failed."""
    if not text and raw.lstrip(b"\xef\xbb\xbf \t\r\n")[:5] == b"%PDF-":
        return PDF
    if not text and raw[:4] == b"PK\x03\x04":
        try:
            parts = zipfile.ZipFile(io.BytesIO(raw)).infolist()
        except (zipfile.BadZipFile, OSError, ValueError):
            raise UnsupportedType("a damaged zip archive") from None
        if not any(part.filename == "word/document.xml" for part in parts):
            raise UnsupportedType("a zip archive that is not a Word document")
        # The sizes the archive declares bound what reading it yields: zipfile stops a part
        # at its declared size (and fails its CRC check when the data says otherwise).
        expanded = sum(part.file_size for part in parts)
        if max_expanded is not None and expanded > max_expanded:
            raise ExpandsTooFar(expanded)
        return DOCX
    decoded = decode_text(raw)
    if decoded is None:
        raise UnsupportedType(_binary_format(raw))
    # The markup is looked for in the decoded text, not in the bytes: a page saved as UTF-16
    # (Windows' "Unicode") has a NUL between its letters, so its tags matched nothing and it
    # was indexed as plain text, every tag a word of its passages.
    head = decoded[:4096].encode("utf-8", "replace")
    if other := _markup_format(head):
        raise UnsupportedType(other)
    if _is_html(head, decoded):
        return HTML
    if _MD_FEATURES.search(decoded[:20000]):
        return MARKDOWN
    return TEXT
