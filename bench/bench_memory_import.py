"""POST /v1/memories with `memories` (one import) against the same memories POSTed one by one.

    .venv/bin/python bench/bench_memory_import.py [--memories 1000]

Starts a live Engram (or uses ENGRAM_URL / ENGRAM_API_KEY), imports `--memories` distinct facts
for one user in one request, the same facts for another user one POST each, and the import
again (a retry: every item found, nothing written). Prints each path's wall time and per memory,
with the machine's calibration and load (bench.machine)."""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import machine  # noqa: E402
from bench.engram_proc import live_engram  # noqa: E402

TOPICS = ("tea", "cycling", "Porto", "jazz", "sailing", "chess", "ramen", "Kyoto", "pottery")


def facts(count: int) -> list[dict]:
    return [
        {"text": f"Mentioned {TOPICS[i % len(TOPICS)]} on occasion {i} ({uuid.uuid4().hex[:6]})."}
        for i in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--memories", type=int, default=1000)
    args = parser.parse_args()
    calibration = machine.calibration_ms()
    items = facts(args.memories)
    run = uuid.uuid4().hex[:8]
    with live_engram() as (url, key):
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=url, headers=headers, timeout=600) as http:
            http.post("/v1/memories", json={"user_id": "warm", "text": "Warm-up."})
            steal = machine.Steal()
            started = time.perf_counter()
            done = http.post("/v1/memories", json={"user_id": f"a-{run}", "memories": items})
            imported = time.perf_counter() - started
            assert done.status_code == 201 and done.json()["created"] == len(items), done.text
            started = time.perf_counter()
            again = http.post("/v1/memories", json={"user_id": f"a-{run}", "memories": items})
            retried = time.perf_counter() - started
            assert again.status_code == 200 and again.json()["created"] == 0, again.text
            started = time.perf_counter()
            for item in items:
                one = http.post("/v1/memories", json={"user_id": f"b-{run}", **item})
                assert one.status_code == 201, one.text
            singles = time.perf_counter() - started
    n = len(items)
    print(f"{n} memories, one import:   {imported:.2f} s ({imported / n * 1000:.2f} ms a memory)")
    print(f"the import again (found): {retried:.2f} s ({retried / n * 1000:.2f} ms a memory)")
    print(f"{n} single POSTs:          {singles:.2f} s ({singles / n * 1000:.2f} ms a memory)")
    print(machine.line(calibration, steal))


if __name__ == "__main__":
    main()
