"""Text and structure out of uploaded bytes: PDF, DOCX, HTML, Markdown, plain text.

The type is decided by the content (magic bytes, zip structure, markup), never by the name a
client gave the file. Extraction yields Blocks (headings and paragraphs) so chunking can follow
the document's own structure.
"""

from __future__ import annotations

import io
import re
import unicodedata
import zipfile
from collections.abc import Iterator
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


# --- detection ------------------------------------------------------------------------------

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


def decode_text(raw: bytes) -> str | None:
    """The bytes as text, or None when they look binary."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError:
            return None
    if b"\x00" in raw[:8192]:
        return None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = _mostly_utf8(raw) or _legacy_text(raw)
    sample = text[:8192]
    control = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\n\r\t\f")
    bad = sample.count("\ufffd")
    if sample and (control + bad) / len(sample) > 0.05:
        return None
    return text


def _legacy_text(raw: bytes) -> str:
    """Text in a legacy 8-bit or East Asian encoding: Windows-1252, unless read so it is mostly
    Latin-1 letters and symbols, which Western text never is (its accented letters are a few
    in a word) but Cyrillic, Greek or Chinese text read as Windows-1252 is ("Ïðèâåò, ìèð" for
    "Привет, мир", indexed as such): then the encoding charset_normalizer finds, when it reads
    the bytes whole. Guessed for Western text, it took "Café crème" for Windows-1250 ("crčme"),
    so it is asked only then."""
    text = raw.decode("cp1252", errors="replace")
    sample = [ch for ch in text[:8192] if not ch.isspace()]
    foreign = sum(1 for ch in sample if ord(ch) > 0x7F)
    if not sample or foreign / len(sample) < 0.4:
        return text
    import charset_normalizer

    guess = charset_normalizer.from_bytes(raw).best()
    guessed = str(guess) if guess is not None else ""
    return guessed if guessed and "\ufffd" not in guessed else text


def _mostly_utf8(raw: bytes) -> str | None:
    """UTF-8 with a few bytes that are not (a file cut inside a character, a stray Latin-1
    byte), those bytes as U+FFFD; None when the invalid sequences outnumber the valid non-ASCII
    characters (Windows-1252 text: its "é" followed by a space is never valid UTF-8). Read as
    cp1252, one such byte turned every accented letter of the document into two ("cafÃ©")."""
    text = raw.decode("utf-8-sig", errors="replace")
    invalid = text.count("\ufffd")
    valid = len(text) - len(text.encode("ascii", "ignore")) - invalid  # non-ASCII, decoded
    return text if valid > invalid else None


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
    if other := _markup_format(raw[:4096]):
        raise UnsupportedType(other)
    if _is_html(raw[:4096], decoded):
        return HTML
    if _MD_FEATURES.search(decoded[:20000]):
        return MARKDOWN
    return TEXT


# --- extraction -----------------------------------------------------------------------------


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
        return _pdf(raw, max_expanded=max_expanded)
    if content_type == DOCX:
        return _docx(raw)
    text = decode_text(raw)
    if text is None:
        raise ExtractionError("the text could not be decoded")
    if content_type == HTML:
        return _html(text)
    title, text = _front_matter(text)
    return Extracted(content_type=content_type, blocks=_markdown_blocks(text), title=title)


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


def _pdf(raw: bytes, *, max_expanded: int | None = None) -> Extracted:
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


_DOCX_HEADING = re.compile(r"^(?:heading|überschrift|titre)\s*(\d)$", re.IGNORECASE)


# Word's other kinds of the same document: macro-enabled (.docm), a template (.dotx, .dotm).
# python-docx's Document() opens only the first kind's main part, and each of these failed as
# "the DOCX file is damaged: its parts do not make a Word document".
_WORD_MAIN_TYPES = (
    "application/vnd.ms-word.document.macroEnabled.main+xml",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.template.main+xml",
    "application/vnd.ms-word.template.macroEnabledTemplate.main+xml",
)


def _word_document(raw: bytes):
    """python-docx's Document of a Word file of any of its kinds (its macros never run: they
    are a part no one reads)."""
    from docx.opc.part import PartFactory
    from docx.package import Package
    from docx.parts.document import DocumentPart

    for content_type in _WORD_MAIN_TYPES:
        PartFactory.part_type_for.setdefault(content_type, DocumentPart)
    part = Package.open(io.BytesIO(raw)).main_document_part
    if not isinstance(part, DocumentPart):
        raise ValueError(f"its main part is {part.content_type}")
    return part.document


def _docx(raw: bytes) -> Extracted:
    from docx.table import Table

    try:
        document = _word_document(raw)
        blocks: list[Block] = []
        for item in _docx_items(document.element.body, document._body):
            if isinstance(item, Table):
                table = _docx_table(item)
                if table:
                    blocks.append(Block("text", table))
                continue
            text = _docx_text(item._p).strip()
            if not text:
                continue
            style = (item.style.name if item.style is not None else "") or ""
            match = _DOCX_HEADING.match(style)
            if style.lower() == "title":  # above Heading 1, so sections nest under it
                blocks.append(Block("heading", text, level=0))
            elif match:
                blocks.append(Block("heading", text, level=int(match.group(1))))
            else:
                blocks.append(Block("text", text))
        title = (document.core_properties.title or "").strip()
    except Exception:  # lxml's XMLSyntaxError, a missing part, a bad CRC: a damaged file
        raise ExtractionError(f"the DOCX file is damaged: {_docx_damage(raw)}") from None
    return Extracted(content_type=DOCX, blocks=blocks, title=title)


def _docx_items(element, parent) -> Iterator:
    """The paragraphs and tables of a body or a table cell, in order, those inside a content
    control (`w:sdt`) too: python-docx's iter_inner_content skips those, and a document made
    from a template (its body in controls: a form, a cover page, a letterhead) lost their text."""
    from docx.oxml.ns import qn
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    for child in element.iterchildren():
        if child.tag == qn("w:p"):
            yield Paragraph(child, parent)
        elif child.tag == qn("w:tbl"):
            yield Table(child, parent)
        elif child.tag == qn("w:sdt"):
            content = child.find(qn("w:sdtContent"))
            if content is not None:
                yield from _docx_items(content, parent)


# Word's markup-compatibility fallback repeats a text box's text (as VML) beside its DrawingML.
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"


def _docx_text(paragraph) -> str:
    """A paragraph's text as Word shows it: its runs wherever they sit — in a tracked insertion
    (`w:ins`), an inline content control, a field's result, a text box — which python-docx's
    `paragraph.text` leaves out (it reads runs and hyperlinks only). Each run's text is
    python-docx's (tabs, line breaks); deleted text (`w:delText`) and field codes are no run's."""
    from docx.oxml.ns import qn

    return "".join(
        run.text
        for run in paragraph.iter(qn("w:r"))
        if not any(ancestor.tag == _MC_FALLBACK for ancestor in run.iterancestors())
    )


def _docx_table(table) -> str:
    """A table's rows as `a | b` lines; a cell's own tables follow its paragraphs (python-docx's
    `cell.text` holds the paragraphs alone, and a table nested in a cell was lost)."""
    from docx.table import Table

    def cell_text(cell) -> str:
        parts = [
            _docx_table(part) if isinstance(part, Table) else _docx_text(part._p).strip()
            for part in _docx_items(cell._tc, cell)
        ]
        return "\n".join(p for p in parts if p).strip()

    rows = []
    for row in table.rows:
        cells = [cell_text(cell) for cell in row.cells]
        rows.append(" | ".join(dict.fromkeys(c for c in cells if c)))
    return "\n".join(r for r in rows if r)


_DOCX_REQUIRED = ("word/document.xml", "[Content_Types].xml", "_rels/.rels")


def _docx_damage(raw: bytes) -> str:
    """What is wrong with a Word document python-docx could not read, in words for its owner
    (the document's `error`): lxml's message ("Namespace prefix w on document is not defined,
    line 1, column 12 (<string>, line 1)") says nothing to them. The first part that does not
    read as XML, the text first, else a part that is missing."""
    from docx.oxml.parser import parse_xml  # the parser python-docx read the parts with

    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
        names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "it is not a readable zip archive"
    order = {name: i for i, name in enumerate(_DOCX_REQUIRED)}
    for name in sorted(names, key=lambda n: (order.get(n, len(order)), n)):
        if not name.endswith((".xml", ".rels")):
            continue
        try:
            parse_xml(archive.read(name))
        except Exception:  # not XML, a bad CRC, a broken deflate stream
            return f"its {name.rsplit('/', 1)[-1]} could not be read"
    for name in _DOCX_REQUIRED:
        if name not in names:
            return f"its {name.rsplit('/', 1)[-1]} is missing"
    return "its parts do not make a Word document"


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


_END, _FLUSH = object(), object()  # _html's markers: children done; a block element ended


def _html(text: str) -> Extracted:
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


def _front_matter(text: str) -> tuple[str, str]:
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


def _markdown_blocks(text: str) -> list[Block]:
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


def _reason(exc: Exception) -> str:
    message = str(exc).strip() or type(exc).__name__
    return message[:300]
