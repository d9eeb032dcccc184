"""The journal's ``id`` file: stores know what they applied by the id, so a changed id must
be refused, never trusted (it would replay applied writes again)."""

from __future__ import annotations

from pathlib import Path

import pytest

import cacheway as cw
from cacheway.core.journal_records import ID_FILE
from cacheway.errors import JournalError
from cacheway.stores.base import ADD, JournalMark, Op
from cacheway.writeback.journal import Journal, inspect
from cacheway.writeback.recovery import replay


def _applied_but_not_checkpointed(db: Path, wal: Path) -> str:
    """Ten increments the store applied (with its journal marks) before a crash that came
    ahead of the journal's checkpoint; returns the journal id."""
    store = cw.SQLiteStore(db)
    journal = Journal(wal, fsync="always")
    seqs = [journal.append("", "c", ADD, b"", 1) for _ in range(10)]
    journal.sync()
    store.apply([Op("", "c", ADD, None, 10)], journal=JournalMark(journal.id, 0, [seqs[-1]]))
    journal_id = journal.id
    journal.close()  # no checkpoint: as if killed right after the store's commit
    assert store.load("c") == 10
    store.close()
    return journal_id


@pytest.mark.parametrize("position", [0, 7, 31])
def test_a_changed_hex_digit_in_the_id_file_is_refused(tmp_path: Path, position: int) -> None:
    # issue 10 item 15
    db, wal = tmp_path / "app.db", tmp_path / "app.wal"
    journal_id = _applied_but_not_checkpointed(db, wal)
    raw = (wal / ID_FILE).read_bytes()
    digit = "0" if journal_id[position] != "0" else "1"
    changed = raw[:position] + digit.encode() + raw[position + 1 :]
    (wal / ID_FILE).write_bytes(changed)
    with pytest.raises(JournalError, match=r"id: offset 0: checksum mismatch") as caught:
        Journal(wal)
    assert str(wal) in str(caught.value)
    assert "Put back the 'id' file" in str(caught.value)
    assert inspect(wal).damage, "inspect must report the damage too"
    store = cw.SQLiteStore(db)
    with pytest.raises(JournalError, match="checksum mismatch"):
        cw.Cache(store=store, policy=cw.WriteBack(journal=str(wal)))
    assert store.load("c") == 10, "the increments must not be applied twice"
    store.close()


def test_an_id_file_of_the_first_format_is_read_and_gets_a_checksum(tmp_path: Path) -> None:
    # issue 10 item 15: journals written before the checksum still open (and are upgraded)
    db, wal = tmp_path / "app.db", tmp_path / "app.wal"
    journal_id = _applied_but_not_checkpointed(db, wal)
    (wal / ID_FILE).write_bytes(f"{journal_id}\n".encode())
    store = cw.SQLiteStore(db)
    with Journal(wal) as journal:
        assert journal.id == journal_id
        assert replay(journal, store).applied == 0  # the store's marks still match
    assert store.load("c") == 10
    store.close()
    upgraded = (wal / ID_FILE).read_text()
    assert upgraded.startswith(f"{journal_id} ")
    assert upgraded != f"{journal_id}\n"
    # ...and from now on a changed digit is caught
    (wal / ID_FILE).write_text(upgraded.replace(journal_id[0], "0" if journal_id[0] != "0"
                                                else "1", 1))
    with pytest.raises(JournalError, match="checksum mismatch"):
        Journal(wal)


@pytest.mark.parametrize("content", [b"", b"zz\n", b"0" * 32 + b" 1234567\n", b"0" * 32])
def test_an_id_file_that_is_not_an_id_is_refused(tmp_path: Path, content: bytes) -> None:
    # issue 10 item 15
    wal = tmp_path / "app.wal"
    Journal(wal).close()
    (wal / ID_FILE).write_bytes(content)
    with pytest.raises(JournalError, match=r"id: offset 0: .* is not a journal id"):
        Journal(wal)
