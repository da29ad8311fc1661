"""Late interaction: the question and each candidate read together, token by token.

A stored vector is the mean of its text's token vectors, so the one word of a long turn that
answers a question is averaged away with the rest of the turn. MaxSim (ColBERT's late
interaction) keeps the tokens: each word of the question finds its most similar token in the
candidate, and the candidate's match is the mean of those maxima, each word weighted by how
rare it is among the candidates (a word every candidate has tells none apart). The embedder's
run gives the token vectors for free (memory.embeddings.base.Tokens): the worker stores a
message's when it embeds it (MessageTokens, packed: vocabulary id and the signs of the vector,
50 bytes a token), the web takes the question's from its query embedding.

The search ranks as before, then re-ranks its candidates (POOL of each kind) by their blended
score, their place in that order and the token match, z-scored over the candidates; the three
weights are a logistic regression's on LoCoMo's five dev conversations (label: the candidate's
source turn is evidence); since the fortieth session the same regression also weighs the
kind of answer a question asks for (memory.retrieval.answers), and the constants below are that
fit's. Fitted on four and scored on the fifth, each fold in turn
(bench/probe_late.py, held out by construction): R@10 81.0 -> 81.9 (folds 83.6 / 82.7 / 84.3 /
77.0 / 81.9 against 81.2 / 83.3 / 82.4 / 77.0 / 81.2), the five fits' weights within
-0.163..-0.209 (place) and +0.254..+0.299 (match); live with that fit's constants, `make eval`
R@10 82.1, multi-hop 49.0 -> 54.6 (with the answers' terms, 83.1 and 57.6). Signs alone lose ~0.2 against float token vectors, for an
eighth of the bytes. Cost: ~1.8 KB a LoCoMo turn stored; a search ~2-3 ms more (a statement
for the candidates' tokens, ~1 ms of numpy; bench/profile_search.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from memory.embeddings.base import Tokens

POOL = 20  # candidates of each kind the re-ranking reads (the evaluation's limit)
# The logistic regression's weights on all five conversations, divided by the blended score's
# (3.064): the blend, plus RANK_WEIGHT x log(1 + its place in the blend's order), plus
# TOKEN_WEIGHT x the z-scored match, plus answers.WEIGHTS of the kinds of answer asked and held
# (bench/probe_answer_type.py; without the answers' terms the fit was -0.175 / +0.276).
RANK_WEIGHT = -0.170
TOKEN_WEIGHT = 0.260
# The same fit's scale and intercept in those units: a re-ranked score shown as the fitted
# probability that the candidate is what the question asks about (0-1, in the list's order).
SCALE, OFFSET = 3.064, -1.620
_ID = np.dtype("<u2")  # the vocabulary (30,522 wordpieces) fits 16 bits


def pack(tokens: Tokens) -> bytes:
    """The tokens' ids, then their vectors' signs, eight dimensions a byte."""
    signs = np.packbits(tokens.vectors > 0, axis=1)
    return np.asarray(tokens.ids, dtype=_ID).tobytes() + signs.tobytes()


def _parts(packed: bytes, width: int) -> tuple[np.ndarray, np.ndarray]:
    """`pack`'s layout read back: its ids, and its sign bytes (`width` a token) flat."""
    n = len(packed) // (_ID.itemsize + width)
    return (
        np.frombuffer(packed, dtype=_ID, count=n),
        np.frombuffer(packed, dtype=np.uint8, offset=n * _ID.itemsize, count=n * width),
    )


def unpack(packed: bytes, dimensions: int) -> tuple[np.ndarray, np.ndarray]:
    """`pack`'s ids, and its signs as unit rows (±1 / √dimensions)."""
    ids, bits = _parts(packed, dimensions // 8)
    signs = np.unpackbits(bits).reshape(-1, dimensions).astype(np.float32) * 2.0 - 1.0
    return ids, signs / np.float32(math.sqrt(dimensions))


def matches(query: Tokens, packed: Mapping[str, bytes]) -> dict[str, float]:
    """Each message's token match with the question: the mean over the question's words of
    their best cosine with one of its tokens, weighted by the words' rarity among these
    messages (idf, word pieces; punctuation weighs nothing). All candidates in one product and
    one segmented max: ~1.1 ms for a search's ~40 candidates (~1,400 tokens), against 1.4 ms
    a candidate at a time (bench/README, *Token match*)."""
    dimensions = query.vectors.shape[1]
    keys, ids, bits = [], [], []
    for key, blob in packed.items():
        its_ids, its_bits = _parts(blob, dimensions // 8)
        if len(its_ids):
            keys.append(key)
            ids.append(its_ids)
            bits.append(its_bits)
    if not keys or not query.words.any():
        return {}
    # how many candidates hold each of the question's word pieces
    pieces, counts = np.unique(np.concatenate([np.unique(i) for i in ids]), return_counts=True)
    at = np.minimum(np.searchsorted(pieces, query.ids), len(pieces) - 1)
    seen = np.where(pieces[at] == query.ids, counts[at], 0)
    weights = np.where(query.words, np.log((len(keys) + 1) / (seen + 0.5)), 0.0)
    weights = weights.astype(np.float32)
    total = float(weights.sum())
    if total <= 0:
        return {}
    signs = np.unpackbits(np.concatenate(bits)).reshape(-1, dimensions).astype(np.float32)
    signs = signs * np.float32(2 / math.sqrt(dimensions)) - np.float32(1 / math.sqrt(dimensions))
    similarity = query.vectors @ signs.T  # (question tokens, every candidate's tokens)
    starts = np.cumsum([0] + [len(i) for i in ids[:-1]])
    best = np.maximum.reduceat(similarity, starts, axis=1)  # (question tokens, candidates)
    scores = weights @ best / total
    return dict(zip(keys, scores.tolist(), strict=True))


def rescored(
    weighted: Sequence[float],
    sources: Sequence[str | None],
    match: Mapping[str, float],
    answers: Sequence[float] | None = None,
) -> list[float]:
    """The candidates' new scores, given in the blend's order (`weighted`, descending) with each
    one's source message (None: a chunk, or no message): the blend, its place, its source's
    token match z-scored over the candidates whose source has tokens (one without, a message
    not embedded yet, neither gains nor loses by the match), and its `answers` lift
    (memory.retrieval.answers.lift), if given."""
    raw = [match.get(s) if s else None for s in sources]
    values = [v for v in raw if v is not None]
    if len(values) < 2:  # nothing to compare a match with
        raw, values = [None] * len(raw), [0.0]
    mean, spread = float(np.mean(values)), float(np.std(values)) or 1.0
    lifts = answers if answers is not None else [0.0] * len(raw)
    return [
        w
        + RANK_WEIGHT * math.log(1 + rank)
        + (TOKEN_WEIGHT * (v - mean) / spread if v is not None else 0.0)
        + lift
        for rank, (w, v, lift) in enumerate(zip(weighted, raw, lifts, strict=True))
    ]


def shown(score: float) -> float:
    """A re-ranked score as the probability the regression gives it."""
    return 1.0 / (1.0 + math.exp(-SCALE * (score + OFFSET)))


def packed_tokens(message_ids: Sequence[str]) -> dict[str, bytes]:
    """The stored tokens of these messages (the caller's own: ids from its scoped search)."""
    from django.db import connection

    from memory.models import MessageTokens

    table = connection.ops.quote_name(MessageTokens._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT message_id, packed FROM {table} WHERE message_id = ANY(%s)",
            [list(dict.fromkeys(message_ids))],
        )
        return {m: bytes(p) for m, p in cursor.fetchall()}
