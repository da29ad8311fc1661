"""An end user's rate limits on every route their token reaches, not only the chat doors.

The chat doors count a request against every subject's limits with its tokens and credits
(completions.charging). An end user's token reaches memory (read, add, search), /v1/search,
/v1/context, collection search, conversations and their own user record too, and there it was
counted against nothing: an end user limited to 20 requests a minute could search their
memories, an embedding and a vector query each, as fast as they could send. Each of those
requests now counts against the workspace's `end_user_limits` — `rpm` and `max_concurrent`,
the same Redis keys the chat doors count (one "requests per minute" of the end user, whatever
the route) — through the one limiter (accounts.limits.limiter): refused with the chat door's
429 `rate_limit_exceeded`, `retry-after` and `x-ratelimit-*` headers. `tpm` and the budget are
the chat doors' alone: these routes spend no model tokens and no credits.

A workspace key's calls are the workspace's own backend, which names a user in the body for
its own reasons: not counted against that user (the chat doors count them, as a model call's
`x-user-id`).

A view marked `counts_workspace_rates` (/v1/search, /v1/memories/search,
/v1/collections/search, /v1/context: a query embedding and vector queries each; a knowledge
upload's POST: its chunks' embeddings) counts against the workspace's and the key's `rpm` and
`max_concurrent` too, whoever calls it: a workspace key searched without limit while its chat
was held to its rpm. An APIView's method may be marked alone (a document list's GET embeds
nothing, its POST every chunk).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from asgiref.sync import async_to_sync

from accounts.limits import limiter
from accounts.limits.policy import Policy, Rule
from config.common.errors import ApiError
from config.common.middleware import AsyncCapable

_ADMISSION = "_engram_end_user_admission"
_COUNTED_BY_ITSELF = "engram_counts_its_own_limits"
_WORKSPACE_RATES = "engram_counts_workspace_rates"

View = TypeVar("View", bound=Callable)


def counts_its_own_limits(view: View) -> View:
    """A view that counts its requests against every limit itself (the chat doors: with
    their tokens and credits): not counted again here."""
    setattr(view, _COUNTED_BY_ITSELF, True)
    return view


def counts_workspace_rates(view: View) -> View:
    """A view (an APIView class, one of its methods, or a function) whose every request counts
    against the workspace's and its key's requests per minute and concurrency, as a chat
    request does."""
    setattr(view, _WORKSPACE_RATES, True)
    return view


def _counts_workspace_rates(view_func, method: str | None) -> bool:
    view_class = getattr(view_func, "view_class", None)  # APIView.as_view() keeps its class
    if getattr(view_class or view_func, _WORKSPACE_RATES, False):
        return True
    handler = getattr(view_class, (method or "").lower(), None) if view_class else None
    return getattr(handler, _WORKSPACE_RATES, False)


def _rates(rule: Rule) -> Rule | None:
    """The part of an end user's rule that a request without tokens or credits counts on."""
    if not (rule.rpm or rule.max_concurrent):
        return None
    return Rule(rpm=rule.rpm, max_concurrent=rule.max_concurrent)


async def _no_budget(subject: limiter.Subject, since_ms: int | None) -> int:
    return 0  # never asked: the rule has no budget to seed


async def _admit(request, view_func) -> ApiError | limiter.Admission | None:
    principal = getattr(request, "principal", None)
    if principal is None or principal.workspace is None:
        return None
    if getattr(view_func, _COUNTED_BY_ITSELF, False):
        return None
    limits, no_rule = principal.limits, Rule()
    end_user = (_rates(limits.end_user) if principal.end_user else None) or no_rule
    workspace = key = no_rule
    if _counts_workspace_rates(view_func, request.method):
        workspace = _rates(limits.workspace) or no_rule
        key = _rates(limits.key) or no_rule
    policy = Policy(workspace=workspace, key=key, end_user=end_user)
    if policy.empty:
        return None
    found = limiter.subjects(
        workspace_id=principal.workspace.id,
        key_id=principal.key_id,
        user_id=principal.end_user,
        policy=policy,
    )
    try:
        return await limiter.reserve(
            request_id=request.request_id,
            found=found,
            tokens=0,
            credits_micro=0,
            spent_since=_no_budget,
        )
    except ApiError as refused:
        return refused


async def _settle(admission: limiter.Admission) -> None:
    limiter.settle(admission, tokens=0, credits_micro=0)
    await asyncio.sleep(0)  # the settle is posted at the loop's next turn


def _answered(request, response):
    admission: limiter.Admission | None = getattr(request, _ADMISSION, None)
    if admission is not None:
        for name, value in admission.headers.items():
            response.setdefault(name, value)
    return response, admission


class EndUserLimitsMiddleware(AsyncCapable):
    """After ApiKeyMiddleware: an end-user token's request is counted once its view is
    known (process_view), and its concurrency slot given back when the view has answered."""

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        response, admission = _answered(request, self.get_response(request))
        if admission is not None and admission.counted:
            async_to_sync(_settle)(admission)
        return response

    async def __acall__(self, request):
        try:
            response = await self.get_response(request)
        finally:
            admission = getattr(request, _ADMISSION, None)
            if admission is not None and admission.counted:
                limiter.settle(admission, tokens=0, credits_micro=0)
        return _answered(request, response)[0]

    async def process_view(self, request, view_func, view_args, view_kwargs):
        found = await _admit(request, view_func)
        if isinstance(found, ApiError):
            return found.response()
        if found is not None:
            setattr(request, _ADMISSION, found)
        return None
