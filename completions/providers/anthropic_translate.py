"""OpenAI chat completions <-> Anthropic Messages, both ways (pure functions, no I/O)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from typing import Any
from urllib.parse import unquote_to_bytes

from django.conf import settings
from django.utils.crypto import salted_hmac

from completions.providers.anthropic_format import apply_response_format
from completions.providers.upstream_errors import bad_reply
from config.common.errors import ApiError

STOP_REASONS: dict[str | None, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Anthropic's pattern for a tool_use id (and a tool_result's tool_use_id): 400 otherwise.
_TOOL_ID = re.compile(r"[^a-zA-Z0-9_-]")
# A data URL's media type, RFC 2045's token "/" token (`_data_url`).
_MEDIA_TYPE = re.compile(r"^[\w!#$%&'*+.^`|~-]+/[\w!#$%&'*+.^`|~-]+$")
_DATA_URL_FORM = "data:<type>[;<name>=<value>];base64,<data>"
# What Claude reads (Anthropic's image and document blocks): images of these types; documents
# as a base64 PDF or as plain text; a document's title of 1 to 500 characters (the Messages
# API's OpenAPI schema: a longer file name failed the request).
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_READS = "Claude reads PDF and plain-text files, and JPEG, PNG, GIF and WebP images"
MAX_TITLE = 500
# OpenAI's services that change the answer, which this translation does not provide: left out,
# the answer would come unsearched, or unmoderated where the client asked to block.
_NOT_DONE = {"web_search_options": "Web search (web_search_options)", "moderation": "moderation"}
# Anthropic-native fields a client may send through an OpenAI SDK's extra_body (and
# `thinking`, which `_thinking` reads); `cache_control` is the request's automatic caching.
_NATIVE = ("top_k", "cache_control")
# OpenAI's reasoning_effort as the budget of Claude's extended thinking (LiteLLM's figures),
# for a client that sent no `thinking` of its own: it was left out, and Claude answered
# without thinking. "none" and "minimal" ask for none (Claude's least budget is 1,024).
MIN_THINKING_BUDGET = 1024  # Anthropic's least budget_tokens
THINKING_BUDGETS: dict[str, int | None] = {
    "none": None,
    "minimal": None,
    "low": 1024,
    "medium": 2048,
    "high": 4096,
}
# Thinking blocks travel in OpenAI's shape as OpenRouter's `reasoning_details` (an assistant
# message's array of {"type": "reasoning.text" | "reasoning.encrypted", ..., "format", "index"})
# and their text as `reasoning_content` (DeepSeek's, vLLM's): the client sends the details
# back unchanged, and Anthropic requires them, signed, before a tool_use it is answered for.
REASONING_FORMAT = "anthropic-claude-v1"


def _unsupported(param: str, what: str) -> ApiError:
    return ApiError(
        400, f"{what} is not supported by the Anthropic provider.", param=param, code="unsupported"
    )


def _text(content: Any) -> str:
    """A message's text: a string as it is, the text parts of a list as separate paragraphs
    (as a user message's parts are separate blocks), blank ones left out, never glued into one
    word. One rule for system, assistant and tool-result text; an assistant's refusal parts
    are what it said too."""
    if content is None or isinstance(content, str):
        return content or ""
    texts = (p.get(p.get("type"), "") for p in content if p.get("type") in ("text", "refusal"))
    return "\n\n".join(t for t in texts if t.strip())


def _data_url(url: str, param: str, what: str) -> tuple[str, dict[str, str], str]:
    """A data URL's media type (lower case), parameters and data as base64, as RFC 2397 writes
    it: `data:[<type>][;<name>=<value>]*[;base64],<data>`, text/plain when the type is left
    out, data not in base64 percent-encoded. Parameters (a charset, a file's name) were refused
    as "must be a data: URL" where the URL was one; what is malformed is a 400 saying what."""
    header, comma, data = url.partition(",")
    if not comma:
        raise ApiError(
            400, f"{what}'s data: URL has no comma before its data ({_DATA_URL_FORM}).", param=param
        )
    mime, *parts = header[len("data:") :].split(";")
    mime = mime.strip().lower() or "text/plain"
    if not _MEDIA_TYPE.match(mime):
        raise ApiError(
            400,
            f"{what}'s data: URL has '{mime[:100]}' where its media type goes, "
            f"which is type/subtype ({_DATA_URL_FORM}).",
            param=param,
        )
    encoded = bool(parts) and parts[-1].strip().lower() == "base64"
    if encoded:
        parts.pop()
    params = {}
    for part in parts:
        name, equals, value = part.partition("=")
        if not equals or not name.strip():
            raise ApiError(
                400,
                f"{what}'s data: URL has the parameter '{part[:100]}', which is not "
                f"<name>=<value> (';base64' comes last, before the comma: {_DATA_URL_FORM}).",
                param=param,
            )
        params[name.strip().lower()] = value.strip()
    if not encoded:
        data = base64.b64encode(unquote_to_bytes(data)).decode()
    return mime, params, data


def _is_data_url(url: str) -> bool:
    return url[:5].lower() == "data:"


def _image(url: str, param: str) -> dict:
    if _is_data_url(url):
        mime, _params, data = _data_url(url, param, "An image")
        # "image/jpg" is common and OpenAI takes it; Anthropic knows JPEG only as image/jpeg.
        media_type = "image/jpeg" if mime == "image/jpg" else mime
        if media_type not in IMAGE_TYPES:  # else Anthropic's 400, naming a field not sent
            raise _unsupported(param, f"An image of type '{mime}' ({_READS})")
        source = {"type": "base64", "media_type": media_type, "data": data}
    elif url.startswith(("http://", "https://")):
        source = {"type": "url", "url": url}
    else:
        raise ApiError(400, "Images must be data: or http(s): URLs.", param=param)
    return {"type": "image", "source": source}


def _text_blocks(text: str, cache: Any = None) -> list[dict]:
    """A text block, or none for blank text: Anthropic refuses a text block that is empty or
    only whitespace (400 "text content blocks must be non-empty"), where OpenAI takes it."""
    return [_cached({"type": "text", "text": text}, cache)] if text.strip() else []


def _cached(block: dict, cache: Any) -> dict:
    """`block` with the `cache_control` its part or message had: Anthropic's prompt-caching
    breakpoint, which clients put on OpenAI's content parts (as OpenRouter, LiteLLM and Portkey
    take it) or on a message. Left out, Claude cached nothing: every turn's long system prompt
    and history was paid in full, where a cache read costs a tenth."""
    if isinstance(cache, dict):
        block["cache_control"] = cache
    return block


def _parts_cache(content: Any) -> Any:
    """The `cache_control` of a message's content parts (the last one given), or None."""
    caches = [p.get("cache_control") for p in content or () if isinstance(p, dict)]
    return next((c for c in reversed(caches) if isinstance(c, dict)), None)


def _message_or_parts_cache(message: dict) -> dict | None:
    """The breakpoint of a message that becomes one block (a system text, a tool result): its
    own `cache_control` (LiteLLM's form), else its parts' (`_parts_cache`)."""
    cache = message.get("cache_control")
    return cache if isinstance(cache, dict) else _parts_cache(message.get("content"))


def _message_cache(message: dict, blocks: list[dict]) -> list[dict]:
    """A message-level `cache_control` (LiteLLM's form) on the message's last block."""
    cache = message.get("cache_control")
    if blocks and isinstance(cache, dict) and "cache_control" not in blocks[-1]:
        blocks[-1] = {**blocks[-1], "cache_control": cache}
    return blocks


def _file(part: dict, param: str) -> dict:
    """A file part as Claude reads it: a PDF as a base64 document, plain text as a text
    document, an image as an image block; the file's name as the document's title. Another
    type, or a file by id (OpenAI's Files API, which Anthropic cannot read), is a 400 naming
    the part: it reached Anthropic as a document of that type, refused (400, its field names)."""
    file = part.get("file") or {}
    data = file.get("file_data")
    if not isinstance(data, str) or not data:
        if file.get("file_id"):
            raise _unsupported(param, "A file by file_id (OpenAI's Files API; send file_data)")
        raise ApiError(400, "A file part needs its file_data.", param=param)
    if not _is_data_url(data):
        raise ApiError(
            400,
            f"A file part's file_data must be a data: URL ({_DATA_URL_FORM}).",
            param=param,
        )
    mime, params, encoded = _data_url(data, param, "A file part")
    if mime.startswith("image/"):
        return _image(data, param)
    if mime == "application/pdf":
        source = {"type": "base64", "media_type": mime, "data": encoded}
    elif mime == "text/plain":
        charset = params.get("charset") or "UTF-8"
        try:
            text = base64.b64decode(encoded, validate=True).decode(charset)
        except LookupError:
            raise ApiError(
                400, f"A text/plain file's charset '{charset[:100]}' is unknown.", param=param
            ) from None
        except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
            raise ApiError(
                400, f"A text/plain file's data must be base64 of {charset} text.", param=param
            ) from None
        source = {"type": "text", "media_type": mime, "data": text}
    else:
        raise _unsupported(param, f"A file of type '{mime}' ({_READS})")
    block: dict = {"type": "document", "source": source}
    name = file.get("filename")
    if isinstance(name, str) and name.strip():
        block["title"] = name.strip()[:MAX_TITLE]
    return block


def _user_blocks(content: Any, index: int) -> list[dict]:
    if isinstance(content, str):
        return _text_blocks(content)
    blocks = []
    for j, part in enumerate(content or []):
        param = f"messages[{index}].content[{j}]"
        kind = part.get("type")
        cache = part.get("cache_control")
        if kind == "text":
            blocks.extend(_text_blocks(part.get("text", ""), cache))
        elif kind == "image_url":
            blocks.append(_cached(_image(part["image_url"]["url"], param), cache))
        elif kind == "file":
            blocks.append(_cached(_file(part, param), cache))
        else:
            raise _unsupported(param, f"A content part of type '{kind}'")
    return blocks


def _arguments(raw: Any) -> dict:
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_value": value}


def _append(messages: list[dict], role: str, blocks: list[dict]) -> None:
    """Anthropic wants alternating roles: consecutive same-role turns merge."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def _trim_prefill(messages: list[dict]) -> None:
    """A conversation ending with the assistant's words asks Claude to continue them, and
    Anthropic refuses them ending in whitespace (400 "final assistant content cannot end with
    trailing whitespace")."""
    if not messages or messages[-1]["role"] != "assistant":
        return
    last = messages[-1]["content"][-1]
    if last["type"] == "text":
        last["text"] = last["text"].rstrip()


def _thinking_blocks(message: dict) -> list[dict]:
    """An assistant message's thinking blocks from its `reasoning_details`, in their order,
    as Anthropic signed them. Details of another provider's format, or not of this shape, are
    left out: the history may come from another model, and Anthropic refuses them."""
    details = message.get("reasoning_details")
    blocks: list[dict] = []
    for detail in details if isinstance(details, list) else ():
        if not isinstance(detail, dict) or detail.get("format", REASONING_FORMAT) != (
            REASONING_FORMAT
        ):
            continue
        kind, text = detail.get("type"), detail.get("text")
        signature, data = detail.get("signature"), detail.get("data")
        if kind == "reasoning.text" and isinstance(signature, str) and signature:
            thinking = text if isinstance(text, str) else ""
            blocks.append({"type": "thinking", "thinking": thinking, "signature": signature})
        elif kind == "reasoning.encrypted" and isinstance(data, str) and data:
            blocks.append({"type": "redacted_thinking", "data": data})
    return blocks


def reasoning_detail(block: dict, index: int) -> dict | None:
    """A thinking or redacted_thinking block as a `reasoning_details` entry, None for another
    block (or one whose fields are not strings)."""
    kind = block.get("type")
    if kind == "thinking":
        text, signature = block.get("thinking", ""), block.get("signature", "")
        if not isinstance(text, str) or not isinstance(signature, str):
            return None
        detail = {"type": "reasoning.text", "text": text, "signature": signature}
    elif kind == "redacted_thinking" and isinstance(block.get("data"), str):
        detail = {"type": "reasoning.encrypted", "data": block["data"]}
    else:
        return None
    return {**detail, "format": REASONING_FORMAT, "index": index}


def _tool_id(call_id: Any) -> Any:
    """A tool call's id as Anthropic takes it (letters, digits, _ and -), the same for the call
    and its result. Other providers' ids have more ("functions.get_weather:0" from Kimi's,
    "call_x|fc_y" from proxies) and a conversation may come from them: Anthropic refused the
    whole history (400 "tool_use.id: String should match pattern"). A digest of the id as it
    came keeps two ids that differ only in such characters apart."""
    if not isinstance(call_id, str) or not _TOOL_ID.search(call_id):
        return call_id
    digest = hashlib.sha256(call_id.encode()).hexdigest()[:8]
    return f"{_TOOL_ID.sub('_', call_id)}_{digest}"


def _tool_result(message: dict, tool_use_id: str) -> dict:
    content = message.get("content")
    value = content if isinstance(content, str) else _text(content)
    block = {"type": "tool_result", "tool_use_id": _tool_id(tool_use_id), "content": value}
    return _cached(block, _message_or_parts_cache(message))


def to_anthropic(body: dict, *, stream: bool) -> dict:
    """The Messages API request for an OpenAI chat completions body."""
    if (body.get("n") or 1) > 1:
        raise _unsupported("n", "n greater than 1")
    if body.get("functions"):  # else left out unsaid: the model answered without them
        raise _unsupported("functions", "The legacy 'functions' (use 'tools')")
    if body.get("logprobs") or body.get("top_logprobs"):  # else an answer without them
        name = "logprobs" if body.get("logprobs") else "top_logprobs"
        raise _unsupported(name, "logprobs")
    modalities = body.get("modalities")
    if body.get("audio") or (isinstance(modalities, list) and "audio" in modalities):
        # else an answer without the audio asked for (message.audio None)
        raise _unsupported("audio" if body.get("audio") else "modalities", "Audio output")
    if body.get("logit_bias"):  # OpenAI's token ids: else the banned tokens come anyway
        raise _unsupported("logit_bias", "logit_bias")
    for name, what in _NOT_DONE.items():
        if body.get(name) is not None:
            raise _unsupported(name, what)
    system: list[str] = []
    system_caches: dict[int, dict] = {}  # a system text's index -> its cache_control
    messages: list[dict] = []
    thinking = _thinking(body)
    keeps_thinking = isinstance(thinking, dict) and thinking.get("type") != "disabled"
    for i, message in enumerate(body["messages"]):
        role = message["role"]
        if role in ("system", "developer"):
            cache = _message_or_parts_cache(message)
            if cache is not None:
                system_caches[len(system)] = cache
            system.append(_text(message.get("content")))
        elif role == "user":
            blocks = _user_blocks(message.get("content"), i)
            _append(messages, "user", _message_cache(message, blocks))
        elif role == "assistant":
            if message.get("audio"):  # an id only OpenAI can read: else the turn went missing
                raise _unsupported(f"messages[{i}].audio", "An assistant message's audio")
            blocks = _thinking_blocks(message) if keeps_thinking else []
            said = _text(message.get("content"))
            refusal = message.get("refusal")  # an OpenAI answer's refusal: content empty
            cache = (
                _parts_cache(message.get("content"))
                if isinstance(message.get("content"), list)
                else None
            )
            blocks += _text_blocks(said if said.strip() or not refusal else refusal, cache)
            for j, call in enumerate(message.get("tool_calls") or []):
                if call.get("type", "function") != "function":  # unchecked: a 500 or no name
                    kind = f"A tool call of type '{call.get('type')}'"
                    raise _unsupported(f"messages[{i}].tool_calls[{j}].type", kind)
                function = call["function"]
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": _tool_id(call.get("id")),
                        "name": function.get("name"),
                        "input": _arguments(function.get("arguments")),
                    }
                )
            legacy = message.get("function_call")
            if legacy:
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": f"call_{legacy.get('name')}",
                        "name": legacy.get("name"),
                        "input": _arguments(legacy.get("arguments")),
                    }
                )
            _append(messages, "assistant", _message_cache(message, blocks))
        elif role == "tool":
            _append(messages, "user", [_tool_result(message, message["tool_call_id"])])
        elif role == "function":
            _append(messages, "user", [_tool_result(message, f"call_{message.get('name')}")])
    if not messages:
        # Anthropic takes no request without a user or assistant turn (400 "messages: at least
        # one message is required", when the client had sent one: a system message, or a blank
        # user message, which Anthropic refuses too and is left out above).
        raise ApiError(
            400,
            "Claude needs at least one user or assistant message with content, besides the "
            "system and developer messages.",
            param="messages",
            code="unsupported",
        )
    _trim_prefill(messages)
    if body.get("thinking") is None and thinking is not None and _unthought_tool_turn(messages):
        # Thinking that reasoning_effort asked for, in a tool loop whose calling turn came back
        # without its signed thinking (a client that builds the history itself): Anthropic
        # refuses that turn with thinking on (400), so the loop goes on without, as it did.
        thinking = None
    payload: dict = {
        "model": body["model"],
        "messages": messages,
        "max_tokens": body.get("max_completion_tokens")
        or body.get("max_tokens")
        or _default_max_tokens(thinking),
    }
    apply_response_format(payload, body.get("response_format"), system)
    if system_caches:  # as blocks, each system message's own, its breakpoint on it
        blocks = [
            _cached({"type": "text", "text": text}, system_caches.get(j))
            for j, text in enumerate(system)
            if text.strip()
        ]
        if blocks:
            payload["system"] = blocks
    elif system:
        payload["system"] = "\n\n".join(s for s in system if s)
    if body.get("temperature") is not None:
        payload["temperature"] = min(float(body["temperature"]), 1.0)  # Anthropic's range is 0-1
    # top_p 1 (many clients' default) restricts nothing; Claude's newer models refuse it
    # beside a temperature (400 "temperature and top_p cannot both be specified").
    if body.get("top_p") is not None and body["top_p"] < 1:
        payload["top_p"] = body["top_p"]
    stop = body.get("stop")
    # Anthropic refuses a blank stop sequence (400 "each stop sequence must contain
    # non-whitespace"), so OpenAI's common stop=["\n"] failed the whole request: left out.
    sequences = [s for s in ([stop] if isinstance(stop, str) else stop or []) if s.strip()]
    if sequences:
        payload["stop_sequences"] = sequences
    if body.get("tools"):
        payload["tools"] = [_tool(t, j) for j, t in enumerate(body["tools"])]
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice and body.get("tools"):
        payload["tool_choice"] = choice
    if isinstance(body.get("user"), str) and body["user"]:
        payload["metadata"] = {"user_id": _opaque_user(body["user"])}
    for name in _NATIVE:
        if body.get(name) is not None:
            payload[name] = body[name]
    if thinking is not None:
        payload["thinking"] = thinking
    if stream:
        payload["stream"] = True
    return payload


