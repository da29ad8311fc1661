"""The shape of an agent's configuration: names, parameters, the memory policy. One checker for
the API, the admin and the services (which call it); everything raises `Invalid` naming the field.
"""

from __future__ import annotations

import re
from typing import cast

from completions import validation
from config.common.closed import unknown_fields_check
from config.common.errors import ApiError, Invalid
from config.common.ids import ID_RULE, is_id
from config.common.jsonbody import metadata_problem
from memory.knowledge.search import MAX_COLLECTIONS, TOO_MANY_COLLECTIONS

NAME_RULE = "1-64 characters of letters, digits and . _ -, starting with a letter or digit"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # NAME_RULE, in the OpenAPI document too
_NAME = re.compile(NAME_PATTERN)
MAX_INSTRUCTIONS_CHARS = 100_000
# The request parameters an agent may preset (the request's own values win). Each is checked by
# completions.validation, the chat body's one validator.
PARAMETERS = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "presence_penalty",
    "frequency_penalty",
    "stop",
    "seed",
    "response_format",
    "reasoning_effort",
    "logit_bias",
    "service_tier",
)
# The memory policy, with its defaults (what a turn does without an agent).
MEMORY_FLAGS = {"enabled": True, "extraction": True, "retrieve_messages": True}
# Per-block token caps of the context (memory.turn.assembly.caps_for); absent: the settings'.
BUDGET_BLOCKS = ("summary", "knowledge", "memories", "retrieved")
MAX_BUDGET_TOKENS = 1_000_000


def name(value: object) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise Invalid(f"name must be {NAME_RULE}.", field="name")
    return value


def model(value: object) -> str:
    if not isinstance(value, str) or not is_id(value):
        raise Invalid(f"model must be a model name: {ID_RULE}.", field="model")
    if value.startswith(("agent_", "agent:")):
        raise Invalid("An agent's model must be a model, not another agent.", field="model")
    return value


def instructions(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Invalid("instructions must be a string.", field="instructions")
    if len(value) > MAX_INSTRUCTIONS_CHARS:
        raise Invalid(
            f"instructions must be at most {MAX_INSTRUCTIONS_CHARS} characters.",
            field="instructions",
        )
    return value


def parameters(value: object) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid("parameters must be a JSON object.", field="parameters")
    unknown_fields_check(value, PARAMETERS, where="parameters")
    params = {k: v for k, v in value.items() if v is not None}
    try:
        validation.validate(
            {"messages": [{"role": "user", "content": "-"}], **params}, model_required=False
        )
    except ApiError as exc:
        raise Invalid(f"parameters: {exc.message}", field="parameters") from None
    return params


def memory(value: object) -> dict:
    """The whole policy, defaults filled in: {"enabled", "extraction", "retrieve_messages",
    "budgets": {block: tokens}}."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise Invalid("memory must be a JSON object.", field="memory")
    unknown_fields_check(value, [*MEMORY_FLAGS, "budgets"], where="memory")
    policy: dict = {}
    for flag, default in MEMORY_FLAGS.items():
        flag_value = value.get(flag, default)
        if not isinstance(flag_value, bool):
            raise Invalid(f"memory.{flag} must be true or false.", field="memory")
        policy[flag] = flag_value
    budgets = value.get("budgets")
    if budgets is None:
        budgets = {}
    if not isinstance(budgets, dict):  # `false`, `0`, `[]` and `""` too: not silently none
        raise Invalid("memory.budgets must be a JSON object.", field="memory")
    unknown_fields_check(budgets, BUDGET_BLOCKS, where="memory.budgets")
    for block, tokens in budgets.items():
        if (
            not isinstance(tokens, int)
            or isinstance(tokens, bool)
            or not 0 <= tokens <= MAX_BUDGET_TOKENS
        ):
            raise Invalid(
                f"memory.budgets.{block} must be an integer of tokens, 0-{MAX_BUDGET_TOKENS}.",
                field="memory",
            )
    policy["budgets"] = {b: budgets[b] for b in BUDGET_BLOCKS if b in budgets}
    return policy


def collection_ids(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and is_id(v) for v in value):
        raise Invalid("collection_ids must be an array of collection ids.", field="collection_ids")
    if len(value) > MAX_COLLECTIONS:
        raise Invalid(TOO_MANY_COLLECTIONS, field="collection_ids")
    return list(dict.fromkeys(value))


def metadata(value: object) -> dict:
    if value is None:
        return {}
    problem = metadata_problem(value)
    if problem:
        raise Invalid(problem, field="metadata")
    return cast(dict, value)


CHECKS = {
    "name": name,
    "instructions": instructions,
    "model": model,
    "parameters": parameters,
    "memory": memory,
    "collection_ids": collection_ids,
    "metadata": metadata,
}
