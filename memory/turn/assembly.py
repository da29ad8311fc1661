"""Context assembly within a token budget: what the upstream receives.

Priority: the client's system prompt and messages (always, as sent); then the rolling summary;
knowledge chunks (when collections are asked for); memories; retrieved older messages; then the
conversation's recent turns, newest first. Injected text goes in delimited system blocks with
dates. Nothing is cut mid-message (but a rolling summary longer than its share keeps its end)
and the total never exceeds the budget (when the client's own messages already do, nothing is
added).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import lru_cache

from django.conf import settings
from django.core.signals import setting_changed

from config.common import tokens
from config.common.errors import Invalid
from config.common.setting import setting
from memory.text import (
    MESSAGE_OVERHEAD,
    REPLY_PRIMING,
    content_text,
    count_message,
    count_messages,
    count_text,
    tool_call_ids,
    utf8_bytes,
    utf8_bytes_of_messages,
)

# Context windows of models their makers serve, the longest matching prefix wins: the
# upstream refuses a request past one (context_length_exceeded). Where a family's sizes differ,
# the smaller: a window too small costs some history, one too large an upstream's 400.
_WINDOWS = [
    ("gpt-4.1", 1_047_576),
    ("gpt-4o", 128_000),
    ("gpt-4-turbo", 128_000),
    ("gpt-4-32k", 32_768),
    ("gpt-4", 8_192),
    # GPT-4 Turbo's previews: "gpt-4" alone sized them at 8 K
    ("gpt-4-1106", 128_000),
    ("gpt-4-0125", 128_000),
    ("gpt-4-vision", 128_000),
    ("gpt-3.5-turbo", 16_385),
    # GPT-5's 400 K are 272 K of input and 128 K of output: a prompt past 272 K is refused.
    ("gpt-5", 272_000),
    ("gpt-5-chat", 128_000),
    ("o1-mini", 128_000),
    ("o1", 200_000),
    ("o3", 200_000),
    ("o4", 200_000),
    ("claude", 200_000),
    ("gemini", 1_048_576),
    ("gemini-1.5-pro", 2_097_152),
]
# Open-weight families: the window is the server's setting (Ollama's num_ctx, vLLM's
# --max-model-len, a fine-tune's rope scaling), so these size the budget but are a guess.
_OPEN_WEIGHT_WINDOWS = [
    ("llama-3", 8_192),  # Llama 3 (Groq's llama3-8b-8192, Ollama's llama3); 3.1 and later:
    ("llama-3.", 128_000),
    ("llama3", 8_192),
    ("llama3.", 128_000),
    ("mistral-large", 128_000),
    ("qwen2.5", 32_768),
]


_KNOWN = dict(_WINDOWS)
_GUESSED = dict(_OPEN_WEIGHT_WINDOWS)

# Models whose tokenizer cuts the same text into more tokens than cl100k, which Engram counts
# with: their window holds that many times fewer cl100k tokens. Claude's counts 16-30% more
# (prose to code, measured against GPT-4o's), and Opus 4.7's up to 35% more again: filled to
# its window in cl100k tokens, a long conversation was refused on every turn ("prompt is too
# long"). The longest prefix of the name after its last "/" wins.
_TOKENS_PER_COUNTED = {"claude": 1.35}


# OpenAI's o200k models count a text in fewer tokens than cl100k: by OpenAI's samples
# ("Hello GPT-4o", May 2024) 1.1x fewer in English and up to 4.4x (Gujarati). A refusal counts
# their floor: an ASCII text's cl100k tokens / 1.1, any other's / 4.4.
_O200K = ("gpt-4o", "gpt-4.1", "gpt-5", "chatgpt-4o", "o1", "o3", "o4")
O200K_FEWER_ASCII = 1.1
O200K_FEWER_OTHER = 4.4


def _o200k_floor(text: str) -> int:
    return int(count_text(text) / (O200K_FEWER_ASCII if text.isascii() else O200K_FEWER_OTHER))


def tokens_per_counted(model: str) -> float:
    """The model's tokens per cl100k token, at most (1.0: as many)."""
    short = (model or "").lower().rsplit("/", 1)[-1]
    best = max((p for p in _TOKENS_PER_COUNTED if short.startswith(p)), key=len, default=None)
    return _TOKENS_PER_COUNTED[best] if best is not None else 1.0


