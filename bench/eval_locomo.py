"""LoCoMo evidence recall, measured through Engram's public API (`make eval`).

For each conversation of shared/eval-data/locomo-dev.json: one user; every turn imported with
POST /v1/conversations/{id}/messages as a `user` message (name = speaker, created_at = session
date, metadata = {"dia_id"}; an image turn's caption appended); wait for processing.pending == 0;
then for each question of categories 1-4, POST /v1/search (types memories and messages, limit
20) and flatten sources[].metadata.dia_id in rank order without repeats -> evidence
recall@5/10/20; and POST /v1/context (a dry run of the chat door's enrichment) for the median
context_tokens and the evidence in context: the share of each question's evidence turns that
the context's memories and past messages hold (their sources' dia_id), by category — what the
model would be shown, where R@k is what a search lists. Prints a table, writes a JSON report.

Dev and held-out: DEV names the conversations a change may be chosen on (every weight and
threshold is tuned looking at their figures only); HELD_OUT are reported, never tuned on. Both
tables are printed, with each conversation's own R@10 and their mean (leave-one-out: a choice
made on four conversations is checked on the fifth by reading that conversation's row).

Comparing changes: `--keep` leaves the imported users in `.engram/eval` and prints the run id;
`--reuse RUN` scores them again without importing (a search-time change, e.g. under another
ENGRAM_SEARCH_* setting), `--label` names the report. `--compare A.json B.json ...` prints one
row per report (each fold's R@10, multi-hop, open-domain, mean) and the leave-one-out choice
among them: for each conversation, the report with the best mean R@10 on the other four, and
that report's R@10 on the one held out. `--dump PATH --limit 100` also saves every question's
ranked items (type, id, score, why, sources) for bench/probe_rerank.py, which replays search-time
re-rankings on them in seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.engram_proc import live_engram, service_rss_mb  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# ../shared beside a clone; from a worktree under /work/wt/, two levels up
DATA = next(
    (
        path
        for path in (
            ROOT.parent / "shared" / "eval-data" / "locomo-dev.json",
            ROOT.parent.parent / "shared" / "eval-data" / "locomo-dev.json",
        )
        if path.exists()
    ),
    ROOT.parent / "shared" / "eval-data" / "locomo-dev.json",
)
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
KS = (5, 10, 20)
# Chosen before any figure of this split was read (2026-12-03): the first three by sample id.
DEV = ("conv-26", "conv-30", "conv-41")
HELD_OUT = ("conv-42", "conv-43")
SEARCH_TYPES = ["memories", "messages"]


def session_date(raw: str) -> str:
    """'1:56 pm on 8 May, 2023' -> ISO 8601 (UTC)."""
    return datetime.strptime(raw.strip(), "%I:%M %p on %d %B, %Y").isoformat() + "Z"


def turns(conversation: dict):
    n = 1
    while f"session_{n}" in conversation:
        date = session_date(conversation[f"session_{n}_date_time"])
        yield n, date, conversation[f"session_{n}"]
        n += 1


def turn_text(turn: dict) -> str:
    text = turn["text"]
    if turn.get("blip_caption"):
        text += f" [shares a photo: {turn['blip_caption']}]"
    return text


def import_conversation(client: httpx.Client, sample: dict, user_id: str, conv_id: str) -> int:
    count = 0
    for _, date, session in turns(sample["conversation"]):
        messages = [
            {
                "role": "user",
                "content": turn_text(turn),
                "name": turn["speaker"],
                "created_at": date,
                "metadata": {"dia_id": turn["dia_id"]},
            }
            for turn in session
        ]
        resp = client.post(
            f"/v1/conversations/{conv_id}/messages",
            json={"user_id": user_id, "messages": messages},
        )
        resp.raise_for_status()
        count += len(messages)
    return count


def latest_run(client: httpx.Client) -> str:
    """The newest kept run's id, from the workspace's users (locomo-<sample>-<run>)."""
    runs, after = [], None
    while True:
        page = client.get("/v1/users", params={"limit": 100, **({"after": after} if after else {})})
        page.raise_for_status()
        body = page.json()
        ids = [u["id"] for u in body["data"]]
        runs += [i.rsplit("-", 1)[1] for i in ids if i.startswith("locomo-")]
        if not body.get("has_more") or not ids:
            break
        after = ids[-1]
    if not runs:
        raise RuntimeError("no kept run to reuse")
    return max(runs)


def wait_processed(client: httpx.Client, conv_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/v1/conversations/{conv_id}").json()
        processing = body.get("processing", {})
        if processing.get("pending", 1) == 0:
            return processing
        if time.monotonic() > deadline:
            raise RuntimeError(f"{conv_id}: still pending after {timeout}s: {processing}")
        time.sleep(0.5)


def ranked_dia_ids(results: list[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for result in results:
        for source in result.get("sources") or []:
            dia_id = (source.get("metadata") or {}).get("dia_id")
            if dia_id:
                seen.setdefault(dia_id, None)
    return list(seen)


def context_dia_ids(context: dict) -> set[str]:
    """The turns a /v1/context answer shows the model: its blocks' items' sources."""
    items = [item for block in context.get("blocks", []) for item in block.get("items", [])]
    return set(ranked_dia_ids(items))


def dump_row(sample_id: str, qa: dict, items: list[dict]) -> dict:
    """One question and its ranked items, as bench/probe_rerank.py reads them."""
    return {
        "sample": sample_id,
        "category": qa["category"],
        "question": qa["question"],
        "evidence": qa["evidence"],
        "items": [
            {
                "type": item["type"],
                "id": item.get("id"),
                "score": item["score"],
                "why": item.get("why"),
                "sources": [
                    {
                        "id": s.get("message_id"),
                        "conversation_id": s.get("conversation_id"),
                        "created_at": s.get("created_at"),
                        "dia_id": (s.get("metadata") or {}).get("dia_id"),
                    }
                    for s in item.get("sources", [])
                ],
            }
            for item in items
        ],
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def evaluate(base_url: str, api_key: str, args) -> dict:
    samples = json.loads(DATA.read_text())
    if args.conversations:
        samples = [s for s in samples if s["sample_id"] in args.conversations]
    client = httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=120
    )
    run = latest_run(client) if args.reuse == "latest" else args.reuse or f"{int(time.time())}"
    print(f"run id: {run}", flush=True)
    per_question, dumped = [], []
    search_ms, context_tokens = [], []
    ingest_seconds = 0.0
    for sample in samples:
        user_id = f"locomo-{sample['sample_id']}-{run}"
        conv_id = f"locomo-{sample['sample_id']}-{run}"
        if not args.reuse:
            started = time.monotonic()
            n = import_conversation(client, sample, user_id, conv_id)
            processing = wait_processed(client, conv_id, args.timeout)
            took = time.monotonic() - started
            ingest_seconds += took
            print(
                f"{sample['sample_id']}: imported {n} turns, processed in {took:.1f}s ({processing})",
                flush=True,
            )
        for qa in sample["qa"]:
            if qa["category"] not in CATEGORIES or not qa.get("evidence"):
                continue
            t0 = time.perf_counter()
            resp = client.post(
                "/v1/search",
                json={
                    "user_id": user_id,
                    "query": qa["question"],
                    "limit": args.limit,
                    "types": SEARCH_TYPES,
                },
            )
            search_ms.append((time.perf_counter() - t0) * 1000)
            resp.raise_for_status()
            ranked = ranked_dia_ids(resp.json()["data"])
            if args.dump:
                dumped.append(dump_row(sample["sample_id"], qa, resp.json()["data"]))
            evidence = set(qa["evidence"])
            recalls = {k: len(evidence & set(ranked[:k])) / len(evidence) for k in KS}
            per_question.append(
                {
                    "sample": sample["sample_id"],
                    "category": qa["category"],
                    **{f"r@{k}": v for k, v in recalls.items()},
                }
            )
            if not args.skip_context:
                ctx = client.post(
                    "/v1/context",
                    headers={"x-user-id": user_id},
                    json={
                        "model": args.model,
                        "messages": [{"role": "user", "content": qa["question"]}],
                    },
                )
                ctx.raise_for_status()
                context_tokens.append(ctx.json()["context_tokens"])
                shown = context_dia_ids(ctx.json())
                per_question[-1]["in_context"] = len(evidence & shown) / len(evidence)
        if not (args.keep or args.reuse):
            client.delete(f"/v1/users/{user_id}")
    if args.dump:
        Path(args.dump).write_text(json.dumps(dumped))
    report = summarize(per_question, search_ms, context_tokens, ingest_seconds, len(samples))
    report["label"] = args.label
    return report


def _mean(values):
    return round(100 * statistics.fmean(values), 1) if values else None


def recall_table(rows) -> dict:
    table = {}
    for cat, name in [*CATEGORIES.items(), (0, "overall")]:
        subset = [r for r in rows if cat == 0 or r["category"] == cat]
        table[name] = {
            "questions": len(subset),
            **{f"r@{k}": _mean([r[f"r@{k}"] for r in subset]) for k in KS},
        }
    return table


def summarize(rows, search_ms, context_tokens, ingest_seconds, conversations) -> dict:
    samples = list(dict.fromkeys(r["sample"] for r in rows))
    per_conversation = {
        sample: recall_table([r for r in rows if r["sample"] == sample]) for sample in samples
    }
    fold_r10 = [per_conversation[s]["overall"]["r@10"] for s in samples]
    return {
        "conversations": conversations,
        "recall": recall_table(rows),
        "split": {"dev": list(DEV), "held_out": list(HELD_OUT)},
        "recall_dev": recall_table([r for r in rows if r["sample"] in DEV]),
        "recall_held_out": recall_table([r for r in rows if r["sample"] in HELD_OUT]),
        "recall_per_conversation": per_conversation,
        "leave_one_out_mean_r@10": round(statistics.fmean(fold_r10), 1) if fold_r10 else None,
        "context_tokens_median": statistics.median(context_tokens) if context_tokens else None,
        "evidence_in_context": in_context(rows),
        "search_ms": {
            "p50": round(percentile(search_ms, 0.5), 1),
            "p95": round(percentile(search_ms, 0.95), 1),
        }
        if search_ms
        else None,
        "ingest_seconds": round(ingest_seconds, 1),
    }


def in_context(rows) -> dict | None:
    """The share of evidence in /v1/context's items, by category and per conversation."""
    rows = [r for r in rows if "in_context" in r]
    if not rows:
        return None
    shown = {
        name: _mean([r["in_context"] for r in rows if cat == 0 or r["category"] == cat])
        for cat, name in [*CATEGORIES.items(), (0, "overall")]
    }
    for sample in dict.fromkeys(r["sample"] for r in rows):
        shown[sample] = _mean([r["in_context"] for r in rows if r["sample"] == sample])
    return shown


