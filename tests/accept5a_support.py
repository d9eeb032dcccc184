"""Helpers of test_accept5_mixed.py: the two kinds of production processes of one app.

``Front`` starts a child process (a real ``python``, nothing forked) that opens either an
``AsyncCache`` on an event loop of its own (the FastAPI-style app process) or a ``Cache``
(the batch / Celery-style process) over one PostgreSQL table and one Redis prefix, and then
answers commands sent over its stdin/stdout pipes (pickled, so values keep their types).
Every command returns only when the child's cache call returned: its reply is the
acknowledgement the tests order writes by. Concurrent bursts are two-phase (``start``
answers once every worker waits on a gate, ``go`` opens it, ``join`` collects) so that
both processes start a burst together.

Written from DESIGN.md, README and docs/ only (public names).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import os
import pickle
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

import cacheway as cw

TESTS = str(Path(__file__).resolve().parent)
SRC = str(Path(__file__).resolve().parents[1] / "src")


# -- the typed namespace values (importable in the parent and in both children) ------------

@dataclasses.dataclass
class User:
    name: str
    joined: datetime.date
    tags: tuple[str, ...] = ()
    karma: int = 0


class Event(msgspec.Struct):
    kind: str
    at: datetime.datetime
    tags: tuple[str, ...] = ()
    payload: dict[str, int] = {}


TYPES: dict[str, Any] = {"User": User, "Event": Event}


# -- the parent side -------------------------------------------------------------------------

class ChildError(Exception):
    """A cache call in a child raised: ``kind`` is the exception's class name."""

    def __init__(self, kind: str, message: str, tb: str) -> None:
        super().__init__(f"{kind}: {message}\n--- in the child ---\n{tb}")
        self.kind = kind
        self.message = message


