"""cacheway.metrics: the Prometheus collector and the OpenTelemetry instruments read each
namespace's stats() (issue 14: metrics), and the flush latency histogram in stats."""

from __future__ import annotations

import builtins
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import cacheway as cw
import cacheway.metrics
from cacheway.stats import FLUSH_SECONDS_BUCKETS, Counters, Histogram
from conftest import DictStore, wait_until

FAST_RETRY = cw.Retry(attempts=None, base_delay=0.01, max_delay=0.05)
Sample = tuple[str, frozenset[tuple[str, str]]]

COUNTER_NAMES = [
    "cacheway_hits_total", "cacheway_misses_total", "cacheway_loads_total",
    "cacheway_writes_total", "cacheway_store_writes_total", "cacheway_coalesced_total",
    "cacheway_flushes_total", "cacheway_store_errors_total", "cacheway_retries_total",
    "cacheway_dead_letters_total", "cacheway_journal_syncs_total",
]
GAUGE_NAMES = ["cacheway_dirty", "cacheway_journal_bytes", "cacheway_store_down"]


def scrape(registry: CollectorRegistry) -> dict[Sample, float]:
    """Every sample of a scrape, parsed back by prometheus_client's own parser."""
    text = generate_latest(registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def ns(label: str, **more: str) -> frozenset[tuple[str, str]]:
    return frozenset({"namespace": label, **more}.items())


def collector_registry(cache: Any) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(cw.metrics.PrometheusCollector(cache))
    return registry


def write_back_cache(tmp_path: Path, autoclose: Any) -> cw.Cache:
    """A write-back cache on SQLite with a journal; nothing flushes until flush()."""
    policy = cw.WriteBack(max_delay=60, journal=str(tmp_path / "app.wal"), fsync="always")
    return autoclose(cw.Cache(store=cw.SQLiteStore(str(tmp_path / "app.db")), policy=policy))


# -- Prometheus -------------------------------------------------------------------------------
def test_prometheus_scrape_counts_each_namespace_of_a_write_back_cache(tmp_path: Path,
                                                                      autoclose: Any) -> None:
    # issue 14: metrics
    cache = write_back_cache(tmp_path, autoclose)
    views = cache.namespace("views")
    registry = collector_registry(cache)
    for i in range(3):
        cache.set("a", i)  # one dirty entry, two writes coalesced into it
    views.incr("n")
    views.incr("n")

    before = scrape(registry)
    assert before[("cacheway_writes_total", ns("default"))] == 3
    assert before[("cacheway_coalesced_total", ns("default"))] == 2
    assert before[("cacheway_dirty", ns("default"))] == 1
    assert before[("cacheway_writes_total", ns("views"))] == 2
    assert before[("cacheway_coalesced_total", ns("views"))] == 1
    assert before[("cacheway_dirty", ns("views"))] == 1
    assert before[("cacheway_flushes_total", ns("default"))] == 0
    assert before[("cacheway_journal_bytes", ns("default"))] > 0
    assert before[("cacheway_journal_syncs_total", ns("default"))] > 0

    cache.flush()
    assert cache.get("a") == 2  # a hit
    assert views.get("absent") is None  # a miss: one store load
    after = scrape(registry)
    for label in ("default", "views"):
        assert after[("cacheway_dirty", ns(label))] == 0
        assert after[("cacheway_flushes_total", ns(label))] == 1
        assert after[("cacheway_store_writes_total", ns(label))] == 1
        assert after[("cacheway_store_errors_total", ns(label))] == 0
        assert after[("cacheway_store_down", ns(label))] == 0
    assert after[("cacheway_hits_total", ns("default"))] == 1
    assert after[("cacheway_misses_total", ns("default"))] == 0
    for name in ("cacheway_misses_total", "cacheway_loads_total"):
        # incr's first read of "n" went to the store too
        assert after[(name, ns("views"))] == before[(name, ns("views"))] + 1

    # every number is the namespace's own stats() (and nothing else is labelled)
    for label, name in (("default", ""), ("views", "views")):
        stats = cache.namespaces()[name].stats()
        assert after[("cacheway_hits_total", ns(label))] == stats.hits
        assert after[("cacheway_writes_total", ns(label))] == stats.writes
        assert after[("cacheway_journal_bytes", ns(label))] == stats.journal_bytes
    labels = {dict(key)["namespace"] for (_, key) in after if key}
    assert labels == {"default", "views"}


def test_prometheus_exports_every_family_the_contract_names(tmp_path: Path,
                                                            autoclose: Any) -> None:
    # issue 14: metrics
    cache = write_back_cache(tmp_path, autoclose)
    cache.set("k", 1)
    cache.flush()
    text = generate_latest(collector_registry(cache)).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in COUNTER_NAMES:
        assert families[name.removesuffix("_total")].type == "counter", name
    for name in GAUGE_NAMES:
        assert families[name].type == "gauge", name
    assert families["cacheway_evictions"].type == "counter"
    histogram = families["cacheway_flush_seconds"]
    assert histogram.type == "histogram"
    samples = {(s.name, s.labels.get("le")): s.value for s in histogram.samples}
    # the +Inf bucket is the count; the family is there whether or not batches were timed
    assert samples[("cacheway_flush_seconds_bucket", "+Inf")] == samples[
        ("cacheway_flush_seconds_count", None)]
    les = [s.labels["le"] for s in histogram.samples if s.name.endswith("_bucket")]
    assert les == [*(repr(b) for b in FLUSH_SECONDS_BUCKETS), "+Inf"]


def test_store_down_gauge_and_store_errors_follow_a_failing_store(autoclose: Any) -> None:
    # issue 14: metrics
    ds = DictStore()
    cache = autoclose(cw.Cache(store=ds.store,
                               policy=cw.WriteBack(max_delay=0.01, retry=FAST_RETRY)))
    registry = collector_registry(cache)
    ds.failing = True
    cache.set("k", 1)
    assert wait_until(lambda: cache.stats().store_down_since is not None)
    down = scrape(registry)
    assert down[("cacheway_store_down", ns("default"))] == 1
    assert down[("cacheway_store_errors_total", ns("default"))] >= 1
    assert down[("cacheway_dirty", ns("default"))] == 1
    ds.failing = False
    cache.flush(timeout=10)
    up = scrape(registry)
    assert up[("cacheway_store_down", ns("default"))] == 0
    assert up[("cacheway_dirty", ns("default"))] == 0
    assert up[("cacheway_store_errors_total", ns("default"))] >= (
        down[("cacheway_store_errors_total", ns("default"))])


def test_evictions_are_the_backends_once_without_a_namespace(tmp_path: Path,
                                                            autoclose: Any) -> None:
    # issue 14: metrics
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(str(tmp_path / "app.db")),
                               backend=cw.MemoryBackend(max_entries=2)))
    views = cache.namespace("views")
    for i in range(5):
        cache.set(f"k{i}", i)
        views.set(f"k{i}", i)
    samples = scrape(collector_registry(cache))
    evictions = cache.stats().evictions
    assert evictions > 0
    assert samples[("cacheway_evictions_total", frozenset())] == evictions
    assert not [key for key in samples if key[0] == "cacheway_evictions_total" and key[1]]


