"""The loop guard: Engram marks every upstream request it sends, and refuses one carrying its mark.

An upstream base URL pointing back at Engram (OPENAI_BASE_URL, ANTHROPIC_BASE_URL or a
workspace's provider credential) would otherwise nest calls until something times out; a
/v1/models listing would recurse. Every provider request carries `x-engram-hop`: the marks of
the Engrams it already went through (taken from the request being served) plus this one's. The
mark is derived from SECRET_KEY, so every process of one deployment shares it and two
deployments chained on purpose do not refuse each other (a ring of them still stops: the marks
travel along). The doors call `refused` before the key check or any other work.

An agent's HTTP tool may call an Engram on purpose, this one included (another agent, with
ENGRAM_TOOLS_ALLOW_PRIVATE_NETWORKS for a local one), so a tool's request cannot carry the mark
a provider request does, which this Engram refuses at once. It carries the marks it was served
with plus the tool mark (`through_tool`): a nested agent call goes through, and an agent whose
tool calls itself again (or a ring of them) stops at MAX_HOPS, as a chain of Engrams does.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import re

from config.common.errors import ApiError
from config.common.setting import setting

HEADER = "x-engram-hop"
CODE = "engram_loop"
MAX_HOPS = 8  # a longer chain of Engrams is a loop that went through more than one deployment
_MARK = re.compile(r"^[0-9a-f]{1,64}$")
# The marks of the request being served, for the provider calls it makes (set by the doors).
_incoming: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "engram_hops", default=()
)
_cached: dict[bytes, tuple[str, str]] = {}  # label: (SECRET_KEY, its digest)


def _digest(label: bytes) -> str:
    secret = setting("SECRET_KEY")
    cached = _cached.get(label)
    if cached is None or cached[0] != secret:
        digest = hmac.new(secret.encode(), label, hashlib.sha256).hexdigest()[:16]
        cached = _cached[label] = (secret, digest)
    return cached[1]


def mark() -> str:
    """This deployment's mark: a digest of SECRET_KEY (which it does not reveal)."""
    return _digest(b"engram-hop")


def tool_mark() -> str:
    """The mark of a hop through an agent's tool: not this deployment's own, so a tool calling
    this Engram is counted, not refused."""
    return _digest(b"engram-tool-hop")


def _marks(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(m for m in (part.strip().lower() for part in value.split(",")) if _MARK.match(m))


def refused(value: str | None) -> ApiError | None:
    """The 400 for a request that already went through this Engram (its `x-engram-hop` header
    value), else None; remembers the incoming marks for this request's own upstream calls."""
    marks = _marks(value)
    if not marks:
        return None
    if mark() in marks or (len(marks) >= MAX_HOPS and tool_mark() not in marks):
        return ApiError(
            400,
            "This request came from this Engram itself: an upstream base URL points back at "
            "Engram (OPENAI_BASE_URL, ANTHROPIC_BASE_URL, or a workspace's provider credential). "
            "Point it at the real LLM provider.",
            param=HEADER,
            code=CODE,
        )
    if len(marks) >= MAX_HOPS:
        return ApiError(
            400,
            f"This request went through {len(marks)} calls of Engram, agents' tools among "
            "them: an agent's tool calls an agent that calls it back. Point the tool elsewhere.",
            param=HEADER,
            code=CODE,
        )
    _incoming.set(marks)
    return None


def outgoing() -> str:
    """The header value for an upstream request: the incoming marks, then this Engram's."""
    return ", ".join((*_incoming.get(), mark()))


def through_tool() -> str:
    """The header value for an agent's tool request: the incoming marks, then the tool mark."""
    return ", ".join((*_incoming.get(), tool_mark()))


def loop_error(provider: str, source: str) -> ApiError:
    """What the Engram that sent a looping request answers: which configuration to fix."""
    if source == "env":
        setting = f"{provider.upper()}_BASE_URL"
        where = f"the environment's {setting}"
    else:
        where = f"the base URL of the workspace's {provider} provider credential, in the admin"
    # No parentheses: the setting's name, nested in them, read as an aside within an aside.
    return ApiError(
        400,
        f"The upstream base URL of the {provider} provider points at this Engram, so Engram "
        f"would call itself. Fix {where}: point it at the real LLM provider.",
        param="model",
        code=CODE,
    )
