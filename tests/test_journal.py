"""The write-back journal: round trips, torn and flipped bytes, checkpoints, locking,
group commit, fsync failure and a real ``kill -9``."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cacheway.core.journal_records import decode_at, encode_record
from cacheway.errors import ConfigError, InvalidKeyError, JournalError
from cacheway.writeback import journal_sync as journal_mod
from cacheway.writeback.journal import (
    ADD,
    DELETE,
    FSYNC_MODES,
    SET,
    Journal,
    Record,
    inspect,
)

SRC = str(Path(__file__).resolve().parents[1] / "src")


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.seg"))


def write_sample(path: Path, n: int = 5, **kwargs: Any) -> list[Record]:
    """A closed journal with ``n`` small records; returns what was written."""
    written = []
    with Journal(path, fsync="never", **kwargs) as j:
        for i in range(n):
            kind = (SET, DELETE, ADD)[i % 3]
            payload = f"v{i}".encode() * (i + 1) if kind == SET else b""
            delta = -(10**i) if kind == ADD else 0
            seq = j.append(f"ns{i % 2}", f"key-{i}", kind, payload, delta)
            written.append(Record(seq, f"ns{i % 2}", f"key-{i}", kind, payload, delta))
    return written


def record_offsets(data: bytes) -> list[int]:
    """Start offsets of the records in ``data`` plus the end offset."""
    offsets, pos = [0], 0
    while pos < len(data):
        found = decode_at(data, pos)
        assert isinstance(found, tuple)
        pos += found[1]
        offsets.append(pos)
    return offsets


def open_quietly(path: Path) -> tuple[list[Record] | JournalError, list[str]]:
    """Open, read and close; returns the records (or the JournalError) and any warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with Journal(path, fsync="never") as j:
                result: list[Record] | JournalError = j.records()
        except JournalError as exc:
            result = exc
    return result, [str(w.message) for w in caught]


# -- round trip ---------------------------------------------------------------------------


def test_round_trip_of_every_kind_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "app.wal"
    big = random.Random(1).randbytes(1024 * 1024)
    writes = [
        ("", "plain", SET, b'{"a": 1}', 0),
        ("名前空間", "ключ-🙂", SET, b"", 0),
        ("ns", "lone-\ud800-surrogate", DELETE, b"", 0),
        ("ns", "big", SET, big, 0),
        ("counters", "c", ADD, b"", -1),
        ("counters", "c", ADD, b"", 2**63 - 1),
        ("counters", "c", ADD, b"", -(2**63)),
        ("counters", "c", ADD, b"", 2**63),
        ("counters", "c", ADD, b"", -(2**200)),
        ("", "", SET, bytearray(b"\x00\xff"), 0),
    ]
    with Journal(path, fsync="always") as j:
        assert j.last_seq == 0
        journal_id = j.id
        seqs = [j.append(*w) for w in writes]
        j.wait(seqs[-1])
        assert seqs == list(range(1, len(writes) + 1))
    expected = [Record(s, ns, k, kind, bytes(p), d) for s, (ns, k, kind, p, d) in zip(seqs, writes)]
    with Journal(path) as j:
        assert j.records() == expected
        assert j.id == journal_id
        assert j.last_seq == len(writes)
        assert j.append("", "next", DELETE) == len(writes) + 1
    with Journal(path) as j:
        assert [r.seq for r in j.records()] == [*seqs, len(writes) + 1]


def test_bad_arguments_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'sometimes'.*'always', 'everysec', 'never'"):
        Journal(tmp_path / "a", fsync="sometimes")
    with pytest.raises(ConfigError, match="segment_bytes"):
        Journal(tmp_path / "a", segment_bytes=0)
    assert FSYNC_MODES == ("always", "everysec", "never")
    with Journal(tmp_path / "a", fsync="never") as j:
        with pytest.raises(ConfigError, match="kind 7"):
            j.append("", "k", 7)
        with pytest.raises(InvalidKeyError):
            j.append("", b"k", SET)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="never appended"):
            j.wait(5)
        assert j.last_seq == 0  # nothing half-written
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(JournalError, match="is a file"):
        Journal(tmp_path / "file")


