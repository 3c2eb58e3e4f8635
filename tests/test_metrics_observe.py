"""``metrics.observe_many`` (a sink call's latencies and flow ages, observed together) leaves a
histogram exactly as observing each amount would: the same bucket counts and count, the same
sum but for float rounding. It reads prometheus_client's internals, so this holds the installed
version to it."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram

from integration_bus.metrics import _AGE_BUCKETS, _LATENCY_BUCKETS, observe_many


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for metric in registry.collect() for s in metric.samples
            if not s.name.endswith("_created")}


def two(buckets: tuple[float, ...]) -> tuple[CollectorRegistry, Any, CollectorRegistry, Any]:
    one, other = CollectorRegistry(), CollectorRegistry()
    return (one, Histogram("h", "h", ["route"], buckets=buckets, registry=one).labels("r"),
            other, Histogram("h", "h", ["route"], buckets=buckets, registry=other).labels("r"))


@pytest.mark.parametrize("buckets", [_LATENCY_BUCKETS, _AGE_BUCKETS, Histogram.DEFAULT_BUCKETS])
def test_observing_many_is_observing_each(buckets: tuple[float, ...]) -> None:
    rng = random.Random(7)
    amounts = [rng.choice([0.0, -1.0, math.inf, 1e9, *buckets[:-1]]) for _ in range(200)]
    amounts += [rng.uniform(0, 2 * buckets[-2] if len(buckets) > 1 else 1) for _ in range(300)]
    amounts += [b + d for b in buckets[:-1] for d in (-1e-12, 1e-12)]  # either side of a bound
    each_registry, each, many_registry, many = two(buckets)
    for amount in amounts:
        each.observe(amount)
    for start in range(0, len(amounts), 37):  # in calls of a few, as per sink call
        observe_many(many, amounts[start:start + 37])
    observe_many(many, [])
    got, want = samples(many_registry), samples(each_registry)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key


def test_nan_counts_in_no_bucket_as_observe_does() -> None:
    each_registry, each, many_registry, many = two(_LATENCY_BUCKETS)
    each.observe(float("nan"))
    each.observe(0.001)
    observe_many(many, [float("nan"), 0.001])
    got, want = samples(many_registry), samples(each_registry)
    assert {k: v for k, v in got.items() if not k[0].endswith("_sum")} == {
        k: v for k, v in want.items() if not k[0].endswith("_sum")}
    assert all(math.isnan(v) for k, v in got.items() if k[0].endswith("_sum"))


def test_without_the_internals_it_observes_each() -> None:
    seen: list[float] = []

    class Plain:
        def observe(self, amount: float) -> None:
            seen.append(amount)

    observe_many(Plain(), [1.0, 2.0])
    assert seen == [1.0, 2.0]
