"""Closed request bodies: a field Engram does not know is a 400 naming it, never dropped.

A misspelt field (`{"name": "x", "descripton": "..."}`, `max_concurent`) used to be ignored in
silence on some routes and refused with three different codes on others. Every REST body —
the DRF serializers (`ClosedSerializer`) and the hand-written ones (agents, tools, the chat
resume) — calls `unknown_fields_check`, which answers as OpenAI does:
400 `invalid_request_error`, `code: "unknown_parameter"`, `param` the field.

A PATCH body may hold the read-only fields of the object as read (`read_only_checked`): a
client sends back what it GETs, edited, at every route that PATCHes (memories, collections,
agents, tools).

The chat doors are not closed: a chat completion passes unknown fields through to the upstream.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from django.utils.datastructures import MultiValueDict
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

from config.common.errors import UNKNOWN_PARAMETER as CODE
from config.common.errors import ApiError, Invalid
from config.common.jsonbody import field_name


def unknown_fields_check(data: Mapping, allowed: Iterable[str], *, where: str = "") -> None:
    """Invalid naming the first key of `data` (in sorted order) not in `allowed`; `where` is
    the path of a nested object (`memory`, `http`)."""
    known = set(allowed)
    unknown = sorted(str(key) for key in data if key not in known)
    if unknown:
        name = field_name(where, unknown[0])  # cut and escaped: no 10k-character key echoed
        raise Invalid(f"Unknown parameter: '{name}'.", field=name, code=CODE)


def repeated_fields_check(data: MultiValueDict, *, repeatable: Iterable[str] = ()) -> None:
    """Invalid naming the first field (in sorted order) a form or a query gives more than once,
    but for the `repeatable` ones (a list's `kind`). Django keeps the last value: two files
    uploaded at once stored the second as the document and dropped the first in silence, and
    `?user_id=a&user_id=b` listed b's memories."""
    many = set(repeatable)
    repeated = sorted(
        str(key) for key, values in data.lists() if len(values) > 1 and key not in many
    )
    if repeated:
        name = field_name("", repeated[0])
        raise Invalid(
            f"Invalid '{name}': given more than once; send one value.",
            field=name,
            code="invalid_value",
        )


class ClosedSerializer(serializers.Serializer):
    """A DRF input serializer whose body may hold only its declared fields. Nested, the error
    keeps its path (`limits.rpmx`) through DRF's own nesting of errors."""

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            _as_validation_error(unknown_fields_check, data, self.fields)
        value = super().to_internal_value(data)
        if isinstance(data, MultiValueDict):  # a form (an upload): one value a field
            _as_validation_error(repeated_fields_check, data)
        return value


def _as_validation_error(check, *args) -> None:
    """`check`, its Invalid as DRF's ValidationError: DRF nests it under the parent's field and
    the exception handler names the whole path (config.common.errors.drf_exception_handler)."""
    try:
        check(*args)
    except Invalid as exc:
        detail = {str(exc.field): [ErrorDetail(exc.message, code=exc.code or CODE)]}
        raise serializers.ValidationError(detail) from None


def read_only_checked(
    data: Any, *, stored: dict, writable: Iterable[str], ignored: Iterable[str] = ()
) -> Any:
    """A PATCH body without the read-only fields of `stored` (the object as a GET answers it):
    a client that reads an object, edits a field and sends the whole object back was answered
    400 for its `id`. One that says what is stored is taken out; one that says otherwise is a
    400 naming it (`read_only_field`): the client meant a change it cannot make. `ignored`:
    Engram's output that changes by itself (`updated_at`, counts), taken out whatever it says,
    or a read shortly before an extraction's edit could not be written back."""
    if not isinstance(data, Mapping):
        return data  # the serializer says what it must be
    writable, ignored = set(writable), set(ignored)
    kept = {}
    for name, value in data.items():
        if name in ignored:
            continue
        if name in stored and name not in writable:
            if json.dumps(value, sort_keys=True) != json.dumps(stored[name], sort_keys=True):
                raise ApiError(
                    400,
                    f"{name} is read-only: it can be sent back as read ({stored[name]!r}), "
                    "not changed.",
                    param=name,
                    code="read_only_field",
                )
            continue
        kept[name] = value
    return kept
