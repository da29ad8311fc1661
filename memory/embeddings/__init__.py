"""Embedders behind a small base class and a registry; the model loads once per process."""

from memory.embeddings.base import Embedder, get_embedder, register

__all__ = ["Embedder", "get_embedder", "register"]
