"""The same sentence-transformers model run by ONNX Runtime, in fp32 or with int8 weights.

Query embedding is the costliest step of a request (torch: ~18 ms per query on this machine,
and far worse beside a busy neighbour; ONNX Runtime: ~5 ms). The ONNX graph is exported once
from the installed weights by `memory.embeddings.prepare`, in a process of its own (torch is
needed for that moment only), into ENGRAM_DATA_DIR/models; every other process loads it with
onnxruntime + tokenizers and never imports torch. Mean pooling and normalisation match
sentence-transformers' (cosine 1.0 on the same text).

`onnx-int8`, the default, runs the same graph with its MatMul weights quantized to int8 (one
scale per output channel; activations quantized at run time), made from the fp32 export by
`prepare` (or once, in a child process, by the first process that misses it). Measured on this
machine (2026-12-03, bench/bench_embedding.py, load 2.4-4.4, no steal): one query 2.1 ms of
CPU against 5.5-6.8 ms; a LoCoMo turn 4.6-5.0 ms against 13.4 (fp32 one at a time) or 21.6
(fp32 in calls of 16); vectors at cosine 0.975 (min) / 0.992 (mean) of fp32's over 2,760
LoCoMo turns, so vectors stored by either backend serve queries by the other. LoCoMo evidence
R@10 per fold (bench/eval_locomo.py): 81.2 / 83.3 / 82.1 / 76.9 / 81.8 against fp32's 81.2 /
83.3 / 82.1 / 76.5 / 81.4; with int8 queries over an fp32 import 81.2 / 83.3 / 82.1 / 77.0 /
81.1. Background extraction: 7.3-7.9 ms of CPU per turn against 16.4.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from memory.embeddings.base import Embedder, Tokens, register
from memory.embeddings.sentence_transformers import _model_path

logger = logging.getLogger("engram.embeddings")
BATCH = 16  # measured: small batches of similar lengths beat large padded ones on CPU
# The int8 graph's recipe (memory.embeddings.prepare.quantize), part of its file name.
QUANTIZATION = "int8"
FP32_BACKEND, INT8_BACKEND = "onnx", "onnx-int8"


def _cache_dir() -> Path:
    from config.embedded.servers import data_dir

    path = data_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def model_source(model: str) -> str:
    source = _model_path(model)
    if not Path(source, "tokenizer.json").exists():
        raise ValueError(f"embedding model {model!r} is not available offline")
    return source


def exported_path(model: str) -> Path:
    """Where the ONNX export of `model` lives (it may not exist yet)."""
    source = model_source(model)
    return _cache_dir() / f"{Path(source).name}-{_fingerprint(source)}.onnx"


def quantized_path(model: str) -> Path:
    """Where the int8 graph of `model` lives: named after the fp32 export it is made from (the
    weights' fingerprint) and the recipe, so new weights or a new recipe make a new file."""
    exported = exported_path(model)
    return exported.with_name(f"{exported.stem}-{QUANTIZATION}.onnx")


def ensure_exported(model: str) -> Path:
    """The exported file; a missing one is exported by `memory.embeddings.prepare` in a child
    process, so the caller (the web server, a worker) never imports torch."""
    target = exported_path(model)
    if not target.exists():
        logger.warning("embedding model %s not exported yet; exporting it now (once)", model)
        _prepare(model, target, FP32_BACKEND)
    return target


def ensure_quantized(model: str) -> Path:
    """The int8 graph; a missing one is made (and the fp32 export before it, if missing) by
    `memory.embeddings.prepare` in a child process: onnx and the quantizer stay out of the
    caller."""
    target = quantized_path(model)
    if not target.exists():
        logger.warning("embedding model %s not quantized yet; quantizing it now (once)", model)
        _prepare(model, target, INT8_BACKEND)
    return target


def _prepare(model: str, target: Path, backend: str) -> None:
    root = Path(__file__).resolve().parent.parent.parent  # where `memory` is importable
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "memory.embeddings.prepare",
            "--model",
            model,
            "--backend",
            backend,
            "--quiet",
        ],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or not target.exists():
        raise RuntimeError(
            f"preparing embedding model {model!r} ({backend}) failed: "
            f"{done.stderr.strip()[-500:]} (run `python -m memory.embeddings.prepare`)"
        )


def _max_length(source: str) -> int:
    config = Path(source) / "sentence_bert_config.json"
    if config.exists():
        return int(json.loads(config.read_text()).get("max_seq_length", 256))
    return 256


