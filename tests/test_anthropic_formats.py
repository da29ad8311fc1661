"""Claude's structured outputs and files, through Engram's OpenAI door: `response_format` as
the Messages API's `output_config.format`, OpenAI's file parts as Anthropic's document and
image blocks. The loopback upstream refuses what Anthropic refuses (tests.upstream
format_error, content_error), with the official openai package as Engram's client."""

import base64
import json

import openai
import pytest

from tests.upstream import Reply, anthropic_message, anthropic_stream, format_error

STRUCTURED = "claude-sonnet-4-5"  # a model with structured outputs
OLDER = "claude-3-5-sonnet-latest"  # one before them
PDF = base64.b64encode(b"%PDF-1.4\n%%EOF\n").decode()
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "age", "address"],
    "additionalProperties": False,
}
ASK = [{"role": "user", "content": "Ada, 36, lives in London."}]


@pytest.fixture
def client(engram_server, owner, upstream):
    with openai.OpenAI(base_url=engram_server.url + "/v1", api_key=owner[1], max_retries=0) as sdk:
        yield sdk


def schema_format(schema: dict, *, strict: bool = True) -> dict:
    return {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": schema, "strict": strict},
    }


@pytest.mark.parametrize("stream", [False, True])
def test_a_json_schema_reaches_claude_as_its_native_structured_output(client, upstream, stream):
    """It went as an instruction in the system prompt, which Claude may not follow: Anthropic's
    structured outputs (`output_config.format`, generally available, no beta header) constrain
    the answer to the schema."""
    answer = '{"name": "Ada", "age": 36, "address": {"city": "London"}}'
    reply = anthropic_stream([answer], model=STRUCTURED) if stream else None
    upstream.script(Reply(stream=reply) if stream else Reply(json=anthropic_message(answer)))
    created = client.chat.completions.create(
        model=STRUCTURED,
        messages=[{"role": "system", "content": "Extract."}, *ASK],
        response_format=schema_format(PERSON),
        stream=stream,
    )
    text = (
        "".join(c.choices[0].delta.content or "" for c in created if c.choices)
        if stream
        else created.choices[0].message.content
    )
    assert json.loads(text) == json.loads(answer)
    sent = upstream.last
    assert sent.body["output_config"] == {"format": {"type": "json_schema", "schema": PERSON}}
    assert sent.body["system"] == "Extract."  # no instruction beside it
    assert "anthropic-beta" not in sent.headers


def test_a_schema_is_sent_as_claudes_structured_outputs_take_it(client, upstream):
    """OpenAI takes a schema (not strict) whose objects are not closed and with keywords
    Anthropic's structured outputs do not enforce; Anthropic refuses both (400). Closed, oneOf
    as anyOf, the keywords said in the description: as Anthropic's own SDK sends them."""
    schema = {
        "type": "object",
        "properties": {
            "age": {"type": "integer", "minimum": 0, "description": "Years"},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "born": {"type": "string", "format": "date"},
            "site": {"type": "string", "format": "iri"},
            "pet": {"oneOf": [{"type": "object", "properties": {"kind": {"type": "string"}}}]},
        },
        "required": ["age"],
    }
    upstream.script(Reply(json=anthropic_message('{"age": 3}', model=STRUCTURED)))
    client.chat.completions.create(
        model=STRUCTURED, messages=ASK, response_format=schema_format(schema, strict=False)
    )
    sent = upstream.last.body["output_config"]["format"]["schema"]
    assert sent == {
        "type": "object",
        "properties": {
            "age": {"type": "integer", "description": "Years\n\n{minimum: 0}"},
            "tags": {"type": "array", "items": {"type": "string"}, "description": "{minItems: 2}"},
            "born": {"type": "string", "format": "date"},
            "site": {"type": "string", "description": '{format: "iri"}'},
            "pet": {
                "anyOf": [
                    {
                        "type": "object",
                        "properties": {"kind": {"type": "string"}},
                        "additionalProperties": False,
                    }
                ]
            },
        },
        "required": ["age"],
        "additionalProperties": False,
    }
    assert "system" not in upstream.last.body