def _opaque_user(user: str) -> str:
    """OpenAI's `user` as Anthropic's metadata.user_id, which must be opaque ("a uuid, hash
    value, or other opaque identifier"): Anthropic refuses one that looks like an email address
    (400 "user_id appears to contain an email address"), and apps name their users by email
    (an Engram user id may hold "@"), so every such request failed. A keyed digest: the same
    user, the same id, telling Anthropic nothing of who it is."""
    return salted_hmac("engram.anthropic.user_id", user, algorithm="sha256").hexdigest()


def _thinking(body: dict) -> Any:
    """The request's extended thinking: the client's `thinking` as it came, else its
    reasoning_effort's budget (400 for an effort not in THINKING_BUDGETS), else None."""
    thinking, effort = body.get("thinking"), body.get("reasoning_effort")
    if thinking is not None or effort is None:
        return thinking
    if effort not in THINKING_BUDGETS:
        raise _unsupported("reasoning_effort", f"The reasoning_effort '{effort}'")
    budget = THINKING_BUDGETS[effort]
    choice = body.get("tool_choice")
    if body.get("tools") and (choice == "required" or isinstance(choice, dict)):
        # Claude does not think where a tool call is forced (400): the call is what was asked.
        return None
    asked = body.get("max_completion_tokens") or body.get("max_tokens")
    if budget and isinstance(asked, int) and asked <= budget:
        # OpenAI's max_completion_tokens bounds the reasoning and the answer together; Anthropic
        # refuses a budget that is not below max_tokens (400), and one below its least.
        budget = asked - 1 if asked > MIN_THINKING_BUDGET else None
    return {"type": "enabled", "budget_tokens": budget} if budget else None


