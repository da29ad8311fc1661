"""The query/document embedding, fp32 against a cheaper graph of the same model.

Runs the installed fp32 ONNX export and each candidate interleaved (fp32, candidate, fp32,
candidate, ...), `--rounds` times, one thread per session like the web process, and prints:

1. speed: one short query's p50/p95 ms and CPU p50, and wall and CPU ms per text of calls
   with 16 LoCoMo turns;
2. agreement with fp32: cosine of the two vectors of each LoCoMo turn (min / p1 / mean), and
   for each LoCoMo question, the overlap of its 10 nearest turns of its conversation under fp32
   and under the candidate, both sides candidate ("int8/int8") and the question by the
   candidate against turns stored by fp32 ("int8/fp32", what a switch leaves until re-import);
   plus each side's dense-only evidence recall@10 (a cheap quality proxy; the end-to-end figure
   is bench/eval_locomo.py's);
3. the load average and the CPU time stolen by the hypervisor during each round.

Candidates: `int8` is the product's (backend `onnx-int8`: memory.embeddings.prepare's
quantized file, made if missing, run one text at a time); the other names are recipes built
into a temporary folder from the fp32 export, run in batches of 16 like fp32: `int8-tensor`
(one scale per tensor), `uint8` (uint8 weights), `int8-rr` (7-bit range), `fused` (ONNX
Runtime's BERT fusions, fp32), `fused-int8`; and `fp32-1`, the fp32 graph one text at a
time (what batching alone changes).

    .venv/bin/python bench/bench_embedding.py                       # fp32 vs int8, twice
    .venv/bin/python bench/bench_embedding.py --candidates int8 uint8 fused --rounds 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.eval_locomo import CATEGORIES, DATA, turn_text, turns  # noqa: E402
from bench.machine import Steal  # noqa: E402

MODEL = "all-MiniLM-L6-v2"
QUERY = "What did Caroline say about her trip to the mountains last summer?"
BATCH = 16


def build(recipe: str, fp32: Path, folder: Path) -> Path:
    """The candidate graph for `recipe`, built from the fp32 export."""
    from memory.embeddings import prepare

    if recipe == "int8":
        from memory.embeddings.onnx import ensure_quantized

        return ensure_quantized(MODEL)
    if recipe == "fp32-1":
        return fp32
    target = folder / f"{recipe}.onnx"
    if recipe.startswith("fused"):
        from onnxruntime.transformers.optimizer import optimize_model

        fused = folder / "fused.onnx"
        optimize_model(str(fp32), model_type="bert", opt_level=0).save_model_to_file(str(fused))
        if recipe == "fused":
            return fused
        import onnx
        from onnxruntime.quantization import quantize_dynamic

        # Fused ops are in Microsoft's domain, which shape inference does not type.
        quantize_dynamic(
            fused,
            target,
            per_channel=True,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        return target
    options = {
        "int8-tensor": {"per_channel": False},
        "uint8": {"weight_type": "uint8"},
        "int8-rr": {"reduce_range": True},
    }[recipe]
    prepare.quantize(fp32, target, **options)
    return target


def corpus() -> tuple[list[str], list[dict]]:
    """Every LoCoMo turn as Engram stores it ("[date] speaker: text"), and every question of
    categories 1-4 with its conversation's turn range and evidence."""
    samples = json.loads(DATA.read_text())
    texts: list[str] = []
    questions: list[dict] = []
    for sample in samples:
        start, dia = len(texts), []
        for _, date, session in turns(sample["conversation"]):
            when = dt.date.fromisoformat(date[:10])
            day = f"{when.day} {when:%B %Y}"  # memory.text.day_label
            for turn in session:
                texts.append(f"[{day}] {turn['speaker']}: {turn_text(turn)}")
                dia.append(turn["dia_id"])
        for qa in sample["qa"]:
            if qa["category"] in CATEGORIES and qa.get("evidence"):
                questions.append(
                    {
                        "text": qa["question"],
                        "turns": (start, len(texts)),
                        "dia": dia,
                        "evidence": set(qa["evidence"]),
                    }
                )
    return texts, questions