class Snapshots:
    """A front with the two methods the exporters read (as an AsyncCache offers)."""

    def __init__(self, **views: cw.Stats) -> None:
        self.views = views

    def stats(self) -> cw.Stats:
        total = cw.Stats()
        for stats in self.views.values():
            total = total + stats
        return total

    def namespaces(self) -> dict[str, Snapshots]:
        return {name: Snapshots(**{name: stats}) for name, stats in self.views.items()}


def test_flush_seconds_histogram_is_scraped_from_the_counters() -> None:
    # issue 14: metrics
    counters = Counters()
    for seconds in (0.0004, 0.001, 0.02, 0.02, 3.0, 60.0):
        counters.flush_seconds.observe(seconds)
    source = Snapshots(**{"": counters.stats(), "jobs": Counters().stats()})
    samples = scrape(collector_registry(source))
    default = {le: samples[("cacheway_flush_seconds_bucket", ns("default", le=le))]
               for le in ("0.001", "0.0025", "0.025", "5.0", "10.0", "+Inf")}
    assert default == {"0.001": 2, "0.0025": 2, "0.025": 4, "5.0": 5, "10.0": 5, "+Inf": 6}
    assert samples[("cacheway_flush_seconds_count", ns("default"))] == 6
    assert samples[("cacheway_flush_seconds_sum", ns("default"))] == pytest.approx(63.0414)
    assert samples[("cacheway_flush_seconds_bucket", ns("jobs", le="+Inf"))] == 0
    assert samples[("cacheway_flush_seconds_count", ns("jobs"))] == 0


