from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

_registry: dict[str, Callable[[str], Embedder]] = {}
_instances: dict[tuple[str, str], Embedder] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class Tokens:
    """A text's wordpieces as the model read it ([CLS] and [SEP] left out): their vocabulary
    ids, their unit vectors (the last hidden state, before pooling) and which are words (not
    punctuation). What memory.retrieval.late compares token by token."""

    ids: np.ndarray  # (n,) int
    vectors: np.ndarray  # (n, dimensions) float32, unit rows
    words: np.ndarray  # (n,) bool


class Embedder(ABC):
    """Turns text into unit-length vectors (cosine distance == 1 - dot product)."""

    dimensions: int

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A (len(texts), dimensions) float32 array of normalized vectors."""

    def embed_one(self, text: str) -> list[float]:
        return self.embed([text])[0].tolist()

    def embed_with_tokens(self, texts: Sequence[str]) -> tuple[np.ndarray, list[Tokens | None]]:
        """`embed`'s vectors and each text's token vectors, from the same run. A backend that
        cannot give them answers None for each (its searches are ranked without them)."""
        return self.embed(texts), [None] * len(texts)


def register(name: str):
    def decorator(factory: Callable[[str], Embedder]):
        _registry[name] = factory
        return factory

    return decorator


def get_embedder(backend: str | None = None, model: str | None = None) -> Embedder:
    """The process-wide embedder for the configured backend and model (loaded lazily, once)."""
    from django.conf import settings

    backend = backend or settings.ENGRAM_EMBEDDING_BACKEND
    model = model or settings.ENGRAM_EMBEDDING_MODEL
    key = (backend, model)
    if key not in _instances:
        with _lock:
            if key not in _instances:
                from memory.embeddings import onnx, sentence_transformers  # noqa: F401

                if backend not in _registry:
                    raise ValueError(
                        f"unknown embedding backend {backend!r}; have {sorted(_registry)}"
                    )
                try:
                    _instances[key] = _registry[backend](model)
                except ImportError as exc:  # e.g. onnxruntime missing: same vectors, slower
                    if backend == "sentence-transformers":
                        raise
                    logging.getLogger("engram.embeddings").warning(
                        "embedding backend %s unavailable (%s); using sentence-transformers",
                        backend,
                        exc,
                    )
                    _instances[key] = _registry["sentence-transformers"](model)
    return _instances[key]
