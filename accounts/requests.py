"""The request the gateway's Django views see: HttpRequest plus what the middleware sets on it."""

from __future__ import annotations

from django.http import HttpRequest

from accounts.authentication import Principal
from accounts.models import Workspace


class ApiRequest(HttpRequest):
    """Typing only: Django builds a plain HttpRequest and the middleware adds these."""

    request_id: str  # config.common.middleware.RequestIdMiddleware
    # accounts.middleware.ApiKeyMiddleware; None on public paths, workspace None for the operator
    principal: Principal | None
    workspace: Workspace | None
    api_key_id: str | None