def _unthought_tool_turn(messages: list[dict]) -> bool:
    """Whether the request ends with tool results for an assistant turn that does not start
    with a thinking block: with thinking on, Anthropic refuses it."""
    if len(messages) < 2 or messages[-2]["role"] != "assistant":
        return False
    results = any(b.get("type") == "tool_result" for b in messages[-1]["content"])
    first = messages[-2]["content"][0]
    return results and first.get("type") not in ("thinking", "redacted_thinking")


def _default_max_tokens(thinking: Any) -> int:
    """max_tokens for a client that gave none. Anthropic counts extended thinking in it and
    refuses a budget_tokens that is not below it (400), so a budget at or above the default
    gets the default on top of it for the answer."""
    default = settings.ENGRAM_ANTHROPIC_MAX_TOKENS
    budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
    if isinstance(budget, int) and not isinstance(budget, bool) and budget >= default:
        return budget + default
    return default


def _tool(tool: dict, index: int) -> dict:
    # Anthropic's tools are functions: another kind (OpenAI's "custom") reached it nameless.
    if tool.get("type") != "function":
        raise _unsupported(f"tools[{index}].type", f"A tool of type '{tool.get('type')}'")
    function = tool.get("function") or {}
    out = {
        "name": function.get("name"),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        out["description"] = function["description"]
    return _cached(out, tool.get("cache_control"))


def _tool_choice(choice: Any, parallel: Any) -> dict | None:
    if choice is None and parallel is not False:
        return None
    if choice in (None, "auto"):
        out: dict = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        out = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    elif isinstance(choice, dict):
        raise _unsupported("tool_choice.type", f"A tool_choice of type '{choice.get('type')}'")
    else:
        return None
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def finish_reason(stop_reason: Any) -> str:
    """OpenAI's finish_reason for Anthropic's stop_reason (whatever the upstream put there)."""
    return STOP_REASONS.get(stop_reason if isinstance(stop_reason, str) else None, "stop")


def _unexpected() -> ApiError:
    return bad_reply()


def usage_from(usage: Any) -> dict | None:
    if not usage or not isinstance(usage, dict):
        return None

    def count(name: str) -> int:
        return _count(usage.get(name))

    # Anthropic's input_tokens are the uncached rest: OpenAI's prompt_tokens hold all three.
    # The cache writes go on (OpenRouter's name for them) to be charged at their own price,
    # and of them those written for an hour (`cache_creation`'s breakdown), billed 2x the
    # input where a 5-minute write is 1.25x (completions.pricing): all were charged as 5-minute.
    cached = count("cache_read_input_tokens")
    written = count("cache_creation_input_tokens")
    breakdown = usage.get("cache_creation")
    hour = 0
    if isinstance(breakdown, dict):
        hour = _count(breakdown.get("ephemeral_1h_input_tokens"))
        written = written or hour + _count(breakdown.get("ephemeral_5m_input_tokens"))
        hour = min(hour, written)
    prompt = count("input_tokens") + cached + written
    completion = count("output_tokens")
    details = {"cached_tokens": cached, "cache_write_tokens": written}
    if hour:
        details["cache_write_1h_tokens"] = hour
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": details,
    }


