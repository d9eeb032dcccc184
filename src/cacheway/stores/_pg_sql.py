"""The SQL of :class:`~cacheway.stores.postgres.PostgresStore`'s key/value mode and of
its journal marks, composed with quoted identifiers. Imported once the driver was found."""

from __future__ import annotations

from typing import Any

from psycopg import Connection, sql

__all__ = ["kv_queries", "mark_queries"]


def kv_queries(conn: Connection[Any], table: str, seq: str, jsonb: bool) -> dict[str, str]:
    """fetch, set, delete and the counter adds of the key/value table ``table``."""
    # nextval() takes a regclass *string*: quote the name inside it, or PostgreSQL
    # folds a mixed-case name ("BlogUsers_version_seq") to lower case.
    names = {"t": sql.Identifier(table),
             "seq": sql.Literal(sql.Identifier(seq).as_string(conn))}
    vtype = sql.SQL("jsonb" if jsonb else "bytea")
    parts = {
        "fetch": "SELECT key, value{text}, version FROM {t} "
                 "WHERE namespace = %s AND key = ANY(%b::text[])",
        "set": "INSERT INTO {t} AS t (namespace, key, value, version) "
               "SELECT u.ns, u.key, u.value::{vtype}, nextval({seq}) "
               "FROM unnest(%b::text[], %b::text[], %b::{intype}[]) AS u(ns, key, value) "
               "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, "
               "version = nextval({seq}), updated_at = now() "
               "RETURNING namespace, key, version",
        # A key that is not there still gets a version: its tombstone in the backend.
        "delete": "WITH d AS (DELETE FROM {t} AS t USING unnest(%(ns)b::text[], "
                  "%(key)b::text[]) AS u(ns, key) WHERE t.namespace = u.ns AND "
                  "t.key = u.key RETURNING t.namespace, t.key, nextval({seq}) AS version) "
                  "SELECT u.ns, u.key, coalesce(d.version, nextval({seq})) "
                  "FROM unnest(%(ns)b::text[], %(key)b::text[]) AS u(ns, key) "
                  "LEFT JOIN d ON d.namespace = u.ns AND d.key = u.key",
        # The stored value must be a JSON integer; anything else fails the cast with
        # this text in the message (plain SQL has no RAISE).
        "add": "INSERT INTO {t} AS t (namespace, key, value, version) "
               "SELECT u.ns, u.key, to_jsonb(u.d), nextval({seq}) "
               "FROM unnest(%b::text[], %b::text[], %b::numeric[]) AS u(ns, key, d) "
               "ON CONFLICT (namespace, key) DO UPDATE SET value = to_jsonb((CASE WHEN "
               "jsonb_typeof(t.value) = 'number' AND (t.value #>> '{{}}') !~ '[.eE]' "
               "THEN t.value #>> '{{}}' ELSE 'cacheway: not an integer' END)::numeric "
               "+ (excluded.value #>> '{{}}')::numeric), version = nextval({seq}), "
               "updated_at = now() RETURNING namespace, key, version, value #>> '{{}}'",
        # bytea adds: lock (creating a zero row when missing) and read, then write.
        "add_lock": "INSERT INTO {t} AS t (namespace, key, value, version) "
                    "SELECT u.ns, u.key, %s::bytea, nextval({seq}) "
                    "FROM unnest(%b::text[], %b::text[]) AS u(ns, key) "
                    "ON CONFLICT (namespace, key) DO UPDATE SET namespace = t.namespace "
                    "RETURNING namespace, key, value",
        "add_write": "UPDATE {t} AS t SET value = u.value, version = nextval({seq}), "
                     "updated_at = now() FROM unnest(%b::text[], %b::text[], "
                     "%b::bytea[]) AS u(ns, key, value) "
                     "WHERE t.namespace = u.ns AND t.key = u.key "
                     "RETURNING t.namespace, t.key, t.version",
    }
    fmt = {**names, "vtype": vtype, "intype": sql.SQL("text" if jsonb else "bytea"),
           "text": sql.SQL("::text" if jsonb else "")}
    out: dict[str, str] = {}
    for name, text in parts.items():
        out[name] = sql.SQL(text).format(
            **{k: v for k, v in fmt.items() if "{" + k + "}" in text}).as_string(conn)
    return out


def mark_queries(conn: Connection[Any], meta: str, applied: str) -> dict[str, str]:
    """The journal marks: record one, trim, and read a journal's state."""
    out: dict[str, str] = {}
    m, a = sql.Identifier(meta), sql.Identifier(applied)
    out["mark"] = sql.SQL(
        "WITH m AS (INSERT INTO {m} AS m (name, value) VALUES (%s, %s) ON CONFLICT (name) "
        "DO UPDATE SET value = greatest(m.value, excluded.value)) "
        "INSERT INTO {a} AS a (journal, namespace, key, seq) SELECT %s, u.ns, u.key, u.seq "
        "FROM unnest(%b::text[], %b::text[], %b::bigint[]) AS u(ns, key, seq) "
        "ON CONFLICT (journal, namespace, key) DO UPDATE SET seq = greatest(a.seq, "
        "excluded.seq)"
    ).format(m=m, a=a).as_string(conn)
    out["mark_trim"] = sql.SQL(
        "DELETE FROM {a} WHERE journal = %s AND seq <= %s").format(a=a).as_string(conn)
    out["low"] = sql.SQL("SELECT value FROM {m} WHERE name = %s").format(
        m=m).as_string(conn)
    out["applied"] = sql.SQL(
        "SELECT namespace, key, seq FROM {a} WHERE journal = %s AND seq > %s"
    ).format(a=a).as_string(conn)
    return out
