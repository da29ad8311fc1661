"""Prometheus metrics at GET /metrics (the operator key), with prometheus-client.

Per request (recorded with its usage record, `observe`): requests by status, errors by code,
latency histograms (total, upstream, Engram's own), tokens, credits, and limits hit. At scrape
time: the Celery queues' depth (Redis LLEN) and the extraction lag (the age of the oldest
extraction job not done yet). With several web processes (config/web.py sets
PROMETHEUS_MULTIPROC_DIR for them) every process writes its counters to that folder and a scrape
of any one sums them all.
"""

from __future__ import annotations

import logging
import os
import time
from bisect import bisect_left
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger("engram.metrics")

REGISTRY = CollectorRegistry()
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# Engram's own share is small: finer buckets at the low end.
_OWN_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)
LIMIT_CODES = ("rate_limit_exceeded", "insufficient_quota", "limits_unavailable")
# An error's code is a label value, and a 4xx's code is the upstream's own, relayed: an
# upstream writing a request's id there made a new series per failed request, which
# Prometheus keeps for good. The first MAX_CODES codes a process sees are labelled as they
# are; any later one counts as "other".
MAX_CODES = 100

requests = Counter(
    "engram_requests", "Chat completion requests, by status.", ["status"], registry=REGISTRY
)
errors = Counter(
    "engram_errors", "Chat completions that failed, by code.", ["code"], registry=REGISTRY
)
latency = Histogram(
    "engram_request_seconds", "Whole request latency.", buckets=_BUCKETS, registry=REGISTRY
)
upstream = Histogram(
    "engram_upstream_seconds", "Time waiting on the upstream.", buckets=_BUCKETS, registry=REGISTRY
)
overhead = Histogram(
    "engram_overhead_seconds",
    "Engram's own time (total less upstream).",
    buckets=_OWN_BUCKETS,
    registry=REGISTRY,
)
tokens = Counter(
    "engram_tokens", "Tokens the upstreams reported, by kind.", ["kind"], registry=REGISTRY
)
credits = Counter("engram_credits", "Credits charged.", registry=REGISTRY)
limits_hit = Counter(
    "engram_limits_hit",
    "Requests refused by a limit or budget, by code.",
    ["code"],
    registry=REGISTRY,
)


def observe(record) -> None:
    """One finished request (a completions.usage.Usage)."""
    _value(requests, str(record.status_code)).inc(1)
    if record.status_code >= 400 or record.error_code:
        code = record.error_code or str(record.status_code)
        _value(errors, _bounded(code)).inc(1)
        if code in LIMIT_CODES:
            _value(limits_hit, code).inc(1)
    seconds = record.latency_ms / 1000
    _observe(latency, seconds)
    if record.upstream_ms is not None:
        _observe(upstream, record.upstream_ms / 1000)
        _observe(overhead, max(0.0, seconds - record.upstream_ms / 1000))
    # Token figures are usage.count's (whole, from 0), so no negative check is skipped.
    if record.prompt_tokens:
        _value(tokens, "prompt").inc(record.prompt_tokens)
    if record.completion_tokens:
        _value(tokens, "completion").inc(record.completion_tokens)
    if record.credits:
        if record.credits > 0:
            _credits.inc(record.credits)
        else:  # refused by the counter, as before
            credits.inc(record.credits)


_codes: set[str] = set()


def _bounded(code: str) -> str:
    if code not in _codes:
        if len(_codes) >= MAX_CODES:
            return "other"
        _codes.add(code)
    return code


# The values written, not the metrics' public methods: a request's ten writes through
# `Counter.inc` and `Histogram.observe` (each a check that the metric is no labelled parent,
# the histogram a Python loop over its buckets) were ~1,500 Python opcodes of a plain request's
# ~10,100 (an opcode profile of bench_relay_cpu.py --whole), ~600 of them these wrappers. The
# same values get the same increments (prometheus-client 0.26's `_value`, `_sum`, `_buckets`,
# `_upper_bounds`; tests/test_metrics_values.py compares them with the public path).
# Each labelled series once looked up: `labels()` takes a lock and builds its key every call.
# Created on first use, as `labels()` creates them.
_values: dict[tuple[Counter, str], Any] = {}
_credits = credits._value


def _value(metric: Counter, label: str) -> Any:
    value = _values.get((metric, label))
    if value is None:
        value = _values[metric, label] = metric.labels(label)._value
    return value


_bounds = {
    histogram: (histogram._upper_bounds, histogram._buckets, histogram._sum)
    for histogram in (latency, upstream, overhead)
}


def _observe(histogram: Histogram, amount: float) -> None:
    """Histogram.observe without its loop: the first bucket whose bound is >= amount (the last
    is +Inf; a NaN, which no bound holds, counts in the sum only, as there)."""
    bounds, buckets, total = _bounds[histogram]
    total.inc(amount)
    if amount == amount:
        buckets[bisect_left(bounds, amount)].inc(1)


class _Workers(Collector):
    """Read at scrape time: never on the request path."""

    def collect(self):
        from django.conf import settings

        from config.celery import queue_lengths

        depth = GaugeMetricFamily(
            "engram_queue_depth", "Tasks waiting in each Celery queue.", labels=["queue"]
        )
        for queue, size in queue_lengths(settings.ENGRAM_QUEUES).items():
            depth.add_metric([queue], size)
        yield depth
        lag = _extraction_lag()
        if lag is not None:
            yield GaugeMetricFamily(
                "engram_extraction_lag_seconds",
                "Age of the oldest memory extraction not done yet (0: none waiting).",
                value=lag,
            )


def _extraction_lag() -> float | None:
    from django.db import DatabaseError

    from memory.models import ProcessingJob

    try:
        oldest = (
            ProcessingJob.objects.filter(
                kind=ProcessingJob.Kind.EXTRACT,
                status__in=[ProcessingJob.Status.PENDING, ProcessingJob.Status.RUNNING],
            )
            .order_by("created_at")
            .values_list("created_at", flat=True)
            .first()
        )
    except DatabaseError as exc:
        logger.warning("extraction lag unavailable (%s)", type(exc).__name__)
        return None
    return 0.0 if oldest is None else max(0.0, time.time() - oldest.timestamp())


_WORKERS = _Workers()
REGISTRY.register(_WORKERS)


def scrape() -> bytes:
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return generate_latest(REGISTRY)
    from prometheus_client import multiprocess

    every_process = CollectorRegistry()
    multiprocess.MultiProcessCollector(every_process)
    every_process.register(_WORKERS)
    return generate_latest(every_process)
