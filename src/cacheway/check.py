"""The consistency checker: how many cached entries disagree with the store, Polaris-style.

:func:`check` compares sampled cached values with the store's and re-checks disagreeing
ones ``rounds`` times, ``quiet`` seconds apart, so writes in flight are not counted; the
answer reads as Meta's Polaris puts it: "N nines consistent within M seconds".
Tombstones, leases and "not found" markers are not values; a key without a cached copy
agrees by definition (the next read loads the store).

>>> import tempfile, os, cacheway as cw
>>> store = cw.SQLiteStore(os.path.join(tempfile.mkdtemp(), "app.db"))
>>> backend = cw.MemoryBackend()
>>> with cw.Cache(store=store, backend=backend) as cache:
...     cache.set_many({f"k{i}": i for i in range(100)})
...     print(check(store, backend, quiet=0))
100 of 100 sampled entries agree: at least 2 nines consistent within 0 s
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple, cast

from .backends.base import MISS
from .backends.memory import MemoryBackend
from .backends.redis import RedisBackend
from .backends.two_level import TwoLevelBackend
from .errors import BackendError, ConfigError
from .serializers import Serializer
from .stores.base import NOTSET, SamplesKeys, Store

__all__ = ["CheckReport", "Example", "check"]

# RedisBackend's header: check byte, 7-byte big-endian version, flag (0 = value)
_HLEN, _VALUE = 9, 0
_SCAN_COUNT, _EXAMPLES = 1000, 5


@dataclass(frozen=True)
class Example:
    """One cached entry that disagrees with the store (``stored_found`` False: no row)."""

    level: str
    namespace: str
    key: str
    cached: Any
    stored: Any
    stored_found: bool
    cached_version: int | None
    stored_version: int | None


@dataclass
class CheckReport:
    """What :func:`check` found. ``checked`` counts sampled cached entries compared
    (one per key and backend level); ``nines`` is ``-log10(disagreeing / checked)``, or
    when nothing disagrees the most the sample can show, ``log10(checked)``."""

    checked: int
    disagreeing: int
    examples: list[Example] = field(default_factory=list)
    nines: float = 0.0
    within_seconds: float = 0.0
    sampled: int = 0
    rounds: int = 0

    @property
    def agreeing(self) -> int:
        return self.checked - self.disagreeing

    def __str__(self) -> str:
        w = self.within_seconds
        within = f"{w:.1f} s" if w == round(w, 1) and w >= 1 else f"{w:g} s"
        if self.checked == 0:
            return f"no cached entries among {self.sampled} sampled keys: nothing to compare"
        nines = ("at least " if self.disagreeing == 0 else "") + f"{round(self.nines, 1):g} nines"
        return (f"{self.agreeing} of {self.checked} sampled entries agree: "
                f"{nines} consistent within {within}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON (``agreeing`` and the sentence included)."""
        return {**asdict(self), "agreeing": self.agreeing, "summary": str(self)}


# -- what is cached: one reader per backend level ---------------------------------------------
class _Cached(NamedTuple):  # a cached value and its version (None in process memory)
    value: Any
    version: int | None


def _split(bkey: str, namespaces: set[str]) -> tuple[str, str] | None:
    # Namespace names cannot hold ':' (Cache.namespace refuses them): the first one splits.
    ns, sep, key = bkey.partition(":")
    return (ns, key) if sep and ns in namespaces else None


class _RedisLevel:
    """Lists (SCAN) and reads (MGET) the cached values under a RedisBackend's prefix."""

    def __init__(self, backend: RedisBackend, loads: Callable[[bytes], Any], name: str) -> None:
        import redis

        self.name, self._backend, self._loads = name, backend, loads
        self._client, self._prefix = backend.client, backend.prefix
        self._errors: tuple[type[Exception], ...] = (redis.RedisError,)

    def keys(self, namespaces: set[str]) -> Iterator[tuple[str, str]]:
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in self._prefix) + "*"
        n = len(self._prefix.encode())
        try:
            for name in self._client.scan_iter(match=pattern, count=_SCAN_COUNT):
                # a key that is not UTF-8 is none of ours: read back, it holds no value
                found = _split(bytes(name)[n:].decode(errors="replace"), namespaces)
                if found is not None:
                    yield found
        except self._errors as exc:
            raise BackendError(f"SCAN of {self._backend!r} failed: {exc}") from exc

    def read(self, namespace: str, keys: Sequence[str]) -> dict[str, _Cached]:
        names = [f"{self._prefix}{namespace}:{k}" for k in keys]
        try:
            raws = cast("list[bytes | None]", self._client.mget(names))  # bytes: see RedisBackend
        except self._errors as exc:
            raise BackendError(f"MGET on {self._backend!r} failed: {exc}") from exc
        out: dict[str, _Cached] = {}
        for key, raw in zip(keys, raws):
            # Tombstones, leases, "not found" markers and foreign bytes are no values.
            if raw is None or len(raw) < _HLEN or raw[8] != _VALUE:
                continue
            try:
                value = self._loads(raw[_HLEN:])
            except Exception:  # noqa: BLE001, S112 - an undecodable entry is a miss to every reader
                continue
            out[key] = _Cached(value, int.from_bytes(raw[1:8], "big"))
        return out