def print_recall(title: str, table: dict) -> None:
    print()
    print(title)
    print(f"{'category':<12} {'questions':>9} {'R@5':>6} {'R@10':>6} {'R@20':>6}")
    for name, row in table.items():
        print(
            f"{name:<12} {row['questions']:>9} {row['r@5']!s:>6} {row['r@10']!s:>6} {row['r@20']!s:>6}"
        )


def print_table(report: dict) -> None:
    split = report["split"]
    print_recall(f"all conversations (POST /v1/search, types {SEARCH_TYPES})", report["recall"])
    print_recall(f"dev (tune on these only): {', '.join(split['dev'])}", report["recall_dev"])
    print_recall(
        f"held-out (report, never tune): {', '.join(split['held_out'])}",
        report["recall_held_out"],
    )
    print()
    print("per conversation (each one's row is its leave-one-out fold):")
    for sample, table in report["recall_per_conversation"].items():
        row = table["overall"]
        cats = " ".join(f"{n} {table[n]['r@10']}" for n in CATEGORIES.values())
        print(f"  {sample}: R@10 {row['r@10']} ({row['questions']} q; {cats})")
    print(f"leave-one-out mean R@10: {report['leave_one_out_mean_r@10']}")
    print(f"median context tokens: {report['context_tokens_median']}")
    if shown := report.get("evidence_in_context"):
        print(
            "evidence in context (/v1/context): "
            + " ".join(f"{name} {value}" for name, value in shown.items())
        )
    print(f"search latency ms: {report['search_ms']}")
    print(
        f"ingestion (import + background processing): {report['ingest_seconds']} s for {report['conversations']} conversations"
    )


