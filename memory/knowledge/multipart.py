"""The parser of a document upload's multipart body: Django's, refusing a malformed body as one.

DRF's MultiPartParser answered a body Django could not split (no boundary, an invalid one) as
`invalid_json` ("Multipart form parse error - Invalid boundary in multipart: None"), and Django
reads a body cut before its closing boundary as the parts it found whole: a truncated upload
was "file: No file was submitted.", a file that was sent. Both are `invalid_multipart`.

A field (`title`, `metadata`) that is not UTF-8 is `invalid_multipart` too: Django decodes each
with errors="replace", so a Latin-1 title ("Pr" 0xE4 "sentation") was stored with U+FFFD in
place of its letter, and a metadata value likewise, where the JSON doors refuse such a body.
So is a part whose headers are not UTF-8 (a field's name, a file's name): Django's parser
drops the part, a file as "file: No file was submitted." and a field without a word.
"""

from __future__ import annotations

import codecs
from typing import IO, TYPE_CHECKING, cast

from django.http.multipartparser import MultiPartParser as DjangoMultiPartParser
from django.http.multipartparser import MultiPartParserError
from django.utils.http import parse_header_parameters
from rest_framework.parsers import BaseParser, DataAndFiles

from config.common.errors import ApiError

if TYPE_CHECKING:
    from typing_extensions import Buffer  # collections.abc's from Python 3.12

# Django's bound on one part's headers (django.http.multipartparser.MAX_TOTAL_HEADER_SIZE, which
# its stubs do not declare)
_PART_HEADERS_MAX = 1024


def invalid_multipart(message: str) -> ApiError:
    return ApiError(400, message, code="invalid_multipart")


# The encoding handed to Django's parser: UTF-8 that ignores the errors="replace" Django asks
# for every field's value (and name), so bytes that are not UTF-8 raise instead of becoming
# U+FFFD. A codec of our own: the parser offers no other hook between its read and its decode.
_STRICT_UTF8 = "engram_strict_utf_8"


def _strict_utf8_decode(data: Buffer, errors: str = "strict", /) -> tuple[str, int]:
    return codecs.utf_8_decode(data, "strict", True)


def _strict_utf8_lookup(name: str) -> codecs.CodecInfo | None:
    if name != _STRICT_UTF8:
        return None
    utf8 = codecs.lookup("utf-8")
    return codecs.CodecInfo(utf8.encode, _strict_utf8_decode, name=_STRICT_UTF8)


codecs.register(_strict_utf8_lookup)


class _ClosingWatch:
    """The body as Django's parser reads it, watched for the close delimiter ("--" boundary
    "--" at a line's start, RFC 2046 5.1.1): seen, the body was sent whole; and for a part
    whose headers are not UTF-8, which Django's parser drops without a word."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._close = b""
        self._tail = b"\n"  # the body's start is a line's start
        self.closed = False
        # A part header line that is not UTF-8 (a field name or a file name in Latin-1): Django
        # skips the line, and with its Content-Disposition the whole part: a file was "file:
        # No file was submitted.", a form field (`title`) silently not there.
        self.undecodable_part_headers = False
        self._delimiter = b""
        self._held = b""  # the end of the last read, where a delimiter or headers may go on

    def expect(self, boundary: bytes) -> None:
        self._close = b"\n--" + boundary + b"--"
        self._delimiter = b"--" + boundary

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        if data and self._delimiter and not self.undecodable_part_headers:
            self._scan_part_headers(data)
        if not self.closed and data:
            seen = self._tail + data
            self.closed = self._close in seen
            self._tail = seen[-(len(self._close) - 1) :]
        return data

    def _scan_part_headers(self, data: bytes) -> None:
        """Each part's headers — from a delimiter to the first blank line, where Django's
        parser reads them (it splits at the delimiter wherever it is) — checked to be UTF-8.
        A file's own lines are its content, never read as headers (a mail saved as .txt).
        One find a read: 5-9 ms for a 10 MB upload, where the regular expression over every
        line that it replaces took 77-167 ms (this 2-core machine, loaded)."""
        seen = self._held + data
        start = 0
        while (at := seen.find(self._delimiter, start)) != -1:
            headers_at = at + len(self._delimiter)
            if seen[headers_at : headers_at + 2] == b"--":  # the close delimiter: no part
                start = headers_at
                continue
            end = seen.find(b"\r\n\r\n", headers_at)
            if end == -1:
                if len(seen) - headers_at <= _PART_HEADERS_MAX:
                    self._held = seen[at:]  # the headers go on in the next read
                    return
                start = headers_at  # longer than Django reads them: its own refusal
                continue
            try:
                seen[headers_at:end].decode()  # what Django's parser does with each line
            except UnicodeDecodeError:
                self.undecodable_part_headers = True
                return
            start = end + 4
        # A delimiter may begin at the end of this read: keep what could be its start.
        self._held = seen[max(start, len(seen) - len(self._delimiter) + 1) :]


class MultiPartParser(BaseParser):
    """DRF's MultiPartParser, with a malformed body a 400 `invalid_multipart` saying what is
    wrong with it."""

    media_type = "multipart/form-data"

    def parse(self, stream, media_type=None, parser_context=None):
        request = parser_context["request"]
        meta = request.META.copy()
        meta["CONTENT_TYPE"] = media_type
        boundary = parse_header_parameters(media_type or "")[1].get("boundary")
        if not boundary:
            raise invalid_multipart(
                "The Content-Type names no boundary (multipart/form-data; boundary=...): "
                "the multipart body cannot be split into its parts."
            )
        watch = _ClosingWatch(stream)
        try:
            parser = DjangoMultiPartParser(
                meta,
                cast(IO[bytes], watch),  # Django's parser only calls read() (its ChunkIter)
                request.upload_handlers,
                _STRICT_UTF8,  # UTF-8 as the JSON doors read it (DEFAULT_CHARSET), strictly
            )
        except MultiPartParserError as exc:
            raise invalid_multipart(f"The multipart Content-Type is not valid ({exc}).") from None
        watch.expect(boundary.encode("ascii"))  # Django's parser took it: ASCII
        try:
            data, files = parser.parse()
        except UnicodeDecodeError:
            raise invalid_multipart(
                "A form field of the multipart body is not UTF-8 (a title or metadata in "
                "another encoding?): send its text in UTF-8."
            ) from None
        except MultiPartParserError as exc:
            if "header size" in str(exc):  # Django's words for a part's headers over its limit
                raise invalid_multipart(
                    f"A part's headers are longer than {_PART_HEADERS_MAX} bytes: a file "
                    "name that long? Send the file under a shorter name."
                ) from None
            raise invalid_multipart(f"The multipart body is malformed ({exc}).") from None
        if watch.undecodable_part_headers:
            raise invalid_multipart(
                "A part's headers are not UTF-8 (a field name or a file name in another "
                "encoding?), so the part could not be read: send its names in UTF-8."
            )
        if not watch.closed:
            raise invalid_multipart(
                f"The multipart body ends before its closing boundary '--{boundary}--': it was "
                "cut short, or its parts are not delimited by the Content-Type's boundary."
            )
        return DataAndFiles(data, files)
