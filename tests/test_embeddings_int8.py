"""The int8 embedding graph (`onnx-int8`): fp32's vectors to within quantization noise, made
once from the fp32 export in a child process, and fp32's graph when it cannot be made."""

from __future__ import annotations

import numpy as np
import pytest

from memory.embeddings import get_embedder, onnx
from memory.embeddings.onnx import OnnxEmbedder, QuantizedOnnxEmbedder

MODEL = "all-MiniLM-L6-v2"
TEXTS = [
    "How often does Ben go skiing in the Alps?",
    "[8 May 2023] Caroline: I went to a LGBTQ support group yesterday and it was so powerful.",
    "[20 January 2023] Melanie: We took the kids camping by the lake last weekend, they loved "
    "roasting marshmallows and watching the stars. [shares a photo: a tent beside a lake]",
    "ok",
]


@pytest.fixture(scope="module")
def fp32() -> OnnxEmbedder:
    return OnnxEmbedder(MODEL)


def test_int8_vectors_are_unit_vectors_close_to_fp32(fp32):
    int8 = QuantizedOnnxEmbedder(MODEL)
    ours, theirs = int8.embed(TEXTS), fp32.embed(TEXTS)

    assert ours.shape == (len(TEXTS), 384) and ours.dtype == np.float32
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cosines = (ours * theirs).sum(axis=1)
    assert cosines.min() > 0.97  # measured on 2,760 LoCoMo turns: bench/README
    assert not np.array_equal(ours, theirs)  # the int8 graph, not fp32's under another name
    # The one registry: the backend's name gives the same embedder class.
    assert isinstance(get_embedder("onnx-int8", MODEL), QuantizedOnnxEmbedder)


def test_int8_vector_of_a_text_does_not_depend_on_its_companions():
    # Dynamic quantization scales activations per run: batched, the companions would move it.
    int8 = QuantizedOnnxEmbedder(MODEL)

    together = int8.embed(TEXTS)

    for text, vector in zip(TEXTS, together, strict=True):
        assert np.array_equal(int8.embed([text])[0], vector)


def test_int8_vectors_are_bit_identical_to_a_padded_batch_of_one_mean_pooled():
    # The one-text-a-run path (fewer numpy calls, its own unpadded tokenizer) must give the
    # vectors the general path gives, bit for bit: vectors stored before it and query vectors
    # made by either must agree. The reference: the padded tokenizer's encoding of each text
    # alone, the mask-weighted mean, normalized, as OnnxEmbedder.embed computes for a batch.
    int8 = QuantizedOnnxEmbedder(MODEL)
    texts = [
        *TEXTS,
        "",
        "é 🎉 日本語",
        "[CLS] [SEP] [PAD]",
        "word " * 300,  # beyond tokenizer.json's own 128 (truncation and padding): 256 tokens
    ]

    def reference(text: str) -> np.ndarray:
        (encoding,) = int8.tokenizer.encode_batch([text])
        ids = np.array([encoding.ids], dtype=np.int64)
        mask = np.array([encoding.attention_mask], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = int8.session.run(None, feed)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return (pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None))[0]

    vectors = int8.embed(texts)

    assert vectors.dtype == np.float32 and vectors.shape == (len(texts), 384)
    for text, vector in zip(texts, vectors, strict=True):
        assert np.array_equal(vector, reference(text)), text[:40]
        assert int8.embed_one(text) == vector.tolist()  # a query's vector is a stored one's


def test_int8_graph_is_named_after_the_fp32_export():
    fp32_path, int8_path = onnx.exported_path(MODEL), onnx.quantized_path(MODEL)

    assert int8_path.parent == fp32_path.parent
    assert int8_path.name == f"{fp32_path.stem}-{onnx.QUANTIZATION}.onnx"  # the weights' print


def test_missing_int8_graph_is_made_once_in_a_child(tmp_path, monkeypatch):
    # A data folder holding only the fp32 export: the child quantizes it there, no re-export.
    models = tmp_path / "models"
    models.mkdir()
    exported = onnx.exported_path(MODEL)
    (models / exported.name).symlink_to(exported)
    monkeypatch.setenv("ENGRAM_DATA_DIR", str(tmp_path))
    calls = []
    real = onnx._prepare
    monkeypatch.setattr(onnx, "_prepare", lambda *a: calls.append(a) or real(*a))

    first = onnx.ensure_quantized(MODEL)
    again = onnx.ensure_quantized(MODEL)

    assert first == again == models / onnx.quantized_path(MODEL).name
    assert first.stat().st_size < exported.stat().st_size / 2  # int8 weights
    assert len(calls) == 1
    assert (models / exported.name).is_symlink()  # the fp32 export was not redone


def test_int8_falls_back_to_fp32_when_the_graph_cannot_be_made(tmp_path, monkeypatch, fp32):
    models = tmp_path / "models"
    models.mkdir()
    exported = onnx.exported_path(MODEL)
    (models / exported.name).symlink_to(exported)
    monkeypatch.setenv("ENGRAM_DATA_DIR", str(tmp_path))

    def fail(model, target, backend):
        raise RuntimeError("quantizer missing")

    monkeypatch.setattr(onnx, "_prepare", fail)

    embedder = QuantizedOnnxEmbedder(MODEL)

    assert not onnx.quantized_path(MODEL).exists()
    assert np.array_equal(embedder.embed(TEXTS), fp32.embed(TEXTS))
