"""Dead-lettered writes leave the journal: DROP records, and a replay that isolates what
the store refuses instead of keeping the application from starting."""

from __future__ import annotations

import logging
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

import cacheway as cw
from cacheway.core.journal_records import encode_record, scan, segment_name
from cacheway.errors import ConfigError, InvalidWriteError, JournalError
from cacheway.stores.base import JournalMark, Op
from cacheway.writeback.journal import ADD, DELETE, DROP, SET, Journal, inspect
from cacheway.writeback.recovery import replay

SRC = str(Path(__file__).resolve().parents[1] / "src")


class Letters:
    """An ``on_dead_letter`` that records what it was told."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any, Exception]] = []

    def __call__(self, key: str, value: Any, exc: Exception) -> None:
        self.seen.append((key, value, exc))


def test_a_dropped_record_is_not_replayed(tmp_path: Path) -> None:
    # issue 10 item 10
    wal, store = tmp_path / "app.wal", cw.SQLiteStore(tmp_path / "app.db")
    with Journal(wal, fsync="always") as journal:
        a1 = journal.append("", "a", SET, b'"a1"')
        journal.append("", "c", ADD, b"", 5)
        journal.append("", "b", SET, b'"b1"')
        a2 = journal.append("", "a", SET, b'"a2"')
        journal.drop("", "a", a2)  # the flusher gave up on a's entry (seqs a1..a2)
        a3 = journal.append("", "a", SET, b'"a3"')  # a later write of the key stands
        journal.drop("", "b", a1)  # voids only b's records up to a1: none
        journal.wait(a3)
        assert [(r.key, r.seq) for r in journal.records()] == [("c", 2), ("b", 3), ("a", a3)]
    report = inspect(wal)
    assert report.records == 3
    assert report.first_seq == 2
    with Journal(wal) as journal:
        assert replay(journal, store).applied == 3
    assert store.load_many(["a", "b", "c"]) == {"a": "a3", "b": "b1", "c": 5}
    store.close()


def test_a_drop_voids_every_record_of_the_key_up_to_its_seq(tmp_path: Path) -> None:
    # issue 10 item 10
    wal, store = tmp_path / "app.wal", cw.SQLiteStore(tmp_path / "app.db")
    with Journal(wal, fsync="never", segment_bytes=100) as journal:  # spans segments
        seqs = [journal.append("", "c", ADD, b"", 1) for _ in range(5)]
        journal.append("", "k", DELETE)
        journal.drop("", "c", seqs[-1])
        assert len(list(wal.glob("*.seg"))) >= 2
        assert [r.key for r in journal.records()] == ["k"]
    store.save_many([("c", 100), ("k", "gone")])
    with Journal(wal) as journal:
        assert replay(journal, store).applied == 1
        assert journal.records() == []
    assert store.load("c") == 100, "the dropped increments were applied"
    assert store.load("k") is None
    store.close()


def test_drop_is_durable_and_checks_its_arguments(tmp_path: Path) -> None:
    # issue 10 item 10
    with Journal(tmp_path / "j", fsync="never") as journal:
        seq = journal.append("", "k", SET, b"1")
        with pytest.raises(ConfigError, match="never appended"):
            journal.drop("", "k", seq + 1)
        with pytest.raises(ConfigError, match="upto_seq"):
            journal.drop("", "k", 0)
        syncs = journal.syncs
        journal.drop("", "k", seq)
        assert journal.synced_seq == journal.last_seq == seq + 1  # even with fsync="never"
        assert journal.syncs > syncs


def test_replay_hands_a_refused_write_to_on_dead_letter_and_drops_it(tmp_path: Path) -> None:
    # issue 10 item 10: an incr on a row another process turned into a string
    wal, store = tmp_path / "app.wal", cw.SQLiteStore(tmp_path / "app.db")
    with Journal(wal, fsync="always") as journal:
        for i in range(5):
            journal.append("", f"g{i}", SET, f'"ok{i}"'.encode())
            journal.append("", "c", ADD, b"", 1)
        journal.append("", "d", ADD, b"", 2)
        journal.sync()
    store.save_many([("c", "a string now"), ("d", "also")])
    letters = Letters()
    with Journal(wal) as journal:
        report = replay(journal, store, batch_size=4, on_dead_letter=letters)
        assert report.dead_letters == 2
        assert report.applied == 5
    assert sorted((k, v) for k, v, _ in letters.seen) == [("c", 5), ("d", 2)]
    assert all(isinstance(exc, InvalidWriteError) for _, _, exc in letters.seen)
    assert store.load_many([f"g{i}" for i in range(5)]) == {f"g{i}": f"ok{i}" for i in range(5)}
    assert store.load("c") == "a string now"
    # the row becomes a counter again: the dropped increments stay dropped
    store.save_many([("c", 0), ("d", 0)])
    again = Letters()
    with Journal(wal) as journal:
        assert journal.records() == []
        assert replay(journal, store, on_dead_letter=again).applied == 0
    assert again.seen == []
    assert store.load_many(["c", "d"]) == {"c": 0, "d": 0}
    store.close()


def test_replay_without_a_callback_logs_the_refused_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # issue 10 item 10
    wal, store = tmp_path / "app.wal", cw.SQLiteStore(tmp_path / "app.db")
    with Journal(wal, fsync="always") as journal:
        journal.wait(journal.append("", "c", ADD, b"", 1))
    store.save_many([("c", "text")])
    with caplog.at_level(logging.ERROR, logger="cacheway"), Journal(wal) as journal:
        assert replay(journal, store).dead_letters == 1
    assert "dropping write of key 'c'" in caplog.text
    with Journal(wal) as journal:
        assert journal.records() == []
    store.close()


def test_a_refused_record_never_keeps_the_cache_from_opening(tmp_path: Path) -> None:
    # issue 10 item 10: cw.Cache() raised InvalidWriteError until the journal was deleted
    db, wal = tmp_path / "app.db", tmp_path / "app.wal"
    code = (
        "import os, cacheway as cw\n"
        f"cache = cw.Cache(store=cw.SQLiteStore({str(db)!r}), policy=cw.WriteBack("
        f"max_delay=3600, journal={str(wal)!r}, fsync='always'))\n"
        "views = cache.namespace('views')\n"
        "for _ in range(5): cache.incr('c'); views.incr('c')\n"
        "cache.set('k', 'v')\n"
        "os._exit(0)  # a crash: nothing flushed\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                   env={"PYTHONPATH": SRC})
    store = cw.SQLiteStore(db)
    store.save_many([("c", "another process made this a string")])
    letters = Letters()
    policy = cw.WriteBack(journal=str(wal), fsync="always", on_dead_letter=letters)
    with cw.Cache(store=store, policy=policy) as cache:
        assert [(k, v) for k, v, _ in letters.seen] == [("c", 5)]
        assert cache.get("k") == "v"
        cache.namespace("views")
        assert store.load("c", namespace="views") == 5  # its own journal, its own row
    assert len(letters.seen) == 1
    store.save_many([("c", 0)])
    with cw.Cache(store=store, policy=policy):
        pass
    assert len(letters.seen) == 1, "reopening told on_dead_letter again"
    assert store.load("c") == 0, "the dropped increments were applied after all"
    store.close()


def test_journal_state_after_a_drop_still_lets_the_checkpoint_trim(tmp_path: Path) -> None:
    # issue 10 item 10: the store's marks skip what is applied, the drop what was given up
    wal, store = tmp_path / "app.wal", cw.SQLiteStore(tmp_path / "app.db")
    with Journal(wal, fsync="always", segment_bytes=64) as journal:
        bad = journal.append("", "bad", SET, b'"x"')
        good = journal.append("", "good", SET, b'"y"')
        store.apply([Op("", "good", SET, b'"y"')], journal=JournalMark(journal.id, 0, [good]))
        journal.drop("", "bad", bad)
        later = journal.append("", "later", SET, b'"z"')
        journal.sync()
    with Journal(wal) as journal:
        report = replay(journal, store)
        assert (report.applied, report.skipped) == (1, 1)
        assert journal.checkpoint_seq == journal.last_seq == later
    assert len(list(wal.glob("*.seg"))) == 1  # only the one still appended to
    assert store.load_many(["bad", "good", "later"]) == {"good": "y", "later": "z"}
    store.close()


def _as_format_1(record: bytes) -> bytes:
    """``record`` (format 2) re-framed as format 1 wrote it."""
    head = b"CWJ\x01" + record[4:8]
    body = record[12:]
    return head + zlib.crc32(body, zlib.crc32(head)).to_bytes(4, "little") + body


def test_records_of_format_1_are_read_and_a_drop_in_format_1_is_damage(tmp_path: Path) -> None:
    # issue 10 item 10: the DROP kind bumps the format; journals of format 1 still replay
    wal = tmp_path / "app.wal"
    Journal(wal).close()
    first = _as_format_1(encode_record(1, "", "k", SET, b'"v"'))
    second = _as_format_1(encode_record(2, "", "c", ADD, b"", 3))
    (wal / segment_name(1)).write_bytes(first + second)
    with Journal(wal) as journal:
        assert [(r.key, r.kind) for r in journal.records()] == [("k", SET), ("c", ADD)]
        journal.append("", "n", SET, b"1")  # format 2 after format 1 in one segment
    with Journal(wal) as journal:
        assert [r.key for r in journal.records()] == ["k", "c", "n"]
    data = (wal / segment_name(1)).read_bytes()
    assert scan(data).error is None
    bogus = _as_format_1(encode_record(1, "", "k", DROP, b"", 1))
    assert "unknown record kind 3 (format 1)" in str(scan(bogus).error)
    (wal / segment_name(1)).write_bytes(bogus + encode_record(2, "", "k", SET, b"1"))
    with pytest.raises(JournalError, match="unknown record kind 3"):
        Journal(wal)


class FailsAfter:
    """A real store whose ``apply`` fails (as if the store went down) after ``n`` calls."""

    def __init__(self, store: cw.SQLiteStore, n: int) -> None:
        self.store, self.n = store, n

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def apply(self, ops: Any, *, journal: Any = None) -> Any:
        self.n -= 1
        if self.n < 0:
            raise cw.StoreError("the store went away")
        return self.store.apply(ops, journal=journal)


def test_a_replay_cut_short_after_a_dead_letter_does_not_repeat_it(tmp_path: Path) -> None:
    # issue 10 item 10: the drop is in the journal before on_dead_letter hears of it
    wal, store = tmp_path / "app.wal", cw.SQLiteStore(tmp_path / "app.db")
    with Journal(wal, fsync="always") as journal:
        journal.append("", "c", ADD, b"", 1)
        journal.append("", "g1", SET, b"1")
        journal.append("", "g2", SET, b"2")
        journal.sync()
    store.save_many([("c", "text")])
    letters = Letters()
    with Journal(wal) as journal, pytest.raises(cw.StoreError, match="went away"):
        # 1: the batch of c is refused (bisection: c alone is refused), g1 goes in, g2 fails
        replay(journal, FailsAfter(store, 2), batch_size=1,  # type: ignore[arg-type]
               on_dead_letter=letters)
    assert [k for k, _, _ in letters.seen] == ["c"]
    store.save_many([("c", 0)])
    with Journal(wal) as journal:
        assert [r.key for r in journal.records()] == ["g1", "g2"]
        report = replay(journal, store, on_dead_letter=letters)
        assert (report.applied, report.skipped) == (1, 1)
    assert [k for k, _, _ in letters.seen] == ["c"]
    assert store.load_many(["c", "g1", "g2"]) == {"c": 0, "g1": 1, "g2": 2}
    store.close()


DEAD_LETTER_THEN_CRASH = """
import os, sys, cacheway as cw
db, wal = sys.argv[1:3]
store = cw.SQLiteStore(db)
told = []
cache = cw.Cache(store=store, policy=cw.WriteBack(
    max_delay=3600, journal=wal, fsync="always", retry=cw.Retry(attempts=1),
    on_dead_letter=lambda key, value, exc: told.append(key)))
for _ in range(3):
    cache.incr("c")
store.save_many([("c", "another process made this a string")])
cache.flush(timeout=30)
print(",".join(told), flush=True)
os._exit(0)  # a crash before any later batch moved the journal's checkpoint on
"""


def test_a_write_the_flusher_dead_lettered_is_not_replayed(tmp_path: Path) -> None:
    # issue 10 item 10: Flusher._dead_letter voids the write in the journal before it
    # calls on_dead_letter
    db, wal = tmp_path / "app.db", tmp_path / "app.wal"
    out = subprocess.run([sys.executable, "-c", DEAD_LETTER_THEN_CRASH, str(db), str(wal)],
                         check=True, timeout=60, capture_output=True, text=True,
                         env={"PYTHONPATH": SRC})
    assert out.stdout == "c\n", out
    store = cw.SQLiteStore(db)
    store.save_many([("c", 0)])  # a counter again
    letters = Letters()
    with cw.Cache(store=store, policy=cw.WriteBack(journal=str(wal), on_dead_letter=letters)):
        pass
    assert letters.seen == [], "the dead-lettered increments were replayed"
    assert store.load("c") == 0
    store.close()