@pytest.mark.parametrize(
    ("model", "schema"),
    [
        (OLDER, PERSON),  # a model before structured outputs: Anthropic refuses them (400)
        (STRUCTURED, {"type": "object"}),  # any object: closed, Claude could answer only {}
        (STRUCTURED, {**PERSON, "additionalProperties": True}),
        (STRUCTURED, {**PERSON, "additionalProperties": {"type": "string"}}),
        (STRUCTURED, {}),  # any JSON value
    ],
    ids=["older-model", "any-object", "open-object", "open-to-strings", "any-value"],
)
def test_a_schema_claude_cannot_take_natively_stays_an_instruction(client, upstream, model, schema):
    upstream.script(Reply(json=anthropic_message("{}", model=model)))
    client.chat.completions.create(
        model=model, messages=ASK, response_format=schema_format(schema, strict=False)
    )
    body = upstream.last.body
    assert "output_config" not in body
    assert body["system"].startswith("Reply with one JSON object matching this JSON schema")
    assert json.dumps(schema) in body["system"]


def test_json_object_has_no_native_form_and_stays_an_instruction(client, upstream):
    """Anthropic's structured outputs take a schema whose objects are all closed: no form of
    theirs says "any JSON object"."""
    client.chat.completions.create(
        model=STRUCTURED, messages=ASK, response_format={"type": "json_object"}
    )
    body = upstream.last.body
    assert "output_config" not in body
    assert body["system"] == "Reply with one JSON object and nothing else."


@pytest.mark.parametrize(
    ("body", "headers", "refused"),
    [
        ({"response_format": {"type": "json_object"}}, {}, "response_format: Extra inputs"),
        ({"output_format": {"type": "json_schema", "schema": PERSON}}, {}, "output_format"),
        ({"output_config": {"format": {"type": "json_object"}}}, {}, "'json_schema'"),
        ({"output_config": {"format": {"type": "json_schema"}}}, {}, "schema: Field required"),
        ({"output_config": {"format": {"type": "json_schema", "schema": PERSON, "name": "p"}}}, {}, "format.name"),
        ({"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}}, {}, "'additionalProperties' must"),
        ({"output_config": {"format": {"type": "json_schema", "schema": {"type": "integer", "minimum": 1}}}}, {}, "'minimum' is not supported"),
        ({"model": OLDER, "output_config": {"format": {"type": "json_schema", "schema": PERSON}}}, {}, "not supported by"),
        ({"output_config": {"format": {"type": "json_schema", "schema": PERSON}}}, {}, None),
        ({"output_format": {"type": "json_schema", "schema": PERSON}}, {"anthropic-beta": "structured-outputs-2025-11-13"}, None),
    ],
)  # fmt: skip
def test_the_loopback_takes_exactly_the_documented_structured_output(body, headers, refused):
    """The upstream the tests above run against refuses what Anthropic refuses, so that they
    show what Claude would take."""
    request = {"model": STRUCTURED, "max_tokens": 10, "messages": [], **body}
    error = format_error(request, headers)
    if refused is None:
        assert error is None
    else:
        assert refused in error["error"]["message"]


def file_part(media_type: str, data: str, filename: str | None = "doc") -> dict:
    file = {"file_data": f"data:{media_type};base64,{data}"}
    return {"type": "file", "file": file | ({"filename": filename} if filename else {})}


def test_a_pdf_file_reaches_claude_as_a_document_with_its_name(client, upstream):
    client.chat.completions.create(
        model=OLDER,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Summarize"},
                    file_part("application/pdf", PDF, "report.pdf"),
                ],
            }
        ],
    )
    assert upstream.last.body["messages"][0]["content"] == [
        {"type": "text", "text": "Summarize"},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
            "title": "report.pdf",
        },
    ]


def test_a_long_file_name_is_cut_to_the_longest_title_anthropic_takes(client, upstream):
    name = "r" * 600 + ".pdf"
    client.chat.completions.create(
        model=OLDER,
        messages=[{"role": "user", "content": [file_part("application/pdf", PDF, name)]}],
    )
    assert upstream.last.body["messages"][0]["content"][0]["title"] == "r" * 500


