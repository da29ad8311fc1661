"""Which kind of text an upload is read as, over HTTP: Markdown with HTML in it, a static site's
page with front matter, a JSON `text` that opens like a PDF. Each is uploaded, ingested in this
process (no worker: the task sent is purged by the next worker fixture) and read back as a
client reads it: the document's type and title, and the chunks a search returns."""

import io
import zipfile

from memory.knowledge import services
from tests.collections_docs import docx_bytes

README = b"""<div align="center">
  <img src="logo.png" width="120">
  <h1>Frobnicator</h1>
  <p>Fast frobnication for everyone.</p>
</div>

## Installation

Run the installer:

```bash
pip install frobnicator
frob --init   # creates ~/.frob
```

## Configuration

Set `FROB_LEVEL` to 3 for maximum frobnication.
"""

GUIDE = b"""# HTML cheat sheet

Wrap each paragraph in `<p>` and group blocks in `<div>`. A line break is `<br>`.

Never nest a `<div>` inside a `<p>`.
"""

PAGE = b"""---
title: "Refund policy"
sidebar_position: 3
tags:
  - billing
---

Customers can request a refund within 30 days of purchase.

## Exceptions

Gift cards are never refunded.
"""


def _upload(http, collection_id: str, name: str, raw: bytes) -> dict:
    resp = http.post(
        f"/v1/collections/{collection_id}/documents",
        files={"file": (name, raw, "application/octet-stream")},
    )
    assert resp.status_code == 202, resp.text
    return resp.json()


def _ingested(http, document: dict) -> dict:
    assert services.document_ingest(document_id=document["id"]) == "ready"
    return http.get(
        f"/v1/collections/{document['collection_id']}/documents/{document['id']}"
    ).json()


def _chunks(http, document: dict, query: str) -> list[dict]:
    resp = http.post(
        "/v1/collections/search",
        json={"collection_ids": [document["collection_id"]], "query": query, "limit": 20},
    )
    assert resp.status_code == 200, resp.text
    return [hit for hit in resp.json()["data"] if hit["document_id"] == document["id"]]


def test_markdown_with_html_in_it_keeps_its_code_headings_and_the_tags_it_names(http):
    """A README opening with centered HTML, and a guide naming tags in code spans, were typed
    HTML by their tags: the code block came back as one line ("```bash pip install frobnicator
    frob --init # creates ~/.frob ```"), the headings as words in it, and "`<p>`" as "``"."""
    col = http.post("/v1/collections", json={"name": "Docs"}).json()["id"]
    readme = _upload(http, col, "README.md", README)
    guide = _upload(http, col, "html-guide.md", GUIDE)
    assert readme["content_type"] == guide["content_type"] == "text/markdown"

    _ingested(http, readme)
    install = _chunks(http, readme, "How do I install frobnicator?")
    code = next(hit for hit in install if "pip install frobnicator" in hit["text"])
    assert "pip install frobnicator\nfrob --init   # creates ~/.frob\n```" in code["text"]
    assert code["heading"].endswith("Installation")

    _ingested(http, guide)
    texts = [hit["text"] for hit in _chunks(http, guide, "paragraph tag")]
    assert any("Wrap each paragraph in `<p>` and group blocks in `<div>`." in t for t in texts)


def test_an_html_fragment_is_still_read_as_html(http):
    col = http.post("/v1/collections", json={"name": "Pages"}).json()["id"]
    fragment = b"<div><h2>Hours</h2><p>Open 9 to 5.</p><pre>\n# not a heading\n</pre></div>"
    document = _upload(http, col, "hours.html", fragment)
    assert document["content_type"] == "text/html"


def test_a_page_or_memo_saved_as_utf16_is_read_as_what_it_is(http):
    """Windows saves "Unicode" text as UTF-16: a NUL between the letters, so the markup looked
    for in the bytes matched nothing, and an HTML page was plain text, its tags indexed as the
    passage's words ("<html><body><h1>Hours</h1><p>Open 9 to 5..."); an RTF memo likewise."""
    col = http.post("/v1/collections", json={"name": "Exports"}).json()["id"]
    page = (
        "<html><body><h1>Hours</h1><p>The front desk opens at nine every weekday.</p></body></html>"
    )
    document = _upload(http, col, "hours.htm", page.encode("utf-16"))
    assert document["content_type"] == "text/html"
    texts = [hit["text"] for hit in _chunks(http, _ingested(http, document), "front desk hours")]
    assert texts == ["The front desk opens at nine every weekday."]
    resp = http.post(
        f"/v1/collections/{col}/documents",
        files={"file": ("memo.rtf", RTF.decode().encode("utf-16"), "text/plain")},
    )
    assert resp.status_code == 415 and "an RTF document" in resp.json()["error"]["message"]