def test_closed_journal_refuses_appends_and_close_is_idempotent(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j", fsync="always")
    seq = j.append("", "k", SET, b"v")
    j.close()
    j.close()
    j.wait(seq)  # already durable: close synced it
    with pytest.raises(JournalError, match="closed"):
        j.append("", "k", SET, b"v")


# -- torn and flipped bytes ---------------------------------------------------------------


def test_truncation_at_every_offset_keeps_every_complete_record(tmp_path: Path) -> None:
    path = tmp_path / "j"
    written = write_sample(path)
    (segment,) = segments(path)
    data = segment.read_bytes()
    boundaries = record_offsets(data)
    for cut in range(len(data) + 1):
        segment.write_bytes(data[:cut])
        result, caught = open_quietly(path)
        complete = sum(1 for b in boundaries[1:] if b <= cut)
        assert result == written[:complete], cut
        if cut in boundaries:
            assert caught == [], cut
        else:
            assert len(caught) == 1, cut
            assert segment.name in caught[0]
            assert f"offset {boundaries[complete]}" in caught[0]
            assert segment.stat().st_size == boundaries[complete]  # the torn tail is gone


def test_flipped_byte_is_damage_unless_it_is_in_the_last_record(tmp_path: Path) -> None:
    path = tmp_path / "j"
    written = write_sample(path)
    (segment,) = segments(path)
    data = segment.read_bytes()
    boundaries = record_offsets(data)
    for pos in range(len(data)):
        segment.write_bytes(data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1 :])
        result, caught = open_quietly(path)
        index = max(i for i, b in enumerate(boundaries) if b <= pos)
        if index == len(written) - 1:  # the last record: it may be a torn append
            assert result == written[:-1], pos
            assert len(caught) == 1
        else:
            assert isinstance(result, JournalError), pos
            message = str(result)
            assert segment.name in message
            assert f"offset {boundaries[index]}" in message
            assert "cacheway journal inspect" in message
            assert segment.read_bytes()[pos] != data[pos]  # left alone for a human to look at


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(0, 400), garbage=st.binary(max_size=120), splice=st.booleans())
def test_any_bytes_open_cleanly_or_raise_journal_error(
    cut: int, garbage: bytes, splice: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "j"
        written = write_sample(path)
        (segment,) = segments(path)
        data = segment.read_bytes()
        data = data[:cut] + garbage + (data[cut:] if splice else b"")
        segment.write_bytes(data)
        report = inspect(path)  # never raises on content
        result, _ = open_quietly(path)
        if not isinstance(result, JournalError):
            assert result == written[: len(result)]
            assert report.records == len(result)


# -- checkpoint and rotation --------------------------------------------------------------


def test_checkpoint_deletes_covered_segments_and_bounds_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with Journal(path, fsync="never", segment_bytes=256) as j:
        for i in range(60):
            j.append("", f"k{i}", SET, b"x" * 40)
        assert len(segments(path)) > 5
        assert j.bytes == sum(p.stat().st_size for p in segments(path))
        before = j.bytes
        j.checkpoint(45)
        assert j.checkpoint_seq == 45
        assert [r.seq for r in j.records()] == list(range(46, 61))
        assert j.bytes < before
        assert j.bytes <= 15 * 80 + 256 + 80  # what is dirty plus about one segment
        assert j.bytes == sum(p.stat().st_size for p in segments(path))
        j.checkpoint(10)  # lower: a no-op
        assert j.checkpoint_seq == 45
        j.checkpoint(60)
        assert j.records() == []
        assert len(segments(path)) == 1  # the one being appended to
    with Journal(path, fsync="never") as j:
        assert (j.checkpoint_seq, j.last_seq, j.records()) == (60, 60, [])
        assert j.append("", "after", SET) == 61
        assert [r.seq for r in j.records()] == [61]


def test_crash_leftovers_around_a_checkpoint_are_consistent(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with Journal(path, fsync="never", segment_bytes=128) as j:
        for i in range(20):
            j.append("", f"k{i}", SET, b"y" * 30)
    saved = {p.name: p.read_bytes() for p in segments(path)}
    with Journal(path, fsync="never") as j:
        j.checkpoint(12)
    # A crash after the tmp checkpoint was written but before the rename...
    (path / "checkpoint.tmp").write_bytes(b"half-written garbage")
    # ... and one between the checkpoint and deleting the covered segments.
    for name, content in saved.items():
        if not (path / name).exists():
            (path / name).write_bytes(content[:7] + b"rot")  # even damaged: it is covered
    with Journal(path, fsync="never") as j:
        assert j.checkpoint_seq == 12
        assert [r.seq for r in j.records()] == list(range(13, 21))
    assert not (path / "checkpoint.tmp").exists()
    assert inspect(path).damage == []


def test_checkpoint_past_last_seq_moves_seqs_forward(tmp_path: Path) -> None:
    path = tmp_path / "j"
    write_sample(path, 3)
    with Journal(path, fsync="always") as j:
        j.checkpoint(100)  # the store had applied more than the journal kept
        assert j.last_seq == 100
        seq = j.append("", "k", SET, b"v")
        j.wait(seq)
        assert seq == 101
    with Journal(path, fsync="never") as j:
        assert [r.seq for r in j.records()] == [101]
        assert j.last_seq == 101


def test_inspect_reads_without_locking_or_changing_anything(tmp_path: Path) -> None:
    path = tmp_path / "j"
    write_sample(path, 5)
    with Journal(path, fsync="never") as j:
        j.checkpoint(2)
        report = inspect(path)  # while the journal is open elsewhere
        assert report.id == j.id
    assert (report.records, report.first_seq, report.last_seq, report.checkpoint_seq) == (
        3,
        3,
        5,
        2,
    )
    assert report.damage == []
    assert report.bytes == sum(size for _, size in report.segments)
    (segment,) = segments(path)
    data = bytearray(segment.read_bytes())
    data[20] ^= 1
    segment.write_bytes(bytes(data))
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in path.iterdir()}
    report = inspect(path)
    assert len(report.damage) == 1
    assert segment.name in report.damage[0]
    assert "offset 0" in report.damage[0]
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in path.iterdir()} == before
    with pytest.raises(JournalError, match="no journal"):
        inspect(tmp_path / "missing")


