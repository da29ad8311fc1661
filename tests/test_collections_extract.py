"""Extraction by content and structural chunking, without a database."""

import io
import re
import zipfile

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from memory.knowledge import parsing as ex
from memory.knowledge.chunking import chunk_blocks, count_tokens
from tests.collections_docs import corrupt_pdf_bytes, docx_bytes, pdf_bytes, pdf_form_bytes

MARKDOWN = b"""# Field guide

Welcome to the guide.

## Birds

The kestrel hovers over motorway verges.

```python
# not a heading
print("code")
```

Setext heading
--------------

Under the setext heading.
"""

HTML = b"""<!DOCTYPE html><html><head><title>Ops handbook</title>
<style>body{color:red}</style><script>var secret = "do not index";</script></head>
<body><nav>Home | About</nav><h1>Runbook</h1><div>Restart the <b>ingest</b> worker.
<p>Check the queue depth first.</p></div><h2>Escalation</h2><ul><li>Page the on-call.</li>
<li>Open an incident.</li></ul><table><tr><th>Tier</th><th>Owner</th></tr>
<tr><td>1</td><td>SRE</td></tr></table></body></html>"""


def test_types_are_decided_by_content_not_name():
    assert ex.detect(pdf_bytes(["hello"])) == ex.PDF
    assert ex.detect(docx_bytes([("A", ["b"])])) == ex.DOCX
    assert ex.detect(HTML) == ex.HTML
    assert ex.detect(b"  <html><body><p>x</p></body></html>") == ex.HTML
    assert ex.detect(MARKDOWN) == ex.MARKDOWN
    assert ex.detect(b"Just a plain note.\nNothing else.") == ex.TEXT
    assert ex.detect("Grüße aus Köln — ünïcödé".encode()) == ex.TEXT
    assert ex.detect("Grüße".encode("utf-16")) == ex.TEXT
    for binary in (
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,  # an image
        b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 64,  # an executable
        b"\x1f\x8b\x08\x00" + bytes(range(200)),  # gzip
    ):
        with pytest.raises(ex.UnsupportedType):
            ex.detect(binary)
    other_zip = io.BytesIO()
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
    with pytest.raises(ex.UnsupportedType, match="not a Word document"):
        ex.detect(other_zip.getvalue())


@pytest.mark.parametrize(
    "damage",
    [
        b"\xff",  # a stray byte that is not UTF-8
        "é".encode()[:1],  # the file cut inside its last character
    ],
)
def test_utf8_text_with_a_bad_byte_keeps_its_letters(damage):
    """One byte that is not UTF-8 sent the whole text to cp1252, so every accented letter of
    the document became two ("cafÃ©") and a search for "café" no longer found it."""
    raw = "Le café crème coûte trois euros à Zürich.\n".encode() * 20 + damage
    text = ex.decode_text(raw)
    assert text is not None and text.count("café crème") == 20 and "Ã" not in text
    assert text.endswith("\ufffd")
    # Windows-1252 text is still read as such
    assert ex.decode_text("Le café crème, s'il vous plaît.".encode("cp1252")) == (
        "Le café crème, s'il vous plaît."
    )


def test_detection_reads_runs_of_comments_and_blank_lines_in_one_pass():
    """Detection runs in the upload's request. Its HTML test let a comment's `.*?` reach past
    the comment's end, so a run of n comments before something that is not HTML was tried
    2^n ways (600 "<!---->", 4 kB: a web process held for ever), and its Markdown test's
    leading `\\s*` ran on across blank lines from every line start (quadratic: 20 kB of them
    took 5 s)."""
    assert ex.detect(b"<!---->" * 600) == ex.TEXT
    assert ex.detect(b"<!-- a -->\n" * 400 + b"plain words") == ex.TEXT
    assert ex.detect(b"<!-- a --->\n<!-- b -- c -->\n<html><body>x</body></html>") == ex.HTML
    assert ex.detect(b" \n" * 10_000 + b"plain") == ex.TEXT
    assert ex.detect(b"intro\n\n  - an item\n") == ex.MARKDOWN


