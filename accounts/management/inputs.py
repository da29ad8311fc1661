"""What a management command is given, checked by the parser the HTTP API uses for the same
input: a name of 201 characters, with a NUL or a lone surrogate (argv's undecodable bytes come
as one) was a traceback from the database or the terminal; it is the API's message, and the
command exits non-zero (CommandError)."""

from __future__ import annotations

import json

from django.core.management.base import CommandError
from rest_framework import serializers

from accounts.models import Workspace
from config.common import jsonbody
from config.common.errors import ApiError, unknown_id, validation_error
from config.common.ids import ID_RULE, is_id


def validated(serializer: type[serializers.Serializer], **values: object) -> dict:
    """`values` as the API's body parser (jsonbody: no NUL, no lone surrogate) and then
    `serializer` (the API's input) validate them, or CommandError with the API's message."""
    try:
        jsonbody.check(values)
    except ApiError as exc:
        raise CommandError(exc.message) from None
    data = serializer(data=values)
    try:
        data.is_valid(raise_exception=True)
    except serializers.ValidationError as exc:
        raise CommandError(validation_error(exc).message) from None
    return dict(data.validated_data)


def live_workspace(workspace_id: str) -> Workspace:
    """The workspace a command names (not one being deleted), or CommandError. An id outside
    the rule matches no route over HTTP; here it is named, escaped (no NUL or surrogate echoed)."""
    if not is_id(workspace_id):
        shown = json.dumps(workspace_id[:64])
        raise CommandError(f"No workspace {shown}: a workspace id is {ID_RULE}.")
    workspace = Workspace.objects.filter(id=workspace_id, deleted_at=None).first()
    if workspace is None:
        raise CommandError(unknown_id("workspace", workspace_id))
    return workspace