@dataclass(frozen=True)
class Window:
    tokens: int
    # The upstream is sure to refuse a request past it: the operator's setting, or a window
    # its maker serves. Else (ENGRAM_DEFAULT_CONTEXT_WINDOW, an open-weight family's) a guess.
    known: bool


def window_of(model: str) -> Window:
    """The operator's window for the model (ENGRAM_CONTEXT_WINDOWS: the longest prefix of its
    whole name, else of the name after its last "/"), else the tables' (of that last part:
    `openai/gpt-4o`), else ENGRAM_DEFAULT_CONTEXT_WINDOW."""
    return _window_of((model or "").lower())


# Every request asks (request_fits): the prefix scans took ~6 us a call. Cached by the name
# alone, the settings read once (config.common.setting) and the cache emptied when a setting
# changes: read on each call, as the cache's key, two settings cost ~7,000 instructions.
@lru_cache(maxsize=256)
def _window_of(name: str) -> Window:
    short = name.rsplit("/", 1)[-1]
    for table, candidates, known in (
        (setting("ENGRAM_CONTEXT_WINDOWS"), (name, short), True),
        (_KNOWN, (short,), True),
        (_GUESSED, (short,), False),
    ):
        for candidate in candidates:
            best = max((p for p in table if candidate.startswith(p)), key=len, default=None)
            if best is not None:
                return Window(table[best], known)
    return Window(setting("ENGRAM_DEFAULT_CONTEXT_WINDOW"), False)


def _windows_changed(**kwargs) -> None:
    if kwargs.get("setting") in ("ENGRAM_CONTEXT_WINDOWS", "ENGRAM_DEFAULT_CONTEXT_WINDOW"):
        _window_of.cache_clear()


setting_changed.connect(_windows_changed, dispatch_uid="engram-context-windows")


def context_window(model: str) -> int:
    """The model's window in tokens (window_of)."""
    return window_of(model).tokens


# What the model reads beside the messages, counted in its prompt by the upstream: the tool
# (and legacy function) definitions and a structured output's schema.
DEFINITION_FIELDS = ("tools", "functions", "response_format")


@dataclass
class Budget:
    window: int  # in the model's tokens, as is `reserved`
    reserved: int  # for the completion
    definitions: int = 0  # the request's tools, functions and response_format (cl100k)
    tokens_per_counted: float = 1.0  # the model's tokens per cl100k token

    @property
    def total(self) -> int:
        """cl100k tokens the messages may take."""
        room = int((self.window - self.reserved) / self.tokens_per_counted)
        return max(0, room - self.definitions)


def _definitions(body: dict) -> str:
    if body.keys().isdisjoint(DEFINITION_FIELDS):  # most requests: no scan, no dict
        return ""
    present = {name: body[name] for name in DEFINITION_FIELDS if body.get(name)}
    if not present:
        return ""
    return json.dumps(present, separators=(",", ":"), ensure_ascii=False)


def definitions_tokens(body: dict) -> int:
    return count_text(_definitions(body))