# -- locking ------------------------------------------------------------------------------

CHILD_OPEN = textwrap.dedent(
    """
    import sys
    from cacheway.errors import JournalError
    from cacheway.writeback.journal import Journal
    try:
        Journal(sys.argv[1], fsync="never").close()
    except JournalError as exc:
        print("JournalError:", exc)
    else:
        print("opened")
    """
)


def run_child(code: str, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], env=env, text=True, stdout=subprocess.PIPE, **kwargs
    )


def test_one_writer_per_journal(tmp_path: Path) -> None:
    path = tmp_path / "j"
    first = Journal(path, fsync="everysec")
    with pytest.raises(JournalError, match=rf"in use by another .*pid {os.getpid()}"):
        Journal(path)
    out, _ = run_child(CHILD_OPEN, str(path)).communicate(timeout=60)
    assert out.startswith("JournalError:")
    assert f"pid {os.getpid()}" in out
    first.close()
    out, _ = run_child(CHILD_OPEN, str(path)).communicate(timeout=60)
    assert out.strip() == "opened"
    Journal(path).close()


# -- durability ---------------------------------------------------------------------------


def test_group_commit_shares_syncs_between_threads(tmp_path: Path) -> None:
    path = tmp_path / "j"
    threads, per_thread = 8, 200
    errors: list[BaseException] = []
    with Journal(path, fsync="always") as j:
        start = j.syncs
        barrier = threading.Barrier(threads)

        def writer(t: int) -> None:
            try:
                barrier.wait()
                seen = j.syncs
                for i in range(per_thread):
                    seq = j.append("ns", f"{t}:{i}", SET, b"%d" % i)
                    j.wait(seq)
                    assert j.synced_seq >= seq  # returned only once it was on disk
                    assert j.syncs >= seen
                    seen = j.syncs
            except BaseException as exc:
                errors.append(exc)

        workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert errors == []
        writes = threads * per_thread
        assert 0 < j.syncs - start < writes  # some syncs covered several writers
    with Journal(path, fsync="never") as j:
        got = {r.key: r.payload for r in j.records()}
    assert got == {f"{t}:{i}": b"%d" % i for t in range(threads) for i in range(per_thread)}


def test_checkpoints_racing_appends_and_syncs_stay_consistent(tmp_path: Path) -> None:
    path = tmp_path / "j"
    done = threading.Event()
    with Journal(path, fsync="always", segment_bytes=512) as j:

        def writer(t: int) -> None:
            for i in range(150):
                j.wait(j.append("", f"{t}:{i}", SET, b"z" * 20))

        def checkpointer() -> None:
            while not done.is_set():
                j.checkpoint(max(0, j.last_seq - 20))
                j.records()

        workers = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
        flusher = threading.Thread(target=checkpointer)
        flusher.start()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        done.set()
        flusher.join()
        assert j.checkpoint_seq > 0
        final = 580
        j.checkpoint(final)
        assert j.bytes <= 20 * 60 + 512 + 60  # what is dirty plus about one segment
        expected = [r.seq for r in j.records()]
    assert expected == list(range(final + 1, 601))
    with Journal(path, fsync="never") as j:
        assert [r.seq for r in j.records()] == expected


