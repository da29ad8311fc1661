"""POST /v1/embeddings: OpenAI's embeddings contract, served by Engram's own embedding model.

The model is the one memory and search embed with (ENGRAM_EMBEDDING_MODEL, all-MiniLM-L6-v2 by
default: 384 dimensions), run by the web process's ONNX embedder (memory.embeddings; never
torch here), so a vector an app gets is the vector Engram stores for the same text. Embeddings
are not proxied: no provider of completions.providers serves them, so any other model name is
a 404 `model_not_found` that says which model Engram embeds with.

The body is OpenAI's and closed (another field is a 400 `unknown_parameter`, as OpenAI refuses
one): `input` a string or an array of 1-MAX_INPUTS strings, none empty, each at most
MAX_INPUT_TOKENS and all together at most MAX_TOTAL_TOKENS cl100k tokens (OpenAI's bounds;
what Engram's model reads of a text is its first 256 word pieces, as sentence-transformers
truncates); token arrays are refused (the model's tokenizer is not OpenAI's); `encoding_format`
`float` (default) or `base64` (little-endian float32, as OpenAI's); `dimensions` only the
model's own; `user` an end user's id (x-user-id wins, as on the chat door; an end-user token's
own user only).

Limits: the request counts against the key's, the workspace's and the end user's requests and
tokens per minute and concurrency (accounts.limits, as a chat completion does). The model is
Engram's: unpriced it costs no credits (and a budget does not refuse it, as it does an unpriced
chat model: nothing is bought upstream); an operator who prices it (admin: Prices) charges its
prompt tokens at the input price, against budgets too. Every request after its body is read
leaves a usage record (GET /v1/usage: model the embedding model, prompt tokens, no completion
tokens, its credits), refused ones too, as a chat completion's does.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import orjson
from asgiref.sync import sync_to_async
from django.conf import settings

from accounts.limits import limiter
from accounts.limits.policy import Policy
from accounts.models import Workspace
from completions import charging, pricing, usage
from completions.request import caller_user
from config.common import tokens
from config.common.closed import unknown_fields_check
from config.common.errors import ApiError
from config.common.jsonbody import loads_object

FIELDS = ("input", "model", "encoding_format", "dimensions", "user")
ENCODINGS = ("float", "base64")
MAX_INPUTS = 2048  # OpenAI's bound on one request's array
MAX_INPUT_TOKENS = 8192  # OpenAI's bound on one input
MAX_TOTAL_TOKENS = 300_000  # OpenAI's bound on one request, all inputs together
PROVIDER = "engram"  # its usage records' provider, and the price table's: Engram's own model


def model_name() -> str:
    """The one model this door serves, named as GET /v1/models lists it."""
    return settings.ENGRAM_EMBEDDING_MODEL


@dataclass(frozen=True)
class EmbeddingRequest:
    texts: list[str]
    model: str
    encoding_format: str
    user_id: str | None


def _invalid(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _missing(param: str) -> ApiError:
    return _invalid(param, f"Missing required parameter: '{param}'.", "missing_required_parameter")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _token_arrays() -> ApiError:
    return _invalid(
        "input",
        f"Token arrays are not supported: '{model_name()}' reads text with its own tokenizer, "
        "not OpenAI's. Send the text itself (a string or an array of strings).",
        "unsupported_value",
    )


def _texts(value: object) -> list[str]:
    if value is None:
        raise _missing("input")
    if isinstance(value, str):
        value = [value]
    elif not isinstance(value, list):
        raise _invalid(
            "input",
            "Invalid type for 'input': expected a string or an array of strings.",
            "invalid_type",
        )
    if not value:
        raise _invalid("input", "'input' must not be an empty array.")
    if len(value) > MAX_INPUTS:
        raise _invalid(
            "input",
            f"'input' holds {len(value)} items; at most {MAX_INPUTS} are embedded a request.",
        )
    for i, item in enumerate(value):
        if _is_int(item) or (isinstance(item, list) and item and all(map(_is_int, item))):
            raise _token_arrays()
        if not isinstance(item, str):
            raise _invalid(
                f"input[{i}]",
                f"Invalid type for 'input[{i}]': expected a string.",
                "invalid_type",
            )
        if not item:
            raise _invalid(f"input[{i}]", f"'input[{i}]' must not be an empty string.")
    return value


def parse(raw: bytes, *, headers: Mapping[str, str], end_user: str | None) -> EmbeddingRequest:
    """The request, or the 400 (403 for another user than an end-user token's) that refuses it.
    Sizes in tokens are checked by `embed`, off the event loop."""
    body = loads_object(raw)  # NUL, lone surrogates, depth, huge arrays: a 400 naming the field
    unknown_fields_check(body, FIELDS)
    model = body.get("model")
    if model is None or model == "":
        raise _missing("model")
    if not isinstance(model, str):
        raise _invalid("model", "Invalid type for 'model': expected a string.", "invalid_type")
    if model != model_name():
        shown = model if len(model) <= 100 else f"{model[:100]}..."
        raise ApiError(
            404,
            f"The model '{shown}' does not serve embeddings here: Engram embeds with its own "
            f"model '{model_name()}' ({settings.ENGRAM_EMBEDDING_DIMENSIONS} dimensions) and "
            "does not proxy embeddings to an upstream.",
            param="model",
            code="model_not_found",
        )
    encoding = body.get("encoding_format")
    if encoding is None:
        encoding = "float"
    if encoding not in ENCODINGS:
        raise _invalid(
            "encoding_format", "Invalid 'encoding_format': expected 'float' or 'base64'."
        )
    dimensions = body.get("dimensions")
    if dimensions is not None:
        own = settings.ENGRAM_EMBEDDING_DIMENSIONS
        if not _is_int(dimensions):
            raise _invalid(
                "dimensions",
                "Invalid type for 'dimensions': expected an integer.",
                "invalid_type",
            )
        if dimensions != own:
            raise _invalid(
                "dimensions",
                f"The model '{model}' gives {own} dimensions and cannot give {dimensions}: "
                f"leave 'dimensions' out or send {own}.",
                "unsupported_value",
            )
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _invalid("user", "Invalid type for 'user': expected a string.", "invalid_type")
    texts = _texts(body.get("input"))
    return EmbeddingRequest(
        texts=texts,
        model=model,
        encoding_format=encoding,
        user_id=caller_user(headers=headers, body=body, end_user=end_user),
    )


def _token_counts(texts: list[str]) -> list[int]:
    """cl100k tokens of each input (the one tokenizer limits count in), 400 over a bound."""
    counts, total = [], 0
    for i, text in enumerate(texts):
        n = tokens.count(text)
        if n > MAX_INPUT_TOKENS:
            raise _invalid(
                f"input[{i}]",
                f"'input[{i}]' is {n} tokens; an input may be at most {MAX_INPUT_TOKENS}.",
            )
        total += n
        if total > MAX_TOTAL_TOKENS:
            raise _invalid(
                "input",
                f"'input' is over {MAX_TOTAL_TOKENS} tokens in all; send fewer or shorter inputs.",
            )
        counts.append(n)
    return counts


def _vectors(texts: list[str]) -> np.ndarray:
    from memory.embeddings import get_embedder

    return get_embedder().embed(texts)  # one call: the embedder batches by length itself


_count_on_thread = sync_to_async(_token_counts, thread_sensitive=False)
_embed_on_thread = sync_to_async(_vectors, thread_sensitive=False)


async def embed(
    parsed: EmbeddingRequest,
    *,
    workspace: Workspace,
    api_key_id: str | None,
    request_id: str,
    limits: Policy,
) -> tuple[bytes, dict[str, str]]:
    """The response body (OpenAI's list of embeddings) and its rate-limit headers; its usage
    recorded whatever the outcome (`_record`)."""
    started, started_at = time.perf_counter(), usage.now()
    prompt_tokens: int | None = None
    credits_micro = 0
    admission: limiter.Admission | None = None
    status, error_code = 500, "server_error"  # until it is answered or refused
    try:
        counts = await _count_on_thread(parsed.texts)
        prompt_tokens = sum(counts)
        price = await pricing.price_async(parsed.model, provider=PROVIDER)
        credits_micro = pricing.micro_credits(
            price, prompt=prompt_tokens, completion=0, per_usd=limits.credits_per_usd
        )
        admission = await charging.admit_tokens(
            limits=limits,
            workspace_id=workspace.id,
            key_id=api_key_id,
            user_id=parsed.user_id,
            request_id=request_id,
            tokens=prompt_tokens,
            credits_micro=credits_micro,
        )
        try:
            vectors = await _embed_on_thread(parsed.texts)
        except BaseException:  # nothing was answered: nothing is charged
            credits_micro = 0
            raise
        finally:
            charging.settle_tokens(admission, tokens=prompt_tokens, credits_micro=credits_micro)
        status, error_code = 200, ""
    except ApiError as exc:
        status, error_code = exc.status, exc.code or exc.type
        raise
    except asyncio.CancelledError:
        status, error_code = 499, "client_closed"
        raise
    finally:
        usage.record(
            usage.Usage(
                workspace_id=workspace.id,
                request_id=request_id,
                status_code=status,
                latency_ms=(time.perf_counter() - started) * 1000,
                api_key_id=api_key_id or "",
                user_id=(parsed.user_id or "")[:200],
                model=parsed.model[:200],
                upstream_model=parsed.model[:200],
                provider=PROVIDER,
                error_code=error_code[:64],
                prompt_tokens=prompt_tokens if status == 200 else None,
                completion_tokens=0 if status == 200 else None,
                total_tokens=prompt_tokens if status == 200 else None,
                credits=pricing.as_credits(credits_micro) if status == 200 else None,
                credits_per_usd=limits.credits_per_usd,
                created_at=usage.stamped(
                    admitted_ms=admission.at_ms if admission else None, started=started_at
                ),
            )
        )
    return _body(parsed, vectors, prompt_tokens), admission.headers if admission else {}


def _body(parsed: EmbeddingRequest, vectors: np.ndarray, prompt_tokens: int) -> bytes:
    data: list[dict] = []
    for i, vector in enumerate(vectors):
        embedding: object = vector
        if parsed.encoding_format == "base64":
            embedding = base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": parsed.model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        },
        option=orjson.OPT_SERIALIZE_NUMPY,  # float32 in its shortest form, as OpenAI's
    )
