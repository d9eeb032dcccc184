"""Export a cache's ``stats()`` to Prometheus (prometheus_client) or OpenTelemetry.

Both read snapshots only: ``stats()`` of each namespace view that ``namespaces()`` lists
(label or attribute ``namespace``; ``"default"`` for the unnamed one), so they work for
any cache front with those two methods (``Cache``, ``AsyncCache``) and cost nothing
between scrapes. The drivers are extras, imported when first used:
``pip install 'cacheway[metrics]'`` (prometheus_client) or ``'cacheway[otel]'``.

>>> import cacheway as cw, cacheway.metrics
>>> from prometheus_client import CollectorRegistry, generate_latest
>>> cache = cw.Cache(store=cw.SQLiteStore(":memory:"))
>>> registry = CollectorRegistry()
>>> registry.register(cw.metrics.PrometheusCollector(cache))
>>> cache.set("k", 1); cache.get("k")
1
>>> print(generate_latest(registry).decode())  # doctest: +ELLIPSIS
# HELP cacheway_hits_total Reads answered from the dirty table or the backend
# TYPE cacheway_hits_total counter
cacheway_hits_total{namespace="default"} 1.0
...
>>> cache.close()
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ConfigError
from .stats import FLUSH_SECONDS_BUCKETS, Stats

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, Observation
    from prometheus_client.metrics_core import Metric

__all__ = ["COUNTERS", "GAUGES", "PrometheusCollector", "StatsSource", "instrument"]


class StatsSource(Protocol):
    """What the exporters read: a cache front (or one namespace view) with ``stats()``;
    ``namespaces()`` (name -> view, ``""`` for the default namespace), when it has one,
    splits the numbers by namespace."""

    def stats(self) -> Stats: ...


#: Counter name -> (Stats field, help). Counted since the cache opened.
COUNTERS: dict[str, tuple[str, str]] = {
    "cacheway_hits_total": ("hits", "Reads answered from the dirty table or the backend"),
    "cacheway_misses_total": ("misses", "Reads that went to the store"),
    "cacheway_loads_total": ("loads", "Store load calls (a load_many is one)"),
    "cacheway_writes_total": ("writes", "set/delete/incr calls accepted (each key counts)"),
    "cacheway_store_writes_total": ("store_writes", "Rows written or deleted in the store"),
    "cacheway_coalesced_total": ("coalesced", "Writes absorbed into an already-dirty entry"),
    "cacheway_flushes_total": ("flushes", "Batches acknowledged by the store"),
    "cacheway_store_errors_total": ("flush_errors", "Failed store batch attempts"),
    "cacheway_retries_total": ("retries", "Store batch attempts repeated"),
    "cacheway_dead_letters_total": ("dead_letters", "Entries handed to on_dead_letter"),
    "cacheway_journal_syncs_total": ("journal_syncs", "Durable journal syncs made"),
}
#: Gauge name -> (Stats field, help). Values now.
GAUGES: dict[str, tuple[str, str]] = {
    "cacheway_dirty": ("dirty", "Entries not yet acknowledged by the store"),
    "cacheway_journal_bytes": ("journal_bytes", "Size of the write-back journal in bytes"),
    "cacheway_store_down": ("store_down_since",
                            "1 while the store is down as a flusher sees it, else 0"),
}
# The backend is one for every namespace of a cache: its evictions carry no namespace.
_EVICTIONS = ("cacheway_evictions_total",
              "Entries the backend (shared by every namespace) dropped for room or TTL")
_FLUSH_SECONDS = ("cacheway_flush_seconds",
                  "Seconds the store took to acknowledge a flushed batch")
#: Gauge name -> (PartitionStatus field, help), labels ``queue`` and ``partition``: the
#: distributed write-behind queues (``stats().queue``).
QUEUE_GAUGES: dict[str, tuple[str, str]] = {
    "cacheway_queue_depth": ("depth", "Queued writes not yet applied to the store"),
    "cacheway_queue_lag_seconds": ("lag", "Age of the oldest queued write not yet applied"),
    "cacheway_queue_dead": ("dead", "Queued writes the store refused for good"),
}


def _queue_points(stats: Stats, field: str) -> list[tuple[dict[str, str], float]]:
    return [({"queue": str(p.queue), "partition": str(p.partition)}, float(getattr(p, field)))
            for p in stats.queue]


def _check_source(cache: object) -> None:
    stats = getattr(cache, "stats", None)
    if not callable(stats):
        raise ConfigError(f"cacheway.metrics needs a cache with stats(), not {cache!r}")
    if inspect.iscoroutinefunction(stats):
        raise ConfigError(
            f"cacheway.metrics reads snapshots without awaiting: {cache!r}.stats() must "
            f"return a cw.Stats, not a coroutine"
        )


def _label(name: str) -> str:
    return name or "default"


def _number(stats: Stats, field: str) -> int | float:
    if field == "store_down_since":
        return 0 if stats.store_down_since is None else 1
    value: int | float = getattr(stats, field)
    return value


def _snapshots(cache: StatsSource) -> dict[str, Stats]:
    """``{namespace label: Stats}``: one snapshot per namespace view of ``cache`` (a view
    alone when ``cache`` has no ``namespaces()``). A namespace named ``"default"`` shares
    its label with the unnamed one; their numbers are added."""
    lister: Callable[[], dict[str, StatsSource]] | None = getattr(cache, "namespaces", None)
    views = lister() if lister is not None else {str(getattr(cache, "name", "")): cache}
    out: dict[str, Stats] = {}
    for name, view in views.items():
        label = _label(name)
        snap = view.stats()
        out[label] = out[label] + snap if label in out else snap
    return out



def _buckets(stats: Stats) -> list[tuple[float, int]]:
    # Before any flush (or from a front that keeps no histogram) the buckets are empty.
    return list(stats.flush_seconds_buckets) or [(b, 0) for b in FLUSH_SECONDS_BUCKETS]


# -- Prometheus ---------------------------------------------------------------------------
def _prometheus() -> Any:
    try:
        from prometheus_client import core
    except ImportError as exc:
        raise ConfigError(
            "cacheway.metrics.PrometheusCollector needs prometheus_client: "
            "pip install 'cacheway[metrics]'"
        ) from exc
    return core


class PrometheusCollector:
    """A prometheus_client collector of ``cache``'s stats, label ``namespace``.

    ``registry.register(PrometheusCollector(cache))``; each scrape takes one ``stats()``
    snapshot per namespace. Counters ``cacheway_*_total`` (``cacheway_store_errors_total``
    counts failed batch attempts, ``cacheway_evictions_total`` is the backend's and has
    no label), gauges ``cacheway_dirty``, ``cacheway_journal_bytes``,
    ``cacheway_store_down``, the histogram ``cacheway_flush_seconds``, and per partition
    of a distributed write-behind queue (labels ``queue``, ``partition``)
    ``cacheway_queue_depth``, ``cacheway_queue_lag_seconds``, ``cacheway_queue_dead``. Raises
    ``cw.ConfigError`` when prometheus_client is missing.
    """

    def __init__(self, cache: StatsSource) -> None:
        _check_source(cache)
        self._core = _prometheus()
        self.cache = cache

    def __repr__(self) -> str:
        return f"<cacheway.metrics.PrometheusCollector of {self.cache!r}>"

    def collect(self) -> Iterator[Metric]:
        """The metric families, from fresh snapshots."""
        core = self._core
        per_ns = _snapshots(self.cache)
        for name, (field, doc) in COUNTERS.items():
            counter = core.CounterMetricFamily(name, doc, labels=["namespace"])
            for label, stats in per_ns.items():
                counter.add_metric([label], _number(stats, field))
            yield counter
        whole = self.cache.stats()  # once: the queues' status is a round trip to Redis
        name, doc = _EVICTIONS
        yield core.CounterMetricFamily(name, doc, value=whole.evictions)
        for name, (field, doc) in GAUGES.items():
            gauge = core.GaugeMetricFamily(name, doc, labels=["namespace"])
            for label, stats in per_ns.items():
                gauge.add_metric([label], _number(stats, field))
            yield gauge
        for name, (field, doc) in QUEUE_GAUGES.items():
            gauge = core.GaugeMetricFamily(name, doc, labels=["queue", "partition"])
            for labels, value in _queue_points(whole, field):
                gauge.add_metric([labels["queue"], labels["partition"]], value)
            yield gauge
        name, doc = _FLUSH_SECONDS
        histogram = core.HistogramMetricFamily(name, doc, labels=["namespace"], unit="seconds")
        for label, stats in per_ns.items():
            buckets = [(_le(bound), float(n)) for bound, n in _buckets(stats)]
            buckets.append(("+Inf", float(stats.flush_seconds_count)))
            histogram.add_metric([label], buckets, sum_value=stats.flush_seconds_sum)
        yield histogram


def _le(bound: float) -> str:
    return repr(float(bound))


# -- OpenTelemetry --------------------------------------------------------------------------
def _otel() -> Any:
    try:
        from opentelemetry import metrics
    except ImportError as exc:
        raise ConfigError(
            "cacheway.metrics.instrument needs opentelemetry-api: pip install 'cacheway[otel]'"
        ) from exc
    return metrics


def instrument(cache: StatsSource, meter: Meter) -> list[Any]:
    """Observable instruments on ``meter`` reading ``cache``'s stats at each collection,
    with the Prometheus collector's names and the attribute ``namespace``; the flush
    latency histogram becomes the counters ``cacheway_flush_seconds_count``,
    ``cacheway_flush_seconds_sum`` and ``cacheway_flush_seconds_bucket`` (attribute
    ``le``, cumulative), as OpenTelemetry has no observable histogram. Returns the
    instruments. Raises ``cw.ConfigError`` when opentelemetry-api is missing.

    >>> import cacheway as cw, cacheway.metrics
    >>> from opentelemetry.sdk.metrics import MeterProvider
    >>> from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    >>> reader = InMemoryMetricReader()
    >>> meter = MeterProvider(metric_readers=[reader]).get_meter("app")
    >>> cache = cw.Cache(store=cw.SQLiteStore(":memory:"))
    >>> _ = cw.metrics.instrument(cache, meter)
    >>> cache.get("absent")
    >>> [m.data.data_points[0].value for rm in reader.get_metrics_data().resource_metrics
    ...  for sm in rm.scope_metrics for m in sm.metrics if m.name == "cacheway_misses_total"]
    [1]
    >>> cache.close()
    """
    _check_source(cache)
    otel = _otel()
    observation: type[Observation] = otel.Observation

    def per_namespace(field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            return [observation(_number(stats, field), {"namespace": label})
                    for label, stats in _snapshots(cache).items()]
        return observe

    def evictions(_: CallbackOptions) -> Iterable[Observation]:
        return [observation(cache.stats().evictions)]

    def per_partition(field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            return [observation(value, labels)
                    for labels, value in _queue_points(cache.stats(), field)]
        return observe

    def buckets(_: CallbackOptions) -> Iterable[Observation]:
        out = []
        for label, stats in _snapshots(cache).items():
            for bound, n in _buckets(stats):
                out.append(observation(n, {"namespace": label, "le": _le(bound)}))
            out.append(observation(stats.flush_seconds_count,
                                   {"namespace": label, "le": "+Inf"}))
        return out

    made: list[Any] = []
    for name, (field, doc) in COUNTERS.items():
        made.append(meter.create_observable_counter(
            name, callbacks=[per_namespace(field)], description=doc))
    made.append(meter.create_observable_counter(
        _EVICTIONS[0], callbacks=[evictions], description=_EVICTIONS[1]))
    for name, (field, doc) in GAUGES.items():
        unit = "By" if field == "journal_bytes" else "1"
        made.append(meter.create_observable_gauge(
            name, callbacks=[per_namespace(field)], unit=unit, description=doc))
    for name, (field, doc) in QUEUE_GAUGES.items():
        made.append(meter.create_observable_gauge(
            name, callbacks=[per_partition(field)], unit="s" if field == "lag" else "1",
            description=doc))
    name, doc = _FLUSH_SECONDS
    made.append(meter.create_observable_counter(
        f"{name}_count", callbacks=[per_namespace("flush_seconds_count")],
        description=f"{doc}: batches"))
    made.append(meter.create_observable_counter(
        f"{name}_sum", callbacks=[per_namespace("flush_seconds_sum")], unit="s",
        description=f"{doc}: seconds summed"))
    made.append(meter.create_observable_counter(
        f"{name}_bucket", callbacks=[buckets],
        description=f"{doc}: batches that took at most le seconds"))
    return made
