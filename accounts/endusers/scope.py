"""How the REST APIs keep an end user's token to its own user (a workspace key is unchanged).

Another user's id named by the caller is a 403 naming the field; another user's object reached
by its own id is not found (a selector scoped by `user_id`): an end user learns nothing of what
others have.
"""

from __future__ import annotations

from typing import overload

from config.common.errors import Forbidden, workspace_key_required


def end_user(request) -> str | None:
    """The token's user, or None for a workspace key (DRF's request reads the Django one's)."""
    principal = getattr(request, "principal", None)
    return principal.end_user if principal is not None else None


@overload
def own_user(request, given: str, field: str = ...) -> str: ...
@overload
def own_user(request, given: str | None, field: str = ...) -> str | None: ...


def own_user(request, given: str | None, field: str = "user_id") -> str | None:
    """The user id a call acts on: the key holder's choice, or the token's own user."""
    user = end_user(request)
    if user is None:
        return given
    if given not in (None, "") and given != user:
        raise Forbidden(
            f"{field} names another user than this end-user token's.",
            field=field,
            code="user_mismatch",
        )
    return user


def with_own_user(request, data):
    """A body whose `user_id` an end user may leave out (it can only be theirs)."""
    user = end_user(request)
    if user is None or not hasattr(data, "get") or data.get("user_id") not in (None, ""):
        return data
    data = data.copy()
    data["user_id"] = user
    return data


def workspace_key_only(request) -> None:
    """A method an end-user token may not use on a route it otherwise may (importing messages):
    the refusal IsWorkspace answers for a whole route."""
    if end_user(request) is not None:
        raise workspace_key_required()
