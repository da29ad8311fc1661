"""The one decoder of JSON request bodies, for every door: the chat doors (through
completions.validation.parse) and every DRF route (`JSONParser`, the DEFAULT_PARSER_CLASSES).

It refuses, with a 400 in the envelope, before any of the body reaches a serializer, the
tokenizer or PostgreSQL:
- not JSON, not UTF-8, or not an object (`invalid_json`);
- nested deeper than MAX_DEPTH, or an array or object of more than MAX_ITEMS (`invalid_json`);
  the C scanner stops itself at the interpreter's recursion limit (a RecursionError), so
  `[` x 100k costs a few microseconds, and the bound here keeps later walks (DRF, psycopg's
  json.dumps into jsonb, PostgreSQL's own parser) far from theirs;
- a number jsonb cannot hold (NaN, Infinity, 1e400), naming the field;
- a NUL or a lone UTF-16 surrogate in any string or key, naming the field: PostgreSQL text and
  jsonb cannot store either, and UTF-8 cannot encode a lone surrogate.

Text that did not come in a request (an upstream's answer) is not refused but made storable
(`storable`): the client has already received it, and it is stored all the same.
"""

from __future__ import annotations

import json
import math
import re
from typing import overload

import orjson
from django.conf import settings
from rest_framework.parsers import BaseParser

from config.common.errors import ApiError, request_too_large

MAX_DEPTH = 64  # a tool's JSON schema or a metadata object; nothing Engram takes is deeper
MAX_ITEMS = 50_000  # items of one array or object (a conversation import takes at most 5,000)
# A client's metadata object (a memory's, a message's, a collection's or document's), as JSON:
# tags, not documents. Uncapped, an end user's token stored 20 MB on each memory, and every
# list page, search and chat turn of that user read it back (100 a page: 2 GB).
MAX_METADATA_BYTES = 16 * 1024
# JSON escapes of NUL and of UTF-16 surrogates (a pair is fine, a lone one is not; a raw NUL
# or invalid UTF-8 byte is already malformed JSON). A plain scan of the raw bytes, so a clean
# body pays nothing more; only a body that has one is walked to name the field.
_SUSPECT = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_\-]{1,64}")


def invalid_json(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_json")


def _refuse_constant(name: str) -> float:
    raise invalid_json(f"{name} is not a valid JSON number.")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise invalid_json(f"The number {text[:40]} is too large.")
    return value


# Built once: json.loads(..., parse_float=...) would build a decoder per call. On a 12 KB chat
# body the decode takes 15-20 us and the gate's byte scans in `loads` 15-20 us more; the walk
# does not run (measured on this 2-core machine under load).
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite)
# orjson decodes first: 2.2 against 10.6 us for bench_gateway's prompt, 21 against 48 us for
# a 10 KB conversation (measured on this 2-core machine, loaded). Whatever it refuses — NaN,
# 1e400, a lone surrogate, a BOM, another encoding, nesting past 1024 — goes to the stdlib
# decoder above, which gives the error (or the value) exactly as before. An integer of 19+
# digits goes there first: orjson would make it a float, the stdlib keeps it an int. Found by
# mapping every digit to 0 and anything else to x, then looking for 19 zeros: the regular
# expression rb"\d{19}" this replaces tries every position (87.7 against 5.9 us for a 12 KB
# chat body, 1.05 against 0.18 us for a short one; ~7,700 instructions of a short request).
_DIGITS_AS_ZEROS = bytes(48 if 48 <= byte <= 57 else 120 for byte in range(256))
_NINETEEN_DIGITS = b"0" * 19


def _long_integer(raw: bytes) -> bool:
    """Whether `raw` has 19 digits in a row (what re.search(rb"\d{19}", raw) finds)."""
    return raw.translate(_DIGITS_AS_ZEROS).find(_NINETEEN_DIGITS) != -1


def loads(raw: bytes | str, *, param: str = "") -> object:
    """Any JSON value, checked as the module docstring says; `param` names a JSON text that
    arrived as one field (a multipart form's `metadata`)."""
    try:
        if isinstance(raw, str) or _long_integer(raw):
            raise ValueError("the stdlib decides")
        value = orjson.loads(raw)
    except ValueError:  # orjson.JSONDecodeError is one
        value = _stdlib_loads(raw, param)
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    # Only a body with that many brackets, commas or escapes can break a rule: walk it then.
    deep = data.count(b"[") + data.count(b"{") > MAX_DEPTH
    if deep or data.count(b",") >= MAX_ITEMS or _SUSPECT.search(data):
        check(value, param)
    return value


