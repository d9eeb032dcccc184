"""Redis servers the queue tests start themselves: one with ``appendfsync always`` to kill
with kill -9 and restart on the same directory, and a 3-master Redis Cluster on loopback
ports. Both are stopped by the fixtures that start them (``test_queue_durability.py``,
``test_queue_cluster.py``)."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    """A loopback port nothing listens on now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_cluster_port() -> int:
    """A free loopback port P whose cluster bus port P + 10000 is free too (P <= 55535,
    as Redis requires)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 55000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def need_redis_server() -> None:
    """Skip when this machine has no ``redis-server``/``redis-cli`` to start."""
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")


def _wait_ping(port: int, proc: subprocess.Popen[bytes], log: Path,
               timeout: float = 30.0) -> None:
    import redis

    deadline = time.monotonic() + timeout
    client = redis.Redis(port=port, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {port} exited "
                                   f"({proc.returncode}): {log.read_text()[-2000:]}")
            try:
                if client.ping():
                    return
            except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                pass  # not listening yet, or still loading its AOF
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {port} did not answer PING "
                                   f"within {timeout:g} s")
            time.sleep(0.02)
    finally:
        client.close()


class RedisServer:
    """One ``redis-server`` on a free loopback port, every write fsynced to its AOF
    before the reply (``appendonly yes``, ``appendfsync always``, no RDB snapshots)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start (or restart after :meth:`kill9`) on the same directory."""
        log = self.dir / f"redis.{self.starts}.log"
        self.starts += 1
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir),
             "--save", "", "--logfile", str(log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        _wait_ping(self.port, self.proc, log)

    def kill9(self) -> None:
        """SIGKILL: no shutdown, no last AOF rewrite."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def client(self) -> Any:
        import redis

        return redis.Redis(port=self.port, socket_timeout=5.0)


class RedisCluster:
    """Three masters on free loopback ports joined by ``redis-cli --cluster create``."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.dir = directory
        self.ports: list[int] = []
        while len(self.ports) < masters:
            port = free_cluster_port()
            if port not in self.ports:
                self.ports.append(port)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.url = f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> None:
        for port in self.ports:
            d = self.dir / str(port)
            d.mkdir(parents=True, exist_ok=True)
            log = d / "redis.log"
            proc = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-config-file", str(d / "nodes.conf"),
                 "--dir", str(d), "--save", "", "--appendonly", "no",
                 "--logfile", str(log)],
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            self.procs.append(proc)
            _wait_ping(port, proc, log)
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        subprocess.run(["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas",
                        "0", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        self._wait_ok()

    def _wait_ok(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            infos = [subprocess.run(["redis-cli", "-p", str(p), "cluster", "info"],
                                    capture_output=True, text=True, timeout=10).stdout
                     for p in self.ports]
            if all("cluster_state:ok" in info for info in infos):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not reach cluster_state:ok: {infos}")
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
