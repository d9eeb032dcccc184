"""The SQL of :class:`~cacheway.stores.postgres.PostgresStore`'s key/value mode and of
its journal marks, composed with quoted identifiers. Imported once the driver was found."""

from __future__ import annotations

from typing import Any

from psycopg import Connection, sql

__all__ = ["kv_queries", "mark_queries"]


def kv_queries(conn: Connection[Any], table: str, seq: str, jsonb: bool) -> dict[str, str]:
    """fetch, set, delete, the counter adds and data expiry of the key/value table
    ``table``."""
    # nextval() takes a regclass *string*: quote the name inside it, or PostgreSQL
    # folds a mixed-case name ("BlogUsers_version_seq") to lower case.
    names = {"t": sql.Identifier(table),
             "seq": sql.Literal(sql.Identifier(seq).as_string(conn)),
             "seqname": sql.Identifier(seq)}
    vtype = sql.SQL("jsonb" if jsonb else "bytea")
    parts = {
        # A NULL value is the tombstone of a versioned delete: no row to a reader.
        # An expired row (expires_at passed, by the caller's clock) is no row either.
        "fetch": "SELECT key, value{text}, version, expires_at FROM {t} "
                 "WHERE namespace = %s AND key = ANY(%b::text[]) AND value IS NOT NULL "
                 "AND (expires_at IS NULL OR expires_at > %s)",
        "set": "INSERT INTO {t} AS t (namespace, key, value, version) "
               "SELECT u.ns, u.key, u.value::{vtype}, nextval({seq}) "
               "FROM unnest(%b::text[], %b::text[], %b::{intype}[]) AS u(ns, key, value) "
               "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, "
               "version = nextval({seq}), updated_at = now(), expires_at = NULL "
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
               "ON CONFLICT (namespace, key) DO UPDATE SET value = " + _SUM
               + ", version = nextval({seq}), "
               "updated_at = now(), expires_at = NULL "
               "RETURNING namespace, key, version, value #>> '{{}}'",
        # bytea adds: lock (creating a zero row when missing) and read, then write
        # (a tombstone's NULL value reads as 0).
        "add_lock": "INSERT INTO {t} AS t (namespace, key, value, version) "
                    "SELECT u.ns, u.key, %s::bytea, nextval({seq}) "
                    "FROM unnest(%b::text[], %b::text[]) AS u(ns, key) "
                    "ON CONFLICT (namespace, key) DO UPDATE SET namespace = t.namespace "
                    "RETURNING namespace, key, value",
        "add_write": "UPDATE {t} AS t SET value = u.value, version = nextval({seq}), "
                     "updated_at = now(), expires_at = NULL FROM unnest(%b::text[], %b::text[], "
                     "%b::bytea[]) AS u(ns, key, value) "
                     "WHERE t.namespace = u.ns AND t.key = u.key "
                     "RETURNING t.namespace, t.key, t.version",
        # -- versioned ops (Op.version): set-if-newer, see versions.py ---------------
        # SETs and DELETEs (a NULL value: the tombstone that keeps a deleted key's version).
        "vset": "INSERT INTO {t} AS t (namespace, key, value, version) "
                "SELECT u.ns, u.key, u.value::{vtype}, u.v FROM unnest(%b::text[], "
                "%b::text[], %b::{intype}[], %b::bigint[]) AS u(ns, key, value, v) "
                "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, "
                "version = excluded.version, updated_at = now(), expires_at = NULL "
                "WHERE t.version < excluded.version RETURNING namespace, key, version",
        "versions": "SELECT t.namespace, t.key, t.version FROM {t} AS t JOIN unnest("
                    "%b::text[], %b::text[]) AS u(ns, key) ON t.namespace = u.ns AND "
                    "t.key = u.key",
        "vadd": "INSERT INTO {t} AS t (namespace, key, value, version) "
                "SELECT u.ns, u.key, to_jsonb(u.d), u.v FROM unnest(%b::text[], "
                "%b::text[], %b::numeric[], %b::bigint[]) AS u(ns, key, d, v) "
                "ON CONFLICT (namespace, key) DO UPDATE SET value = " + _SUM
                + ", version = greatest(t.version, excluded.version), updated_at = now(), "
                "expires_at = NULL RETURNING namespace, key, version, value #>> '{{}}'",
        # bytea: a missing row is created at version 0, so it takes the op's version.
        "vadd_lock": "INSERT INTO {t} AS t (namespace, key, value, version) "
                     "SELECT u.ns, u.key, %s::bytea, 0 "
                     "FROM unnest(%b::text[], %b::text[]) AS u(ns, key) "
                     "ON CONFLICT (namespace, key) DO UPDATE SET namespace = t.namespace "
                     "RETURNING namespace, key, value",
        "vadd_write": "UPDATE {t} AS t SET value = u.value, version = greatest(t.version, "
                      "u.v), updated_at = now(), expires_at = NULL FROM unnest(%b::text[], "
                      "%b::text[], %b::bytea[], %b::bigint[]) AS u(ns, key, value, v) "
                      "WHERE t.namespace = u.ns AND t.key = u.key "
                      "RETURNING t.namespace, t.key, t.version",
        # setval alone could move the sequence backwards when two batches race: the
        # read and the set run under a lock of this sequence, held to the commit.
        "seq_lock": "SELECT pg_advisory_xact_lock(%s::int, hashtext(current_schema() || "
                    "'.' || %s::text))",
        "seq_raise": "SELECT setval({seq}, greatest(%s::bigint, (SELECT last_value FROM "
                     "{seqname})))",
        # -- data expiry (expire= on a namespace; every write above ends the old one) --
        "expired_delete": "DELETE FROM {t} AS t USING unnest(%b::text[], %b::text[]) AS "
                          "u(ns, key) WHERE t.namespace = u.ns AND t.key = u.key "
                          "AND t.expires_at <= %s",
        "expires_stamp": "UPDATE {t} AS t SET expires_at = u.at FROM unnest(%b::text[], "
                         "%b::text[], %b::float8[]) AS u(ns, key, at) "
                         "WHERE t.namespace = u.ns AND t.key = u.key",
        "purge": "DELETE FROM {t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {t} "
                 "WHERE expires_at <= %s LIMIT %s))",
    }
    fmt = {**names, "vtype": vtype, "intype": sql.SQL("text" if jsonb else "bytea"),
           "text": sql.SQL("::text" if jsonb else "")}
    out: dict[str, str] = {}
    for name, text in parts.items():
        out[name] = sql.SQL(text).format(
            **{k: v for k, v in fmt.items() if "{" + k + "}" in text}).as_string(conn)
    # A versioned batch of SETs and DELETEs as one statement (one round trip, one
    # transaction on an autocommit connection, parameters bound on the server): the
    # upsert, then the sequence raise under its advisory lock, in that order (the
    # transactional batch's order: row locks, then the sequence's). ``l`` reads ``up``
    # before taking the lock, ``r`` reads ``l`` before the sequence's last value (an
    # InitPlan, run when first needed). Params: ns[], key[], value[], version[], the
    # lock class, the sequence's name, the batch's highest version. Rows: the ops that
    # landed, or one row of NULLs when none did (``r`` is scanned first, always).
    # ``vset_raise1``: the same for one op, its values as scalars (no arrays to build
    # and unnest: a write-through set's store write).
    raise_ = sql.SQL(
        "WITH up AS ({vset}), l AS (SELECT pg_advisory_xact_lock(%b::int, hashtext("
        "current_schema() || '.' || %b::text)) FROM (SELECT count(*) FROM up) AS c), "
        "r AS (SELECT setval({seq}, greatest(%b::bigint, (SELECT last_value FROM "
        "{seqname}))) FROM l) SELECT up.namespace, up.key, up.version FROM r LEFT JOIN "
        "up ON true")
    arrays = sql.SQL("unnest(%b::text[], %b::text[], %b::{intype}[], %b::bigint[])").format(
        intype=fmt["intype"]).as_string(conn)
    scalars = sql.SQL("(VALUES (%b::text, %b::text, %b::{intype}, %b::bigint))").format(
        intype=fmt["intype"]).as_string(conn)
    assert arrays in out["vset"]
    for name, vset in (("vset_raise", out["vset"]),
                       ("vset_raise1", out["vset"].replace(arrays, scalars))):
        out[name] = raise_.format(vset=sql.SQL(vset), seq=names["seq"],
                                  seqname=names["seqname"]).as_string(conn)
    return out