class _MemoryLevel:
    """Lists and reads the cached objects of a MemoryBackend (an L1 too)."""

    def __init__(self, backend: MemoryBackend, normalize: Callable[[Any], Any], name: str
                 ) -> None:
        self.name, self._backend, self._normalize = name, backend, normalize

    def keys(self, namespaces: set[str]) -> Iterator[tuple[str, str]]:
        for bkey in self._backend:
            found = _split(bkey, namespaces)
            if found is not None:
                yield found

    def read(self, namespace: str, keys: Sequence[str]) -> dict[str, _Cached]:
        # peek(): MemoryBackend.get would reorder the LRU.
        out: dict[str, _Cached] = {}
        for key in keys:
            value = self._backend.peek(f"{namespace}:{key}")
            if value is not MISS:
                out[key] = _Cached(self._normalize(value), None)
        return out


_Level = _RedisLevel | _MemoryLevel


def _levels(backend: object, serializer: Serializer) -> list[_Level]:
    def normalize(value: Any) -> Any:
        # Process memory keeps the caller's object (a tuple): compare what a store returns.
        try:
            return serializer.loads(serializer.dumps(value))
        except Exception:  # noqa: BLE001 - not serializable: compare the object itself
            return value

    if isinstance(backend, TwoLevelBackend):
        return [_MemoryLevel(backend.l1, normalize, "L1"),
                _RedisLevel(backend.l2, serializer.loads, "redis")]
    if isinstance(backend, RedisBackend):
        return [_RedisLevel(backend, serializer.loads, "redis")]
    if isinstance(backend, MemoryBackend):
        return [_MemoryLevel(backend, normalize, "memory")]
    raise ConfigError(f"check needs a cw.RedisBackend, cw.TwoLevelBackend or "
                      f"cw.MemoryBackend, not {backend!r}")


# -- what is stored: a sample of rows per namespace ------------------------------------------
def _store_keys(store: Store, namespace: str, n: int) -> list[str]:
    """Up to ``n`` random keys of ``namespace`` in ``store`` ([] when it cannot list:
    callback stores; then only keys found in the backend are checked)."""
    if n <= 0 or not isinstance(store, SamplesKeys):
        return []
    return store.sample_keys(namespace, n)


# -- the check ------------------------------------------------------------------------------
class _Seen(NamedTuple):  # one disagreeing observation of a cached entry
    cached: _Cached
    stored: Any
    stored_found: bool
    stored_version: int | None


_Entry = tuple[str, str, str]  # (level, namespace, key)


def _look(store: Store, levels: list[_Level], keys: dict[str, list[str]]
          ) -> tuple[int, dict[_Entry, _Seen]]:
    """Compare every level's cached values of ``keys`` with the store: (entries
    compared, the disagreeing ones)."""
    compared = 0
    bad: dict[_Entry, _Seen] = {}
    loads = store.serializer.loads
    for ns, ks in keys.items():
        # The cache first, then the store: a write landing in between shows up as a
        # disagreement that the next round clears.
        cached = {level.name: level.read(ns, ks) for level in levels}
        rows = store.fetch(ns, ks)
        for level in levels:
            for key, copy in cached[level.name].items():
                compared += 1
                row = rows.get(key)
                if row is None:  # a cached value for a key the store does not have
                    bad[(level.name, ns, key)] = _Seen(copy, None, False, None)
                elif not _same(copy.value, stored := (
                        row.value if row.value is not NOTSET else loads(row.payload or b""))):
                    bad[(level.name, ns, key)] = _Seen(copy, stored, True, row.version)
    return compared, bad


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) is not isinstance(b, bool):
        return False  # True == 1 in Python, not in the store
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - values that cannot be compared are not equal
        return False