def test_pdf_pages_text_and_title():
    raw = pdf_bytes(
        ["First page talks about (parentheses) and kestrels.", "Second page: the ledger."],
        title="Field notes",
    )
    extracted = ex.extract(raw)
    assert extracted.pages == 2 and extracted.title == "Field notes"
    assert [b.page for b in extracted.blocks] == [1, 2]
    assert "(parentheses) and kestrels" in extracted.blocks[0].text
    assert "the ledger" in extracted.blocks[1].text


def test_corrupt_pdf_raises_a_reason():
    with pytest.raises(ex.ExtractionError, match="PDF could not be read"):
        ex.extract(corrupt_pdf_bytes())


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ((b"/F1 10 Tf", b"1 0 R  Tf"), r"it is damaged \(AssertionError in pypdf\)"),
        ((b"<< /Length", b"<</Filter/Zz/Length"), "Unsupported filter /Zz"),
    ],
)
def test_a_pdf_that_pypdf_cannot_parse_is_unreadable_not_a_crash(damage, reason):
    """An indirect reference inside a page's content stream ("1 0 R" as an operand) trips an
    `assert` in pypdf's content parser, and a stream filter it does not know raises
    NotImplementedError: both escaped the PDF reader, so the document failed as "ingestion
    failed (AssertionError); re-run it to resume", which no re-run could, and the worker
    logged a traceback for a damaged upload."""
    raw = pdf_bytes(["Hello world."]).replace(*damage)
    with pytest.raises(ex.ExtractionError, match=f"PDF could not be read: {reason}"):
        ex.extract(raw)


def test_docx_headings_paragraphs_tables():
    raw = docx_bytes([("Install", ["Run the installer."]), ("Usage", ["Type help."])], title="Tool")
    extracted = ex.extract(raw)
    kinds = [(b.kind, b.text, b.level) for b in extracted.blocks]
    assert kinds[:3] == [
        ("heading", "Tool", 0),
        ("heading", "Install", 1),
        ("text", "Run the installer.", 0),
    ]
    assert ("heading", "Usage", 1) in kinds
    assert any("Flux capacitor | Zephyr Industries" in b.text for b in extracted.blocks)
    assert extracted.title == "Tool"


def test_html_drops_scripts_and_chrome_and_keeps_structure():
    extracted = ex.extract(HTML)
    texts = [b.text for b in extracted.blocks]
    assert extracted.title == "Ops handbook"
    assert not any("secret" in t or "color:red" in t or "Home | About" in t for t in texts)
    assert (extracted.blocks[0].kind, extracted.blocks[0].text) == ("heading", "Runbook")
    assert "Restart the ingest worker." in texts and "Check the queue depth first." in texts
    assert "Page the on-call." in texts
    assert any(t.startswith("Tier | Owner") for t in texts)


def test_html_code_keeps_its_lines_and_indentation():
    """A <pre> block's whitespace was collapsed like a paragraph's: Python code became one
    line ("def f(x): if x: return 1 return 2"), where Markdown's fenced code keeps its lines
    (README: in the knowledge block "code keeps its line breaks and indentation")."""
    html = (
        b"<html><body><h1>API</h1><p>Call   it\n like this:</p>"
        b"<pre><code>def f(x):\n    if x:\n        return 1\n    return 2\n</code></pre>"
        b"<p>Done.</p></body></html>"
    )
    texts = [b.text for b in ex.extract(html).blocks]
    assert texts == [
        "API",
        "Call it like this:",
        "def f(x):\n    if x:\n        return 1\n    return 2",
        "Done.",
    ]
    chunk = chunk_blocks(ex.extract(html).blocks)[0]
    assert "def f(x):\n    if x:\n        return 1" in chunk.text


def test_deeply_nested_html_is_read_whole():
    """5,000 nested <div>s (55 kB) passed Python's recursion limit: the document failed."""
    depth = 5_000
    page = "<html><body>" + "<div>" * depth + "<p>Deep fact.</p>" + "</div>" * depth
    page += "<h2>After</h2><p>Shallow fact.</p></body></html>"
    blocks = ex.extract(page.encode()).blocks
    assert [(b.kind, b.text) for b in blocks] == [
        ("text", "Deep fact."),
        ("heading", "After"),
        ("text", "Shallow fact."),
    ]


