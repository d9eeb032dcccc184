"""The engine of :class:`~cacheway.stores.sqlalchemy.SQLAlchemyStore`: importing
SQLAlchemy, and building an engine from a URL whose every call is bounded in time.

A connection that stalls (the server or the network stops answering while TCP stays
open) would leave a driver waiting forever. The engine the store builds gives its
driver the store's ``timeout`` where the driver has a socket timeout: pymysql, mysqlclient
and MariaDB Connector/C get ``connect_timeout``, ``read_timeout`` and ``write_timeout``
(a query not answered within it fails with "Lost connection ... (timed out)" and the
connection is discarded); psycopg gets ``connect_timeout`` and ``tcp_user_timeout``
(which ends a connection whose sent data goes unacknowledged, not one a live peer holds
open: on PostgreSQL, :class:`~cacheway.stores.postgres.PostgresStore` bounds calls
fully). Options already in the URL win. An engine passed in is the caller's: its
options are left as they are.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError

if TYPE_CHECKING:
    import sqlalchemy as sa

__all__ = ["EXTRA", "connect_args", "import_sqlalchemy", "make_engine"]

EXTRA = "pip install 'cacheway[sqlalchemy]'"


def import_sqlalchemy() -> Any:
    try:
        import sqlalchemy
    except ImportError as exc:
        raise ConfigError(f"SQLAlchemyStore needs SQLAlchemy 2: {EXTRA}") from exc
    if int(sqlalchemy.__version__.split(".")[0]) < 2:
        raise ConfigError(
            f"SQLAlchemyStore needs SQLAlchemy 2, found {sqlalchemy.__version__}: {EXTRA}"
        )
    return sqlalchemy


def connect_args(driver: str, timeout: float, given: set[str]) -> dict[str, Any]:
    """The DBAPI connect arguments that bound each call of ``driver`` to ``timeout``
    seconds, but those named in ``given`` (the URL's own).

    >>> connect_args("pymysql", 2.5, set())
    {'connect_timeout': 2.5, 'read_timeout': 2.5, 'write_timeout': 2.5}
    >>> connect_args("psycopg", 2.5, {"connect_timeout"})
    {'tcp_user_timeout': 2500}
    """
    whole = max(1, math.ceil(timeout))
    args: dict[str, Any]
    if driver == "pymysql":
        args = {"connect_timeout": timeout, "read_timeout": timeout, "write_timeout": timeout}
    elif driver in ("mysqldb", "mariadbconnector"):  # whole seconds only
        args = {"connect_timeout": whole, "read_timeout": whole, "write_timeout": whole}
    elif driver in ("psycopg", "psycopg2"):
        args = {"connect_timeout": max(2, min(whole, 10)),
                "tcp_user_timeout": int(timeout * 1000)}
    else:
        args = {}
    return {k: v for k, v in args.items() if k not in given}


def make_engine(sa_: Any, given: object, timeout: float) -> tuple[sa.Engine, bool]:
    """(engine, built here): ``given`` itself when it is an Engine, else one built from
    the URL ``given`` with pre-ping and the timeouts of :func:`connect_args`."""
    if isinstance(given, sa_.Engine):
        return given, False
    if not isinstance(given, (str, sa_.URL)):
        raise ConfigError(
            "SQLAlchemyStore needs an sqlalchemy.Engine or a URL such as "
            f"'mysql+pymysql://user:password@host/db', not {type(given).__name__}"
        )
    try:
        url = sa_.make_url(given)
    except (sa_.exc.ArgumentError, ValueError):  # ValueError: a port that is no number
        # The message would echo the string, password and all.
        raise ConfigError(
            "the store URL is not a SQLAlchemy URL: use dialect+driver://user:password@"
            "host:port/database, e.g. 'mysql+pymysql://root@127.0.0.1/test'"
        ) from None
    shown = url.render_as_string(hide_password=True)
    options: dict[str, Any] = {}
    try:
        if url.get_backend_name() != "sqlite":  # SQLite's pools take no pool_timeout
            options["pool_timeout"] = timeout
            # get_driver_name() loads the dialect (for its default driver): in the try.
            options["connect_args"] = connect_args(url.get_driver_name(), timeout,
                                                   set(url.query))
        # pre_ping: a pooled connection the server dropped is replaced, not failed.
        return sa_.create_engine(url, pool_pre_ping=True, **options), True
    except sa_.exc.NoSuchModuleError:
        raise ConfigError(
            f"store URL {shown!r}: SQLAlchemy has no dialect/driver {url.drivername!r}"
        ) from None
    except ImportError as exc:
        raise ConfigError(
            f"store URL {shown!r}: the driver module {exc.name!r} is not installed; install "
            "it or name an installed driver, e.g. 'mysql+pymysql://' "
            f"({EXTRA}) or 'postgresql+psycopg://'"
        ) from exc
    except sa_.exc.ArgumentError as exc:
        detail = str(exc).replace(url.password, "***") if url.password else str(exc)
        raise ConfigError(f"store URL {shown!r}: {detail}") from None