def _positive_int(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _claude(model: str) -> bool:
    return (model or "").lower().rsplit("/", 1)[-1].startswith("claude")


def _thinking_budget(body: dict, model: str) -> int:
    """The extended thinking a request asks for: its `thinking.budget_tokens`, else a Claude
    model's reasoning_effort as the Anthropic provider turns it into one."""
    from completions.providers.anthropic_translate import THINKING_BUDGETS

    thinking = body.get("thinking")
    if isinstance(thinking, dict):
        return _positive_int(thinking.get("budget_tokens"))
    effort = body.get("reasoning_effort")
    if isinstance(effort, str) and _claude(model):
        return THINKING_BUDGETS.get(effort) or 0
    return 0


def _asked_completion(body: dict) -> int:
    return _positive_int(body.get("max_completion_tokens") or body.get("max_tokens"))


def request_fits(*, body: dict, model: str) -> None:
    """Refuse a request that cannot fit `model`'s window with nothing added: its own messages,
    tool definitions and the completion it asks for (Invalid, `context_length_exceeded`, the
    upstream's answer to it, without a call that would be billed). Only where the upstream is
    sure to refuse: a known window (never a guessed one: Ollama and vLLM size theirs by
    setting), and what is sure to be counted: text in cl100k tokens (Claude's tokenizer counts
    more, not fewer), or for an o200k model their floor (_o200k_floor), not the estimated
    images, audio and files, and a completion only if asked."""
    window = window_of(model)
    if not window.known:
        return
    sent = body.get("messages") or []
    # Bytes first: a request of fewer bytes than its window holds tokens fits. Tokenizing every
    # request (a pass-through counted nothing) cost ~75 us for a 600-character system prompt
    # and a 300-character question; the bound, with the window's lookup, ~33,000 instructions
    # (callgrind: the settings read twice, a call per message and text), then ~10,200, now
    # ~7,500: the usual request's parts (no definitions, a completion asked or not) looked at
    # in line, not through a call each (~600 instructions a call on this Python).
    definitions_text = "" if body.keys().isdisjoint(DEFINITION_FIELDS) else _definitions(body)
    asked = body.get("max_completion_tokens") or body.get("max_tokens")
    completion = asked if type(asked) is int and asked > 0 else _positive_int(asked)
    at_most = utf8_bytes_of_messages(sent)
    if definitions_text:
        at_most += utf8_bytes(definitions_text)
    if at_most + completion <= window.tokens:
        return
    short = (model or "").lower().rsplit("/", 1)[-1]
    counter = _o200k_floor if short.startswith(_O200K) else count_text
    messages = count_messages(sent, estimated=False, counter=counter)
    definitions = counter(definitions_text)
    needed = messages + definitions + completion
    if needed <= window.tokens:
        return
    parts = [f"{messages} in the messages"]
    if definitions:
        parts.append(f"{definitions} in the functions")
    if completion:
        parts.append(f"{completion} in the completion")
    listed = ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else parts[0]
    raise Invalid(
        f"This model's maximum context length is {window.tokens} tokens. However, you "
        f"requested {needed} tokens ({listed}). Please reduce the length of the messages"
        f"{' or completion' if completion else ''}.",
        field="messages",
        code="context_length_exceeded",
    )


def budget_for(body: dict, model: str) -> Budget:
    window = context_window(model)
    asked = _asked_completion(body)
    if asked:
        reserved = asked
    else:
        # Nothing asked: keep room for an answer rather than fill the window to the brim. A
        # Claude model gets ENGRAM_ANTHROPIC_MAX_TOKENS, and Anthropic counts extended thinking
        # in max_tokens (Engram sends the budget on top of the answer's default) and refuses a
        # prompt that leaves less than max_tokens of the window: room for both is kept.
        answer = settings.ENGRAM_ANTHROPIC_MAX_TOKENS if _claude(model) else min(4096, window // 4)
        reserved = answer + _thinking_budget(body, model)
    return Budget(
        window=window,
        reserved=reserved,
        definitions=definitions_tokens(body),
        tokens_per_counted=tokens_per_counted(model),
    )


@dataclass
class Item:
    """One memory, past message or knowledge chunk offered to a block."""

    kind: str
    id: str
    line: str
    score: float | None = None
    why: str = ""
    sources: list[dict] = field(default_factory=list)
    detail: dict = field(default_factory=dict)

    def explain(self) -> dict:
        return {
            "id": self.id,
            "type": self.kind,
            "text": self.line,
            "score": self.score,
            "why": self.why,
            "sources": self.sources,
            **self.detail,
        }


@dataclass(slots=True)  # one a stored message, ~270 a turn at the soak's conversations
class HistoryUnit:
    """Stored messages that travel together (an assistant's tool calls and their results)."""

    messages: list[dict]
    ids: list[str]
    tokens: int
    # count_message summed over `messages`, when each was known (a stored row's, counted
    # once per process: memory.turn.rows); None: counted by the assembly.
    counted: int | None = None

    def exact(self) -> int:
        """count_message summed over its messages: its share of the request's exact total."""
        if self.counted is None:
            self.counted = sum(count_message(m) for m in self.messages)
        return self.counted


@dataclass
class Block:
    name: str
    header: str
    tag: str
    items: list[Item]
    cap: int
    # Its first item, when too long for the block, keeps its end instead of being left out
    # (the rolling summary: one item, its end the most recent part).
    keeps_end: bool = False


@dataclass
class Assembly:
    messages: list[dict]
    tokens: int
    budget: int
    blocks: list[dict]
    used: dict[str, list[Item]]
    history_ids: list[str]


def caps_for(budget: int, overrides: dict[str, int] | None = None) -> dict[str, int]:
    """Each block's share: a setting (or an agent's own cap, `overrides`), never more than a
    fraction of the budget."""
    caps = overrides or {}
    return {
        "summary": min(caps.get("summary", settings.ENGRAM_CONTEXT_SUMMARY_TOKENS), budget // 6),
        "knowledge": min(
            caps.get("knowledge", settings.ENGRAM_CONTEXT_KNOWLEDGE_TOKENS), budget // 3
        ),
        "memories": min(caps.get("memories", settings.ENGRAM_CONTEXT_MEMORY_TOKENS), budget // 4),
        "retrieved": min(
            caps.get("retrieved", settings.ENGRAM_CONTEXT_RETRIEVED_TOKENS), budget // 4
        ),
    }


def _block_message(block: Block, items: list[Item]) -> dict:
    lines = "\n".join(item.line for item in items)
    return {
        "role": "system",
        "content": f"{block.header}\n<{block.tag}>\n{lines}\n</{block.tag}>",
    }


def _fill(block: Block, allowance: int) -> tuple[dict | None, list[Item], int]:
    """As many whole items as fit in min(cap, allowance); the block's exact token cost."""
    limit = min(block.cap, allowance)
    frame = count_message(_block_message(block, []))
    if not block.items or frame >= limit:
        return None, [], 0
    chosen: list[Item] = []
    estimate = frame
    for item in block.items:
        cost = count_text(item.line) + 1
        if estimate + cost > limit:
            continue  # a shorter item further down may still fit
        chosen.append(item)
        estimate += cost
    while chosen:
        message = _block_message(block, chosen)
        exact = count_message(message)
        if exact <= limit:
            return message, chosen, exact
        chosen.pop()  # token merges made the estimate low: drop the weakest
    if block.keeps_end:
        return _end_of(block, block.items[0], limit, room=limit - frame - 1)
    return None, [], 0


CUT_MARK = "…"


def _end_of(
    block: Block, item: Item, limit: int, *, room: int
) -> tuple[dict | None, list[Item], int]:
    """The block with the last tokens of `item` that fit in `limit`, marked as cut."""
    while room > 0:
        cut = replace(item, line=CUT_MARK + tokens.tail(item.line, room))
        message = _block_message(block, [cut])
        exact = count_message(message)
        if exact <= limit:
            return message, [cut], exact
        room -= exact - limit  # the mark and token merges at the cut cost a few more
    return None, [], 0


def _leading(head: list[dict], injected: list[dict]) -> list[dict]:
    """The system messages in front: the request's own, then Engram's blocks, each a message;
    or, with ENGRAM_SYSTEM_MESSAGES=one, all in one system message, for chat templates that
    take at most one (Mistral's on vLLM: "Conversation roles must alternate"). A request's
    system message with parts other than text keeps them: nothing is merged then."""
    lead = head + injected
    if settings.ENGRAM_SYSTEM_MESSAGES != "one" or len(lead) < 2:
        return lead
    if any(not isinstance(m.get("content"), str) for m in lead):
        return lead
    return [{"role": "system", "content": "\n\n".join(m["content"] for m in lead)}]


def split_head(messages: list[dict]) -> tuple[list[dict], list[dict]]:
    cut = 0
    while cut < len(messages) and messages[cut].get("role") in ("system", "developer"):
        cut += 1
    return messages[:cut], messages[cut:]


def assemble(
    *,
    request_messages: list[dict],
    blocks: list[Block],
    history: list[HistoryUnit],
    budget: int,
) -> Assembly:
    """Fit blocks (in priority order) and then history (newest first) around the request."""
    head, body = split_head(list(request_messages))
    history = list(history)
    if body and body[0].get("role") == "tool" and history and not _answered(history[-1]):
        # The request carries the results of the last stored tool calls: they go together.
        carried = history.pop()
        body = carried.messages + body
        request_messages = head + body
    if history and not _answered(history[-1]):
        history.pop()  # tool calls whose results never came: the upstream would refuse them
    mandatory = count_messages(request_messages)
    report = [{"name": "request", "tokens": mandatory - REPLY_PRIMING if mandatory else 0}]
    if mandatory > budget or not request_messages:
        return Assembly(list(request_messages), mandatory, budget, report, {}, [])
    remaining = budget - mandatory
    injected: list[dict] = []
    used: dict[str, list[Item]] = {}
    for block in blocks:
        message, chosen, cost = _fill(block, remaining)
        if message is None:
            continue
        remaining -= cost
        injected.append(message)
        used[block.name] = chosen
        report.append({"name": block.name, "tokens": cost, "items": [i.explain() for i in chosen]})
    taken: list[HistoryUnit] = []
    for unit in reversed(history):  # newest first
        if unit.tokens > remaining:
            break  # older turns would leave a gap in the conversation
        taken.append(unit)
        remaining -= unit.tokens
    taken.reverse()
    _from_a_question(taken, whole=len(taken) == len(history))
    old = [m for unit in taken for m in unit.messages]
    leading = _leading(head, injected)
    # count_messages(leading + old + body), its history's share from each unit's exact count:
    # recounted on every turn, a ~270-message history was ~5M instructions of tokenizing (the
    # token-count cache holds 1,024 texts; 200 users' conversations hold ~54,000).
    around = count_messages(leading + body)
    total = around + sum(unit.exact() for unit in taken)
    while total > budget and taken:  # per-message counts summed exactly; kept as a guard
        taken.pop(0)
        _from_a_question(taken, whole=False)
        total = around + sum(unit.exact() for unit in taken)
    old = [m for unit in taken for m in unit.messages]
    messages = leading + old + body
    if taken:
        report.append(
            {
                "name": "history",
                "tokens": sum(u.tokens for u in taken),
                "items": [
                    {"id": mid, "type": "message", "why": "recent turn of this conversation"}
                    for u in taken
                    for mid in u.ids
                ],
            }
        )
    return Assembly(
        messages=messages,
        tokens=total,
        budget=budget,
        blocks=report,
        used=used,
        history_ids=[mid for u in taken for mid in u.ids],
    )


def _from_a_question(taken: list[HistoryUnit], *, whole: bool) -> None:
    """History cut short starts at a user message: an answer (or a tool run) whose question
    was left out is left out with it; the model would read a reply to nothing, and chat
    templates that want user and assistant turns in alternation (Mistral's) refuse it."""
    while not whole and taken and taken[0].messages[0].get("role") != "user":
        taken.pop(0)


def history_units(rows: list[dict]) -> list[HistoryUnit]:
    """Group stored messages (oldest first) so a tool call never travels without its results.

    An assistant's tool calls whose results never came back are kept only as the last unit
    (the request may carry the results); anywhere else they would make the upstream refuse.
    So would a result whose call is not in the assistant message before it (a conversation
    stored before Engram kept a paused step whole held some): it is left out.
    """
    units: list[HistoryUnit] = []
    for row in rows:
        message, tokens, counted = row["message"], row["tokens"], row.get("counted")
        if message.get("role") == "tool":
            last = units[-1] if units else None
            calls = tool_call_ids(last.messages[0]) if last is not None else []
            if last is not None and message.get("tool_call_id") in calls:
                last.messages.append(message)
                last.ids.append(row["id"])
                last.tokens += tokens
                if last.counted is not None:
                    last.counted = None if counted is None else last.counted + counted
            continue  # an orphan tool result (its call is not stored) is not sendable
        if _said_nothing(message):
            continue  # nor is an answer stopped before its first word (an earlier version's)
        units.append(HistoryUnit([message], [row["id"]], tokens, counted))
    # A unit of one message without tool calls is answered (most are): no sets made for it.
    return [
        u
        for i, u in enumerate(units)
        if i == len(units) - 1
        or (len(u.messages) == 1 and not u.messages[0].get("tool_calls"))
        or _answered(u)
    ]


def _said_nothing(message: dict) -> bool:
    """An assistant message with no text, calls, refusal or audio: OpenAI refuses it (content
    is required without them), and every turn after it was refused."""
    return (
        message.get("role") == "assistant"
        and not content_text(message.get("content")).strip()
        and not any(message.get(k) for k in ("tool_calls", "function_call", "refusal", "audio"))
    )


def _answered(unit: HistoryUnit) -> bool:
    calls = {call_id for m in unit.messages for call_id in tool_call_ids(m)}
    results = {m.get("tool_call_id") for m in unit.messages if m.get("role") == "tool"}
    return calls <= results


__all__ = [
    "Assembly",
    "Block",
    "Budget",
    "HistoryUnit",
    "Item",
    "MESSAGE_OVERHEAD",
    "assemble",
    "budget_for",
    "caps_for",
    "context_window",
    "history_units",
    "request_fits",
    "split_head",
    "window_of",
]
