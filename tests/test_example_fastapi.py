"""examples/fastapi_app.py under uvicorn, in a subprocess, driven over HTTP (issue 12)."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cacheway as cw

ROOT = Path(__file__).resolve().parent.parent
MISSING = [m for m in ("fastapi", "uvicorn", "httpx") if importlib.util.find_spec(m) is None]
if MISSING and not os.environ.get("CACHEWAY_REQUIRE_SERVICES"):
    pytest.skip(f"the example needs {', '.join(MISSING)} (pip install -e '.[dev]')",
                allow_module_level=True)

import httpx  # noqa: E402 - after the skip: only when installed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class App:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, db: Path) -> None:
        self.proc, self.url, self.db = proc, url, db

    def stop(self) -> int:
        """SIGTERM (uvicorn runs the lifespan's exit: the cache flushes and closes)."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def log(self) -> str:
        return (self.db.parent / "uvicorn.log").read_text()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    port = free_port()
    db = tmp_path / "app.db"
    env = dict(os.environ, CACHEWAY_STORE=f"sqlite:///{db}", CACHEWAY_POLICY="write-back",
               PRICE_DELAY="0.3", PYTHONPATH=os.pathsep.join(
                   [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    log = (tmp_path / "uvicorn.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "fastapi_app:app", "--app-dir",
         str(ROOT / "examples"), "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "info"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url + "/stats", timeout=1.0).raise_for_status()
            break
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log.close()
                pytest.fail("uvicorn did not start:\n" + (tmp_path / "uvicorn.log").read_text())
            time.sleep(0.1)
    try:
        yield App(proc, url, db)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def test_the_fastapi_example_reads_writes_and_memoizes_over_http(app: App) -> None:
    with httpx.Client(base_url=app.url, timeout=10.0) as client:
        assert client.get("/items/nope").status_code == 404
        item = {"name": "chair", "tags": ["wood", "oak"], "price": 12.5}
        r = client.put("/items/chair", json=item)
        assert r.status_code == 200
        assert r.json() == {"stored": "chair"}
        assert client.get("/items/chair").json() == item
        before = client.get("/stats").json()

    # 10 concurrent requests for one price: one computation, one answer
    def get_price(_: int) -> Any:
        return httpx.get(app.url + "/price/sku1", params={"region": "us"}, timeout=10.0).json()

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        prices = list(pool.map(get_price, range(10)))
    assert prices == [{"sku": "sku1", "region": "us", "cents": 3880}] * 10
    assert get_price(10) == prices[0]  # later: the cached result (a hit)
    after = httpx.get(app.url + "/stats").json()
    assert after["computations"] == before["computations"] + 1
    assert after["hits"] > before["hits"]

    # SIGTERM: the lifespan closes the cache, flushing the write-back write to SQLite
    # uvicorn exits 0 or, after a graceful shutdown, re-raises the signal it caught
    assert app.stop() in (0, -signal.SIGTERM)
    log = app.log()
    assert "Application shutdown complete" in log, log
    assert "Traceback" not in log, log
    with cw.Cache(store=cw.SQLiteStore(str(app.db))) as cache:
        assert cache.get("chair") == item
