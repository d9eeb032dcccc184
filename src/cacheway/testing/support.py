"""Small helpers the suites share: polling, unique names."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

__all__ = ["unique", "wait_until"]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until it is true or a generous deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return bool(predicate())


def unique(prefix: str = "t") -> str:
    """A name no other test run uses (tables, key prefixes, namespaces): several people run
    the suites at once on the same servers."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"
