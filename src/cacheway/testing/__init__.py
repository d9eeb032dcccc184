"""Suites that any backend, store or backend x store pair can run (as dogpile ships
``dogpile.testing.fixtures``): subclass one in a ``test_*.py`` module and give it the hooks
it names. Needs pytest (``pip install cacheway[testing]``); the library never imports this.
"""

from __future__ import annotations

from .backend_suite import BackendSuite, SharedBackendSuite, put
from .kv_suite import KeyValueStoreSuite
from .policies import POLICIES, POLICY_NAMES, make_policy
from .store_suite import StoreSuite
from .support import unique, wait_until

__all__ = [
    "POLICIES",
    "POLICY_NAMES",
    "BackendSuite",
    "KeyValueStoreSuite",
    "SharedBackendSuite",
    "StoreSuite",
    "make_policy",
    "put",
    "unique",
    "wait_until",
]
