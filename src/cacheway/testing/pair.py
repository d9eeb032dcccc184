"""The base of the guarantee suites: one backend x store pair per test, and its hooks.

A subclass says how to make the pair::

    class TestMyPair(GuaranteeSuite):
        def make_store(self) -> Store:      # each call: another connection to one test's data
            return MyStore(DSN, table=self.table)

        def make_backend(self, max_entries: int | None = None) -> Backend:
            return cw.RedisBackend(URL, prefix=self.prefix)   # each call: same key space

Several pairs in one class: override the ``pair`` fixture with ``params`` and read it in
:meth:`PairSuite.open_pair`. Tests use the public API only (``cacheway`` names, ``Cache``
methods, ``stats()``, a store's ``load``/``load_many``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

import cacheway as cw

from .faults import FaultyStore
from .policies import POLICY_NAMES
from .support import unique

__all__ = ["PairSuite"]



def fast_retry() -> cw.Retry:
    """Retry until the store answers, quickly (tests wait for outages to end)."""
    return cw.Retry(attempts=None, base_delay=0.01, max_delay=0.05)


class PairSuite:
    """Hooks, fixtures and helpers shared by the guarantee suites."""

    #: the store keeps counters (``incr``)
    counters: ClassVar[bool] = True
    #: the store keeps namespaces apart (row stores ignore them)
    namespaces: ClassVar[bool] = True
    #: the backend drops entries for room when ``make_backend(max_entries=)`` bounds it
    evicts: ClassVar[bool] = True
    #: the policies (names of :data:`~cacheway.testing.POLICIES`) that tests about policies
    #: run under
    policies: ClassVar[Sequence[str]] = POLICY_NAMES
    #: the pair's name, put in test ids when set (through the ``pair`` fixture, which
    #: :meth:`open_pair` then receives)
    pair_id: ClassVar[str] = ""
    #: known failures of this pair, marked xfail(strict=True):
    #: {(test function name, policy name or None for any): "what fails"}
    known_failures: ClassVar[Mapping[tuple[str, str | None], str]] = {}
    #: known failures that do not show on every run (a race): xfail(strict=False)
    flaky_failures: ClassVar[Mapping[tuple[str, str | None], str]] = {}

    tmp_path: Path
    table: str
    prefix: str

    # -- hooks -----------------------------------------------------------------------------
    def open_pair(self, pair: Any) -> None:
        """Called before each test with the ``pair`` fixture's value (None by default)."""

    def close_pair(self) -> None:
        """Called after each test, once its caches, stores and backends are closed."""

    def make_store(self) -> Any:
        """A new store on this test's data (each call another connection to it)."""
        raise NotImplementedError

    def make_backend(self, max_entries: int | None = None) -> Any:
        """A new backend on this test's key space (every call the same space);
        ``max_entries`` bounds its process-memory level, if it has one."""
        raise NotImplementedError

    def value(self, i: int) -> Any:
        """A value the store keeps, distinct for each ``i``."""
        return {"i": i, "text": f"v{i}"}

    def refused_values(self) -> list[Any]:
        """Values no write may accept (the serializer or the store can never take them)."""
        return [object(), {1, 2}, {"nested": object()}, float("nan")]

    def refused_keys(self, store: Any) -> list[str]:
        """Keys the store can never take: past its declared limits, lone surrogates."""
        keys = ["lone \ud800 surrogate"]
        chars = getattr(store, "max_key_chars", None)
        if chars is not None:
            keys.append("k" * (chars + 1))
        size = getattr(store, "max_key_bytes", None)
        if size is not None:
            keys.append("é" * (size // 2 + 1))
        return keys

    # -- fixtures --------------------------------------------------------------------------
    def marks(self, test: str, policy: str | None) -> Sequence[pytest.MarkDecorator]:
        """Marks for ``test`` of this pair (``policy``: None for the test as a whole), at
        collection: ``[pytest.mark.slow]`` keeps a costly variant out of a quick run."""
        return ()

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Tests that take ``policy`` run once per entry of :attr:`policies`; what
        :meth:`marks` returns is attached to the test (or to its policy variant)."""
        test = metafunc.function.__name__
        whole = list(self.marks(test, None))
        if whole or self.pair_id:  # through the pair: a fixture of every test here
            metafunc.parametrize("pair", [pytest.param(self.pair_id or "pair", marks=whole)])
        if "policy" in metafunc.fixturenames:
            metafunc.parametrize("policy", [pytest.param(name, marks=self.marks(test, name))
                                            for name in self.policies])

    @pytest.fixture
    def pair(self) -> Any:
        return None

    @pytest.fixture(autouse=True)
    def _pair_lifecycle(self, pair: Any, tmp_path: Path,
                        request: pytest.FixtureRequest) -> Iterator[None]:
        callspec = getattr(request.node, "callspec", None)
        policy = callspec.params.get("policy") if callspec is not None else None
        name = getattr(request.node, "originalname", request.node.name)
        for failures, strict in ((self.known_failures, True), (self.flaky_failures, False)):
            reason = failures.get((name, policy)) or failures.get((name, None))
            if reason:
                request.node.add_marker(pytest.mark.xfail(strict=strict, reason=reason))
        self.tmp_path = tmp_path
        self.table = unique("cwg")
        self.prefix = f"{unique('cwg')}:"
        self._caches: list[Any] = []
        self._closing: list[Any] = []
        self._last: list[Any] = []
        self.open_pair(pair)
        try:
            yield
        finally:
            try:
                for cache in reversed(self._caches):
                    try:
                        cache.close(timeout=10)
                    except cw.CachewayError as exc:
                        # Tests that leave a failing store behind end here; say so.
                        warnings.warn(f"closing {cache!r} at teardown: {exc}", stacklevel=1)
                for made in reversed(self._closing):
                    made.close()
            finally:
                try:
                    for thing in reversed(self._last):
                        thing.close()
                finally:
                    self.close_pair()

    # -- helpers ---------------------------------------------------------------------------
    def store(self) -> Any:
        store = self.make_store()
        self._closing.append(store)
        return store

    def backend(self, max_entries: int | None = None) -> Any:
        backend = self.make_backend(max_entries)
        self._closing.append(backend)
        return backend

    def faulty(self) -> FaultyStore:
        return FaultyStore(self.store())

    def close_last(self, thing: Any) -> Any:
        """Close ``thing`` at teardown after the test's caches, stores and backends (before
        :meth:`close_pair`); returns it."""
        self._last.append(thing)
        return thing

    def make_cache(self, store: Any, backend: Any, policy: Any) -> Any:
        """The cache the tests drive, on ``store`` and ``backend`` (a hook): a thread-front
        :class:`cacheway.Cache` here; :class:`~cacheway.testing.AsyncGuaranteeSuite` makes
        an :class:`cacheway.AsyncCache` behind the same blocking methods."""
        return cw.Cache(store=store, backend=backend, policy=policy)

    def cache(self, policy: Any, *, store: Any = None, backend: Any = None,
              max_entries: int | None = None) -> Any:
        """A cache on this pair (a new store and backend unless given), closed at teardown:
        :meth:`make_cache`'s (a ``cacheway.Cache`` unless a suite says otherwise)."""
        cache = self.make_cache(self.store() if store is None else store,
                                self.backend(max_entries) if backend is None else backend,
                                policy)
        self._caches.append(cache)
        return cache

    def forget(self, cache: Any) -> None:
        """A cache the test closed itself."""
        self._caches.remove(cache)

    def needs_counters(self) -> None:
        if not self.counters:
            pytest.skip("this store keeps no counters")

    def needs_shared_backend(self, *, versions: bool = True) -> None:
        """Skip unless caches on two backends of this pair share the cached copies (the
        way processes share Redis) and, with ``versions``, the store stamps versions
        (across processes, guarantees 3 and 4 need them: DESIGN.md)."""
        if self.backend().local:
            pytest.skip("the backend is in process memory: nothing to share")
        if versions and not self.store().versioned:
            pytest.skip("an unversioned store gets in-process guarantees only")
