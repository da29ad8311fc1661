"""Which of the offline extractor's facts are remarks about the conversation, by their vectors.

Word patterns (memory.background.extraction.offline) keep first-person statements and skip
requests, questions and small talk they can name; what is left is conversational remarks with a
first-person subject ("I'm not convinced", "I made a typo", "I'm going to bed now") that no
pattern list closes: on statements it was never shown the extractor's precision stayed at
55-83 % round after round (bench/README, *Offline extractor precision and recall*). Their
vectors tell them apart better than their words: each new fact's vector (computed for
de-duplication anyway: no extra embedding) is compared with examples of both
(remark_examples.json), and a fact whose K nearest remarks are closer than its K nearest facts
is dropped. The vectors are of the dated text the runner embeds ("[8 May 2023] User is …",
memory.text.memory_search_text; the examples under one date of their own). K and MARGIN were
chosen by 5-fold cross-validation on the examples, each held-out example under a random date,
a dropped fact weighing twice a kept remark: K 7, margin 0.05 (4 of 294 facts dropped, 66 of 73
remarks caught; K 5 and 9 within one error), before the statements used to report the filter
were scored (bench/README, *Offline extractor precision and recall*).
One-valued facts (where the user lives, works...) are never dropped.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path
from typing import TypeVar

import numpy as np

from memory.embeddings import Embedder, get_embedder
from memory.text import memory_search_text

EXAMPLES = Path(__file__).with_name("remark_examples.json")
K = 7
MARGIN = 0.05
EXAMPLE_DAY = dt.date(2024, 1, 1)  # any one date: the examples' own

_examples: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # by embedder: its own vectors
_lock = threading.Lock()

Found = TypeVar("Found")


def _example_vectors(embedder: Embedder) -> tuple[np.ndarray, np.ndarray]:
    """The examples' vectors by this process's embedder: made once (~370 short texts)."""
    key = id(embedder)
    if key not in _examples:
        with _lock:
            if key not in _examples:
                examples = json.loads(EXAMPLES.read_text())
                facts, remarks = (
                    [memory_search_text(text=t, when=EXAMPLE_DAY) for t in examples[kind]]
                    for kind in ("facts", "remarks")
                )
                _examples[key] = (embedder.embed(facts), embedder.embed(remarks))
    return _examples[key]


def warm() -> None:
    """Embed the examples now (a worker's pool process at its start: ~1 s of CPU, once, rather
    than in its first extraction)."""
    _example_vectors(get_embedder())


def _nearest_mean(vectors: np.ndarray, examples: np.ndarray) -> np.ndarray:
    similarity = vectors @ examples.T
    k = min(K, examples.shape[0])
    return np.sort(similarity, axis=1)[:, -k:].mean(axis=1)


def remarks_mask(vectors: np.ndarray, embedder: Embedder | None = None) -> np.ndarray:
    """For each fact vector (rows, normalized), whether it reads as a remark."""
    if len(vectors) == 0:
        return np.zeros(0, dtype=bool)
    facts, remarks = _example_vectors(embedder or get_embedder())
    return _nearest_mean(vectors, remarks) - _nearest_mean(vectors, facts) > MARGIN


def without_remarks(
    found: list[Found], vectors: np.ndarray, slots: list[str], embedder: Embedder | None = None
) -> tuple[list[Found], np.ndarray]:
    """`found` and their `vectors`, less the remarks; `slots[i]` non-empty: a one-valued fact,
    always kept."""
    mask = remarks_mask(vectors, embedder)
    keep = [i for i, remark in enumerate(mask) if not remark or slots[i]]
    return [found[i] for i in keep], vectors[keep]
