"""OpenAI's `response_format` as Claude's: a JSON schema as the Messages API's native structured
output (`output_config.format`, generally available: no beta header), else an instruction in
the system prompt (pure functions, no I/O)."""

from __future__ import annotations

import json
import re
from typing import Any

# Claude's models before structured outputs (the 4.5 family and later have them): Anthropic
# refuses `output_config.format` for them (400), so their schema stays an instruction.
_BEFORE_STRUCTURED = re.compile(
    r"^claude-(?:[0-3]|instant|(?:opus|sonnet)-4(?:-[01])?(?:-\d{8})?$)"
)
# What Anthropic's structured outputs do not enforce, and refuse in a schema (400): moved into
# the description as Anthropic's SDK does (transform_schema), so Claude still reads them.
_UNENFORCED = (
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "maxItems",
    "minProperties",
    "maxProperties",
)
_FORMATS = {
    "date-time",
    "time",
    "date",
    "duration",
    "email",
    "hostname",
    "uri",
    "ipv4",
    "ipv6",
    "uuid",
}
_SUBSCHEMAS = ("items",)  # a schema each
_SCHEMA_LISTS = ("anyOf", "allOf", "prefixItems")  # a list of schemas each
_SCHEMA_MAPS = ("properties", "$defs", "definitions")  # name -> schema
JSON_OBJECT_INSTRUCTION = "Reply with one JSON object and nothing else."


class _Open(Exception):
    """The schema has an object open to any property, which the native form cannot say."""


def apply_response_format(payload: dict, response_format: Any, system: list[str]) -> None:
    """`response_format` on the Messages request `payload`: `output_config.format` for a JSON
    schema Claude's model takes natively, else an instruction added to `system`. json_object
    has no native form (Anthropic's takes a schema, and every object in it closed): always the
    instruction."""
    fmt = response_format if isinstance(response_format, dict) else {}
    if fmt.get("type") == "json_object":
        system.append(JSON_OBJECT_INSTRUCTION)
    if fmt.get("type") != "json_schema":
        return
    schema = (fmt.get("json_schema") or {}).get("schema") or {}
    native = None if _BEFORE_STRUCTURED.match(payload["model"]) else native_schema(schema)
    if native is None:
        text = json.dumps(schema)
        system.append(f"Reply with one JSON object matching this JSON schema, nothing else: {text}")
        return
    payload["output_config"] = {"format": {"type": "json_schema", "schema": native}}


def native_schema(schema: Any) -> dict | None:
    """`schema` as Anthropic's structured outputs take it, or None where they cannot say it.
    Every object closed (Anthropic refuses one without `additionalProperties: false`, 400 "For
    'object' type, 'additionalProperties' must be explicitly set to false"; OpenAI's strict
    schemas close them already); an object open to any property on purpose (`{"type":
    "object"}` with no properties, or `additionalProperties` true or a schema) is what the
    native form cannot say: closed, Claude could only answer `{}`. oneOf as anyOf, and the
    keywords it does not enforce in the description, as Anthropic's SDK sends them."""
    if not isinstance(schema, dict) or not schema:  # none, or {}: any JSON value
        return None
    try:
        return _closed(schema)
    except _Open:
        return None


def _closed(schema: dict) -> dict:
    out = dict(schema)
    if "oneOf" in out and "anyOf" not in out:
        out["anyOf"] = out.pop("oneOf")
    moved = {name: out.pop(name) for name in _UNENFORCED if name in out}
    if out.get("minItems") not in (None, 0, 1):
        moved["minItems"] = out.pop("minItems")
    if "format" in out and out["format"] not in _FORMATS:
        moved["format"] = out.pop("format")
    if moved:
        said = ", ".join(f"{name}: {json.dumps(value)}" for name, value in moved.items())
        before = out.get("description")
        out["description"] = f"{before}\n\n{{{said}}}" if isinstance(before, str) else f"{{{said}}}"
    kind = out.get("type")
    if kind == "object" or (isinstance(kind, list) and "object" in kind) or "properties" in out:
        extra = out.get("additionalProperties")
        if extra not in (None, False) or (extra is None and not out.get("properties")):
            raise _Open
        out["additionalProperties"] = False
    for name in _SUBSCHEMAS:
        if isinstance(out.get(name), dict):
            out[name] = _closed(out[name])
    for name in _SCHEMA_LISTS:
        if isinstance(out.get(name), list):
            out[name] = [_closed(s) if isinstance(s, dict) else s for s in out[name]]
    for name in _SCHEMA_MAPS:
        if isinstance(out.get(name), dict):
            out[name] = {
                key: _closed(s) if isinstance(s, dict) else s for key, s in out[name].items()
            }
    return out
