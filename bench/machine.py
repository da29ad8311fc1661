"""What the machine is like while a benchmark runs, printed beside its figures.

Machines of the same kind differ by up to ~3x in speed, and a shared one by more: each bench
prints the load average, the CPU time stolen by the hypervisor during the run, and a fixed
CPU-bound calibration — the p50 of one all-MiniLM-L6-v2 ONNX query embedding (the web
process's own per-turn work), 3.0 ms on the machine of the README's first gateway figures and
9.6 ms on a slower one of the same kind. A reader can then tell a slow machine from a slow
gateway.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CALIBRATE = """
import statistics, time
from memory.embeddings.onnx import OnnxEmbedder
embedder = OnnxEmbedder("all-MiniLM-L6-v2")
query = "What did Caroline say about her trip to the mountains last summer?"
for _ in range(20):
    embedder.embed([query])
runs = []
for _ in range({runs}):
    began = time.perf_counter()
    embedder.embed([query])
    runs.append((time.perf_counter() - began) * 1000)
print(statistics.median(runs))
"""


def calibration_ms(runs: int = 200) -> float | None:
    """p50 ms of one MiniLM ONNX query embedding, in a process of its own (one thread, so the
    figure is one core's speed); None when the model is not exported (`make install`)."""
    env = {**os.environ, "ENGRAM_EMBEDDING_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _CALIBRATE.format(runs=runs)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        return None
    return float(done.stdout.strip().splitlines()[-1])


def _cpu_ticks() -> list[int]:
    """The aggregate `cpu` line of /proc/stat: user nice system idle iowait irq softirq steal."""
    with open("/proc/stat") as stat:
        return [int(x) for x in stat.readline().split()[1:9]]


class Steal:
    """The share of CPU time the hypervisor gave to other guests since `start()` (%)."""

    def __init__(self) -> None:
        self.start()

    def start(self) -> None:
        self.ticks = _cpu_ticks()

    def _since(self) -> tuple[list[int], int]:
        """Each tick count's change since `start()`, and their sum."""
        delta = [b - a for a, b in zip(self.ticks, _cpu_ticks(), strict=True)]
        return delta, sum(delta)

    def percent(self) -> float:
        delta, total = self._since()
        return 100.0 * delta[7] / total if total else 0.0

    def busy_percent(self) -> float:
        """The share of CPU time spent running anything since `start()` (%): not idle, not
        waiting for I/O, not stolen."""
        delta, total = self._since()
        return 100.0 * (total - delta[3] - delta[4] - delta[7]) / total if total else 0.0


def describe(calibration: float | None) -> dict:
    load1, load5, load15 = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "load_average": [round(load1, 2), round(load5, 2), round(load15, 2)],
        "calibration_embedding_p50_ms": calibration,
    }


_UNSET = -1.0


def line(calibration: float | None = _UNSET, steal: Steal | None = None) -> str:
    """One line for a report: load average, steal time (since `steal.start()`), and the
    calibration when one is given."""
    load1, load5, _ = os.getloadavg()
    parts = [f"{os.cpu_count()} CPUs", f"load average {load1:.2f} (5 min {load5:.2f})"]
    if steal is not None:
        parts.append(f"steal {steal.percent():.1f} %")
    if calibration is None:
        parts.append("calibration: embedding model not exported (make install)")
    elif calibration != _UNSET:
        parts.append(f"calibration: MiniLM ONNX query embedding p50 {calibration:.2f} ms")
    return ", ".join(parts)