def test_a_namespace_named_default_shares_the_unnamed_ones_label(autoclose: Any) -> None:
    # issue 14: metrics
    cache = autoclose(cw.Cache(store=DictStore().store))
    cache.set("a", 1)
    cache.namespace("default").set("b", 2)
    samples = scrape(collector_registry(cache))
    assert samples[("cacheway_writes_total", ns("default"))] == 2


def test_a_namespace_view_alone_is_exported_under_its_name(autoclose: Any) -> None:
    # issue 14: metrics
    cache = autoclose(cw.Cache(store=DictStore().store))
    views = cache.namespace("views")
    views.set("a", 1)
    cache.set("b", 1)
    samples = scrape(collector_registry(views))
    assert samples[("cacheway_writes_total", ns("views"))] == 1
    assert ("cacheway_writes_total", ns("default")) not in samples


def test_collector_registers_on_an_auto_describing_registry(autoclose: Any) -> None:
    # issue 14: metrics
    cache = autoclose(cw.Cache(store=DictStore().store))
    registry = CollectorRegistry(auto_describe=True)
    registry.register(cw.metrics.PrometheusCollector(cache))
    cache.set("a", 1)
    assert scrape(registry)[("cacheway_writes_total", ns("default"))] == 1


# -- what the exporters refuse ------------------------------------------------------------------
class AsyncStats:
    async def stats(self) -> cw.Stats:
        return cw.Stats()


@pytest.mark.parametrize("source", [object(), AsyncStats()], ids=["no-stats", "async-stats"])
def test_exporters_refuse_what_has_no_stats_snapshot(source: Any) -> None:
    # issue 14: metrics
    with pytest.raises(cw.ConfigError, match=r"stats\(\)"):
        cw.metrics.PrometheusCollector(source)
    meter = MeterProvider().get_meter("t")
    with pytest.raises(cw.ConfigError, match=r"stats\(\)"):
        cw.metrics.instrument(source, meter)


def test_missing_prometheus_client_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                                  autoclose: Any) -> None:
    # issue 14: metrics
    cache = autoclose(cw.Cache(store=DictStore().store))
    for name in [m for m in sys.modules if m.split(".")[0] == "prometheus_client"]:
        monkeypatch.setitem(sys.modules, name, None)  # a None entry makes import fail
    with pytest.raises(cw.ConfigError, match=r"pip install 'cacheway\[metrics\]'"):
        cw.metrics.PrometheusCollector(cache)


def test_missing_opentelemetry_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                              autoclose: Any) -> None:
    # issue 14: metrics
    cache = autoclose(cw.Cache(store=DictStore().store))
    meter = MeterProvider().get_meter("t")
    real_import = builtins.__import__

    def no_otel(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] == "opentelemetry":
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_otel)
    with pytest.raises(cw.ConfigError, match=r"pip install 'cacheway\[otel\]'"):
        cw.metrics.instrument(cache, meter)


