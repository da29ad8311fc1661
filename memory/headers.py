"""Engram's request headers -> a TurnContext (shared by /v1/context and the gateway).

x-user-id (else the body's `user`), x-conversation-id, x-session-id (else the body's
`session_id`), x-workspace-id (must be the key's workspace: 403 otherwise) and x-collection-ids
(a JSON array of ids).
"""

from __future__ import annotations

import json
import re

from completions.enrichment import TurnContext
from config.errors import ApiError

_ID = re.compile(r"^[\w.:@+\-/=]{1,200}$")
ENGRAM_BODY_FIELDS = ("session_id",)


def _identifier(value, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _ID.match(value.strip()):
        raise ApiError(
            400,
            f"{name} must be 1-200 characters of letters, digits and . _ : @ + - / =",
            param=name,
            code="invalid_value",
        )
    return value.strip()


def collection_ids(raw: str | None) -> list[str]:
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ApiError(
            400,
            'x-collection-ids must be a JSON array of collection ids, e.g. ["col_..."].',
            param="x-collection-ids",
            code="invalid_value",
        )
    if len(value) > 20:
        raise ApiError(
            400, "At most 20 collection ids.", param="x-collection-ids", code="invalid_value"
        )
    return list(dict.fromkeys(value))


def turn_context(request, body: dict) -> TurnContext:
    workspace = request.workspace
    claimed = request.headers.get("x-workspace-id")
    if claimed and claimed != workspace.id:
        raise ApiError(
            403,
            "x-workspace-id does not match the API key's workspace.",
            param="x-workspace-id",
            code="workspace_mismatch",
        )
    user_id = _identifier(request.headers.get("x-user-id"), "x-user-id")
    if user_id is None and body.get("user") not in (None, ""):
        user_id = _identifier(body.get("user"), "user")
    session_id = _identifier(request.headers.get("x-session-id"), "x-session-id")
    if session_id is None:
        session_id = _identifier(body.get("session_id"), "session_id")
    clean = {k: v for k, v in body.items() if k not in ENGRAM_BODY_FIELDS}
    return TurnContext(
        workspace=workspace,
        api_key_id=getattr(request, "api_key_id", None),
        request_id=getattr(request, "request_id", ""),
        body=clean,
        model=str(body.get("model") or ""),
        user_id=user_id,
        conversation_id=_identifier(request.headers.get("x-conversation-id"), "x-conversation-id"),
        session_id=session_id,
        collection_ids=collection_ids(request.headers.get("x-collection-ids")),
    )