class Front:
    """One child process with one cache (``front``: "async" or "sync")."""

    def __init__(self, front: str, config: dict[str, Any]) -> None:
        self.front = front
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([SRC, TESTS, env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import accept5a_support as s; s.serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        # sent now, answered on the first call: two children start in parallel
        self._send(("open", front, config))
        self._opening = True

    def _send(self, command: Any) -> None:
        assert self.proc.stdin is not None
        pickle.dump(command, self.proc.stdin)
        self.proc.stdin.flush()

    def ready(self) -> None:
        """Wait for the cache to be open (raises what opening raised)."""
        if self._opening:
            self._opening = False
            self._reply()

    def call_(self, *command: Any) -> Any:
        self.ready()
        self._send(command)
        return self._reply()

    def _reply(self) -> Any:
        assert self.proc.stdout is not None
        try:
            status, *rest = pickle.load(self.proc.stdout)
        except EOFError:
            raise AssertionError(f"{self.front} child died (rc={self.proc.wait(30)})") from None
        if status == "err":
            raise ChildError(*rest)
        return rest[0]

    # the cache API, on the whole cache (ns=None) or on a namespace view
    def do(self, method: str, *args: Any, ns: str | None = None, **kwargs: Any) -> Any:
        return self.call_("call", ns, method, args, kwargs)

    def ns(self, name: str, **options: Any) -> None:
        """Open the namespace view ``name`` (``type=`` given by name: "User", "Event")."""
        self.call_("ns", name, options)

    def start(self, job: str, kind: str, calls: list[Any], workers: int,
              ns: str | None = None) -> None:
        self.call_("start", job, kind, calls, workers, ns)

    def go(self, job: str) -> None:
        self.call_("go", job)

    def join(self, job: str) -> list[Any]:
        return list(self.call_("join", job))

    def computes(self) -> dict[str, int]:
        return dict(self.call_("computes"))

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call_("close")
            finally:
                self.proc.wait(30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


# -- the child side --------------------------------------------------------------------------

COMPUTES: dict[str, int] = {}
_LOCK = threading.Lock()
LABEL = ""


def _computed(name: str) -> None:
    with _LOCK:
        COMPUTES[name] = COMPUTES.get(name, 0) + 1


def price_sync(sku: str) -> dict[str, Any]:
    _computed("price")
    return {"sku": sku, "by": LABEL}


async def price_async(sku: str) -> dict[str, Any]:
    _computed("price")
    return {"sku": sku, "by": LABEL}


# one qualified name for both: the results' namespace is module.qualname
for _f in (price_sync, price_async):
    _f.__name__ = _f.__qualname__ = "price"


def _load_sync() -> dict[str, Any]:
    _computed("get_or_set")
    return {"by": LABEL}


async def _load_async() -> dict[str, Any]:
    _computed("get_or_set")
    return {"by": LABEL}


def _make_cache(front: str, cfg: dict[str, Any]) -> Any:
    serializer: Any = None
    if cfg.get("serializer") == "msgpack":
        serializer = cw.MsgpackSerializer()
    elif cfg.get("serializer") == "pickle":
        serializer = cw.PickleSerializer(key=b"accept5a")
    # the store is told the serializer too (its table keeps bytea then, not jsonb)
    store = cw.PostgresStore(cfg["dsn"], table=cfg["table"], serializer=serializer)
    redis = cw.RedisBackend(cfg["redis"], prefix=cfg["prefix"],
                            lease_ttl=cfg.get("lease_ttl", 10.0))
    backend: Any = redis
    if cfg.get("backend") == "two-level":
        backend = cw.TwoLevelBackend(cw.MemoryBackend(), redis)
        backend.wait_ready(5.0)
    policy: Any = cw.WriteThrough()
    if cfg["policy"] == "write-back":
        policy = cw.WriteBack(max_delay=cfg.get("max_delay", 600.0), batch_size=100_000,
                              journal=cfg["journal"], fsync="always")
    elif cfg["policy"] == "write-around":
        policy = cw.WriteAround()
    kind = cw.AsyncCache if front == "async" else cw.Cache
    return kind(store=store, backend=backend, policy=policy, serializer=serializer)


class Child:
    """The cache of one child and the commands it answers."""

    def __init__(self, front: str, cfg: dict[str, Any]) -> None:
        global LABEL
        LABEL = f"{front}-{os.getpid()}"
        self.front = front
        self.views: dict[str, Any] = {}
        self.jobs: dict[str, Any] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        if front == "async":
            self.loop = asyncio.new_event_loop()
            threading.Thread(target=self.loop.run_forever, daemon=True).start()

            async def build() -> Any:    # built on the running loop, as an app would
                acache = _make_cache(front, cfg)
                await acache.pending()   # a journalled cache opens on its first call
                return acache

            self.cache = self._run(build())
        else:
            self.cache = _make_cache(front, cfg)
        ttl = cfg.get("cached_ttl", 600.0)
        self.price: Any = (self.cache.cached(ttl=ttl)(price_async) if front == "async"
                           else self.cache.cached(ttl=ttl)(price_sync))

    def _run(self, coro: Any) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(120)

    def _target(self, ns: str | None) -> Any:
        return self.cache if ns is None else self.views[ns]

    def call(self, ns: str | None, method: str, args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> Any:
        target = self._target(ns)
        if method in ("stats", "namespace"):
            return _plain(getattr(target, method)(*args, **kwargs))
        result = getattr(target, method)(*args, **kwargs)
        if self.front == "async":
            async def wait() -> Any:
                return await result
            result = self._run(wait())
        return result

    def open_ns(self, name: str, options: dict[str, Any]) -> None:
        options = dict(options)
        if "type" in options:
            options["type"] = TYPES[options["type"]]
        self.views[name] = self.cache.namespace(name, **options)
        if self.front == "async":
            self._run(self.views[name].pending())  # a journalled view opens on first call

    def _one(self, kind: str, target: Any, call: Any) -> Any:
        """One call of a burst, as a coroutine (async) or a plain call (sync)."""
        if kind == "incr":
            return target.incr(*call)
        if kind == "get":
            return target.get(call)
        if kind == "set":
            return target.set(*call)
        if kind == "get_or_set":
            return target.get_or_set(call, _load_async if self.front == "async" else _load_sync)
        if kind == "op":                  # (method, *args) on the cache or the view
            return getattr(target, call[0])(*call[1:])
        if kind == "cached":
            return self.price(call)
        if kind == "cached_invalidate":
            return self.price.invalidate(call)
        raise ValueError(kind)

    def start(self, job: str, kind: str, calls: list[Any], workers: int,
              ns: str | None) -> None:
        target = self._target(ns)
        shares = [calls[i::workers] for i in range(workers)]
        if self.front == "async":
            async def prepare() -> None:
                gate = asyncio.Event()
                ready = asyncio.Semaphore(0)

                async def worker(share: list[Any]) -> list[Any]:
                    ready.release()
                    await gate.wait()
                    out = []
                    for call in share:
                        try:
                            out.append(await self._one(kind, target, call))
                        except Exception as exc:  # reported to the parent
                            out.append(exc)
                    return out

                tasks = [asyncio.ensure_future(worker(s)) for s in shares]
                for _ in shares:
                    await ready.acquire()
                self.jobs[job] = (gate, tasks)

            self._run(prepare())
            return
        gate = threading.Event()
        ready = threading.Semaphore(0)
        results: list[list[Any]] = [[] for _ in shares]

        def worker(i: int) -> None:
            ready.release()
            gate.wait()
            for call in shares[i]:
                try:
                    results[i].append(self._one(kind, target, call))
                except Exception as exc:  # reported to the parent
                    results[i].append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
        for t in threads:
            t.start()
        for _ in threads:
            ready.acquire()
        self.jobs[job] = (gate, threads, results)

    def go(self, job: str) -> None:
        gate = self.jobs[job][0]
        if self.front == "async":
            assert self.loop is not None
            self.loop.call_soon_threadsafe(gate.set)
        else:
            gate.set()

    def join(self, job: str) -> list[Any]:
        entry = self.jobs.pop(job)
        if self.front == "async":
            async def gather() -> list[Any]:
                return list(await asyncio.gather(*entry[1]))
            shares = self._run(gather())
        else:
            for t in entry[1]:
                t.join(120)
            shares = entry[2]
        return [_plain_exc(r) for share in shares for r in share]

    def close(self) -> None:
        if self.front == "async":
            self._run(self.cache.close())
            assert self.loop is not None
            self.loop.call_soon_threadsafe(self.loop.stop)
        else:
            self.cache.close()


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)
                if isinstance(getattr(value, f.name), (int, float, str, type(None)))}
    return value


def _plain_exc(value: Any) -> Any:
    if isinstance(value, BaseException):
        return ("raised", type(value).__name__, str(value))
    return value


def serve() -> None:
    """The child's loop: one pickled command in, one pickled reply out."""
    out: BinaryIO = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)                        # stray prints go to stderr, not into the pipe
    inp: BinaryIO = sys.stdin.buffer
    child: Child | None = None
    handlers: dict[str, Callable[..., Any]] = {}
    while True:
        try:
            command = pickle.load(inp)
        except EOFError:
            return
        name, *args = command
        try:
            if name == "open":
                child = Child(*args)
                handlers = {"call": child.call, "ns": child.open_ns, "start": child.start,
                            "go": child.go, "join": child.join, "close": child.close,
                            "computes": lambda: dict(COMPUTES)}
                reply: Any = ("ok", None)
            else:
                reply = ("ok", handlers[name](*args))
        except Exception as exc:  # every error goes back to the parent
            reply = ("err", type(exc).__name__, str(exc), traceback.format_exc())
        try:
            data = pickle.dumps(reply)
        except Exception as exc:  # a result pickle cannot carry
            data = pickle.dumps(("err", type(exc).__name__, str(exc), traceback.format_exc()))
        out.write(data)
        out.flush()
        if name == "close":
            return
