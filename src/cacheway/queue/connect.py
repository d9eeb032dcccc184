"""The queue's Redis connection: one server, or a Redis Cluster found behind the same URL.

``connect(url)`` opens the URL as RedisBackend does (bounded timeouts) and asks the
server ``INFO cluster``; a node of a Redis Cluster gets a ``redis.cluster.RedisCluster``
client instead (seeded from that node: any node's URL will do), so
``WriteBack(queue="redis://any-node:7000")`` needs no other setting.

On a cluster, a pipeline does not load the scripts it runs (a plain Redis pipeline
does): :class:`Scripts` loads them on every primary first, and again after a node
answered NOSCRIPT (restarted, or a replica promoted).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backends import redis_client
from ..errors import BackendError, ConfigError

__all__ = ["Connection", "Scripts", "connect", "is_noscript", "redis_errors"]


class Connection(NamedTuple):
    client: Any  #: a redis.Redis, or a redis.cluster.RedisCluster when ``cluster``
    where: str  #: the URL without its password, for messages
    owned: bool  #: built here from a URL (the caller closes it)
    cluster: bool


def _no_retry() -> Any:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return Retry(NoBackoff(), 0)


def connect(url_or_client: Any, *, resend: bool = True, timeout: float = 5.0) -> Connection:
    """A client of the queue's Redis. ``resend=False``: no transport-level retry (redis-py
    resends a command whose reply was lost; an ACCEPT run twice would queue its writes
    twice). A pooled socket that died with a restart is still replaced at checkout."""
    import redis
    from redis.cluster import RedisCluster

    if isinstance(url_or_client, RedisCluster):
        return Connection(url_or_client, "a RedisCluster client", False, True)
    options = {} if resend else {"retry": _no_retry()}
    client, where, _, owned = redis_client.connect(url_or_client, timeout, options)
    if not owned:
        return Connection(client, where, owned, False)
    try:
        enabled = int(client.info("cluster").get("cluster_enabled", 0))
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        client.close()
        raise BackendError(f"queue Redis {where!r} is unreachable: {exc}") from exc
    except redis.ResponseError as exc:
        if "cluster" in str(exc).lower():  # "SELECT is not allowed in cluster mode"
            client.close()
            raise ConfigError(f"queue {where!r} is a Redis Cluster node: a cluster has "
                              f"only database 0 ({exc})") from exc
        enabled = 0  # a server without INFO cluster (or a proxy refusing it): one Redis
    if not enabled:
        return Connection(client, where, owned, False)
    db = client.connection_pool.connection_kwargs.get("db", 0)
    client.close()
    if db:
        raise ConfigError(f"queue {where!r}: a Redis Cluster has only database 0, not {db}")
    # from_url keeps what the URL says: rediss:// (TLS), user and password.
    cluster = RedisCluster.from_url(url_or_client, socket_timeout=timeout,
                                    socket_connect_timeout=timeout, **options)
    return Connection(cluster, where + " (cluster)", True, True)


def is_noscript(exc: object) -> bool:
    """True for a NOSCRIPT reply (the script is not loaded on that node)."""
    from redis.exceptions import NoScriptError

    return isinstance(exc, NoScriptError)


def redis_errors() -> tuple[type[Exception], ...]:
    """What redis-py raises for a server or connection failure (a cluster too)."""
    from redis.exceptions import RedisClusterException, RedisError

    return (RedisError, RedisClusterException)


class Scripts:
    """A client's registered scripts; on a cluster, loaded on every primary."""

    def __init__(self, client: Any) -> None:
        from redis.cluster import RedisCluster

        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self._all: list[Any] = []

    def register(self, source: str) -> Any:
        script = self.client.register_script(source)
        self._all.append(script)
        if self.cluster:
            self.client.script_load(source)  # every primary
        return script

    def reload(self) -> None:
        """Load every script again (after NOSCRIPT from a node that lost them)."""
        if self.cluster:
            for script in self._all:
                self.client.script_load(script.script)
