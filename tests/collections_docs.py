"""Documents for the collection tests and benchmark, written here: no downloaded fixtures.

`pdf_bytes` writes a minimal valid PDF by hand (catalog, pages, Helvetica, one content stream
per page, a correct xref table); `docx_bytes` uses python-docx's writer.
"""

from __future__ import annotations

import io
import textwrap


def _pdf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def pdf_bytes(pages: list[str], *, title: str = "", compress: bool = False) -> bytes:
    """A PDF with one page per string; each string's lines are wrapped at 90 characters.
    `compress`: the content streams deflated (/FlateDecode), as most writers store them."""
    import zlib

    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in once the page tree's number is known
    pages_obj = add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    info = add(f"<< /Title ({_pdf_escape(title)}) >>".encode()) if title else None
    kids = []
    for text in pages:
        lines = []
        for paragraph in text.split("\n"):
            lines += textwrap.wrap(paragraph, 90) or [""]
        ops = ["BT", "/F1 10 Tf", "13 TL", "50 790 Td"]
        for line in lines[:58]:
            ops.append(f"({_pdf_escape(line)}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1", "replace")
        filters = b""
        if compress:
            stream, filters = zlib.compress(stream, 9), b" /Filter /FlateDecode"
        content = add(
            b"<< /Length %d%s >>\nstream\n" % (len(stream), filters) + stream + b"\nendstream"
        )
        kids.append(
            add(
                f"<< /Type /Page /Parent {pages_obj} 0 R /MediaBox [0 0 595 842] "
                f"/Resources << /Font << /F1 {font} 0 R >> >> /Contents {content} 0 R >>".encode()
            )
        )
    objects[catalog - 1] = f"<< /Type /Catalog /Pages {pages_obj} 0 R >>".encode()
    refs = " ".join(f"{k} 0 R" for k in kids)
    objects[pages_obj - 1] = f"<< /Type /Pages /Kids [{refs}] /Count {len(kids)} >>".encode()

    return _pdf_file(objects, root=catalog, info=info)


def pdf_form_bytes(text: str, *, draws: int) -> bytes:
    """A one-page PDF that draws one form XObject (`text` on it) `draws` times: a few kB whose
    text is `draws` times `text`."""
    import zlib

    shown = f"BT /F1 10 Tf 50 700 Td ({_pdf_escape(text)}) Tj ET".encode("latin-1", "replace")
    drawn = zlib.compress(b"/Fm0 Do\n" * draws, 9)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [6 0 R] /Count 1 >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Type /XObject /Subtype /Form /BBox [0 0 595 842] /Resources << /Font << /F1 3 0 R"
        b" >> >> /Length %d >>\nstream\n" % len(shown) + shown + b"\nendstream",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(drawn) + drawn + b"\nendstream",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R"
        b" >> /XObject << /Fm0 4 0 R >> >> /Contents 5 0 R >>",
    ]
    return _pdf_file(objects, root=1)


def corrupt_pdf_bytes() -> bytes:
    """Starts like a PDF, then is nothing of the sort."""
    return b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 9 0 R\n" + b"\x8f\x00garbage" * 200


def docx_bytes(sections: list[tuple[str, list[str]]], *, title: str = "") -> bytes:
    """A Word document: a title, then per section a Heading 1 and its paragraphs (and a table)."""
    import docx

    document = docx.Document()
    if title:
        document.core_properties.title = title
        document.add_heading(title, level=0)
    for heading, paragraphs in sections:
        document.add_heading(heading, level=1)
        for paragraph in paragraphs:
            document.add_paragraph(paragraph)
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Part", "Supplier"
    table.cell(1, 0).text, table.cell(1, 1).text = "Flux capacitor", "Zephyr Industries"
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def docx_with_parts(raw: bytes, parts: dict[str, bytes | None]) -> bytes:
    """The Word document `raw` with some parts replaced (bytes) or left out (None)."""
    import zipfile

    source = zipfile.ZipFile(io.BytesIO(raw))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in source.namelist():
            data = parts.get(name, source.read(name))
            if data is not None:
                archive.writestr(name, data)
    return out.getvalue()


def _pdf_file(objects: list[bytes], *, root: int, info: int | None = None) -> bytes:
    """A PDF of numbered `objects` (1 up), its cross-reference table and trailer."""
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    trailer = f"<< /Size {len(objects) + 1} /Root {root} 0 R"
    trailer += f" /Info {info} 0 R >>" if info else " >>"
    out.write(b"trailer\n" + trailer.encode() + b"\nstartxref\n%d\n%%%%EOF\n" % xref)
    return out.getvalue()