def test_markdown_headings_code_fences_and_setext():
    blocks = ex.extract(MARKDOWN).blocks
    headings = [(b.text, b.level) for b in blocks if b.kind == "heading"]
    assert headings == [("Field guide", 1), ("Birds", 2), ("Setext heading", 2)]
    code = next(b.text for b in blocks if b.text.startswith("```"))
    assert "# not a heading" in code and code.endswith("```")


def test_atx_headings_keep_their_words_and_read_in_one_pass():
    """The heading pattern took a closing '#' off a word ("C#" read "C") and tried every split
    of a run of spaces between its parts, cubic: a 10 kB heading line of spaces outlasted the
    ingestion's hard time limit, every run, holding the worker each time."""
    blocks = ex.markdown_blocks("# Learning C#\n## Closed ##\n### Spaced   ###   \n#### ###")
    assert [(b.kind, b.text, b.level) for b in blocks] == [
        ("heading", "Learning C#", 1),
        ("heading", "Closed", 2),
        ("heading", "Spaced", 3),
    ]
    long_line = "a" + " " * 10_000 + "b"
    assert [b.text for b in ex.markdown_blocks(f"# {long_line}")] == [long_line]


def test_chunks_follow_headings_with_paths():
    blocks = ex.extract(MARKDOWN).blocks
    chunks = chunk_blocks(blocks, max_tokens=200)
    by_heading = {c.heading: c.text for c in chunks}
    assert by_heading["Field guide"] == "Welcome to the guide."
    assert "kestrel hovers" in by_heading["Field guide > Birds"]
    assert by_heading["Field guide > Setext heading"] == "Under the setext heading."
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_long_sections_split_with_overlap():
    sentences = [f"Fact {i} is that the value of item {i} equals {i * 7}." for i in range(80)]
    blocks = [ex.Block("heading", "Facts", level=1), ex.Block("text", " ".join(sentences))]
    chunks = chunk_blocks(blocks, max_tokens=80, overlap_tokens=20)
    assert len(chunks) > 5
    for chunk in chunks:
        assert chunk.token_count <= 80 and chunk.heading == "Facts"
        assert chunk.token_count == count_tokens(chunk.text)
    for before, after in zip(chunks, chunks[1:], strict=False):
        last_sentence = re.split(r"(?<=\.)\s+", before.text)[-1]
        assert after.text.startswith(last_sentence)  # the boundary sentence is in both
    joined = " ".join(c.text for c in chunks)
    assert all(s in joined for s in sentences)


def test_a_sentence_longer_than_the_budget_is_cut_by_tokens():
    word_salad = " ".join(f"w{i}" for i in range(600))
    chunks = chunk_blocks([ex.Block("text", word_salad)], max_tokens=50, overlap_tokens=10)
    assert all(c.token_count <= 50 for c in chunks)
    assert "w599" in chunks[-1].text and "w0 " in chunks[0].text


def test_a_long_code_block_is_cut_between_its_lines_and_keeps_them():
    """A paragraph over the budget was cut into sentences (at line breaks too) and joined
    again with spaces: a code block longer than a chunk lost its line breaks and indentation
    in every chunk ("def f(): value_0 = compute(...) value_1 = ..."), and its overlap too."""
    lines = [f"    value_{i} = compute(value_{i - 1}, factor={i})" for i in range(60)]
    code = "```python\ndef f():\n" + "\n".join(lines) + "\n```"
    blocks = [ex.Block("heading", "API", level=1), ex.Block("text", code)]
    chunks = chunk_blocks(blocks, max_tokens=120, overlap_tokens=30)
    assert len(chunks) > 2
    source = set(code.split("\n"))
    for chunk in chunks:
        assert chunk.token_count <= 120
        assert set(chunk.text.split("\n")) <= source, chunk.text  # whole lines, as written
    assert set().union(*(c.text.split("\n") for c in chunks)) == source
    # the overlap is the previous chunk's last lines
    first, second = chunks[0].text.split("\n"), chunks[1].text.split("\n")
    assert first[-1] in second and second[0] in first


_words = st.text(alphabet="abcdefghij ", min_size=1, max_size=60).map(str.strip).filter(bool)


