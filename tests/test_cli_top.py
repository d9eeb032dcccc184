"""``cacheway top``: one refresh (``--once``) of real processes' Prometheus endpoints, a
real Redis backend and a real store."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import MetricsHandler

import cacheway as cw
import cacheway.metrics
from cacheway.cli import main


@pytest.fixture
def endpoint() -> Iterator[Any]:
    """Serve a registry on a free loopback port: ``(registry, url)``."""
    registry = CollectorRegistry()
    server = ThreadingHTTPServer(("127.0.0.1", 0), MetricsHandler.factory(registry))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield registry, f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def test_top_once_shows_each_namespace_with_counts_from_every_process(
        tmp_path: Path, endpoint: Any, capsys: pytest.CaptureFixture[str]) -> None:
    registry, url = endpoint
    with cw.Cache(store=cw.SQLiteStore(str(tmp_path / "a.db"))) as cache:
        registry.register(cw.metrics.PrometheusCollector(cache))
        views = cache.namespace("views")
        for i in range(30):
            views.set(f"k{i}", i)
            views.get(f"k{i}")
        cache.get("missing")
        assert main(["top", "--metrics", url, "--once", "--interval", "0.05"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if "│" in line}
    assert "views" in rows, out
    assert "default" in rows, out
    cells = [c.strip() for c in rows["views"].split("│")[1:-1]]
    assert cells[-1] == "up"  # store not down
    assert cells[-2] == "0"  # dirty
    assert "100.0" in cells  # every read of views was a hit


def test_top_counts_the_copies_under_a_redis_prefix_and_times_the_store(
        tmp_path: Path, redis_url: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "a.db"
    with cw.Cache(store=cw.SQLiteStore(str(db)),
                  backend=cw.RedisBackend(redis_url, prefix=prefix)) as cache:
        cache.set_many({f"k{i}": i for i in range(12)})
        assert main(["top", "--backend", f"{redis_url}?prefix={prefix}",
                     "--store", f"sqlite:///{db}", "--once"]) == 0
    out = capsys.readouterr().out
    assert "cached copies: 12" in out, out
    assert "store read:" in out
    assert " ms" in out


def test_top_says_which_endpoint_failed_and_exits_1(capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/metrics"
    assert main(["top", "--metrics", url, "--once", "--interval", "0.01"]) == 1
    assert f"127.0.0.1:{port}" in capsys.readouterr().out


def test_top_without_anything_to_watch_is_a_usage_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["top", "--once"]) == 2
    assert "nothing to watch" in capsys.readouterr().err
