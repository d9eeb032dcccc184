"""Reaching the real servers on loopback from tests.

A test that needs Redis, PostgreSQL or MariaDB asks for it with one of the fixtures in
``conftest.py`` (``redis_url``, ``postgres_dsn``, ``mariadb_url``). When the server is
unreachable the test is skipped with the reason, unless ``CACHEWAY_REQUIRE_SERVICES`` is
set (as ``.ci/run`` does): then it fails, so CI never passes by skipping.
"""

from __future__ import annotations

import os
import socket
import uuid

import pytest

REDIS_URL = os.environ.get("CACHEWAY_TEST_REDIS", "redis://127.0.0.1:6379/0")
POSTGRES_DSN = os.environ.get("CACHEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get("CACHEWAY_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test")

_PORTS = {"redis": 6379, "postgresql": 5432, "mariadb": 3306}


def reachable(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require(service: str) -> None:
    """Skip (or, with CACHEWAY_REQUIRE_SERVICES set, fail) when ``service`` is down."""
    port = _PORTS[service]
    if reachable(port):
        return
    message = f"{service} is not reachable on 127.0.0.1:{port}"
    if os.environ.get("CACHEWAY_REQUIRE_SERVICES"):
        pytest.fail(f"{message} and CACHEWAY_REQUIRE_SERVICES is set", pytrace=False)
    pytest.skip(f"{message} (set CACHEWAY_REQUIRE_SERVICES=1 to make this a failure)")


def unique(prefix: str = "t") -> str:
    """A name no other test run uses: tables, key prefixes, namespaces."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"