@settings(max_examples=40, deadline=None)
@example(paragraphs=["a. a. aababaaabfjebcchbcbfjgj."], max_tokens=20)  # 21 tokens once joined
@example(paragraphs=["aaabbaa aababaaabaaabfjaaeaaabjaaeaa."], max_tokens=20)  # a word cut
@given(
    paragraphs=st.lists(
        st.lists(_words, min_size=1, max_size=12).map(lambda ws: ". ".join(ws) + "."),
        min_size=1,
        max_size=15,
    ),
    max_tokens=st.integers(min_value=20, max_value=120),
)
def test_chunking_covers_everything_within_budget(paragraphs, max_tokens):
    blocks = [ex.Block("text", p) for p in paragraphs]
    chunks = chunk_blocks(blocks, max_tokens=max_tokens, overlap_tokens=max_tokens // 4)
    assert all(c.token_count <= max_tokens for c in chunks)
    # every word of the input, in order, appears in the chunks
    text = " ".join(c.text for c in chunks)
    for word in " ".join(paragraphs).replace(".", " ").split():
        assert word in text


def test_a_pdf_whose_streams_unpack_past_the_limit_stops_there():
    """DOCX had a limit on what it unpacks to, PDF none: pypdf stops each stream at 75 MB but
    not their sum, so a small file of many highly compressed streams could take the worker's
    memory. Extraction now stops once the decompressed contents pass the limit."""
    page = "the same words again and again " * 200
    raw = pdf_bytes([page] * 40, compress=True)
    whole = sum(len(b.text) for b in ex.extract(raw).blocks)  # no limit: every page is read
    assert len(raw) * 5 < whole
    limit = whole // 4
    with pytest.raises(ex.ExpandsTooFar) as stopped:
        ex.extract(raw, max_expanded=limit)
    # it stopped at the limit, within a page, not after reading the rest
    assert limit < stopped.value.size < limit + 2 * len(page)
    assert len(ex.extract(raw, max_expanded=4 * whole).blocks) == 40


def test_a_pdf_drawing_one_form_many_times_stops_at_the_limit():
    """A form XObject drawn thousands of times multiplies its text without another stream to
    decompress; pypdf swallows errors inside a form, so the page's next operator stops it."""
    text = "lorem ipsum dolor " * 100
    raw = pdf_form_bytes(text, draws=2000)
    assert len(raw) < 5_000  # its text would be 3.6 MB
    with pytest.raises(ex.ExpandsTooFar) as stopped:
        ex.extract(raw, max_expanded=100_000)
    assert stopped.value.size < 100_000 + 2 * len(text)
    assert ex.extract(pdf_form_bytes(text, draws=3), max_expanded=100_000).blocks


def test_a_table_nested_in_a_word_table_cell_keeps_its_text():
    """python-docx's `cell.text` holds a cell's paragraphs alone: the text of a table nested
    in a cell (a common layout: a form, a two-column page) was never extracted."""
    import docx

    document = docx.Document()
    document.add_paragraph("Intro paragraph about wombats.")
    table = document.add_table(rows=1, cols=2)
    table.cell(0, 0).text = "Outer cell"
    inner = table.cell(0, 1).add_table(rows=2, cols=1)
    inner.cell(0, 0).text = "Numbats eat termites."
    inner.cell(1, 0).text = "Quolls are marsupials."
    buffer = io.BytesIO()
    document.save(buffer)
    texts = [b.text for b in ex.extract(buffer.getvalue()).blocks]
    assert texts == [
        "Intro paragraph about wombats.",
        "Outer cell | Numbats eat termites.\nQuolls are marsupials.",
    ]


@pytest.mark.parametrize("blank", ["\u200b", "\u00a0\u200b\u2060", "\ufeff\u3000\u200d"])
def test_a_block_of_unicode_blanks_is_no_text(blank):
    """Zero-width spaces, joiners and BOMs survive str.strip(): a paragraph of them became a
    chunk, put before the model as an empty passage for any question."""
    html = f"<html><body><p>{blank}</p><p>Real words.</p></body></html>".encode()
    assert [b.text for b in ex.extract(html).blocks] == ["Real words."]
    assert ex.extract(blank.encode()).blocks == []


JAPANESE = "東京は日本の首都です。人口は約千四百万人です。"


def _unbroken(chunks, source: str) -> None:
    """Every chunk within its budget and, whitespace aside, a piece of the source: no
    character cut in two (U+FFFD where it was), none lost."""
    squeezed = re.sub(r"\s+", "", source)
    for chunk in chunks:
        assert "\ufffd" not in chunk.text, chunk.text
        assert re.sub(r"\s+", "", chunk.text) in squeezed, chunk.text


def test_cjk_text_is_chunked_at_its_sentences_with_no_character_cut():
    """A Japanese paragraph has no space after its full stops: it was one sentence to the
    tokenizer's cut, which went through a character (cl100k spells most kanji in two or three
    tokens): the chunk's overlap began with U+FFFD, the character lost."""
    text = JAPANESE * 300
    chunks = chunk_blocks([ex.Block("text", text)], max_tokens=200, overlap_tokens=30)
    assert len(chunks) > 5
    _unbroken(chunks, text)
    assert all(c.token_count <= 200 and c.text.endswith("。") for c in chunks)


@settings(max_examples=40, deadline=None)
@example(text="🎉🚀👩\u200d👩\u200d👧\u200d👦 party" * 40, max_tokens=20)
@example(text="日本語" * 200, max_tokens=20)
@given(
    text=st.text(
        alphabet="日本語の文書東京עברית🎉🚀👩\u200d👧 ab", min_size=1, max_size=600
    ).filter(str.strip),
    max_tokens=st.integers(min_value=8, max_value=60),
)
def test_unicode_without_sentence_breaks_is_cut_between_characters(text, max_tokens):
    chunks = chunk_blocks([ex.Block("text", text)], max_tokens=max_tokens, overlap_tokens=5)
    _unbroken(chunks, text)
    assert all(c.token_count <= max_tokens for c in chunks)


_W = (
    'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" '
    'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006"'
)


def test_word_text_in_content_controls_tracked_changes_and_text_boxes_is_read():
    """python-docx reads a body's direct paragraphs and a paragraph's direct runs: a document
    made from a template (its body in content controls), one with tracked insertions not yet
    accepted, or a text box lost that text, with nothing to say so. A deleted run stays out,
    and a text box's text once (Word repeats it in a compatibility fallback)."""
    import docx
    from docx.oxml import parse_xml

    document = docx.Document()
    document.add_paragraph("Intro about wombats.")
    body = document.element.body
    xml = [
        f"<w:sdt {_W}><w:sdtContent><w:p><w:r><w:t>The vault code is 4711.</w:t></w:r></w:p>"
        "</w:sdtContent></w:sdt>",
        f'<w:p {_W}><w:r><w:t xml:space="preserve">Quolls </w:t></w:r><w:ins w:id="1" '
        'w:author="a"><w:r><w:t>are marsupials.</w:t></w:r></w:ins><w:del w:id="2" w:author="a">'
        "<w:r><w:delText> Numbats are not.</w:delText></w:r></w:del></w:p>",
        f"<w:p {_W}><w:sdt><w:sdtContent><w:r><w:t>Signed: Ada.</w:t></w:r></w:sdtContent>"
        "</w:sdt></w:p>",
        f'<w:p {_W}><w:r><mc:AlternateContent><mc:Choice Requires="wps"><w:txbxContent><w:p>'
        "<w:r><w:t>Boxed note.</w:t></w:r></w:p></w:txbxContent></mc:Choice><mc:Fallback>"
        "<w:txbxContent><w:p><w:r><w:t>Boxed note.</w:t></w:r></w:p></w:txbxContent>"
        "</mc:Fallback></mc:AlternateContent></w:r></w:p>",
    ]
    for number, part in enumerate(xml, start=1):
        body.insert(number, parse_xml(part))
    table = document.add_table(rows=1, cols=2)
    table.cell(0, 0).text = "Field"
    cell = table.cell(0, 1)._tc
    cell.remove(cell.p_lst[0])
    cell.append(
        parse_xml(
            f"<w:sdt {_W}><w:sdtContent><w:p><w:r><w:t>Filled in.</w:t></w:r></w:p>"
            "</w:sdtContent></w:sdt>"
        )
    )
    buffer = io.BytesIO()
    document.save(buffer)
    texts = [b.text for b in ex.extract(buffer.getvalue()).blocks]
    assert texts == [
        "Intro about wombats.",
        "The vault code is 4711.",
        "Quolls are marsupials.",
        "Signed: Ada.",
        "Boxed note.",
        "Field | Filled in.",
    ]
