"""A FastAPI app whose AsyncCache is built at import, as an app run by
``gunicorn --preload`` builds it: in the master, before the workers fork (issue 12).

Each worker runs its own event loop and uses the AsyncCache it inherited. The store
(SQLite) is ``PRELOAD_DB``; writes go write-back with a journal (``PRELOAD_JOURNAL``: a
directory, so each worker process gets a journal of its own), flushed when the worker's
lifespan ends.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException

import cacheway as cw

acache = cw.AsyncCache(store=cw.SQLiteStore(os.environ["PRELOAD_DB"]),
                       policy=cw.WriteBack(max_delay=0.05,
                                           journal=os.environ["PRELOAD_JOURNAL"]))
BUILT_IN = os.getpid()  # the master's pid: the workers are its children


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await acache.flush(timeout=30)  # every acknowledged write in the store before exit


app = FastAPI(lifespan=lifespan)


@app.put("/items/{key}")
async def put_item(key: str, value: dict[str, Any]) -> dict[str, Any]:
    await acache.set(key, value)
    return {"pid": os.getpid(), "built_in": BUILT_IN}


@app.post("/count/{key}")
async def count(key: str) -> dict[str, Any]:
    return {"n": await acache.incr(key), "pid": os.getpid()}


@app.get("/items/{key}")
async def get_item(key: str) -> Any:
    value = await acache.get(key)
    if value is None:
        raise HTTPException(404, f"no item {key!r}")
    return value
