"""Validation of the chat completions body: what Engram relies on, in OpenAI's words.

Hand-written rather than a DRF serializer: it runs on every request, and unknown fields must
pass through untouched (validation never rewrites the body, only rejects it).
"""

from __future__ import annotations

from config.common import jsonbody
from config.common.errors import ApiError
from config.common.ids import ID_RULE, is_id

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_USER_PARTS = ("text", "image_url", "input_audio", "file")
# Roles whose message may be a text alone (a tool's needs its tool_call_id, a function's its name).
_TEXT_ROLES = ("system", "developer", "user", "assistant")
_NAMES = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    dict: "an object",
    list: "an array",
}


def _invalid(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, str) and not value.strip():
        return "a blank string" if value else "an empty string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return _NAMES.get(type(value), type(value).__name__)


def _type_error(param: str, expected: str, value) -> ApiError:
    return _invalid(
        param,
        f"Invalid type for '{param}': expected {expected}, but got {_kind(value)} instead.",
        "invalid_type",
    )


def _object(container: dict, name: str, param: str) -> dict:
    """`container[name]`, 400 naming `param.name` unless it is an object. Each field is checked
    with its own value: checked with its container's, `tools: ["x"]` read "Invalid type for
    'tools[0].type': expected a string, but got a string instead"."""
    value = container.get(name)
    if not isinstance(value, dict):
        raise _type_error(f"{param}.{name}", "an object", value)
    return value


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse(raw: bytes) -> dict:
    """The JSON object of a chat body: config.common.jsonbody, the one decoder of every door."""
    return jsonbody.loads_object(raw)