def compare(paths: list[str]) -> None:
    """One row per report, then the leave-one-out choice among them."""
    reports = [json.loads(Path(p).read_text()) for p in paths]
    folds = list(reports[0]["recall_per_conversation"])
    print(
        f"{'change':<28} "
        + " ".join(f"{f:>8}" for f in folds)
        + f" {'mean':>6} {'multi-hop':>9} {'open-dom':>8} {'temporal':>8}"
    )
    for path, report in zip(paths, reports, strict=True):
        per = report["recall_per_conversation"]
        rec = report["recall"]
        print(
            f"{report.get('label') or Path(path).stem:<28} "
            + " ".join(f"{per[f]['overall']['r@10']!s:>8}" for f in folds)
            + f" {report['leave_one_out_mean_r@10']!s:>6} {rec['multi-hop']['r@10']!s:>9}"
            + f" {rec['open-domain']['r@10']!s:>8} {rec['temporal']['r@10']!s:>8}"
        )
    leave_one_out(
        {
            report.get("label") or Path(path).stem: {
                f: report["recall_per_conversation"][f]["overall"]["r@10"] for f in folds
            }
            for path, report in zip(paths, reports, strict=True)
        }
    )


def leave_one_out(table: dict[str, dict[str, float]]) -> float:
    """table: change -> fold -> R@10. For each fold, the change with the best mean on the other
    folds, and its R@10 on this one; prints them and returns their mean."""
    folds = list(next(iter(table.values())))
    held = []
    for fold in folds:
        others = [f for f in folds if f != fold]

        def on_others(change: str, others=others) -> float:
            return statistics.fmean(table[change][f] for f in others)

        chosen = max(table, key=on_others)
        held.append(table[chosen][fold])
        print(
            f"  {fold} held out: chosen on the other four -> {chosen} "
            f"({on_others(chosen):.1f}); held-out R@10 {table[chosen][fold]:.1f}"
        )
    mean = statistics.fmean(held)
    print(f"leave-one-out mean R@10 of the choice: {mean:.1f}")
    return mean


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--conversations", nargs="*", help="sample ids (default: all five)")
    parser.add_argument("--model", default="gpt-4o-mini", help="model named in /v1/context bodies")
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds to wait for processing"
    )
    parser.add_argument("--skip-context", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the imported users")
    parser.add_argument("--report", default=str(ROOT / "bench" / "results" / "eval-locomo.json"))
    parser.add_argument(
        "--reuse", metavar="RUN", help="score a kept run's users, no import ('latest': the newest)"
    )
    parser.add_argument("--label", help="the change this report measures (for --compare)")
    parser.add_argument("--limit", type=int, default=20, help="/v1/search limit")
    parser.add_argument("--dump", metavar="PATH", help="save each question's ranked items")
    parser.add_argument("--compare", nargs="+", metavar="REPORT", help="fold table of reports")
    args = parser.parse_args()
    if args.compare:
        compare(args.compare)
        return 0
    with live_engram(data_dir=str(ROOT / ".engram" / "eval")) as (base_url, api_key):
        report = evaluate(base_url, api_key, args)
        pid = getattr(live_engram, "supervisor_pid", None)
        if pid is not None:  # after the whole workload: import, extraction, searches
            report["rss_mb"] = service_rss_mb(pid)
            rss = ", ".join(f"{k} {v:.0f}" for k, v in report["rss_mb"].items())
            print(f"RSS after the workload (MB): {rss}")
    print_table(report)
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(json.dumps(report, indent=2))
    print(f"report: {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