def test_front_matter_gives_the_title_and_is_no_passage(http):
    """The page's metadata lines were its first passage ("title: Refund policy
    sidebar_position: 3 ---") and its first heading its title ("Exceptions")."""
    col = http.post("/v1/collections", json={"name": "Site"}).json()["id"]
    page = _ingested(http, _upload(http, col, "refunds.md", PAGE))
    assert page["title"] == "Refund policy"
    texts = [hit["text"] for hit in _chunks(http, page, "refund within 30 days")]
    assert "Customers can request a refund within 30 days of purchase." in texts
    assert not any("sidebar_position" in t or "---" in t for t in texts)


def test_a_json_text_opening_like_a_pdf_is_text(http):
    """A JSON `text` is text: one opening with "%PDF-" was typed a PDF and failed ("the PDF
    could not be read")."""
    col = http.post("/v1/collections", json={"name": "Specs"}).json()["id"]
    resp = http.post(
        f"/v1/collections/{col}/documents",
        json={"text": "%PDF-1.7 is the version of the format our exporter writes."},
    )
    assert resp.status_code == 202, resp.text
    assert resp.json()["content_type"] == "text/plain"
    assert _ingested(http, resp.json())["status"] == "ready"


RTF = rb"""{\rtf1\ansi\ansicpg1252\cocoartf2709
{\fonttbl\f0\fswiss\fcharset0 Helvetica;}
\pard\tx566\pardirnatural\partightenfactor0
\f0\fs24 \cf0 The boiler room key hangs behind the blue door.}"""


