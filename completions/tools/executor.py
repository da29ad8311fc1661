"""Running one server-side tool call: an HTTP request or a built-in, never raising.

HTTP tools: the arguments go as the JSON body (POST/PUT/PATCH) or the query string (GET,
DELETE, beside the URL's own parameters, which win); every request carries `Idempotency-Key`
(the same for a call however often it is tried), the loop guard's hop marks
(completions.providers.hops) and the tool's own headers (decrypted here, never logged).
Private, loopback and link-local addresses are refused unless
ENGRAM_TOOLS_ALLOW_PRIVATE_NETWORKS: a literal address before the request, a host name by the
resolver the connection uses (so a name that resolves to a private address later is caught
too). The answer's text (cut to MAX_RESULT characters
with a mark saying how many more were left out, NULs dropped and lone surrogates replaced:
config.common.jsonbody.storable) is the tool's result; a status >= 400, a timeout or a refused
address is an error result, which the model receives as the tool's answer.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from asgiref.sync import sync_to_async

from completions.providers import hops
from completions.tools import builtins, policy
from completions.tools.models import Tool
from completions.tools.services.tools import headers_of
from config.common.errors import DomainError
from config.common.jsonbody import storable

MAX_RESULT = 16_000
IDEMPOTENCY_HEADER = "Idempotency-Key"


@dataclass
class Result:
    content: str
    error: str | None
    ms: float


@dataclass(frozen=True)
class Scope:
    """Who the call acts for: built-ins read and write this user's memories, unless the
    agent's memory is off (`memory`: its policy's `enabled`)."""

    workspace: Any
    user_id: str | None
    collection_ids: tuple[str, ...]
    memory: bool = True


class PrivateAddress(Exception):
    pass


class _CheckedResolver(AbstractResolver):
    def __init__(self) -> None:
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        infos = await self._inner.resolve(host, port, family)
        if not all(policy.address_allowed(info["host"]) for info in infos):
            raise PrivateAddress(host)
        return infos

    async def close(self) -> None:
        await self._inner.close()


async def _http(tool: Tool, arguments: dict, idempotency_key: str) -> str:
    # The host the client connects to (policy.connected_host), not urlsplit's: an address
    # goes to no resolver, so this is its one check.
    policy.host_allowed(policy.connected_host(tool.http_url))
    # A reserved header (policy.RESERVED_HEADERS) stored before the rule is left out.
    own = {k: v for k, v in headers_of(tool).items() if not policy.header_reserved(k)}
    # The hop mark: a tool that calls this Engram's own chat (the agent itself, at last) is
    # counted by the loop guard, and stops at its limit.
    headers = {**own, IDEMPOTENCY_HEADER: idempotency_key, hops.HEADER: hops.through_tool()}
    kwargs: dict[str, Any] = {"headers": headers}
    if tool.http_method in ("GET", "DELETE"):
        # The URL's own query parameters are the operator's (a key, a fixed filter): an
        # argument of the same name is left out, else the request would carry both values
        # and the tool's server pick either.
        fixed = {
            name for name, _ in parse_qsl(urlsplit(tool.http_url).query, keep_blank_values=True)
        }
        kwargs["params"] = {
            k: v if isinstance(v, str) else json.dumps(v)
            for k, v in arguments.items()
            if k not in fixed
        }
    else:
        kwargs["json"] = arguments
    if any(policy.HEADER_CONTROL.search(value) for value in headers.values()):
        # Stored before policy.http refused them: aiohttp would raise a ValueError.
        raise _Failed("the tool's headers cannot be sent: a value holds a control character")
    connector = aiohttp.TCPConnector(resolver=_CheckedResolver(), use_dns_cache=False)
    timeout = aiohttp.ClientTimeout(total=tool.timeout_seconds)
    # No redirects: a redirect to a literal private address would pass the resolver's check.
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        session.request(
            tool.http_method, tool.http_url, allow_redirects=False, **kwargs
        ) as response,
    ):
        # Never a whole huge body in memory: 4 bytes a character at most, and whether it goes on.
        raw, more = await _read_at_most(response, MAX_RESULT * 4)
        try:
            text = raw.decode(response.charset or "utf-8", errors="replace")
        except (LookupError, UnicodeError):
            # A charset Python does not know, or a codec that raises whatever `errors` says
            # (charset=idna, punycode): the run failed on the tool's answer.
            text = raw.decode("utf-8", errors="replace")
        text = redacted(text, [v for k, v in own.items() if not _plain(k)])
        if response.status >= 400:
            raise _Failed(f"HTTP {response.status}: {text[:500]}")
        if 300 <= response.status < 400:
            raise _Failed(f"HTTP {response.status}: tools' redirects are not followed")
        return cut(text, more=more)


# A header value (or its credential) shorter than this is left in what the tool answers: a
# credential that short is refused at the tool's creation (policy.short_credential).
MIN_SECRET = policy.MIN_SECRET


# Headers that say how to talk, not who talks: their values ("application/json") are no
# secret, and taking them out of an answer would blank ordinary text.
PLAIN_HEADERS = frozenset(("content-type", "user-agent", "cache-control", "content-language"))


def _plain(name: str) -> bool:
    lowered = name.lower()
    return lowered in PLAIN_HEADERS or lowered.startswith("accept")


def redacted(text: str, values: Any) -> str:
    """`text` with the tool's own header values replaced by the mask a read of the tool shows:
    a tool that echoes its request (httpbin's /anything, an error page quoting the token it
    refused) handed its secret to the model, the run's record (GET /v1/executions) and the
    conversation."""
    secrets: set[str] = set()
    for value in values:
        secrets.update(p for p in (value, value.rsplit(" ", 1)[-1]) if len(p) >= MIN_SECRET)
    for secret in sorted(secrets, key=len, reverse=True):  # the whole value before its part
        text = text.replace(secret, policy.HEADER_MASK)
    return text


def cut(text: str, *, more: bool, limit: int = MAX_RESULT, before: int = 0) -> str:
    """The text up to `limit` characters; a longer one ends with a mark saying how much was
    left out (`before`: what an earlier cut left out already), so the model (and the run's
    record) knows it reads a part, not the whole."""
    if len(text) <= limit and not more:
        return text
    left = len(text) - limit + before
    return text[:limit] + f"\n[cut: {'over ' if more else ''}{left:,} more characters left out]"


_MARK = re.compile(r"\n\[cut: (over )?([0-9,]+) more characters left out\]\Z")


def cut_again(text: str, limit: int) -> str:
    """A result (cut already or not) cut to `limit` characters, with one mark counting all
    that was left out (completions.tools.window fits a follow-up model call to the window)."""
    mark = _MARK.search(text)
    if mark is None:
        return cut(text, more=False, limit=limit) if len(text) > limit else text
    kept = text[: mark.start()]
    if len(kept) <= limit:
        return text
    before = int(mark.group(2).replace(",", ""))
    return cut(kept, more=bool(mark.group(1)), limit=limit, before=before)


async def _read_at_most(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """The body up to `limit` bytes, and whether more followed. One `content.read(n)` gives
    what has arrived so far, which for an answer in several packets is its first part only."""
    parts: list[bytes] = []
    size = 0
    while size < limit:
        part = await response.content.read(limit - size)
        if not part:
            return b"".join(parts), False
        parts.append(part)
        size += len(part)
    # Not a read of one more byte: a tool that stalls after the limit would time the call out.
    return b"".join(parts), not response.content.at_eof()


class _Failed(Exception):
    pass


def _arguments(raw: str) -> dict:
    try:
        return policy.call_arguments(raw)
    except ValueError as exc:
        raise _Failed(str(exc)) from None


async def execute(*, tool: Tool, arguments: str, idempotency_key: str, scope: Scope) -> Result:
    started = time.perf_counter()
    try:
        args = _arguments(arguments)
        if tool.kind == Tool.Kind.HTTP:
            content = await _http(tool, args, idempotency_key)
        else:
            content = await sync_to_async(builtins.run, thread_sensitive=False)(
                tool.builtin, args, scope
            )
        error = None
    except (_Failed, builtins.Refused) as exc:
        content, error = "", str(exc)
    except DomainError as exc:  # a private literal address, a bad argument to a built-in
        content, error = "", exc.message
    except PrivateAddress:
        content, error = "", "refused: the tool's host resolves to a private address"
    except TimeoutError:
        content, error = "", f"timed out after {tool.timeout_seconds:g} s"
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        # ValueError: what the client raises for a URL or header it cannot send (a host name
        # label over 63 characters, stored before policy.http refused it: a UnicodeError).
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, PrivateAddress):
            content, error = "", "refused: the tool's host resolves to a private address"
        else:
            content, error = "", f"the request failed ({type(exc).__name__})"
    # What a tool answers is stored with the run and read by the tokenizer: a NUL byte or a
    # lone surrogate in it would fail the run (an error's text quotes the tool's body too).
    ms = (time.perf_counter() - started) * 1000
    return Result(storable(content), None if error is None else storable(error), ms)


def tool_message(call_id: str, result: Result) -> dict:
    """The `tool` message the model receives for a call."""
    content = result.content if result.error is None else json.dumps({"error": result.error})
    return {"role": "tool", "tool_call_id": call_id, "content": content}


async def execute_all(
    calls: list[dict], tools: dict[str, Tool], *, key_prefix: str, scope: Scope
) -> list[Result]:
    """Several calls of one step at once (the model asked for them together)."""
    return list(
        await asyncio.gather(
            *(
                execute(
                    tool=tools[c["function"]["name"]],
                    arguments=c["function"].get("arguments") or "",
                    idempotency_key=f"{key_prefix}:{c['id']}",
                    scope=scope,
                )
                for c in calls
            )
        )
    )
