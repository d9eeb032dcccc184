"""The guarantees of DESIGN.md (1-8) as suites for one backend x store pair.

:class:`GuaranteeSuite` holds the in-process guarantees (1-7, and 8 on ``AsyncCache``);
:class:`ProcessGuaranteeSuite` the ones that start processes (2 with ``kill -9`` and a
journal replay, 8 across ``os.fork()``), which cost more per pair. Tests are named
``test_guaranteeN_...``. See :mod:`cacheway.testing.pair` for the hooks.
:class:`~cacheway.testing.AsyncGuaranteeSuite` (:mod:`cacheway.testing.async_front`) runs
the same tests with each cache an ``AsyncCache``.
"""

from __future__ import annotations

from .guarantees_failures import FailureGuarantees
from .guarantees_processes import ProcessGuarantees
from .guarantees_races import RaceGuarantees
from .guarantees_writes import WriteGuarantees

__all__ = ["GuaranteeSuite", "ProcessGuaranteeSuite"]


class GuaranteeSuite(WriteGuarantees, RaceGuarantees, FailureGuarantees):
    """Guarantees 1-7 (and 8 on the asyncio front) on the pair the subclass makes, through
    ``cacheway.Cache`` (:class:`~cacheway.testing.AsyncGuaranteeSuite`: through
    ``AsyncCache``)."""


class ProcessGuaranteeSuite(ProcessGuarantees):
    """Guarantee 2 under ``kill -9`` and guarantee 8 across ``os.fork()`` on the pair the
    subclass makes (override :meth:`~ProcessGuarantees.urls` for the kill -9 trials)."""