def speed(embedder, batches: list[list[str]], queries: int) -> dict[str, float]:
    """Wall p50/p95 of one query, its CPU p50 (this process's CPU time: unlike wall time, not
    inflated by other jobs on the cores), and wall and CPU ms per text in batches of 16."""
    for _ in range(20):
        embedder.embed([QUERY])
    walls, cpus = [], []
    for _ in range(queries):
        began, cpu = time.perf_counter(), time.process_time()
        embedder.embed([QUERY])
        walls.append((time.perf_counter() - began) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
    walls.sort()
    began, cpu, count = time.perf_counter(), time.process_time(), 0
    for batch in batches:
        embedder.embed(batch)
        count += len(batch)
    return {
        "p50": walls[len(walls) // 2],
        "p95": walls[int(0.95 * (len(walls) - 1))],
        "cpu p50": statistics.median(cpus),
        "ms/text": (time.perf_counter() - began) * 1000 / count,
        "cpu/text": (time.process_time() - cpu) * 1000 / count,
    }


def top10(query: np.ndarray, stored: np.ndarray, span: tuple[int, int]) -> np.ndarray:
    scores = stored[span[0] : span[1]] @ query
    return np.argsort(-scores, kind="stable")[:10]


def agreement(name: str, fp32, cand, texts: list[str], questions: list[dict]) -> None:
    docs_a, docs_b = fp32.embed(texts), cand.embed(texts)
    qs = [q["text"] for q in questions]
    q_a, q_b = fp32.embed(qs), cand.embed(qs)
    cos = (docs_a * docs_b).sum(axis=1)
    qcos = (q_a * q_b).sum(axis=1)
    print(
        f"  cosine fp32 vs {name}, {len(texts)} turns: min {cos.min():.4f} "
        f"p1 {np.percentile(cos, 1):.4f} mean {cos.mean():.4f}; "
        f"{len(qs)} questions: min {qcos.min():.4f} mean {qcos.mean():.4f}"
    )
    overlap = {"cand/cand": [], "cand/fp32": []}
    recall = {"fp32": [], name: [], f"{name} query, fp32 turns": []}
    for i, q in enumerate(questions):
        ref = top10(q_a[i], docs_a, q["turns"])
        both = top10(q_b[i], docs_b, q["turns"])
        mixed = top10(q_b[i], docs_a, q["turns"])
        overlap["cand/cand"].append(len(set(ref) & set(both)) / 10)
        overlap["cand/fp32"].append(len(set(ref) & set(mixed)) / 10)
        for key, found in (("fp32", ref), (name, both), (f"{name} query, fp32 turns", mixed)):
            ids = {q["dia"][j] for j in found}
            recall[key].append(len(ids & q["evidence"]) / len(q["evidence"]))
    print(
        f"  top-10 overlap with fp32 over {len(questions)} questions: "
        f"{name}/{name} {100 * statistics.fmean(overlap['cand/cand']):.1f} %, "
        f"{name} query vs fp32 turns {100 * statistics.fmean(overlap['cand/fp32']):.1f} %"
    )
    print(
        "  dense-only evidence R@10: "
        + ", ".join(f"{k} {100 * statistics.fmean(v):.1f}" for k, v in recall.items())
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", nargs="+", default=["int8"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--queries", type=int, default=300, help="single queries per round")
    parser.add_argument("--batches", type=int, default=40, help="batches of 16 turns per round")
    parser.add_argument("--skip-agreement", action="store_true")
    args = parser.parse_args()

    from memory.embeddings.onnx import OnnxEmbedder, QuantizedOnnxEmbedder, ensure_exported

    texts, questions = corpus()
    rng = np.random.default_rng(7)
    picked = rng.choice(len(texts), size=BATCH * args.batches, replace=False)
    batches = [[texts[i] for i in picked[s : s + BATCH]] for s in range(0, len(picked), BATCH)]
    fp32_path = ensure_exported(MODEL)
    with tempfile.TemporaryDirectory() as folder:
        embedders = {"fp32": OnnxEmbedder(MODEL, graph=fp32_path)}
        for recipe in args.candidates:
            path = build(recipe, fp32_path, Path(folder))
            size = path.stat().st_size / 2**20
            print(
                f"{recipe}: {path.name} ({size:.1f} MB; fp32 {fp32_path.stat().st_size / 2**20:.1f} MB)"
            )
            # The product's int8 embedder runs one text at a time (its docstring); the other
            # recipes run in batches of 16 like fp32.
            embedders[recipe] = (
                QuantizedOnnxEmbedder(MODEL)
                if recipe == "int8"
                else OnnxEmbedder(MODEL, graph=path)
            )
            if recipe == "fp32-1":
                embedders[recipe].batch = 1
        print(f"machine: {os.cpu_count()} CPUs, one thread per session")
        print(
            f"{'round':<6} {'graph':<12} {'query p50':>9} {'p95':>6} {'CPU p50':>7}"
            f" {'ms/text @16':>11} {'CPU/text':>8}  load / steal"
        )
        for n in range(1, args.rounds + 1):
            for name, embedder in embedders.items():
                steal = Steal()
                got = speed(embedder, batches, args.queries)
                load = os.getloadavg()[0]
                print(
                    f"{n:<6} {name:<12} {got['p50']:>9.2f} {got['p95']:>6.2f}"
                    f" {got['cpu p50']:>7.2f} {got['ms/text']:>11.2f} {got['cpu/text']:>8.2f}"
                    f"  {load:.2f} / {steal.percent():.1f} %",
                    flush=True,
                )
        if not args.skip_agreement:
            for name, embedder in embedders.items():
                if name != "fp32":
                    print(f"agreement, {name}:")
                    agreement(name, embedders["fp32"], embedder, texts, questions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