def test_text_formats_engram_does_not_read_are_refused_not_indexed_as_markup(http):
    """An RTF memo (TextEdit's and WordPad's format) was accepted as plain text and its control
    words became the passage the model read; an SVG or PostScript file likewise."""
    col = http.post("/v1/collections", json={"name": "Memos"}).json()["id"]
    url = f"/v1/collections/{col}/documents"
    for name, raw, kind in [
        ("memo.rtf", RTF, "an RTF document"),
        ("logo.svg", b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        ("page.ps", b"%!PS-Adobe-3.0\n72 720 moveto (Hi) show\n", "PostScript"),
    ]:
        resp = http.post(url, files={"file": (name, raw, "text/plain")})
        assert resp.status_code == 415, resp.text
        error = resp.json()["error"]
        assert (error["code"], error["param"]) == ("unsupported_file_type", "file")
        assert kind in error["message"] and "Send PDF, DOCX" in error["message"]
    resp = http.post(url, json={"text": RTF.decode()})
    assert resp.status_code == 415 and resp.json()["error"]["param"] == "text", resp.text
    assert http.get(url).json()["data"] == []


def test_a_document_of_several_top_sections_is_not_titled_by_the_first(http):
    """The first heading titled the whole document: the expenses section of a Word document
    with two Heading 1 sections reached the model as <document title="Vacation policy"
    heading="Expenses">, and a page opening with an introduction was titled by its first
    section ("Exceptions"). A heading titles the document when it opens it and has no peer."""
    col = http.post("/v1/collections", json={"name": "Policies"}).json()["id"]
    sections = [
        ("Vacation policy", ["Employees get 27 days of paid vacation per year."]),
        ("Expenses", ["Meals are reimbursed up to 45 euros per day."]),
    ]
    policies = _ingested(http, _upload(http, col, "policies.docx", docx_bytes(sections)))
    assert policies["title"] == "policies.docx"
    meals = _chunks(http, policies, "How much are meals reimbursed?")[0]
    assert "45 euros" in meals["text"]
    assert (meals["title"], meals["heading"]) == ("policies.docx", "Expenses")
    context = http.post(
        "/v1/context",
        headers={"x-collection-ids": f'["{col}"]'},
        json={"model": "local", "messages": [{"role": "user", "content": "meal allowance"}]},
    ).json()
    knowledge = next(m["content"] for m in context["messages"] if "<knowledge>" in m["content"])
    assert '<document title="policies.docx" heading="Expenses"' in knowledge
    assert 'title="Vacation policy"' not in knowledge

    page = b"Our returns, in short.\n\n## Exceptions\n\nGift cards are never refunded.\n"
    assert _ingested(http, _upload(http, col, "returns.md", page))["title"] == "returns.md"
    # one top heading opening the document still titles it, a Word title above its sections too
    manual = b"# Bakery handbook\n\n## Opening\n\nDoors open at six.\n\n## Closing\n\nAt two.\n"
    assert _ingested(http, _upload(http, col, "bakery.md", manual))["title"] == "Bakery handbook"
    titled = docx_bytes(sections, title="Staff handbook")
    assert _ingested(http, _upload(http, col, "staff.docx", titled))["title"] == "Staff handbook"


def _word_kind(raw: bytes, main_type: bytes) -> bytes:
    """The Word document `raw` as another kind: its main part declared `main_type`."""
    source = zipfile.ZipFile(io.BytesIO(raw))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "[Content_Types].xml":
                docx_main = b"application/vnd.openxmlformats-officedocument.wordprocessingml"
                data = data.replace(docx_main + b".document.main+xml", main_type)
            archive.writestr(item, data)
    return out.getvalue()


def test_macro_enabled_documents_and_templates_are_read_as_word_documents(http):
    """A .docm, .dotx or .dotm is the same WordprocessingML as a .docx under another content
    type: each failed as "the DOCX file is damaged: its parts do not make a Word document"."""
    col = http.post("/v1/collections", json={"name": "Word kinds"}).json()["id"]
    for name, main_type in [
        ("report.docm", b"application/vnd.ms-word.document.macroEnabled.main+xml"),
        (
            "letter.dotx",
            b"application/vnd.openxmlformats-officedocument.wordprocessingml.template.main+xml",
        ),
        ("form.dotm", b"application/vnd.ms-word.template.macroEnabledTemplate.main+xml"),
    ]:
        fact = f"The {name} says the llama farm opens at dawn."
        raw = _word_kind(docx_bytes([("Farm", [fact])]), main_type)
        document = _upload(http, col, name, raw)
        assert document["content_type"].endswith("wordprocessingml.document")
        assert _ingested(http, document)["error"] is None
        assert fact in _chunks(http, document, f"When does the {name} llama farm open?")[0]["text"]


def test_a_legacy_word_file_or_an_image_is_refused_saying_what_it_is(http):
    """A Word 97-2003 .doc was refused as "binary content that is not PDF or DOCX", which does
    not tell its owner that saving it as .docx is all it takes."""
    col = http.post("/v1/collections", json={"name": "Old files"}).json()["id"]
    url = f"/v1/collections/{col}/documents"
    for name, raw, said in [
        ("minutes.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), "save it as DOCX or PDF"),
        ("scan.png", b"\x89PNG\r\n\x1a\n" + bytes(600), "does not read text in images"),
        ("photo.jpg", b"\xff\xd8\xff\xe0" + bytes(600), "does not read text in images"),
    ]:
        resp = http.post(url, files={"file": (name, raw, "application/octet-stream")})
        assert resp.status_code == 415, resp.text
        assert said in resp.json()["error"]["message"], resp.text


def test_text_in_a_legacy_cyrillic_greek_or_chinese_encoding_keeps_its_letters(http):
    """A file that is not UTF-8 was read as Windows-1252 whatever its script: a Russian memo
    saved in Windows-1251 was indexed as "Êëþ÷ îò êîòåëüíîé" and no Russian question found it.
    Western text in Windows-1252 still reads as before."""
    col = http.post("/v1/collections", json={"name": "Memos"}).json()["id"]
    texts = {
        "ru.txt": ("Ключ от котельной висит за синей дверью. Это служебная записка.", "cp1251"),
        "el.txt": ("Το κλειδί του λεβητοστασίου κρέμεται πίσω από την μπλε πόρτα.", "cp1253"),
        "zh.txt": ("锅炉房的钥匙挂在蓝色的门后面。这是一份备忘录。", "gbk"),
        "fr.txt": ("La clé de la chaufferie est derrière la porte bleue, près du café.", "cp1252"),
    }
    for name, (text, encoding) in texts.items():
        document = _ingested(http, _upload(http, col, name, text.encode(encoding)))
        assert document["content_type"] == "text/plain", document
        assert text in [hit["text"] for hit in _chunks(http, document, text)], name
