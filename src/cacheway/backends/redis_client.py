"""The ``redis.Redis`` a RedisBackend talks through: built from a URL (then owned, with
bounded timeouts and one quick reconnect) or passed in (then the caller's, untouched)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import BackendError, CachewayError, ConfigError
from ..serializers import Serializer
from .base import invalid_key

if TYPE_CHECKING:
    import redis

__all__ = ["check_options", "connect", "redact", "run_pipeline", "scrub", "unlink_prefix"]


def redact(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
        user = parts.username or ""
        return parts._replace(netloc=f"{user}:***@{host}").geturl()
    except ValueError:
        head, at, tail = url.rpartition("@")
        return f"{head.partition('://')[0]}://***@{tail}" if at else url


def px(ttl: float) -> int:
    """``ttl`` seconds as Redis PX milliseconds (at least 1)."""
    return max(1, int(ttl * 1000))


def refusal(keys: Sequence[object], what: str, exc: Exception,
            errors: type[Exception] | tuple[type[Exception], ...], where: str,
            password: str | None) -> CachewayError:
    """The error for a Redis call that failed: BackendError for Redis's own ``errors``;
    for a failure on the arguments, InvalidKeyError naming the first key that cannot be
    a Redis key (not a str, not UTF-8), else BackendError. The password never shows."""
    if not isinstance(exc, errors):
        for key in keys:
            bad = invalid_key(key)
            if bad is not None:
                return bad
    why = scrub(f"{type(exc).__name__}: {exc}", password)
    return BackendError(f"Redis {what} failed on {where}: {why}")


def scrub(text: str, password: str | None) -> str:
    """``text`` with ``password`` (if any) replaced by ``***``."""
    return text.replace(password, "***") if password else text


def connect(url_or_client: str | redis.Redis, timeout: float | None,
            client_options: dict[str, Any]) -> tuple[redis.Redis, str, str | None, bool]:
    """``(client, where for messages, password to scrub, owned)``."""
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    if isinstance(url_or_client, str):
        url = url_or_client
        where = redact(url)
        password = urlsplit(url).password if "@" in url else None
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            # One quick reconnect covers a pooled socket that died with a Redis
            # restart or CLIENT KILL; redis-py's default (10 tries, up to 1 s apart)
            # would stall a cache read for seconds while Redis is really down. A
            # timeout is not retried: a stalled server would make each call wait
            # three timeouts instead of one.
            "retry": Retry(ExponentialBackoff(cap=0.05, base=0.005), 2,
                           supported_errors=(redis.ConnectionError,)),
        }
        options.update(client_options)
        if options.get("decode_responses"):
            raise ConfigError("RedisBackend keeps bytes: decode_responses must be False")
        try:
            client = redis.Redis.from_url(url, **options)
            pool = client.connection_pool
            # redis-py hands options to each connection lazily; build one (no socket
            # is opened) so a misspelt option fails here, not at the first read.
            pool.connection_class(**pool.connection_kwargs)
        except (ValueError, TypeError) as exc:
            msg = scrub(str(exc), password)
            if isinstance(exc, TypeError) and not url.lower().startswith("rediss:"):
                msg += " (TLS options such as ssl_ca_certs need a rediss:// URL)"
            raise ConfigError(f"bad Redis URL or option for {where!r}: {msg}") from exc
        return client, where, password, True
    if isinstance(url_or_client, redis.Redis):
        if client_options:
            raise ConfigError(
                f"client options {sorted(client_options)} need a URL; "
                "configure the redis.Redis you pass in instead"
            )
        client = url_or_client
        kw = client.connection_pool.connection_kwargs
        if kw.get("decode_responses"):
            raise ConfigError(
                "RedisBackend keeps bytes: pass a client with decode_responses=False"
            )
        where = kw.get("path") or f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"
        return client, f"{where}/{kw.get('db', 0)}", None, False
    raise ConfigError(
        f"RedisBackend needs a redis:// URL or a redis.Redis client, not {url_or_client!r}"
    )


def check_options(prefix: object, serializer: object, **seconds: float | None) -> None:
    """Refuse a bad ``prefix``, ``serializer`` or number of ``seconds`` (each > 0;
    ``timeout=None`` means "wait for ever" and is fine)."""
    if not isinstance(prefix, str) or invalid_key(prefix) is not None:
        raise ConfigError(f"prefix must be a str that encodes as UTF-8, not {prefix!r}")
    for name, v in seconds.items():
        if v is None and name == "timeout":
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ConfigError(f"{name} must be a number of seconds > 0, not {v!r}")
    if serializer is not None and not isinstance(serializer, Serializer):
        raise ConfigError(f"serializer must have dumps/loads/name, not {serializer!r}")


def run_pipeline(client: redis.Redis, commands: list[tuple[Any, ...]], scripts: Sequence[Any],
                 noscript: type[Exception]) -> list[Any]:
    """Run ``commands`` in one round trip; a failed command's result is its exception.

    Scripts go in as raw EVALSHA: redis-py's Script in a pipeline would first ask
    SCRIPT EXISTS, a second round trip on every batch. After a Redis restart (empty
    script cache) the failed EVALSHAs are loaded (``scripts``: the ``Script`` objects
    they name) and repeated once; they are set-if-newer, so repeating them is safe.
    """
    results = _run(client, commands)
    retry = [c for c, r in zip(commands, results) if isinstance(r, noscript)]
    if retry:
        shas = {}
        for script in scripts:
            old = script.sha
            script.sha = client.script_load(script.script)
            shas[old] = script.sha
        again = _run(client, [(c[0], shas.get(c[1], c[1]), *c[2:]) for c in retry])
        results = [r for r in results if not isinstance(r, noscript)] + again
    return results


_SCAN_BATCH = 1000


def unlink_prefix(client: redis.Redis, prefix: str, *, keep: bytes) -> None:
    """UNLINK every key that starts with ``prefix`` except ``keep``, ``_SCAN_BATCH`` keys
    a round trip (SCAN with the prefix's glob characters escaped)."""
    pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
    batch: list[bytes] = []
    for name in client.scan_iter(match=pattern, count=_SCAN_BATCH):
        if name == keep:
            continue
        batch.append(name)
        if len(batch) >= _SCAN_BATCH:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)


def _run(client: redis.Redis, commands: list[tuple[Any, ...]]) -> list[Any]:
    with client.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)  # type: ignore[no-untyped-call]
        return list(pipe.execute(raise_on_error=False))