def test_fsync_failure_is_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "j"
    j = Journal(path, fsync="always")
    ok = j.append("", "before", SET, b"1")
    j.wait(ok)

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(journal_mod, "_datasync", broken)
    seq = j.append("", "k", SET, b"v")
    with pytest.raises(JournalError, match="failed") as info:
        j.wait(seq)
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(JournalError, match="failed"):
        j.append("", "later", SET, b"v")
    with pytest.raises(JournalError):
        j.wait(ok + 1)
    with pytest.raises(JournalError):
        j.sync()
    j.close()  # releases the lock without trying to sync again
    monkeypatch.undo()
    with Journal(path, fsync="never") as j2:
        assert [r.key for r in j2.records()] == ["before", "k"]


def test_everysec_syncs_in_the_background(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_mod, "_EVERYSEC_INTERVAL", 0.01)
    synced = threading.Event()
    real = journal_mod._datasync

    def spy(fd: int) -> None:
        real(fd)
        synced.set()

    monkeypatch.setattr(journal_mod, "_datasync", spy)
    with Journal(tmp_path / "j", fsync="everysec") as j:
        seq = j.append("", "k", SET, b"v")
        j.wait(seq)  # returns at once
        assert synced.wait(10)
        deadline = time.monotonic() + 10
        while j.synced_seq < seq and time.monotonic() < deadline:
            time.sleep(0.005)
        assert j.synced_seq >= seq


CHILD_WRITER = textwrap.dedent(
    """
    import sys, threading
    from cacheway.writeback.journal import Journal, SET
    j = Journal(sys.argv[1], fsync="always", segment_bytes=2048)
    out = threading.Lock()
    def writer(t):
        i = 0
        while True:
            i += 1
            key = f"{t}:{i}"
            seq = j.append("ns", key, SET, key.encode() * 5)
            j.wait(seq)
            with out:
                sys.stdout.write(f"{seq} {key}\\n")
                sys.stdout.flush()
    threads = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(4)]
    print("ready", flush=True)
    for t in threads:
        t.start()
    threading.Event().wait()
    """
)


@pytest.mark.parametrize("run", range(5))
def test_kill_9_loses_no_acknowledged_write(tmp_path: Path, run: int) -> None:
    path = tmp_path / "j"
    rng = random.Random(run)
    if run % 2:  # some runs resume an existing journal
        write_sample(path, 3)
    child = run_child(CHILD_WRITER, str(path))
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    time.sleep(rng.uniform(0.05, 0.3))
    child.send_signal(signal.SIGKILL)
    rest, _ = child.communicate(timeout=60)
    acknowledged = {}
    for line in rest.splitlines(keepends=True):
        if line.endswith("\n"):
            seq, key = line.split()
            acknowledged[int(seq)] = key
    assert acknowledged, "the child acknowledged nothing before the kill"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a torn last record is allowed
        with Journal(path, fsync="never") as j:
            got = {r.seq: r for r in j.records()}
    for seq, key in acknowledged.items():
        assert got[seq].key == key
        assert got[seq].payload == key.encode() * 5


# -- model-based ---------------------------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("append"),
            st.sampled_from(["", "a", "ü"]),
            st.text(max_size=6),
            st.sampled_from([SET, DELETE, ADD]),
            st.binary(max_size=60),
            st.integers(-(2**64), 2**64),
        ),
        st.tuples(st.just("checkpoint"), st.integers(-2, 3)),
        st.tuples(st.just("reopen")),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops)
def test_journal_matches_a_model(ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "j"
        j = Journal(path, fsync="never", segment_bytes=100)
        model: list[Record] = []
        checkpoint = last = 0
        try:
            for op in ops:
                if op[0] == "append":
                    _, ns, key, kind, payload, delta = op
                    last += 1
                    assert j.append(ns, key, kind, payload, delta) == last
                    model.append(Record(last, ns, key, kind, payload, delta))
                elif op[0] == "checkpoint":
                    seq = max(0, last + op[1])
                    j.checkpoint(seq)
                    checkpoint, last = max(checkpoint, seq), max(last, seq)
                else:
                    j.close()
                    j = Journal(path, fsync="never", segment_bytes=100)
                assert (j.last_seq, j.checkpoint_seq) == (last, checkpoint)
                assert j.records() == [r for r in model if r.seq > checkpoint]
        finally:
            j.close()
        report = inspect(path)
        assert report.damage == []
        assert report.records == len([r for r in model if r.seq > checkpoint])


def test_encode_record_matches_what_append_writes(tmp_path: Path) -> None:
    with Journal(tmp_path / "j", fsync="never") as j:
        j.append("n", "k", ADD, b"", -5)
    (segment,) = segments(tmp_path / "j")
    assert segment.read_bytes() == encode_record(1, "n", "k", ADD, b"", -5)