def _count(value: Any) -> int:
    """A count that is not a whole number reads as none."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def from_anthropic(data: dict, *, model: str) -> dict:
    """The OpenAI chat.completion for a Messages API response."""
    if data.get("type") == "error" or ("error" in data and "content" not in data):
        # An error under status 200 (proxies in front of Anthropic): the failure it is, with
        # the upstream's message, never a "success" without an answer.
        error = data.get("error")
        said = error.get("message") if isinstance(error, dict) else error
        said = said if isinstance(said, str) else json.dumps(said)
        raise ApiError(
            502,
            f"The upstream provider answered an error with status 200: {said}",
            type="upstream_error",
            code="upstream_error",
        )
    text = ""
    tool_calls = []
    details: list[dict] = []
    content = data.get("content") or []
    # A malformed reply is the upstream's failure (502), as in the stream, not Engram's 500.
    if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
        raise _unexpected()
    for block in content:
        if block.get("type") == "text":
            if not isinstance(block.get("text", ""), str):
                raise _unexpected()
            text += block.get("text", "")
        elif (detail := reasoning_detail(block, len(details))) is not None:
            details.append(detail)
        elif block.get("type") == "tool_use":
            tool_calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        # As OpenAI writes them, and as a stream gives them (Anthropic's own
                        # text): "é", not "\\u00e9" (a CJK argument six times as long).
                        "arguments": json.dumps(block.get("input") or {}, ensure_ascii=False),
                    },
                }
            )
    message: dict = {"role": "assistant", "content": text or None, "refusal": None}
    if details:
        thought = "".join(d["text"] for d in details if d["type"] == "reasoning.text")
        if thought:  # none when every block was redacted
            message["reasoning_content"] = thought
        message["reasoning_details"] = details
    if tool_calls:
        message["tool_calls"] = tool_calls
    elif message["content"] is None:
        message["content"] = ""
    return {
        "id": f"chatcmpl-{data.get('id', '')}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data.get("model") or model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(data.get("stop_reason")),
            }
        ],
        "usage": usage_from(data.get("usage")),
    }
