"""``get_or_set`` and ``@cache.cached``: compute a value on a miss, once per stampede.

>>> import cacheway as cw
>>> cache = cw.Cache(store=cw.SQLiteStore(":memory:"))
>>> @cache.cached(ttl=60)
... def price(sku: str, region: str = "eu") -> int:
...     print("computing", sku, region)
...     return 42
>>> price("a")
computing a eu
42
>>> price("a", region="eu")  # the same call once defaults are applied
42
>>> price.invalidate("a")
>>> price("a")
computing a eu
42
>>> cache.get_or_set("answer", lambda: 41 + 1)
42
>>> cache.close()

What ``@cache.cached(ttl=None, *, key=None, namespace=None, clock=time.time)`` does:

- **Namespace.** Results live in a namespace of their own, ``module.qualname``
  (:func:`namespace_for`; names that are not valid namespace names, such as those with
  ``<locals>``, or longer than 64 characters, keep their valid characters and gain a short
  hash). A function run as a script is in ``__main__``, and closures made by one factory
  share a qualname: give ``namespace=`` a name of its own then. Decorated through a
  namespace view, the results take that view's policy, ttl and store.
- **Key.** The JSON array of the call's arguments bound to the parameters, defaults
  applied (``f(1)`` and ``f(1, region="eu")`` are one call when ``"eu"`` is the default),
  dicts and ``**kwargs`` with sorted keys. It takes None, bool, int (64 bits), finite
  floats, str, lists, tuples (keyed as lists), dicts with str keys, enums (their value),
  UUIDs (their text) and subclasses of str/int/float (the value they equal); anything
  else raises :class:`~cacheway.SerializationError` naming the argument. Methods
  (``self``) and other objects need ``key=``: a function of the call's arguments, as
  called, returning the ``str`` key. Under a ``namespace=`` you give, which other
  functions may share, the default key starts with ``module.qualname:``. A default key
  over :data:`MAX_KEY_BYTES` UTF-8 bytes is its sha256 hex digest (stores limit key
  length).
- **Results** are written with the namespace's policy, so they must be values the
  cache's serializer keeps faithfully (with JSON: no tuples, sets or objects); one it
  refuses raises :class:`~cacheway.SerializationError` from the call and nothing is kept.
- **ttl** is each result's lifetime, in the cache and in the store alike: a result is
  stored as ``{"v": result, "at": unix_time}`` and one older than ``ttl`` (by ``clock``,
  the wall clock, so it holds across restarts and processes) is computed again, whether
  read from the cache or loaded from the store. The write time rather than an expiry is
  stored, so a ``ttl`` changed between deploys applies to the results already stored.
  Expired rows stay in the store until the next call overwrites them.
- ``f.invalidate(*args, **kwargs)`` deletes that call's result from the cache and the
  store; ``f.cache_key(...)`` is its key and ``f.namespace`` its namespace view.
- **Stampedes**: threads of one process missing one key compute once (the others wait
  for its result or its exception); other processes sharing the store may each compute
  it once.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import math
import re
import time
from collections.abc import Callable, Iterable
from enum import Enum
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload
from uuid import UUID

import orjson

from ._single_flight import MISSING, SingleFlight
from .core.keys import check_ttl
from .errors import ConfigError, SerializationError

if TYPE_CHECKING:
    from ._front import Front
    from .cache import Namespace

__all__ = [
    "MAX_KEY_BYTES",
    "BoundCached",
    "Cached",
    "CallKey",
    "cached",
    "namespace_for",
]

P = ParamSpec("P")
R = TypeVar("R")
_P2 = ParamSpec("_P2")
_R2 = TypeVar("_R2")
_S = TypeVar("_S")

_MISSING = MISSING
#: Default keys longer than this many UTF-8 bytes are stored as their sha256 hex digest:
#: stores limit key length (an indexed VARCHAR, PostgreSQL's btree row size).
MAX_KEY_BYTES = 200
_NS_BAD = re.compile(r"[^A-Za-z0-9_.\-]")
_NS_MAX = 64
# orjson refuses (so _canonical() converts or names) subclasses, dataclasses and dates.
_KEY_OPTIONS = (orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_SUBCLASS
                | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME)
# -- @cached ---------------------------------------------------------------------------------
def namespace_for(func: Callable[..., Any]) -> str:
    """The namespace name of ``func``'s results: ``module.qualname`` when that is a valid
    namespace name, else its valid characters (cut to fit 64) and a short hash of it.

    >>> namespace_for(namespace_for)
    'cacheway.memoize.namespace_for'
    >>> def outer():
    ...     def inner(): pass
    ...     return inner
    >>> name = namespace_for(outer())  # "<locals>" is not a valid name: cleaned, hashed
    >>> name.startswith("cacheway.memoize.outer.") and "<" not in name, len(name) <= 64
    (True, True)
    """
    name = f"{func.__module__}.{func.__qualname__}"
    clean = _NS_BAD.sub("_", name)
    if clean == name and len(name) <= _NS_MAX:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    # Keep the tail: the function's own name says more than its module's.
    head = clean[-(_NS_MAX - 9):].lstrip(".")
    return f"{head}-{digest}"


def _canonical(value: Any, where: str) -> Any:
    """``value`` as plain JSON types, or SerializationError naming ``where``."""
    cls = value.__class__
    if cls is str or cls is bool or value is None:
        return value
    if cls is int:
        if not -(2**63) <= value < 2**64:
            raise _refuse(where, value, "an int beyond 64 bits")
        return value
    if cls is float:
        if not math.isfinite(value):
            raise _refuse(where, value, f"the float {value!r}")
        return value
    if isinstance(value, Enum):
        return _canonical(value.value, where)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_canonical(x, f"{where}[{i}]") for i, x in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _refuse(f"{where}[{k!r}]", k, "a dict key that is not a str")
            out[str(k)] = _canonical(v, f"{where}[{k!r}]")
        return out
    for base in (str, int, float):  # subclasses key as the value they equal
        if isinstance(value, base) and not isinstance(value, bool):
            return _canonical(base(value), where)
    raise _refuse(where, value, f"of type {cls.__qualname__}")


def refused_result(qualname: str, exc: SerializationError) -> SerializationError:
    """The error of a result the cache cannot keep, naming the function (the
    serializer's names the stored ``{"v": result, ...}`` wrapper).

    >>> print(refused_result("f", SerializationError("cannot store this: a set at value['v']")))
    f() returned a result the cache cannot keep unchanged: a set at result
    """
    head, sep, rest = str(exc).partition(": ")
    detail = (rest if sep and head.startswith("cannot store this") else str(exc))
    detail = detail.replace("value['v']", "result")
    return SerializationError(
        f"{qualname}() returned a result the cache cannot keep unchanged: {detail}")


def _refuse(where: str, value: Any, what: str) -> SerializationError:
    return SerializationError(
        f"argument {where} is {what} ({value!r:.60}): the default cache key takes None, "
        "bool, int, finite float, str and lists, tuples and str-keyed dicts of them; "
        "pass key= to cached() to build the key yourself (methods need it for self)")


class CallKey:
    """The default key of a call of ``func`` (see the module's doc), as ``key_of(args,
    kwargs)``: one builder for every front (sync and asyncio), so they share results.

    >>> def price(sku, region="eu"): ...
    >>> CallKey(price).key_of(("a",), {}) == CallKey(price).key_of((), {"sku": "a"})
    True
    >>> CallKey(price).key_of(("a",), {})
    '["a","eu"]'
    """

    __slots__ = ("_defaults", "_names", "_prefix", "_qualname", "_sig", "_simple", "_tails")

    def __init__(self, func: Callable[..., Any], prefix: str = "") -> None:
        sig = inspect.signature(func)
        self._sig = sig
        self._prefix = prefix  # "module.qualname:" in a namespace= that others may share
        self._qualname = func.__qualname__
        params = list(sig.parameters.values())
        self._names = tuple(p.name for p in params)
        # Calls of a plain signature (no *args, **kwargs, positional- or keyword-only
        # parameters) bind without inspect: the hit path. _tails[len(args)] holds the
        # defaults of the parameters after a positional call's arguments, None when one
        # of them has none; _defaults each parameter's default or _MISSING.
        self._simple = all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params)
        self._defaults = tuple(_MISSING if p.default is p.empty else p.default
                               for p in params)
        self._tails = [
            tuple(self._defaults[i:]) if _MISSING not in self._defaults[i:] else None
            for i in range(len(params) + 1)
        ]

    def key_of(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        values: tuple[Any, ...] | None = None
        if self._simple and len(args) < len(self._tails):
            if not kwargs:
                tail = self._tails[len(args)]
                if tail is not None:
                    values = args + tail if tail else args
            else:
                values = self._with_keywords(args, kwargs)
        names: Iterable[str] = self._names
        if values is None:  # inspect raises what calling the function would
            bound = self._sig.bind(*args, **kwargs)
            bound.apply_defaults()
            values = tuple(bound.arguments.values())
            names = bound.arguments
        try:
            raw = orjson.dumps(values, option=_KEY_OPTIONS)
        except orjson.JSONEncodeError:
            raw = b"null"  # what orjson refuses, _canonical() names or converts
        key = raw.decode()
        if "null" in key:  # a nan or inf is written as null too: tell them from None
            canonical = tuple(_canonical(v, f"{name!r} of {self._qualname}()")
                              for name, v in zip(names, values))
            raw = orjson.dumps(canonical, option=_KEY_OPTIONS)
            key = raw.decode()
        # (bytes' "in" costs more than str's, hence the test on the decoded key)
        if self._prefix:
            key = self._prefix + key
            raw = key.encode()
        if len(raw) > MAX_KEY_BYTES:
            return hashlib.sha256(raw).hexdigest()
        return key

    def _with_keywords(self, args: tuple[Any, ...], kwargs: dict[str, Any]
                       ) -> tuple[Any, ...] | None:
        """The bound values of a plain signature's call, None when inspect must say
        what is wrong with it."""
        values = list(args)
        names, defaults = self._names, self._defaults
        used = 0
        for i in range(len(args), len(names)):
            value = kwargs.get(names[i], _MISSING)
            if value is _MISSING:
                value = defaults[i]
                if value is _MISSING:
                    return None
            else:
                used += 1
            values.append(value)
        return tuple(values) if used == len(kwargs) else None


class Cached(Generic[P, R]):
    """A function whose results a cache keeps (see :meth:`cacheway.Cache.cached`).

    The default key (:class:`CallKey`) is the JSON array of the call's bound arguments in
    parameter order, defaults applied, e.g. ``["sku1","eu"]``; the function's name is in
    the namespace, not the key. A stored result is ``{"v": result, "at": unix_time}``.
    """

    # Slots for what a call reads: the wrapper's own __dict__ (the function's name, doc,
    # annotations...) would make each of these a dict lookup (bench/cached.py).
    __slots__ = ("__dict__", "_clock", "_default_key", "_epochs", "_flights", "_key_func",
                 "_qualname", "namespace", "ttl")
    # The function's, copied by functools.update_wrapper (declared for type checkers).
    __name__: str
    __qualname__: str
    __module__: str

    def __init__(self, func: Callable[P, R], ns: Namespace[Any], ttl: float | None,
                 key: Callable[..., str] | None, clock: Callable[[], float],
                 prefix: str = "") -> None:
        functools.update_wrapper(self, func)
        self.__wrapped__: Callable[P, R] = func
        #: The namespace view holding this function's results.
        self.namespace = ns
        self.ttl = ttl
        self._key_func = key
        self._default_key = CallKey(func, prefix).key_of
        self._clock = clock
        self._qualname = func.__qualname__
        # One stripe: its epoch costs a hit no hash; a look again only when a computation
        # of this function ended during a miss's lookup.
        self._flights = SingleFlight(stripes=1)
        self._epochs = self._flights.epochs

    def __repr__(self) -> str:
        return f"<cacheway.Cached {self._qualname} in namespace {self.namespace.name!r}>"

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The key this call's result is kept under (in :attr:`namespace`)."""
        if self._key_func is not None:
            return self._key_func(*args, **kwargs)
        return self._default_key(args, kwargs)

    def _fresh(self, item: Any) -> Any:
        """The result a stored item holds while it lives, else _MISSING."""
        if item.__class__ is not dict or "v" not in item:
            return _MISSING  # not ours (written by hand): compute and overwrite it
        ttl = self.ttl
        if ttl is not None:
            at = item.get("at")
            if not isinstance(at, (int, float)) or at + ttl <= self._clock():
                return _MISSING
        return item["v"]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        key_func = self._key_func
        key = self._default_key(args, kwargs) if key_func is None else key_func(*args, **kwargs)
        ns = self.namespace
        seen = self._epochs[0]  # before the lookup (see SingleFlight)
        item = ns.get(key, _MISSING)
        if item.__class__ is dict:  # _fresh(), inlined: this is the hit path
            ttl = self.ttl
            if ttl is None:
                if "v" in item:
                    return item["v"]  # type: ignore[no-any-return]
            else:
                at = item.get("at")
                if at.__class__ is float and at + ttl > self._clock() and "v" in item:
                    return item["v"]  # type: ignore[no-any-return]
        if item is not _MISSING:
            value = self._fresh(item)
            if value is not _MISSING:
                return value  # type: ignore[no-any-return]

        def lookup() -> Any:
            found = ns.get(key, _MISSING)
            return found if found is _MISSING else self._fresh(found)

        def compute() -> Any:
            result = self.__wrapped__(*args, **kwargs)
            # The write time, not an expiry: a ttl changed since applies to stored results.
            try:
                ns.set(key, {"v": result, "at": self._clock()}, self.ttl)
            except SerializationError as exc:
                raise refused_result(self._qualname, exc) from None
            return result

        return self._flights.run(key, seen, lookup, compute)  # type: ignore[no-any-return]

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Drop this call's result from the cache and the store: the next call computes."""
        self.namespace.delete(self.cache_key(*args, **kwargs))

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Cached[P, R]: ...

    @overload
    def __get__(self: Cached[Concatenate[_S, _P2], _R2], obj: _S,
                owner: type | None = None) -> BoundCached[_P2, _R2]: ...

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return BoundCached(self, obj)


class BoundCached(Generic[P, R]):
    """A cached method bound to its instance: ``obj.method(...)``,
    ``obj.method.invalidate(...)``."""

    __slots__ = ("_cached", "_obj")

    def __init__(self, cached: Cached[Any, Any], obj: object) -> None:
        self._cached = cached
        self._obj = obj

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._cached(self._obj, *args, **kwargs)  # type: ignore[no-any-return]

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> None:
        self._cached.invalidate(self._obj, *args, **kwargs)

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        return self._cached.cache_key(self._obj, *args, **kwargs)

    @property
    def __wrapped__(self) -> Callable[..., Any]:
        return functools.partial(self._cached.__wrapped__, self._obj)


def cached(
    front: Front[Any],
    ttl: float | None = None,
    *,
    key: Callable[..., str] | None = None,
    namespace: str | None = None,
    clock: Callable[[], float] = time.time,
) -> Callable[[Callable[P, R]], Cached[P, R]]:
    """See :meth:`cacheway.Cache.cached`."""
    if callable(ttl):
        raise ConfigError(
            f"write @cache.cached() with parentheses (it was given {ttl!r} as ttl)")
    ttl = check_ttl(ttl)
    if key is not None and not callable(key):
        raise ConfigError(f"key= must be a function of the call's arguments, not {key!r}")
    if not callable(clock):
        raise ConfigError(f"clock= must be a function returning unix time, not {clock!r}")

    def decorate(func: Callable[P, R]) -> Cached[P, R]:
        if not callable(func):
            raise ConfigError(f"@cached() decorates a function, not {func!r}")
        if inspect.iscoroutinefunction(func):
            raise ConfigError(
                f"{func.__qualname__} is async: cache its results with "
                "cw.AsyncCache(...).cached(), not a sync Cache")
        if namespace is None:
            return Cached(func, _namespace(front, namespace_for(func)), ttl, key, clock)
        # A namespace given may hold other functions' results: keys name the function.
        return Cached(func, _namespace(front, namespace), ttl, key, clock,
                      f"{func.__module__}.{func.__qualname__}:")

    return decorate


def _namespace(front: Front[Any], name: str) -> Namespace[Any]:
    from .cache import Namespace

    if isinstance(front, Namespace):
        # Decorated through a namespace view: its results take that view's policy,
        # ttl and store (namespaces are flat, so the new one is the cache's).
        return front.cache.namespace(name, policy=front.policy, ttl=front.ttl,
                                     store=front.store)
    return front.namespace(name)  # type: ignore[attr-defined, no-any-return]
