"""Suites that any backend, store or backend x store pair can run, as dogpile ships
``dogpile.testing.fixtures``: subclass one in a ``test_*.py`` module (the class name must
start with ``Test``) and give it the hooks it names. Needs pytest (``pip install
cacheway[testing]``); the library never imports this package.

- :class:`BackendSuite` / :class:`SharedBackendSuite` (versions too): ``make_backend()``.
- :class:`StoreSuite` (row stores) / :class:`KeyValueStoreSuite`: ``make_store(table)``,
  ``drop_tables(table)``.
- :class:`GuaranteeSuite` (guarantees 1-7 of the design, and 8 on ``AsyncCache``) and
  :class:`ProcessGuaranteeSuite` (2 under ``kill -9``, 8 across ``os.fork()``), for one
  backend x store pair: ``make_store()``, ``make_backend(max_entries=None)``, and
  ``value(i)`` where the store takes only some values::

      class TestMyStoreOnRedis(GuaranteeSuite):
          def make_store(self) -> Store:
              return MyStore(DSN, table=self.table)    # unique per test

          def make_backend(self, max_entries: int | None = None) -> Backend:
              return cw.RedisBackend(REDIS_URL, prefix=self.prefix)  # unique per test

          def close_pair(self) -> None:
              drop_table(self.table)

- :class:`AsyncGuaranteeSuite`: the same tests and hooks as :class:`GuaranteeSuite`, on
  :class:`cacheway.AsyncCache` (each cache an AsyncCache behind :class:`BlockingAsyncCache`,
  the tests' threads so many tasks in flight on one event loop in a thread,
  :class:`LoopThread`): run both to check a pair on both fronts.
- :class:`AsyncProcessGuaranteeSuite`: 2 under ``kill -9`` and 8 across ``os.fork()`` on
  :class:`cacheway.AsyncCache` (tasks writing at once; children forked from a parent
  that built it at import or used it, each running its own loop): the same hooks as
  :class:`ProcessGuaranteeSuite`.

Servers that are down should skip (or fail) from these hooks: that rule is the project's.
Tests use the public API only, and name tables and key prefixes uniquely per test (several
people may run the suites at once on the same servers).
"""

from __future__ import annotations

import pytest

# The suites' asserts explain their failures as a test module's would (pytest rewrites
# only test modules and the modules registered here, before they are imported: hence the
# imports below it, E402).
pytest.register_assert_rewrite(
    *(f"cacheway.testing.{name}" for name in (
        "async_front", "async_processes", "backend_suite", "faults", "guarantees",
        "guarantees_failures", "guarantees_processes", "guarantees_races", "guarantees_writes",
        "kv_suite", "pair", "store_suite")))

from .async_front import AsyncGuaranteeSuite, BlockingAsyncCache, LoopThread  # noqa: E402
from .async_processes import AsyncProcessGuaranteeSuite  # noqa: E402
from .backend_suite import BackendSuite, SharedBackendSuite, put  # noqa: E402
from .faults import FaultyStore, HeldFill  # noqa: E402
from .guarantees import GuaranteeSuite, ProcessGuaranteeSuite  # noqa: E402
from .kv_suite import KeyValueStoreSuite  # noqa: E402
from .pair import PairSuite  # noqa: E402
from .policies import POLICIES, POLICY_NAMES, make_policy  # noqa: E402
from .store_suite import StoreSuite  # noqa: E402
from .support import unique, wait_until  # noqa: E402

__all__ = [
    "POLICIES",
    "POLICY_NAMES",
    "AsyncGuaranteeSuite",
    "AsyncProcessGuaranteeSuite",
    "BackendSuite",
    "BlockingAsyncCache",
    "FaultyStore",
    "GuaranteeSuite",
    "HeldFill",
    "KeyValueStoreSuite",
    "LoopThread",
    "PairSuite",
    "ProcessGuaranteeSuite",
    "SharedBackendSuite",
    "StoreSuite",
    "make_policy",
    "put",
    "unique",
    "wait_until",
]
