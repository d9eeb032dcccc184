"""A FastAPI app with a cacheway AsyncCache in front of its database.

    pip install 'cacheway[redis,postgres]' fastapi uvicorn
    CACHEWAY_STORE=postgresql://app@db/app CACHEWAY_BACKEND=redis://cache:6379/0 \\
        uvicorn fastapi_app:app --app-dir examples

The cache opens in the app's lifespan (``cw.open_async``: the store, backend and policy
from the environment; SQLite and process memory by default) and closes with it, which
flushes any write-back writes before the process exits. Three endpoints show the three
ways an app uses it:

* ``GET /items/{key}``: read-through (the cache, else the store; 404 when neither has it);
* ``PUT /items/{key}``: a write as the policy says (write-through: in the store when the
  response is sent; write-back: acknowledged, flushed in the background);
* ``GET /price/{sku}``: an ``async def`` memoized with ``@acache.cached(ttl=60)``:
  concurrent requests for one sku share one computation.

``GET /stats`` reports the cache's counters and how many prices were computed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request

import cacheway as cw

STORE = os.environ.get("CACHEWAY_STORE", "sqlite:///cacheway-example.db")
BACKEND = os.environ.get("CACHEWAY_BACKEND", "memory://")
POLICY = os.environ.get("CACHEWAY_POLICY", "write-through")
#: how long computing a price takes (a slow upstream call)
PRICE_DELAY = float(os.environ.get("PRICE_DELAY", "0.2"))

computations = 0


async def compute_price(sku: str, region: str = "eu") -> dict[str, Any]:
    """The slow call worth caching (memoized in the lifespan, once the cache is open)."""
    global computations
    computations += 1
    await asyncio.sleep(PRICE_DELAY)
    return {"sku": sku, "region": region, "cents": sum(map(ord, sku)) * 10}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    acache = await cw.open_async(store=STORE, backend=BACKEND, policy=POLICY)
    app.state.acache = acache
    app.state.price = acache.cached(ttl=60)(compute_price)
    try:
        yield
    finally:
        await acache.close()  # flushes pending write-back writes


app = FastAPI(title="cacheway example", lifespan=lifespan)


def cache_of(request: Request) -> cw.AsyncCache:
    acache: cw.AsyncCache = request.app.state.acache
    return acache


@app.get("/items/{key}")
async def get_item(key: str, request: Request) -> Any:
    value = await cache_of(request).get(key)
    if value is None:
        raise HTTPException(status_code=404, detail=f"no item {key!r}")
    return value


@app.put("/items/{key}")
async def put_item(key: str, request: Request) -> dict[str, str]:
    await cache_of(request).set(key, await request.json())
    return {"stored": key}


@app.get("/price/{sku}")
async def price(sku: str, request: Request, region: str = "eu") -> dict[str, Any]:
    cached: Callable[..., Awaitable[dict[str, Any]]] = request.app.state.price
    return await cached(sku, region=region)


@app.get("/stats")
async def stats(request: Request) -> dict[str, Any]:
    s = cache_of(request).stats()
    return {"hits": s.hits, "misses": s.misses, "computations": computations}
