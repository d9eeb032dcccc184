"""CallbackStore: your own functions as the store.

>>> data = {}
>>> store = CallbackStore(
...     load_many=lambda keys: {k: data[k] for k in keys if k in data},
...     save_many=lambda items: data.update(items),
...     delete_many=lambda keys: [data.pop(k, None) for k in keys],
... )
>>> store.save_many({"a": 1}); store.load("a")
1
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..errors import ConfigError, StoreError
from ..serializers import JSONSerializer, Serializer
from .base import ADD, DELETE, NOTSET, SET, Applied, JournalMark, Loaded, Op, StoreBase

__all__ = ["CallbackStore"]


class CallbackStore(StoreBase):
    """A store made of user callbacks that work in Python values.

    ``load_many(keys) -> dict`` (found keys only); ``save_many(list of (key, value))``,
    each key at most once per call, in the order of each key's last accepted write (with
    more dirty keys than ``batch_size``, the calls take the keys dirty the longest first,
    so a key rewritten again and again still leaves within its delay: such a key can
    arrive in an earlier call than keys last written before it); ``delete_many(keys)``; and
    optionally ``add_many(list of (key, delta)) -> dict[key, new value] | None`` for
    atomic counters (without it, counters arrive in ``save_many`` as absolute values).
    Keys of a namespace reach the callbacks as ``"name:key"``.

    A callback store has no versions: across processes it gets in-process guarantees
    only, and write-through invalidates a shared backend instead of setting it.
    """

    versioned = False

    def __init__(
        self,
        load_many: Callable[[list[str]], Mapping[str, Any]],
        save_many: Callable[[list[tuple[str, Any]]], object],
        delete_many: Callable[[list[str]], object],
        add_many: Callable[[list[tuple[str, int]]], Mapping[str, Any] | None] | None = None,
        *,
        serializer: Serializer | None = None,
    ) -> None:
        for name, fn in (("load_many", load_many), ("save_many", save_many),
                         ("delete_many", delete_many)):
            if not callable(fn):
                raise ConfigError(f"CallbackStore {name} must be callable, not {fn!r}")
        if add_many is not None and not callable(add_many):
            raise ConfigError(f"CallbackStore add_many must be callable or None, not {add_many!r}")
        self._load = load_many
        self._save = save_many
        self._delete = delete_many
        self._add = add_many
        # ``async def`` callbacks need an event loop to run on: cw.AsyncCache gives them
        # its own (see aio.py); a thread-front Cache refuses them.
        self.async_callbacks = any(
            inspect.iscoroutinefunction(fn) for fn in (load_many, save_many, delete_many,
                                                       add_many) if fn is not None)
        self.serializer = serializer if serializer is not None else JSONSerializer()

    @property
    def atomic_add(self) -> bool:
        """True when counters reach the store as deltas (``add_many`` given)."""
        return self._add is not None

    @staticmethod
    def _full(namespace: str, key: str) -> str:
        return f"{namespace}:{key}" if namespace else key

    @property
    def callbacks(self) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any],
                                 Callable[..., Any] | None]:
        """``(load_many, save_many, delete_many, add_many)`` as given."""
        return self._load, self._save, self._delete, self._add

    def fetch(self, namespace: str, keys: Sequence[str]) -> dict[str, Loaded]:
        if not keys:
            return {}
        full = [self._full(namespace, k) for k in keys]
        try:
            found = self._load(full)
        except Exception as exc:
            raise StoreError(f"CallbackStore load_many failed: {exc!r}") from exc
        if not isinstance(found, Mapping):
            raise StoreError(
                f"CallbackStore load_many must return a dict, returned {type(found).__name__}"
            )
        out: dict[str, Loaded] = {}
        for key, fk in zip(keys, full):
            if fk in found:
                out[key] = Loaded(None, found[fk], None)
        return out

    def decode(self, row: Loaded) -> Any:
        return row.value

    def apply(
        self, ops: Sequence[Op], *, journal: JournalMark | None = None
    ) -> list[Applied]:
        saves: list[tuple[str, Any]] = []
        deletes: list[str] = []
        adds: list[tuple[str, int]] = []
        loads = self.serializer.loads
        for op in ops:
            fk = self._full(op.namespace, op.key)
            if op.kind == SET:
                # Decode the bytes taken at set() time: a later mutation of the
                # caller's object cannot reach the store.
                saves.append((fk, loads(op.payload) if op.payload is not None else op.value))
            elif op.kind == DELETE:
                deletes.append(fk)
            elif op.kind == ADD:
                if self._add is not None:
                    adds.append((fk, op.delta))
                else:
                    saves.append((fk, op.value))
            else:
                raise ConfigError(f"unknown op kind {op.kind!r}")
        added: Mapping[str, Any] | None = None
        try:
            if saves:
                self._save(saves)
            if deletes:
                self._delete(deletes)
            if adds:
                assert self._add is not None
                added = self._add(adds)
        except Exception as exc:
            raise StoreError(f"CallbackStore write failed: {exc!r}") from exc
        out: list[Applied] = []
        for op in ops:
            if op.kind == ADD:
                fk = self._full(op.namespace, op.key)
                new = added.get(fk, NOTSET) if isinstance(added, Mapping) else NOTSET
                out.append(Applied(None, op.value if self._add is None else new))
            else:
                out.append(Applied(None))
        return out

    def load_many(self, keys: Iterable[str], *, namespace: str = "") -> dict[str, Any]:
        return {k: r.value for k, r in self.fetch(namespace, list(keys)).items()}
