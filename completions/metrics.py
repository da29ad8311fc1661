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
    _child(requests, str(record.status_code)).inc()
    if record.status_code >= 400 or record.error_code:
        code = record.error_code or str(record.status_code)
        _child(errors, _bounded(code)).inc()
        if code in LIMIT_CODES:
            _child(limits_hit, code).inc()
    seconds = record.latency_ms / 1000
    latency.observe(seconds)
    if record.upstream_ms is not None:
        upstream.observe(record.upstream_ms / 1000)
        overhead.observe(max(0.0, seconds - record.upstream_ms / 1000))
    if record.prompt_tokens:
        _child(tokens, "prompt").inc(record.prompt_tokens)
    if record.completion_tokens:
        _child(tokens, "completion").inc(record.completion_tokens)
    if record.credits:
        credits.inc(record.credits)


_codes: set[str] = set()


def _bounded(code: str) -> str:
    if code not in _codes:
        if len(_codes) >= MAX_CODES:
            return "other"
        _codes.add(code)
    return code


# Each labelled series once looked up: `labels()` takes a lock and builds its key every call
# (~1 µs each, three a request). Created on first use, as `labels()` creates them.
_children: dict[tuple[Counter, str], Counter] = {}


def _child(metric: Counter, label: str) -> Counter:
    child = _children.get((metric, label))
    if child is None:
        child = _children[metric, label] = metric.labels(label)
    return child


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
