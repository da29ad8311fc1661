"""Word documents (DOCX, and the macro-enabled and template kinds) through python-docx:
paragraphs with their heading levels, tables as `a | b` lines, the text of content controls,
tracked insertions and text boxes that python-docx's own `text` leaves out, and what is wrong
with a file it cannot read."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator

from memory.knowledge.parsing.base import DOCX, Block, Extracted, ExtractionError

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


def extract(raw: bytes) -> Extracted:
    """A Word document's headings (by paragraph style), paragraphs and tables, in order;
    ExtractionError, in words for its owner, when it is damaged."""
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