# -- OpenTelemetry ------------------------------------------------------------------------------
def read_points(reader: InMemoryMetricReader) -> dict[Sample, float]:
    data = reader.get_metrics_data()
    assert data is not None
    return {(m.name, frozenset((k, str(v)) for k, v in p.attributes.items())): p.value
            for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
            for p in m.data.data_points}


def test_otel_instruments_read_each_namespaces_stats(tmp_path: Path, autoclose: Any) -> None:
    # issue 14: metrics
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    cache = write_back_cache(tmp_path, autoclose)
    views = cache.namespace("views")
    cw.metrics.instrument(cache, provider.get_meter("cacheway-test"))
    for i in range(3):
        cache.set("a", i)
    views.set("b", 1)
    before = read_points(reader)
    assert before[("cacheway_writes_total", ns("default"))] == 3
    assert before[("cacheway_coalesced_total", ns("default"))] == 2
    assert before[("cacheway_dirty", ns("default"))] == 1
    assert before[("cacheway_dirty", ns("views"))] == 1
    assert before[("cacheway_journal_bytes", ns("default"))] > 0

    cache.flush()
    assert views.get("absent") is None
    after = read_points(reader)
    for label in ("default", "views"):
        assert after[("cacheway_dirty", ns(label))] == 0
        assert after[("cacheway_flushes_total", ns(label))] == 1
        assert after[("cacheway_store_down", ns(label))] == 0
        count = after[("cacheway_flush_seconds_count", ns(label))]
        assert after[("cacheway_flush_seconds_bucket", ns(label, le="+Inf"))] == count
    assert after[("cacheway_misses_total", ns("views"))] == 1
    assert after[("cacheway_loads_total", ns("views"))] == 1
    assert after[("cacheway_evictions_total", frozenset())] == cache.stats().evictions
    names = {name for name, _ in after}
    assert names >= {*COUNTER_NAMES, *GAUGE_NAMES, "cacheway_evictions_total",
                     "cacheway_flush_seconds_sum"}
    provider.shutdown()


def test_otel_flush_seconds_counters_carry_the_histogram() -> None:
    # issue 14: metrics
    counters = Counters()
    for seconds in (0.002, 0.3, 20.0):
        counters.flush_seconds.observe(seconds)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    cw.metrics.instrument(Snapshots(**{"": counters.stats()}), provider.get_meter("t"))
    points = read_points(reader)
    assert points[("cacheway_flush_seconds_bucket", ns("default", le="0.0025"))] == 1
    assert points[("cacheway_flush_seconds_bucket", ns("default", le="0.5"))] == 2
    assert points[("cacheway_flush_seconds_bucket", ns("default", le="10.0"))] == 2
    assert points[("cacheway_flush_seconds_bucket", ns("default", le="+Inf"))] == 3
    assert points[("cacheway_flush_seconds_count", ns("default"))] == 3
    assert points[("cacheway_flush_seconds_sum", ns("default"))] == pytest.approx(20.302)
    provider.shutdown()


# -- the histogram and Stats ----------------------------------------------------------------
def test_histogram_counts_a_value_on_a_bound_in_that_bucket() -> None:
    # issue 14: metrics
    h = Histogram((0.1, 1.0))
    for value in (0.1, 1.0, 1.0000001, 0.0):
        h.observe(value)
    assert h.snapshot() == (((0.1, 2), (1.0, 3)), pytest.approx(2.1000001), 4)
    assert h.count == 4


@pytest.mark.parametrize("bounds", [(), (1.0, 1.0), (2.0, 1.0), (0.1, float("inf"))])
def test_histogram_refuses_bounds_that_are_not_finite_and_increasing(bounds: Any) -> None:
    # issue 14: metrics
    with pytest.raises(cw.ConfigError, match="strictly increasing"):
        Histogram(bounds)


