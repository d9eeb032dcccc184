"""The policies the suites run under, by name (fast flushes so tests do not wait)."""

from __future__ import annotations

from collections.abc import Callable

import cacheway as cw

__all__ = ["POLICIES", "POLICY_NAMES", "make_policy"]

POLICIES: dict[str, Callable[[], cw.Policy]] = {
    "write-through": lambda: cw.WriteThrough(),
    "write-back": lambda: cw.WriteBack(max_delay=0.05),
    "write-around": lambda: cw.WriteAround(),
}
POLICY_NAMES = list(POLICIES)


def make_policy(name: str) -> cw.Policy:
    """A fresh policy object of ``name`` (one of :data:`POLICY_NAMES`)."""
    return POLICIES[name]()