def _stdlib_loads(raw: bytes | str, param: str) -> object:
    try:
        text = raw if isinstance(raw, str) else raw.decode(json.detect_encoding(raw))
        return _DECODER.decode(text)
    except RecursionError:
        raise invalid_json("The JSON body is nested too deeply.", param or None) from None
    except (ValueError, UnicodeDecodeError) as exc:  # int too long for str is a ValueError
        raise invalid_json(
            f"We could not parse the JSON body of your request ({exc}).", param or None
        ) from None


def loads_object(raw: bytes | str) -> dict:
    """A JSON object body (every Engram body is one)."""
    value = loads(raw) if raw else None
    if not isinstance(value, dict):
        raise invalid_json("The request body must be a JSON object.")
    return value


def field_name(param: str, key: object) -> str:
    """`param.key`, or `param["..."]` with the key escaped and cut when it is not plain: an
    error names the field without echoing a NUL, a surrogate or 10k characters back."""
    key = str(key)
    if _PLAIN_KEY.fullmatch(key):
        return f"{param}.{key}" if param else key
    return f"{param}[{json.dumps(key[:64])}]"


def metadata_problem(value: object) -> str | None:
    """Why `value` is not a client's metadata Engram keeps, or None."""
    if not isinstance(value, dict):
        return "metadata must be a JSON object."
    if len(json.dumps(value)) > MAX_METADATA_BYTES:
        return f"metadata must be at most {MAX_METADATA_BYTES} bytes as JSON."
    return None


def text_problem(value: str) -> str | None:
    """Why PostgreSQL cannot store `value` as text, or None."""
    if "\x00" in value:
        return "NUL characters are not allowed"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "lone UTF-16 surrogates are not allowed"
    return None


@overload
def storable(value: str) -> str: ...
@overload
def storable(value: dict) -> dict: ...
@overload
def storable(value: object) -> object: ...
def storable(value: object) -> object:
    """`value` (a JSON value) as PostgreSQL text and jsonb can hold it: NUL removed, each lone
    surrogate replaced with U+FFFD, everything else as it was. For text Engram did not parse and
    must not lose (an upstream's answer, a tool's result); a client's own is refused (`check`)."""
    if isinstance(value, str):
        if text_problem(value) is None:
            return value
        # UTF-16 with surrogatepass joins a pair written as two code points; "replace" makes a
        # lone surrogate one U+FFFD.
        text = value.replace("\x00", "").encode("utf-16", "surrogatepass")
        return text.decode("utf-16", "replace")
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(item) for item in value]
    return value


def check(value: object, param: str = "") -> None:
    """400 naming the first place `value` breaks a rule of the module docstring (iterative: a
    walk that cannot itself run out of stack)."""
    stack: list[tuple[object, str, int]] = [(value, param, 0)]
    while stack:
        item, where, depth = stack.pop()
        name = where or "body"
        if isinstance(item, str):
            if problem := text_problem(item):
                raise ApiError(
                    400, f"Invalid '{name}': {problem}.", param=name, code="invalid_value"
                )
        elif isinstance(item, float) and not math.isfinite(item):
            raise ApiError(
                400, f"Invalid '{name}': not a finite number.", param=name, code="invalid_value"
            )
        elif isinstance(item, (dict, list)):
            if depth >= MAX_DEPTH:
                raise invalid_json(
                    f"The JSON body is nested too deeply (over {MAX_DEPTH} levels).", name
                )
            if len(item) > MAX_ITEMS:
                raise invalid_json(f"'{name}' has more than {MAX_ITEMS} items.", name)
            if isinstance(item, dict):
                for key, child in item.items():
                    child_name = field_name(where, key)
                    if problem := text_problem(key):
                        raise ApiError(
                            400,
                            f"Invalid key {child_name}: {problem}.",
                            param=child_name,
                            code="invalid_value",
                        )
                    stack.append((child, child_name, depth + 1))
            else:
                stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(item))
        # The walk is last-in first-out; which of two bad fields is named first does not matter.


class JSONParser(BaseParser):
    """DRF's JSON parser, through `loads_object`: the same rules as the chat doors, and the same
    size limit (DATA_UPLOAD_MAX_MEMORY_SIZE is ENGRAM_MAX_REQUEST_BYTES), read no further."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = b"" if stream is None else stream.read() if limit is None else stream.read(limit + 1)
        if limit is not None and len(raw) > limit:
            raise request_too_large()
        return loads_object(raw)