def _number(body: dict, name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if not _is_number(value):
        raise _type_error(name, "a number", value)
    if not low <= value <= high:
        raise _invalid(name, f"Invalid '{name}': {value} is not between {low:g} and {high:g}.")


# An answer's token cap: the largest a 32-bit field holds (vLLM, llama.cpp), far past any
# model's. Unbounded, 10**30 reached the limits' arithmetic and came back as a reset header of
# -9223372036854775808ms.
MAX_OUTPUT_TOKENS = 2**31 - 1


def _integer(body: dict, name: str, low: int, high: int | None = None) -> None:
    value = body.get(name)
    if value is None:
        return
    if not _is_int(value):
        raise _type_error(name, "an integer", value)
    if value < low or (high is not None and value > high):
        bound = f"at least {low}" if high is None else f"between {low} and {high}"
        raise _invalid(name, f"Invalid '{name}': {value} must be {bound}.")


def _text_parts(parts: list, param: str, allowed: tuple[str, ...] = ("text",)) -> None:
    for j, part in enumerate(parts):
        where = f"{param}[{j}]"
        if not isinstance(part, dict):
            raise _type_error(where, "an object", part)
        kind = part.get("type")
        if kind not in allowed:
            raise _invalid(
                f"{where}.type",
                f"Invalid value for '{where}.type': expected one of {', '.join(allowed)}.",
            )
        if kind in ("text", "refusal") and not isinstance(part.get(kind), str):
            raise _type_error(f"{where}.{kind}", "a string", part.get(kind))
        if kind == "image_url":
            # Each name with its own value: `"image_url": "https://..."` (a common slip) read
            # "expected a string, but got a string instead", naming the url it did not have.
            image = part.get("image_url")
            if not isinstance(image, dict):
                raise _type_error(f"{where}.image_url", "an object", image)
            if not isinstance(image.get("url"), str):
                raise _type_error(f"{where}.image_url.url", "a string", image.get("url"))
        if kind in ("input_audio", "file") and not isinstance(part.get(kind), dict):
            raise _type_error(f"{where}.{kind}", "an object", part.get(kind))


def _content(message: dict, param: str, *, parts: tuple[str, ...], required: bool) -> None:
    content = message.get("content")
    if content is None:
        if required:
            raise _invalid(
                param, f"Missing required parameter: '{param}'.", "missing_required_parameter"
            )
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _type_error(param, "one of a string or array of objects", content)
    _text_parts(content, param, parts)


def _tool_calls(calls, param: str) -> None:
    if not isinstance(calls, list):
        raise _type_error(param, "an array", calls)
    for j, call in enumerate(calls):
        where = f"{param}[{j}]"
        if not isinstance(call, dict):
            raise _type_error(where, "an object", call)
        if not isinstance(call.get("id"), str):
            raise _type_error(f"{where}.id", "a string", call.get("id"))
        if call.get("type", "function") == "function":
            _called(call, "function", where)


def _called(container: dict, name: str, param: str) -> None:
    """A call's function (a tool call's `function`, a message's legacy `function_call`): an
    object whose `name` and `arguments` are strings, each refusal naming its own field."""
    function = _object(container, name, param)
    for field in ("name", "arguments"):
        if not isinstance(function.get(field), str):
            raise _type_error(f"{param}.{name}.{field}", "a string", function.get(field))


def _call_fields(message: dict, param: str, role: str) -> None:
    """The tool-call fields, whatever the role: a message is stored as it came and sent again
    as history with later turns, so a malformed one would fail every turn after it."""
    calls = message.get("tool_calls")
    if calls is not None:
        if calls and role != "assistant":
            raise _invalid(
                f"{param}.tool_calls",
                f"Invalid parameter: '{param}.tool_calls' is only allowed on messages with "
                "role 'assistant'.",
            )
        _tool_calls(calls, f"{param}.tool_calls")
    for name in ("tool_call_id", "refusal"):
        value = message.get(name)
        if value is not None and not isinstance(value, str):
            raise _type_error(f"{param}.{name}", "a string", value)
    if message.get("function_call") is not None:
        _called(message, "function_call", param)


def message(message, i: int) -> None:
    """`messages[i]` as every door that stores a message checks it (400 naming the field): the
    chat doors, and the import of a conversation's messages. Stored as it came and sent again
    as history, a message the upstream refuses would fail every later turn of its
    conversation."""
    if (  # the usual message, a role and a text and nothing else: nothing below refuses it
        type(message) is dict
        and len(message) == 2
        and type(message.get("content")) is str
        and message.get("role") in _TEXT_ROLES
    ):
        return  # (~7,300 instructions a message through the checks below, ~900 here: callgrind)
    param = f"messages[{i}]"
    if not isinstance(message, dict):
        raise _type_error(param, "an object", message)
    role = message.get("role")
    if role is None:
        raise _invalid(
            f"{param}.role",
            f"Missing required parameter: '{param}.role'.",
            "missing_required_parameter",
        )
    if role not in ROLES:
        raise _invalid(
            f"{param}.role",
            f"Invalid value: '{role}'. Supported values are: {', '.join(ROLES)}.",
        )
    if message.get("name") is not None and not isinstance(message["name"], str):
        raise _type_error(f"{param}.name", "a string", message["name"])
    _call_fields(message, param, role)
    content = f"{param}.content"
    if role in ("system", "developer"):
        _content(message, content, parts=("text",), required=True)
    elif role == "user":
        _content(message, content, parts=_USER_PARTS, required=True)
    elif role == "assistant":
        audio = message.get("audio")
        if audio is not None and not isinstance(_object(message, "audio", param).get("id"), str):
            raise _type_error(f"{param}.audio.id", "a string", audio.get("id"))
        # A previous audio answer comes back as its id alone (OpenAI's multi-turn audio), a
        # refusal as its words with content null (the SDK's message as it gave it).
        refusal = message.get("refusal")
        answered = bool(
            message.get("tool_calls") or message.get("function_call") or audio or refusal
        )
        _content(message, content, parts=("text", "refusal"), required=not answered)
    elif role == "tool":
        _content(message, content, parts=("text",), required=True)
        if not isinstance(message.get("tool_call_id"), str):
            raise _type_error(f"{param}.tool_call_id", "a string", message.get("tool_call_id"))
    elif role == "function":
        if not isinstance(message.get("name"), str):
            raise _type_error(f"{param}.name", "a string", message.get("name"))
        _content(message, content, parts=("text",), required=False)


def _tools(body: dict) -> None:
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise _type_error("tools", "an array", tools)
    for j, tool in enumerate(tools or ()):
        where = f"tools[{j}]"
        if not isinstance(tool, dict):
            raise _type_error(where, "an object", tool)
        if not isinstance(tool.get("type"), str):
            raise _type_error(f"{where}.type", "a string", tool.get("type"))
        if tool["type"] == "function":
            function = _object(tool, "function", where)
            if not isinstance(function.get("name"), str):
                raise _type_error(f"{where}.function.name", "a string", function.get("name"))
            params = function.get("parameters")
            if params is not None and not isinstance(params, dict):
                raise _type_error(f"{where}.function.parameters", "an object", params)
    choice = body.get("tool_choice")
    if choice is None or choice in ("none", "auto", "required"):
        return
    if isinstance(choice, str):
        raise _invalid(
            "tool_choice", "Invalid 'tool_choice': use none, auto, required or an object."
        )
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        raise _type_error("tool_choice", "a string or an object", choice)
    if choice["type"] == "function":  # names the function to call (Anthropic got a null name)
        chosen = choice.get("function")
        name = chosen.get("name") if isinstance(chosen, dict) else None
        if not isinstance(name, str) or not name:
            raise _type_error("tool_choice.function.name", "a string", name)


def _response_format(body: dict) -> None:
    fmt = body.get("response_format")
    if fmt is None:
        return
    if not isinstance(fmt, dict):
        raise _type_error("response_format", "an object", fmt)
    kind = fmt.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise _invalid(
            "response_format.type",
            "Invalid 'response_format.type': expected one of text, json_object, json_schema.",
        )
    if kind == "json_schema":
        schema = fmt.get("json_schema")
        if not isinstance(schema, dict):
            raise _type_error("response_format.json_schema", "an object", schema)
        if not isinstance(schema.get("name"), str):
            raise _type_error("response_format.json_schema.name", "a string", schema.get("name"))


def metadata(body: dict) -> dict[str, str]:
    """The body's `metadata` ({} without one); 400 unless it is an object of strings. The one
    rule for it, of /v1/chat/completions and /v1/chat/resume alike."""
    value = body.get("metadata")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _type_error("metadata", "an object of strings", value)
    for key, item in value.items():
        if not isinstance(item, str):
            raise _type_error(f"metadata.{key}", "a string", item)
    return value


def client_request_id(body: dict) -> str:
    """The client's `metadata.request_id`, echoed as the answer's `engram.request_id` and kept
    in its usage record (whose column holds 200 characters); "" without one."""
    return metadata(body).get("request_id", "")[:200]


def stream_options(body: dict) -> None:
    """`stream_options`: an object, only with `stream: true` (chat's and a resume's rule)."""
    options = body.get("stream_options")
    if options is None:
        return
    if not isinstance(options, dict):
        raise _type_error("stream_options", "an object", options)
    if body.get("stream") is not True:
        raise _invalid(
            "stream_options",
            "The 'stream_options' parameter is only allowed when 'stream' is true.",
        )
    usage = options.get("include_usage")
    if usage is not None and not isinstance(usage, bool):
        raise _type_error("stream_options.include_usage", "a boolean", usage)


def include_usage(body: dict) -> bool:
    """Whether the client asked for the usage chunk (`stream_options.include_usage: true`), once
    `stream_options` passed; the one reader for every stream (chat's relay, a run's, a resume's,
    a replay's)."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


_NUMBERS = (
    ("temperature", 0, 2),
    ("top_p", 0, 1),
    ("presence_penalty", -2, 2),
    ("frequency_penalty", -2, 2),
)
_INTEGERS = (
    ("n", 1, 128),
    ("max_tokens", 1, MAX_OUTPUT_TOKENS),
    ("max_completion_tokens", 1, MAX_OUTPUT_TOKENS),
    ("top_logprobs", 0, 20),
    ("seed", -(2**63), 2**63 - 1),
)
_FLAGS = ("stream", "logprobs", "parallel_tool_calls", "store")
_STRINGS = ("user", "reasoning_effort", "service_tier", "session_id")
# What metadata, stream_options, _tools and _response_format read: none of them, nothing to check.
_LATER = ("metadata", "stream_options", "tools", "tool_choice", "response_format")


def validate(body: dict, *, model_required: bool = True) -> None:
    """Raise the 400 envelope, naming `param`, for the first problem found."""
    model = body.get("model")
    if model is None and model_required:
        raise _invalid(
            "model", "Missing required parameter: 'model'.", "missing_required_parameter"
        )
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise _type_error("model", "a non-empty string", model)
    if model is not None and not is_id(model):  # checked before it names anything upstream
        raise _invalid("model", f"Invalid 'model': a model name is {ID_RULE}.")
    messages = body.get("messages")
    if messages is None:
        raise _invalid(
            "messages", "Missing required parameter: 'messages'.", "missing_required_parameter"
        )
    if not isinstance(messages, list):
        raise _type_error("messages", "an array", messages)
    if not messages:
        raise _invalid(
            "messages",
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            "empty_array",
        )
    for i, item in enumerate(messages):
        message(item, i)
    # The checks of fields a body may leave out, in the order their problems are reported: a
    # call each only for those it has (the usual body has two or three of the ~25: the calls
    # for the absent ones cost ~10,000 instructions a request, callgrind).
    for name, low, high in _NUMBERS:
        if name in body:
            _number(body, name, low, high)
    for name, low, high in _INTEGERS:
        if name in body:
            _integer(body, name, low, high)
    for name in _FLAGS:
        value = body.get(name)
        if value is not None and not isinstance(value, bool):
            raise _type_error(name, "a boolean", value)
    for name in _STRINGS:
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise _type_error(name, "a string", value)
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str):
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _type_error("stop", "a string or an array of strings", stop)
        if len(stop) > 4:
            raise _invalid("stop", "Invalid 'stop': at most 4 sequences.")
    bias = body.get("logit_bias")
    if bias is not None:
        if not isinstance(bias, dict):
            raise _type_error("logit_bias", "an object", bias)
        for token, value in bias.items():
            if not _is_number(value) or not -100 <= value <= 100:
                raise _invalid(
                    f"logit_bias.{token}", "Invalid 'logit_bias': values must be -100 to 100."
                )
    if not body.keys().isdisjoint(_LATER):
        metadata(body)
        stream_options(body)
        _tools(body)
        _response_format(body)
