"""Stores: the systems of record a cache writes to.

``base.py`` holds the :class:`~cacheway.stores.base.Store` protocol, the ops and results
of a batch, and the capability Protocols with :func:`~cacheway.stores.base.store_capabilities`
(read once by engines). Each built-in store is a package (``sqlite/``, ``postgres/``,
``sqlalchemy/``) whose store class owns connections and errors and delegates the SQL to
a mapping chosen at construction: key/value (``kv.py``) or row mode (``rows.py``, on the
shared :mod:`cacheway.stores.rows`). Journal marks share :mod:`cacheway.stores.marks`.
``callback.py`` is the store made of user functions. A new store is one module with a
:class:`~cacheway.stores.base.StoreBase` subclass.

Stores that hold connections register with :func:`track` and get their own in a forked
child (:func:`reopen_in_child`).
"""

from ._fork import ForkAware, reopen_in_child, track

__all__ = ["ForkAware", "reopen_in_child", "track"]
