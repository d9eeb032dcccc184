"""An AsyncCache built at import under ``gunicorn --preload`` with two uvicorn workers,
driven over HTTP (issues 12 and 8: the same guarantees in processes forked from the one
that built the cache). Each worker runs its own loop on the cache it inherited; every
acknowledged write and increment must be in the store after a graceful shutdown."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cacheway as cw

ROOT = Path(__file__).resolve().parent.parent
MISSING = [m for m in ("fastapi", "gunicorn", "uvicorn_worker", "httpx")
           if importlib.util.find_spec(m) is None]
if MISSING and not os.environ.get("CACHEWAY_REQUIRE_SERVICES"):
    pytest.skip(f"the test needs {', '.join(MISSING)} (pip install -e '.[dev]')",
                allow_module_level=True)

import httpx  # noqa: E402 - after the skip: only when installed

from test_example_fastapi import free_port  # noqa: E402


@pytest.mark.slow  # a real gunicorn, ~10 s
def test_an_asynccache_built_before_gunicorn_forks_its_workers(tmp_path: Path) -> None:
    port = free_port()
    db, log_path = tmp_path / "app.db", tmp_path / "gunicorn.log"
    env = dict(os.environ, PRELOAD_DB=str(db), PRELOAD_JOURNAL=str(tmp_path / "app.wal"),
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--preload", "--workers", "2",
             "--worker-class", "uvicorn_worker.UvicornWorker", "--bind",
             f"127.0.0.1:{port}", "--chdir", str(ROOT / "tests" / "apps"),
             "--graceful-timeout", "30", "preload_app:app"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/items/none", timeout=2.0).status_code == 404:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, "gunicorn exited:\n" + log_path.read_text()
            assert time.monotonic() < deadline, "gunicorn did not start:\n" + log_path.read_text()
            time.sleep(0.1)

        def put(i: int) -> dict[str, int]:
            r = httpx.put(f"{url}/items/k{i}", json={"i": i, "tag": ["x", i]}, timeout=30)
            r.raise_for_status()
            return dict(r.json())

        def count(_: int) -> int:
            r = httpx.post(f"{url}/count/c", timeout=30)
            r.raise_for_status()
            return int(r.json()["pid"])

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            puts = list(pool.map(put, range(200)))
            counted = list(pool.map(count, range(300)))
        pids = {p["pid"] for p in puts} | set(counted)
        built_in = {p["built_in"] for p in puts}
        assert len(built_in) == 1  # built once, in the master
        assert not pids & built_in
        assert len(pids) == 2, f"requests reached {len(pids)} worker(s), not both"
        proc.send_signal(signal.SIGTERM)  # graceful: each worker's lifespan flushes
        assert proc.wait(60) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = log_path.read_text()
    assert "Traceback" not in log, log
    with cw.Cache(store=cw.SQLiteStore(db)) as cache:
        assert cache.get_many([f"k{i}" for i in range(200)]) == {
            f"k{i}": {"i": i, "tag": ["x", i]} for i in range(200)}
        assert cache.get("c") == 300  # increments of both workers, each counted once
