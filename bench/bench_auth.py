"""What an end user's JWT costs at the key check, against a workspace key: `resolve_async` (the
one resolver every door calls) timed in-process, both cached as on a busy gateway.

    .venv/bin/python bench/bench_auth.py             # a few seconds
    .venv/bin/python bench/bench_auth.py --rounds 50000

bench_gateway.py --jwt measures the same through the whole gateway, where the turn's memory
work (the token always names a user) drowns a difference this small in noise.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_gateway import make_end_user_tokens, make_workspace_key, percentile  # noqa: E402


async def timed(resolve, token: str, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        started = time.perf_counter()
        principal = await resolve(token)
        out.append((time.perf_counter() - started) * 1e6)
        assert principal is not None
    return out


async def run(rounds: int, key: str, token: str) -> None:
    from accounts.authentication import resolve_async

    first = time.perf_counter()
    await resolve_async(token)
    print(
        f"first use of a token (issuer load, HS256 verification): {(time.perf_counter() - first) * 1e3:.2f} ms"
    )
    await resolve_async(key)
    figures: dict[str, list[float]] = {"key": [], "jwt": []}
    for _ in range(10):  # interleaved slices: both see the same machine noise
        figures["key"] += await timed(resolve_async, key, rounds // 10)
        figures["jwt"] += await timed(resolve_async, token, rounds // 10)
    print(f"resolve_async, {rounds} calls each, cached (µs per call)")
    print(f"  {'':<6}{'p50':>9}{'p95':>9}{'p99':>9}")
    for name, values in figures.items():
        row = "".join(f"{percentile(values, q):>9.1f}" for q in (50, 95, 99))
        print(f"  {name:<6}{row}")
    added = percentile(figures["jwt"], 50) - percentile(figures["key"], 50)
    print(f"JWT over key at p50: {added / 1000:+.3f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20_000)
    args = parser.parse_args()
    key = make_workspace_key()  # sets Django up (and the embedded servers when needed)
    token = make_end_user_tokens(1)[0]
    asyncio.run(run(args.rounds, key, token))
    return 0


if __name__ == "__main__":
    sys.exit(main())