def test_stats_addition_sums_the_flush_histograms() -> None:
    # issue 14: metrics
    one, two = Counters(), Counters()
    one.flush_seconds.observe(0.002)
    two.flush_seconds.observe(0.002)
    two.flush_seconds.observe(0.2)
    total = one.stats() + two.stats()
    assert total.flush_seconds_count == 3
    assert total.flush_seconds_sum == pytest.approx(0.204)
    assert dict(total.flush_seconds_buckets)[0.0025] == 2
    assert dict(total.flush_seconds_buckets)[0.25] == 3
    assert cw.Stats() + one.stats() == one.stats() == one.stats() + cw.Stats()
    assert cw.Stats().flush_seconds_buckets == ()


def test_stats_addition_refuses_histograms_with_other_buckets() -> None:
    # issue 14: metrics
    a = cw.Stats(flush_seconds_buckets=((0.1, 1),), flush_seconds_count=1)
    b = cw.Stats(flush_seconds_buckets=((0.2, 1),), flush_seconds_count=1)
    with pytest.raises(cw.ConfigError, match="different buckets"):
        a + b


def test_counters_stats_carry_every_counter(autoclose: Any) -> None:
    # issue 14: metrics
    counters = Counters()
    for i, name in enumerate(["hits", "misses", "loads", "writes", "store_writes",
                              "coalesced", "flushes", "flush_errors", "retries",
                              "dead_letters", "decode_errors"], start=1):
        setattr(counters, name, i)
    counters.last_error, counters.last_error_at, counters.store_down_since = "e", 1.0, 2.0
    stats = counters.stats(dirty=7)
    assert (stats.hits, stats.decode_errors, stats.dirty) == (1, 11, 7)
    assert (stats.last_error, stats.last_error_at, stats.store_down_since) == ("e", 1.0, 2.0)


# -- Cache.namespaces() -------------------------------------------------------------------------
def test_namespaces_lists_every_view_and_the_default_alone(autoclose: Any) -> None:
    # issue 14: metrics
    cache = autoclose(cw.Cache(store=DictStore().store))
    views = cache.namespace("views")
    cache.set("a", 1)
    views.set("b", 1)
    views.set("c", 1)
    listed = cache.namespaces()
    assert list(listed) == ["", "views"]
    assert listed["views"] is views
    assert listed[""].stats().writes == 1
    assert listed["views"].stats().writes == 2
    assert cache.stats().writes == 3


def test_queue_depth_and_lag_are_exported_per_partition(tmp_path: Path, redis_url: str,
                                                        raw: Any) -> None:
    # issue 14 metrics "queue lag" / issue 13 "stats() shows queue depth and lag per
    # partition": a distributed write-behind queue's partitions as gauges
    from services import unique

    qname = unique("mq").replace(":", "_").replace("-", "_")
    cache = cw.Cache(store=cw.SQLiteStore(str(tmp_path / "q.db")), policy=cw.WriteBack(
        queue=redis_url, queue_name=qname, partitions=2, flush_in_process=False))
    try:
        cache.set_many({f"k{i}": i for i in range(6)})
        scraped = scrape(collector_registry(cache))
        depth = {dict(labels)["partition"]: v for (name, labels), v in scraped.items()
                 if name == "cacheway_queue_depth"}
        assert sorted(depth) == ["0", "1"]
        assert sum(depth.values()) == 6
        lags = [v for (name, _), v in scraped.items() if name == "cacheway_queue_lag_seconds"]
        assert len(lags) == 2
        assert all(v >= 0.0 for v in lags)
        assert {dict(labels)["queue"] for (name, labels) in scraped
                if name == "cacheway_queue_dead"} == {qname}
    finally:
        cache.close()
        keys = list(raw.scan_iter(match="{" + qname + "*", count=1000))
        if keys:
            raw.unlink(*keys)