@register(FP32_BACKEND)
class OnnxEmbedder(Embedder):
    batch = BATCH

    def __init__(self, model: str, *, graph: Path | None = None) -> None:
        """`graph`: another ONNX file of the same model (a benchmark's candidate); by default
        the backend's own (`_graph`)."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        source = model_source(model)
        target = graph or self._graph(model)
        options = ort.SessionOptions()
        threads = int(os.environ.get("ENGRAM_EMBEDDING_THREADS", "1"))
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(target), options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = Tokenizer.from_file(str(Path(source, "tokenizer.json")))
        self.tokenizer.enable_truncation(max_length=_max_length(source))
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self.dimensions = int(self.session.get_outputs()[0].shape[-1] or 384)
        self._lock = threading.Lock()  # the tokenizer's padding state is shared
        if self.batch == 1:
            # One text a run needs no padding: its own tokenizer, without it, encodes a call's
            # texts in one go and needs no lock.
            self._alone = Tokenizer.from_file(str(Path(source, "tokenizer.json")))
            self._alone.enable_truncation(max_length=_max_length(source))
            self._alone.no_padding()  # tokenizer.json's own pads to 128

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self._run(texts, None)

    def embed_with_tokens(self, texts: Sequence[str]) -> tuple[np.ndarray, list[Tokens | None]]:
        tokens: list[Tokens | None] = [None] * len(texts)
        return self._run(texts, tokens), tokens

    def _run(self, texts: Sequence[str], tokens: list[Tokens | None] | None) -> np.ndarray:
        """The texts' vectors; with `tokens`, each text's token vectors set in it too."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        if self.batch == 1:
            return self._embed_each(texts, tokens)
        # Similar lengths batch together (less padding), like sentence-transformers does.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for start in range(0, len(order), self.batch):
            batch = order[start : start + self.batch]
            with self._lock:
                encodings = self.tokenizer.encode_batch([texts[i] for i in batch])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            hidden = self.session.run(
                None,
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
            )[0]
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out[batch] = pooled / np.clip(norms, 1e-12, None)
            if tokens is not None:
                for row, i in enumerate(batch):
                    n = int(mask[row].sum())
                    tokens[i] = _tokens(encodings[row].tokens[:n], ids[row, :n], hidden[row, :n])
        return out

    def _embed_each(self, texts: Sequence[str], tokens: list[Tokens | None] | None) -> np.ndarray:
        """`embed` one text a run, bit for bit: a text alone has no padding, so its mask is all
        ones and its mean pooling is its tokens' sum over their count (`embed`'s weighted sum
        with weights 1.0, the same additions in the same order); the vectors normalized
        together (each row's norm is its own reduction, as for one row). The same work in
        fewer numpy calls and one tokenizer call: the CPU outside the model's run 0.66 -> 0.29 ms
        a text (runs of ~7.5 ms, a loaded day); with the run faked the old path took 0.18 ms:
        the run evicts the caches the Python after it then misses (bench/README, thirty-third
        session)."""
        pooled = np.empty((len(texts), self.dimensions), dtype=np.float32)
        for i, encoding in enumerate(self._alone.encode_batch(list(texts))):
            ids = np.array([encoding.ids], dtype=np.int64)
            feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
            feed["token_type_ids"] = np.zeros_like(ids)
            hidden = self.session.run(None, feed)[0]
            pooled[i] = hidden[0].sum(axis=0) / np.float32(len(encoding.ids))
            if tokens is not None:
                tokens[i] = _tokens(encoding.tokens, ids[0], hidden[0])
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.clip(norms, 1e-12, None)

    def _graph(self, model: str) -> Path:
        return ensure_exported(model)


@register(INT8_BACKEND)
class QuantizedOnnxEmbedder(OnnxEmbedder):
    """The same model with its weights in int8 (dynamic quantization, per channel)."""

    # One text per run: dynamic quantization takes one activation scale per batch, so in a
    # batch a text's vector would depend on its companions (four imports of LoCoMo moved R@10
    # by up to 0.8 on a fold); alone it is also cheaper per text (CPU 3.8 ms against 4.3 ms
    # in batches of 16, LoCoMo turns; fewer padded tokens for the unquantized ops).
    batch = 1

    def _graph(self, model: str) -> Path:
        try:
            return ensure_quantized(model)
        except RuntimeError as exc:
            # Its vectors are fp32's to within quantization noise, so the fp32 graph serves
            # (slower) and stored vectors stay comparable either way.
            logger.warning("int8 embedding graph unavailable (%s); using fp32", exc)
            return ensure_exported(model)


def _tokens(pieces: Sequence[str], ids: np.ndarray, hidden: np.ndarray) -> Tokens:
    """A text's tokens from its run: [CLS] and [SEP] (first and last) left out, rows
    normalized."""
    vectors = hidden[1:-1]
    vectors = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
    words = np.array([any(c.isalnum() for c in piece) for piece in pieces[1:-1]], dtype=bool)
    return Tokens(ids=ids[1:-1].copy(), vectors=vectors.astype(np.float32), words=words)


def _fingerprint(source: str) -> str:
    """Changes when the weights do, so a new model version re-exports."""
    weights = Path(source, "model.safetensors")
    if not weights.exists():
        weights = Path(source, "pytorch_model.bin")
    with contextlib.suppress(OSError):
        stat = weights.stat()
        return f"{stat.st_size:x}"
    return "0"
