"""Guarantee 2 under kill -9 (journal replay) and guarantee 8 across os.fork() on the
backend x store pairs: ``cacheway.testing.ProcessGuaranteeSuite``, one class per pair.
Each trial starts processes, so the default run takes one cheap pair (memory + SQLite)
and the slow run every other pair (kill -9 needs URLs: callback and row-mode pairs skip
it; fork needs a store outside the process: callback pairs skip it)."""

from __future__ import annotations

import pytest

from cacheway.testing import ProcessGuaranteeSuite
from pairs import PAIRS, pair_class

CHEAP = "memory+sqlite"

# {pair: {(test, policy or None): what fails}}: library bugs for the lead, xfail(strict).
KNOWN_FAILURES: dict[str, dict[tuple[str, str | None], str]] = {}

for _pair in PAIRS:
    _cls = pair_class(ProcessGuaranteeSuite, _pair,
                      known_failures=KNOWN_FAILURES.get(_pair, {}),
                      crash_trials=1 if _pair == CHEAP else 2)
    if _pair != CHEAP:
        _cls = pytest.mark.slow(_cls)
    globals()[_cls.__name__] = _cls
