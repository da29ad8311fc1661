"""Authenticates every non-public path before routing, so a bad key is 401 on any path."""

from __future__ import annotations

from accounts.authentication import (
    WORKSPACE_HEADER,
    bearer_token,
    check_claimed_workspace,
    resolve_async,
    resolve_sync,
)
from config.common.errors import ApiError, invalid_api_key
from config.common.middleware import AsyncCapable

PUBLIC_PREFIXES = (
    "/healthz",
    "/readyz",
    "/admin",  # the admin's own sign-in guards it; "/admin" redirects to "/admin/"
    "/favicon.ico",
    "/static/",
    "/v1/schema",
    "/docs",
    "/playground",
)


def _is_public(path: str) -> bool:
    return path == "/" or path.startswith(PUBLIC_PREFIXES)


def _apply(request, principal) -> None:
    check_claimed_workspace(
        workspace=principal.workspace, claimed=request.headers.get(WORKSPACE_HEADER)
    )
    request.principal = principal
    request.workspace = principal.workspace
    request.api_key_id = principal.key_id


class ApiKeyMiddleware(AsyncCapable):
    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        request.principal = request.workspace = request.api_key_id = None
        if _is_public(request.path):
            return self.get_response(request)
        token = bearer_token(request.headers.get("Authorization", ""))
        try:
            principal = (
                resolve_sync(token, request.headers.get(WORKSPACE_HEADER)) if token else None
            )
        except ApiError as refused:  # an end-user token that failed a check says which
            return refused.response()
        if principal is None:
            return invalid_api_key().response()
        try:
            _apply(request, principal)
        except ApiError as refused:
            return refused.response()
        return self.get_response(request)

    async def __acall__(self, request):
        request.principal = request.workspace = request.api_key_id = None
        if _is_public(request.path):
            return await self.get_response(request)
        token = bearer_token(request.headers.get("Authorization", ""))
        try:
            principal = (
                await resolve_async(token, request.headers.get(WORKSPACE_HEADER)) if token else None
            )
        except ApiError as refused:
            return refused.response()
        if principal is None:
            return invalid_api_key().response()
        try:
            _apply(request, principal)
        except ApiError as refused:
            return refused.response()
        return await self.get_response(request)
