"""Guarantee 2 under kill -9 and guarantee 8 across os.fork() on the asyncio front:
``cacheway.testing.AsyncProcessGuaranteeSuite``, one class per backend x store pair,
``TestAioProc_<backend>__<store>``. By default two pairs run every test: memory + SQLite
and Redis + PostgreSQL (its AsyncCaches over ``AsyncPostgresStore``: psycopg's async pool
and redis.asyncio connections, inherited across the fork); the slow run runs every pair.
Kill -9 needs URLs (callback and row-mode pairs skip it); fork needs a store outside the
process (callback pairs skip it)."""

from __future__ import annotations

from typing import Any

import pytest

from cacheway.stores.postgres.aio import AsyncPostgresStore
from cacheway.testing import AsyncProcessGuaranteeSuite
from pairs import PAIRS, pair_class
from services import POSTGRES_DSN

DEFAULT = {"memory+sqlite", "redis+postgres"}

# {pair: {(test, policy or None): what fails}}: library bugs for the lead, xfail(strict)
KNOWN_FAILURES: dict[str, dict[tuple[str, str | None], str]] = {}


class DefaultRun:
    pair_name: str

    def marks(self, test: str, policy: str | None) -> list[Any]:
        return [] if self.pair_name in DEFAULT else [pytest.mark.slow]

    def make_async_store(self) -> Any:
        if self.pair_name.split("+", 1)[1] != "postgres":
            return self.make_store()  # type: ignore[attr-defined]
        store = AsyncPostgresStore(POSTGRES_DSN, table=self.table)  # type: ignore[attr-defined]
        self.stores.made.append(store)  # type: ignore[attr-defined]
        return store


for _pair in PAIRS:
    _cls = pair_class(type("Suite", (DefaultRun, AsyncProcessGuaranteeSuite), {}), _pair,
                      known_failures=KNOWN_FAILURES.get(_pair, {}), crash_trials=1)
    _cls.__name__ = _cls.__qualname__ = _cls.__name__.replace("Test_", "TestAioProc_")
    globals()[_cls.__name__] = _cls
