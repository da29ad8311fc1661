"""What every door refuses from a request's headers, before its body is read (over real HTTP):
a Content-Length over the limit (413), a compressed body (415); and a multipart part whose
name is not UTF-8 (400 `invalid_multipart`), which Django's parser dropped without a word."""

from __future__ import annotations

import gzip
import io
import json
import socket
import time

import pytest

from memory.models import Document, Memory

FIFTY_MB = 50 * 1024 * 1024
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
MEMORY = {"user_id": "u1", "text": "I live in Berlin."}
FILE_PART = (
    b'--B\r\nContent-Disposition: form-data; name="file"; filename="notes.txt"\r\n'
    b"Content-Type: text/plain\r\n\r\nReturns within 30 days."
)
MULTIPART = "multipart/form-data; boundary=B"


@pytest.fixture
def collection_id(http):
    created = http.post("/v1/collections", json={"name": "Handbook"})
    assert created.status_code == 201, created.text
    return created.json()["id"]


@pytest.fixture(params=["chat", "chat-django", "memories", "upload"])
def door(request, settings, collection_id):
    """(path, content type) of a door that takes a body."""
    if request.param == "chat-django":
        settings.ENGRAM_GATEWAY_FAST_PATH = False
    if request.param.startswith("chat"):
        return "/v1/chat/completions", "application/json"
    if request.param == "memories":
        return "/v1/memories", "application/json"
    return f"/v1/collections/{collection_id}/documents", MULTIPART


def _raw_exchange(server_url: str, head: bytes, *, timeout: float) -> tuple[bytes, float, bool]:
    """Send `head` (a request line, headers and a few bytes of body) and read until the
    server closes the connection or `timeout` passes: (what came back, seconds to its first
    byte, whether the server closed)."""
    host, port = server_url.removeprefix("http://").split(":")
    began = time.monotonic()
    first = float("inf")
    received = b""
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head)
        while time.monotonic() - began < timeout:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                return received, first, True
            first = min(first, time.monotonic() - began)
            received += chunk
    return received, first, False


def test_a_declared_length_over_the_limit_is_413_before_the_body_is_sent(
    door, engram_server, owner, spooled
):
    """Django's handler read such a body up to ENGRAM_MAX_REQUEST_BYTES (20 MB) before its
    413: a client declaring 50 MB and sending nothing more was answered only once it had sent
    20 MB, and those 20 MB were spooled. Now the header is enough; nothing is spooled and the
    connection closes (what was not read is not received either)."""
    path, content_type = door
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {owner[1]}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {FIFTY_MB}\r\n"
        "x-request-id: early-1\r\n\r\n"
    ).encode() + b'{"model": '  # the body's first bytes; the rest never comes

    received, answered_after, closed = _raw_exchange(engram_server.url, head, timeout=5)

    assert received.startswith(b"HTTP/1.1 413 "), received[:200]
    assert answered_after < 2  # on the header, not once the body would have come
    head_part, _, body = received.partition(b"\r\n\r\n")
    headers = head_part.decode("latin-1").lower()
    assert "x-request-id: early-1" in headers and "connection: close" in headers
    assert json.loads(body) == {
        "error": {
            "message": "Request body too large.",
            "type": "invalid_request_error",
            "param": None,
            "code": "request_too_large",
        }
    }
    assert closed  # the server does not wait for the 50 MB it will not read
    assert sum(spooled) == 0