# A counter's new value: the stored JSON integer (0 for a tombstone) plus the delta. The
# stored value must be a JSON integer; anything else fails the cast with this text in
# the message (plain SQL has no RAISE).
_SUM = ("to_jsonb((CASE WHEN t.value IS NULL THEN '0' WHEN "
        "jsonb_typeof(t.value) = 'number' AND (t.value #>> '{{}}') !~ '[.eE]' "
        "THEN t.value #>> '{{}}' ELSE 'cacheway: not an integer' END)::numeric "
        "+ (excluded.value #>> '{{}}')::numeric)")


def mark_queries(conn: Connection[Any], meta: str, applied: str) -> dict[str, str]:
    """The journal marks: record one, fence one, trim, and read a journal's state."""
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
    # The fence of a queue consumer's mark (JournalMark.after): the low water rises only
    # from the one it follows; no row back means another writer passed it. The conflict
    # waits for that writer's transaction and then sees its commit (READ COMMITTED).
    out["fence"] = sql.SQL(
        "INSERT INTO {m} AS m (name, value) VALUES (%s, %s) ON CONFLICT (name) "
        "DO UPDATE SET value = greatest(m.value, excluded.value) WHERE m.value <= %s "
        "RETURNING m.value"
    ).format(m=m).as_string(conn)
    out["mark_trim"] = sql.SQL(
        "DELETE FROM {a} WHERE journal = %s AND seq <= %s").format(a=a).as_string(conn)
    out["low"] = sql.SQL("SELECT value FROM {m} WHERE name = %s").format(
        m=m).as_string(conn)
    out["applied"] = sql.SQL(
        "SELECT namespace, key, seq FROM {a} WHERE journal = %s AND seq > %s"
    ).format(a=a).as_string(conn)
    return out
