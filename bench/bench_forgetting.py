"""What leaving forgotten facts out costs: `without_forgotten` over the past messages
retrieved for a turn (MESSAGE_CANDIDATES of them: what scrubbing all of them would cost), over
the one among them a forgotten memory came from (what memory.turn.recall._not_forgotten
does), and over a summary (an LLM summary of ~500 tokens: a summary job's, a deletion's).

The user with no deletion pays one indexed query (forgotten_facts), not measured here. Each
call embeds the sentences and the facts the offline extractor draws from them, in one
embedder call, and compares them with the forgotten facts. LoCoMo turns as the messages
(`make eval-data`), a synthetic set without them. Prints p50 / p95 wall ms and the CPU ms p50,
with the machine line (bench/machine.py).

    .venv/bin/python bench/bench_forgetting.py --rounds 50
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
os.environ.setdefault("DATABASE_URL", "postgres://bench@localhost/unused")  # not connected to
os.environ.setdefault("REDIS_URL", "redis://localhost/13")

from bench import machine  # noqa: E402

FORGOTTEN = [
    "User is allergic to peanuts.",
    "User lives in Paris.",
    "User has a sister named Anna.",
    "User works as a nurse.",
    "User's daughter is called Mia.",
]
SYNTHETIC = [
    "I went hiking in the mountains last weekend with my brother.",
    "We are planning a trip to Lisbon in May. I booked the flights already.",
    "My sister Anna just started a new job at the hospital.",
    "I have been learning to play the violin for two years now!",
    "Honestly the traffic this morning was terrible, I was late again.",
    "Can you recommend a good book about the history of Rome?",
    "I am allergic to peanuts, so please keep that in mind.",
    "My dog Rex loves the beach. He runs around for hours.",
    "I moved to Berlin in 2024 and I still miss the sea.",
    "We adopted a cat last month; her name is Luna.",
]


def messages(count: int) -> list[str]:
    from bench.eval_locomo import DATA, turn_text, turns

    if DATA is None or not Path(DATA).exists():
        return (SYNTHETIC * (count // len(SYNTHETIC) + 1))[:count]
    said = []
    for conversation in json.loads(Path(DATA).read_text()):
        for _, _, session in turns(conversation["conversation"]):
            said += [turn_text(t) for t in session]
    step = max(1, len(said) // count)
    return said[::step][:count]


def timed(rounds: int, call) -> tuple[float, float, float]:
    wall, cpu = [], []
    for _ in range(rounds):
        began, began_cpu = time.perf_counter(), time.process_time()
        call()
        wall.append((time.perf_counter() - began) * 1000)
        cpu.append((time.process_time() - began_cpu) * 1000)
    wall.sort()
    return statistics.median(wall), wall[int(0.95 * (len(wall) - 1))], statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    os.environ.setdefault("ENGRAM_EMBEDDING_THREADS", "1")  # as one web process's thread
    import django

    django.setup()
    from accounts.models import Workspace
    from memory import forgotten as module
    from memory.embeddings import get_embedder
    from memory.forgotten import Forgotten, normalized, without_forgotten

    # no database: the user's subjects (one query, not timed) as a user with no names
    module.user_subjects = lambda **kwargs: frozenset()
    calibration = machine.calibration_ms()
    steal = machine.Steal()
    steal.start()
    keys = [normalized(text) for text in FORGOTTEN]
    vectors = get_embedder().embed(keys).tolist()
    forgotten = Forgotten(Workspace(id="ws_bench"), "alice", keys, vectors, frozenset({"sup_1"}))
    retrieved = messages(10)
    summary = " ".join(messages(40))  # ~500 tokens of prose
    speakers = ["User"] * len(retrieved)
    without_forgotten(forgotten, retrieved, speakers=speakers)  # warm: the model, the regexes
    source = ["I am allergic to peanuts, so please keep that in mind."]
    rows = [
        (
            "10 retrieved messages",
            lambda: without_forgotten(forgotten, retrieved, speakers=speakers),
        ),
        ("1 source message", lambda: without_forgotten(forgotten, source, speakers=["User"])),
        ("a ~500-token summary", lambda: without_forgotten(forgotten, [summary])),
    ]
    for name, call in rows:
        p50, p95, cpu = timed(args.rounds, call)
        print(f"{name}: p50 {p50:.1f} ms, p95 {p95:.1f} ms, CPU p50 {cpu:.1f} ms")
    print(machine.line(calibration, steal))


if __name__ == "__main__":
    main()