def _sample(levels: list[_Level], store: Store, wanted: list[str], n: int,
            rng: random.Random) -> list[tuple[str, str]]:
    """Up to ``n`` (namespace, key): a reservoir sample of the cached keys, topped up
    with random rows of the store."""
    picked: list[tuple[str, str]] = []
    chosen: set[tuple[str, str]] = set()
    seen = 0
    for level in levels:
        for item in level.keys(set(wanted)):
            if item in chosen:
                continue
            seen += 1
            if len(picked) < n:
                picked.append(item)
                chosen.add(item)
            elif (j := rng.randrange(seen)) < n:
                chosen.discard(picked[j])
                picked[j] = item
                chosen.add(item)
    per_ns = max(1, (n - len(picked)) // len(wanted)) if len(picked) < n else 0
    for ns in wanted:
        added = 0  # ask for more rows: some are among the cached keys already picked
        for key in _store_keys(store, ns, per_ns and per_ns + len(picked)):
            if len(picked) >= n or added >= per_ns:
                break
            if (ns, key) not in chosen:
                chosen.add((ns, key))
                picked.append((ns, key))
                added += 1
    return picked


def _by_namespace(items: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, dict[str, None]] = {}
    for ns, key in items:
        out.setdefault(ns, {})[key] = None  # each key once, in sample order
    return {ns: list(keys) for ns, keys in out.items()}


def _number(value: object, what: str, low: float, integer: bool) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value >= low:
        raise ConfigError(f"{what} must be {'an int' if integer else 'a number'} >= {low:g}, "
                          f"not {value!r}")


def check(
    store: Store,
    backend: object,
    *,
    namespaces: Sequence[str] = ("",),
    sample: int = 1000,
    quiet: float = 1.0,
    rounds: int = 3,
    seed: int | None = None,
    sleep: Callable[[float], object] = time.sleep,
) -> CheckReport:
    """Sample up to ``sample`` keys of ``namespaces`` ("" is the default namespace) that
    hold cached copies in ``backend`` (Redis: a SCAN of its prefix; a TwoLevelBackend:
    its L1 and Redis; process memory: its keys), topped up with rows of ``store``, and
    compare each cached value with the store's. Disagreeing entries are looked at again
    up to ``rounds`` times, ``quiet`` seconds apart: an entry that agrees (or is gone)
    at a later look was a write in flight; one unchanged after ``quiet`` seconds, or
    still moving after the last round, counts as disagreeing. Give write-back caches a
    ``quiet`` above their ``max_delay``. ``seed`` fixes the backend sample.
    ``sleep`` waits between rounds (injectable for tests).

    >>> print(check(store, backend, quiet=0.5))  # doctest: +SKIP
    999 of 1000 sampled entries agree: 3 nines consistent within 0.5 s
    """
    _number(sample, "sample", 1, True)
    _number(rounds, "rounds", 0, True)
    _number(quiet, "quiet (seconds)", 0, False)
    wanted = list(dict.fromkeys([namespaces] if isinstance(namespaces, str) else namespaces))
    if not wanted or not all(isinstance(ns, str) and ":" not in ns for ns in wanted):
        raise ConfigError(f"namespaces must be names without ':' ('' for the default), "
                          f"not {namespaces!r}")
    if not isinstance(store, Store):
        raise ConfigError(f"check needs a cacheway store, not {store!r}")
    levels = _levels(backend, store.serializer)
    picked = _sample(levels, store, wanted, sample, random.Random(seed))
    checked, suspects = _look(store, levels, _by_namespace(picked))
    stale: dict[_Entry, _Seen] = {}
    done = 0
    while suspects and done < rounds:
        sleep(quiet)
        done += 1
        _, now = _look(store, levels, _by_namespace((ns, k) for _, ns, k in suspects))
        moving: dict[_Entry, _Seen] = {}
        for entry, before in suspects.items():
            seen = now.get(entry)
            if seen is None:
                continue  # agrees now, or the copy is gone: the write was in flight
            if seen == before:
                stale[entry] = seen  # nothing moved for `quiet` seconds: a stale copy
            else:
                moving[entry] = seen
        suspects = moving
    stale.update(suspects)  # never settled within the rounds: counted too

    order = {item: i for i, item in enumerate(picked)}
    worst = sorted(stale.items(), key=lambda it: (order.get(it[0][1:], 0), it[0][0]))
    examples = [Example(level, ns, key, seen.cached.value, seen.stored, seen.stored_found,
                        seen.cached.version, seen.stored_version)
                for (level, ns, key), seen in worst[:_EXAMPLES]]
    bad = len(stale)
    nines = 0.0 if not checked else -math.log10(bad / checked) if bad else math.log10(checked)
    return CheckReport(checked=checked, disagreeing=bad, examples=examples, nines=nines,
                       within_seconds=float(quiet), sampled=len(picked), rounds=done)