def test_a_length_within_the_limit_is_still_read(http, settings):
    """The refusal reads the limit as the routes do: at it, the body is read; a chunked body
    over it (no length to refuse it by) is still counted as it arrives."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 200
    body = json.dumps(MEMORY).encode()
    body += b" " * (200 - len(body))
    at_limit = http.post("/v1/memories", content=body, headers={"content-type": "application/json"})
    assert at_limit.status_code == 201, at_limit.text
    over = http.post(
        "/v1/memories", content=body + b" ", headers={"content-type": "application/json"}
    )
    assert over.status_code == 413 and over.json()["error"]["code"] == "request_too_large"
    assert over.headers["connection"] == "close"
    chunked = http.post(
        "/v1/memories",
        content=iter([body, b" "]),
        headers={"content-type": "application/json"},
    )
    assert "content-length" not in chunked.request.headers
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "request_too_large"


def _compressed_request(path: str, content_type: str, encoding: str) -> tuple[bytes, dict]:
    if content_type == MULTIPART:
        raw = FILE_PART + b"\r\n--B--\r\n"
    else:
        raw = json.dumps(CHAT if "chat" in path else MEMORY).encode()
    return gzip.compress(raw), {"content-type": content_type, "content-encoding": encoding}


@pytest.mark.parametrize("encoding", ["gzip", "identity, br", "GZIP"])
def test_a_compressed_body_is_415_naming_its_encoding(door, http, encoding):
    """A gzip body was parsed as it came: 400 `invalid_json` ("We could not parse the JSON
    body…") for bytes that were never meant to be JSON as they stood."""
    path, content_type = door
    body, headers = _compressed_request(path, content_type, encoding)
    named = encoding.removeprefix("identity, ")

    refused = http.post(path, content=body, headers=headers)

    assert refused.status_code == 415, refused.text
    assert refused.headers["x-request-id"]
    assert refused.json() == {
        "error": {
            "message": f"Content-Encoding '{named}' is not supported; send the body uncompressed.",
            "type": "invalid_request_error",
            "param": "content-encoding",
            "code": "unsupported_media_type",
        }
    }
    chunked = http.post(path, content=iter([body[:10], body[10:]]), headers=headers)
    assert chunked.status_code == 415, chunked.text  # no Content-Length: refused all the same
    assert not Memory.objects.exists() and not Document.objects.exists()


def test_identity_is_no_encoding_and_a_bodiless_request_is_not_refused(http):
    created = http.post("/v1/memories", json=MEMORY, headers={"content-encoding": "identity"})
    assert created.status_code == 201, created.text
    listed = http.get(
        "/v1/memories", params={"user_id": "u1"}, headers={"content-encoding": "gzip"}
    )
    assert listed.status_code == 200, listed.text


def _field(name: bytes, value: bytes) -> bytes:
    return b'\r\n--B\r\nContent-Disposition: form-data; name="' + name + b'"\r\n\r\n' + value


def test_a_form_field_whose_name_is_not_utf8_is_400_invalid_multipart(http, collection_id):
    """Django's parser skips a part header it cannot decode as UTF-8, and with it the part:
    a field named in Latin-1 ("Tit" 0xE9 "l") was dropped and the upload taken without it."""
    url = f"/v1/collections/{collection_id}/documents"
    body = FILE_PART + _field(b"Tit\xe9l", b"Handbook") + b"\r\n--B--\r\n"

    refused = http.post(url, content=body, headers={"content-type": MULTIPART})

    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "invalid_multipart" and "not UTF-8" in error["message"], error
    assert "field name" in error["message"], error
    assert not Document.objects.exists()
    utf8 = body.replace(b"Tit\xe9l", b"title")
    sent = http.post(url, content=utf8, headers={"content-type": MULTIPART})
    assert sent.status_code == 202, sent.text
    assert sent.json()["title"] == "Handbook"


class _Trickle(io.BytesIO):
    """A body read at most `step` bytes at a time, as a slow client's arrives."""

    def __init__(self, data: bytes, step: int) -> None:
        super().__init__(data)
        self.step = step

    def read(self, size: int | None = -1) -> bytes:
        return super().read(self.step if size is None or size < 0 else min(size, self.step))


@pytest.mark.parametrize("step", [1, 2, 3, 5, 17, 64, 100_000])
def test_part_headers_are_checked_wherever_the_reads_split_them(step):
    """The check of each part's headers sees a delimiter or a header line split between two
    reads; a file's own lines that look like a header are its content, never checked."""
    from memory.knowledge.multipart import _ClosingWatch

    def undecodable(body: bytes) -> tuple[bool, bool]:
        watch = _ClosingWatch(_Trickle(body, step))
        watch.expect(b"B")
        while watch.read(64 * 1024):
            pass
        return watch.undecodable_part_headers, watch.closed

    mail = b'\r\nContent-Disposition: attachment; filename="r\xe9sum\xe9.pdf"\r\n\r\nSee it.'
    clean = FILE_PART + mail + _field(b"title", b"Caf\xc3\xa9") + b"\r\n--B--\r\n"
    assert undecodable(clean) == (False, True)
    latin1_name = FILE_PART + _field(b"Tit\xe9l", b"Handbook") + b"\r\n--B--\r\n"
    assert undecodable(latin1_name) == (True, True)
    latin1_file = FILE_PART.replace(b"notes", b"r\xe9sum\xe9") + b"\r\n--B--\r\n"
    assert undecodable(latin1_file) == (True, True)
    # a latin-1 value is not a header: the field's decoding refuses it (its own 400)
    assert undecodable(FILE_PART + _field(b"title", b"Caf\xe9") + b"\r\n--B--\r\n")[0] is False
