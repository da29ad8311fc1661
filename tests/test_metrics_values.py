"""completions.metrics writes the metrics' values directly (not through Counter.inc and
Histogram.observe, a cut of the request path): the same values must come out."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Histogram

from completions import metrics

AMOUNTS = [0.0, -1.0, 0.0005, 0.0004999, 0.00051, 0.001, 0.0123, 0.06, 0.5, 1.0, 119.9, 120.0]
AMOUNTS += [120.5, 1e9, math.inf]


def _samples(metric) -> dict[str, float]:
    return {
        f"{sample.name}{sorted(sample.labels.items())}": sample.value
        for family in metric.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def _renamed(samples: dict[str, float], old: str, new: str) -> dict[str, float]:
    return {name.replace(old, new, 1): value for name, value in samples.items()}


def test_a_histogram_observed_directly_as_through_observe():
    registry = CollectorRegistry()
    for buckets in (metrics._BUCKETS, metrics._OWN_BUCKETS):
        ours = Histogram("ours", "o", buckets=buckets, registry=registry)
        theirs = Histogram("theirs", "t", buckets=buckets, registry=registry)
        metrics._bounds[ours] = (ours._upper_bounds, ours._buckets, ours._sum)
        try:
            for amount in AMOUNTS + [math.nan]:
                metrics._observe(ours, amount)
                theirs.observe(amount)
                expected = _renamed(_samples(theirs), "theirs", "ours")
                got = _samples(ours)
                assert got.keys() == expected.keys()
                for name, value in expected.items():
                    assert got[name] == value or (math.isnan(value) and math.isnan(got[name]))
        finally:
            del metrics._bounds[ours]
        registry.unregister(ours)
        registry.unregister(theirs)


def test_a_labelled_counter_written_directly_as_through_inc():
    registry = CollectorRegistry()
    ours = Counter("ours", "o", ["code"], registry=registry)
    theirs = Counter("theirs", "t", ["code"], registry=registry)
    for code, amount in [("a", 1), ("b", 3), ("a", 2), ("c", 0)]:
        metrics._value(ours, code).inc(amount)
        theirs.labels(code).inc(amount)
    assert _samples(ours) == _renamed(_samples(theirs), "theirs", "ours")


def test_a_request_observed_counts_each_metric_once(monkeypatch):
    # error codes past MAX_CODES are counted as "other": start from none seen, whatever
    # earlier tests in this process recorded
    monkeypatch.setattr(metrics, "_codes", set())
    before = {
        name: _samples(metric)
        for name, metric in [
            ("requests", metrics.requests),
            ("errors", metrics.errors),
            ("latency", metrics.latency),
            ("overhead", metrics.overhead),
            ("tokens", metrics.tokens),
            ("credits", metrics.credits),
            ("limits", metrics.limits_hit),
        ]
    }

    class Record:
        status_code = 429
        error_code = "rate_limit_exceeded"
        latency_ms = 61.5
        upstream_ms = 60.0
        prompt_tokens = 12
        completion_tokens = 5
        credits = 0.25

    metrics.observe(Record())

    def grew(name, metric) -> dict[str, float]:
        after = _samples(metric)
        return {
            k: v - before[name].get(k, 0.0)
            for k, v in after.items()
            if v != before[name].get(k, 0.0)
        }

    assert grew("requests", metrics.requests) == {"engram_requests_total[('status', '429')]": 1.0}
    assert grew("errors", metrics.errors) == {
        "engram_errors_total[('code', 'rate_limit_exceeded')]": 1.0
    }
    assert grew("limits", metrics.limits_hit) == {
        "engram_limits_hit_total[('code', 'rate_limit_exceeded')]": 1.0
    }
    assert grew("tokens", metrics.tokens) == {
        "engram_tokens_total[('kind', 'completion')]": 5.0,
        "engram_tokens_total[('kind', 'prompt')]": 12.0,
    }
    assert grew("credits", metrics.credits) == {"engram_credits_total[]": 0.25}
    latency = grew("latency", metrics.latency)
    assert latency["engram_request_seconds_count[]"] == 1.0
    assert latency["engram_request_seconds_bucket[('le', '0.1')]"] == 1.0
    assert "engram_request_seconds_bucket[('le', '0.05')]" not in latency
    overhead = grew("overhead", metrics.overhead)
    assert overhead["engram_overhead_seconds_bucket[('le', '0.002')]"] == 1.0
    assert "engram_overhead_seconds_bucket[('le', '0.001')]" not in overhead
