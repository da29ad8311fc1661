"""Export the embedding model to ONNX, quantize it to int8, and warm it up, in a process of its own.

`python -m memory.embeddings.prepare` runs at `make install`, at `make run` before the web server
starts, and at image build. It is the only code that imports torch (to trace the graph); the web
server and the workers load the exported file with onnxruntime + tokenizers alone. Measured on
this machine: torch in the web process held 744 MB RSS and made the first chat after /readyz take
36 s (export on the first request); without it the web process stays near 200 MB.

The int8 graph (backend `onnx-int8`, the default) is made from the fp32 export by
onnxruntime's dynamic quantizer (4.8 s once per data folder at load 5; 22 MB against 86 MB);
it needs onnx, not torch. With ENGRAM_EMBEDDING_BACKEND=onnx only the fp32 export is made.

Needs no database and no Django settings: the model name comes from ENGRAM_EMBEDDING_MODEL, the
backend from ENGRAM_EMBEDDING_BACKEND.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
import time
from pathlib import Path

from memory.embeddings.onnx import INT8_BACKEND

# The settings' defaults (config/settings/base.py); here without loading Django.
DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_BACKEND = INT8_BACKEND
OPSET = 17


def _export(source: str, target: Path) -> None:
    """Trace the transformer to ONNX (written atomically)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModel.from_pretrained(source).eval()
    sample = tokenizer(["an example sentence"], return_tensors="pt")

    class Encoder(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    names = ["input_ids", "attention_mask", "token_type_ids"]
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    with torch.no_grad():
        torch.onnx.export(
            Encoder(model),
            tuple(sample[n] for n in names),
            str(partial),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]},
            opset_version=OPSET,
            dynamo=False,
        )
    partial.replace(target)


def quantize(
    source: Path,
    target: Path,
    *,
    per_channel: bool = True,
    reduce_range: bool = False,
    weight_type: str = "int8",
) -> None:
    """Dynamic quantization of the fp32 graph: MatMul weights stored as int8 with one scale per
    output channel, activations quantized per batch at run time (written atomically)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    partial = target.with_suffix(f".{os.getpid()}.tmp")
    root = logging.getLogger()
    level = root.level
    # It warns on the root logger about a calibration pre-pass that dynamic quantization skips.
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            source,
            partial,
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=QuantType.QUInt8 if weight_type == "uint8" else QuantType.QInt8,
        )
    finally:
        root.setLevel(level)
    partial.replace(target)


def _once(target: Path, make) -> bool:
    """Runs make(target) unless the file exists; True when it ran."""
    if target.exists():
        return False
    with open(target.with_suffix(".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes preparing at once make it once
        if target.exists():
            return False
        make(target)
    return True


def export(model: str) -> tuple[Path, bool]:
    """The exported file for `model`, exporting it first if needed; (path, exported now)."""
    from memory.embeddings.onnx import exported_path, model_source

    source = model_source(model)
    target = exported_path(model)
    return target, _once(target, lambda path: _export(source, path))


def export_quantized(model: str) -> tuple[Path, bool]:
    """The int8 graph for `model`, made from its fp32 export (exported first if needed)."""
    from memory.embeddings.onnx import quantized_path

    exported, fresh = export(model)
    target = quantized_path(model)
    return target, _once(target, lambda path: quantize(exported, path)) or fresh


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("ENGRAM_EMBEDDING_MODEL", DEFAULT_MODEL))
    parser.add_argument(
        "--backend",
        default=os.environ.get("ENGRAM_EMBEDDING_BACKEND", DEFAULT_BACKEND),
        help="onnx-int8 (the default) also makes the int8 graph",
    )
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.monotonic()
    try:
        int8 = args.backend == INT8_BACKEND
        path, fresh = export_quantized(args.model) if int8 else export(args.model)
        # Load and run it the way the web server will: a broken export fails here, not there.
        from memory.embeddings.onnx import OnnxEmbedder, QuantizedOnnxEmbedder

        embedder = QuantizedOnnxEmbedder if int8 else OnnxEmbedder
        vector = embedder(args.model).embed(["warm-up"])[0]
    except Exception as exc:  # noqa: BLE001 - one line for the operator, then a non-zero exit
        print(f"embedding model {args.model!r}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if abs(float((vector * vector).sum()) - 1.0) > 1e-3:
        print(
            f"embedding model {args.model!r}: the export gives unnormalized vectors",
            file=sys.stderr,
        )
        return 1
    if not args.quiet:
        verb = ("quantized to" if int8 else "exported to") if fresh else "already prepared at"
        print(f"embedding model {args.model} {verb} {path} ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
