"""The one JSON body decoder (config/common/jsonbody.py): orjson first, the stdlib for what
orjson refuses or would read differently — the same values and the same 400s either way."""

import pytest

from config.common.errors import ApiError
from config.common.jsonbody import loads


def refused(raw: bytes) -> ApiError:
    with pytest.raises(ApiError) as caught:
        loads(raw)
    assert caught.value.status == 400
    return caught.value


def test_a_long_integer_stays_an_integer():
    value = loads(b'{"max_tokens": 123456789012345678901234567890, "n": -9223372036854775809}')
    assert value == {"max_tokens": 123456789012345678901234567890, "n": -9223372036854775809}
    assert all(isinstance(v, int) for v in value.values())


def test_plain_bodies_decode_as_the_stdlib_does():
    raw = '{"a": [1, 2.5, -0, 1e5, true, null, "\\u00e9\\ud83d\\ude00"], "b": {"c": ""}}'
    assert loads(raw.encode()) == {"a": [1, 2.5, 0, 1e5, True, None, "é😀"], "b": {"c": ""}}
    assert loads(raw) == loads(raw.encode())


def test_other_encodings_and_a_bom_still_decode():
    assert loads('{"a": "é"}'.encode("utf-16")) == {"a": "é"}
    assert loads(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}


def test_what_postgresql_cannot_hold_is_refused_by_name():
    assert refused(b'{"a": 1e400}').code == "invalid_json"
    assert refused(b'{"a": NaN}').code == "invalid_json"
    nul = refused(b'{"messages": [{"content": "a\\u0000b"}]}')
    assert nul.param == "messages[0].content"
    surrogate = refused(b'{"text": "\\ud800"}')
    assert surrogate.param == "text"
    assert refused(b"[" * 100 + b"]" * 100).code == "invalid_json"
    assert refused(b'{"a": ').code == "invalid_json"