def test_a_text_file_and_an_image_file_reach_claude_as_it_reads_them(client, upstream):
    """A text/plain file went as a base64 document of that type and an image file as a
    document of type image/png: Anthropic refuses both (400, naming fields the client never
    sent). Plain text goes as a text document, an image as an image block."""
    text = "Minutes: café at 10."
    encoded = base64.b64encode(text.encode()).decode()
    completion = client.chat.completions.create(
        model=OLDER,
        messages=[
            {
                "role": "user",
                "content": [
                    file_part("text/plain", encoded, "minutes.txt"),
                    file_part("image/png", PNG, None),
                ],
            }
        ],
    )
    assert completion.choices[0].message.content
    assert upstream.last.body["messages"][0]["content"] == [
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": text},
            "title": "minutes.txt",
        },
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
    ]


@pytest.mark.parametrize(
    ("part", "said"),
    [
        (file_part("application/zip", "UEsDBA=="), "application/zip"),
        (file_part("image/bmp", "Qk0="), "image/bmp"),
        ({"type": "image_url", "image_url": {"url": "data:image/tiff;base64,SUkq"}}, "tiff"),
        (file_part("text/plain", "//79"), "UTF-8"),  # not UTF-8
        (file_part("text/plain", "not base64!"), "UTF-8"),
        ({"type": "file", "file": {"file_id": "file-abc123"}}, "file_id"),
        ({"type": "file", "file": {"file_data": "JVBERi0xLjQK"}}, "data: URL"),
    ],
    ids=["zip", "bmp-file", "tiff-image", "not-utf8", "not-base64", "file-id", "no-data-url"],
)
def test_a_file_claude_cannot_read_is_a_400_naming_the_part(client, upstream, part, said):
    """Such a part reached Anthropic, refused (a 400 naming its own fields, not the client's
    part), or was sent as a document Claude does not read."""
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=OLDER,
            messages=[{"role": "user", "content": [{"type": "text", "text": "Read"}, part]}],
        )
    assert info.value.status_code == 400
    assert info.value.param == "messages[0].content[1]"
    assert said in info.value.message
    assert upstream.chat_requests() == []


def test_data_urls_with_parameters_reach_claude(client, upstream):
    """RFC 2397 lets a data URL carry parameters before `;base64` (a charset, a file's name,
    as browsers' and some SDKs' encoders write them): such an image was refused as "Images must
    be data: or http(s): URLs." and such a file as not a data URL. The parameters are read
    past; a text file's charset decodes its text."""
    latin = base64.b64encode("Café à 10 h.".encode("latin-1")).decode()
    named = base64.b64encode(b"Minutes.").decode()
    image = {"url": f"data:image/png;charset=utf-8;base64,{PNG}"}
    client.chat.completions.create(
        model=OLDER,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": image},
                    file_part("text/plain;name=a.txt", named, "a.txt"),
                    file_part("text/plain;charset=ISO-8859-1", latin, "cafe.txt"),
                    {"type": "file", "file": {"file_data": "data:,Hello%2C%20world"}},
                ],
            }
        ],
    )
    png = {"type": "base64", "media_type": "image/png", "data": PNG}
    assert upstream.last.body["messages"][0]["content"] == [
        {"type": "image", "source": png},
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "Minutes."},
            "title": "a.txt",
        },
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "Café à 10 h."},
            "title": "cafe.txt",
        },
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "Hello, world"},
        },
    ]


@pytest.mark.parametrize(
    ("url", "said"),
    [
        (f"data:image/png;base64{PNG}", "no comma before its data"),
        (f"data:png;base64,{PNG}", "'png' where its media type goes"),
        (f"data:image/png;base64;name=a.png,{PNG}", "the parameter 'base64'"),
        (f"data:image/png;charset;base64,{PNG}", "the parameter 'charset'"),
    ],
    ids=["no-comma", "no-subtype", "base64-not-last", "bare-parameter"],
)
def test_a_malformed_data_url_is_a_400_saying_what_is_wrong(client, upstream, url, said):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=OLDER,
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}
            ],
        )
    assert info.value.param == "messages[0].content[0]"
    assert said in info.value.message and "An image's data: URL" in info.value.message
    assert upstream.chat_requests() == []
