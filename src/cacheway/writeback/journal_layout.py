"""What a journal directory holds, read without locking or changing it: the segments and
how far each is intact, the id, the checkpoint and any damage (:func:`analyze`, which
:class:`~cacheway.writeback.journal.Journal` runs on open), and the report of
``cacheway journal inspect`` (:func:`inspect`). The bytes themselves are decoded by
:mod:`cacheway.core.journal_records`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path

from cacheway.core.journal_records import (
    CHECKPOINT_FILE,
    ID_FILE,
    Record,
    decode_checkpoint,
    decode_id,
    scan,
    segment_first_seq,
    void_dropped,
)
from cacheway.errors import JournalError

__all__ = ["JournalReport", "Layout", "SegmentInfo", "analyze", "damaged_error", "inspect"]


@dataclasses.dataclass
class SegmentInfo:
    first_seq: int
    name: str
    size: int  # bytes on disk (after open: bytes of intact records)
    last_seq: int = 0  # last intact seq; first_seq - 1 when empty
    end: int = 0  # offset past the last intact record
    stale: bool = False  # every record is covered by the checkpoint


@dataclasses.dataclass
class Layout:
    id: str | None
    old_id: bool  # the id file has no checksum yet (written by format 1)
    checkpoint_seq: int
    segments: list[SegmentInfo]
    damage: list[str]
    torn: tuple[str, int, str] | None  # (segment, offset, why) of a crash's leftover tail


def _read_id(directory: Path, damage: list[str]) -> tuple[str | None, bool]:
    """(id, in the old format without a checksum) of the ``id`` file."""
    try:
        raw = (directory / ID_FILE).read_bytes()
    except FileNotFoundError:
        return None, False
    except OSError as exc:
        damage.append(f"{ID_FILE}: cannot read: {exc}")
        return None, False
    found = decode_id(raw)
    if isinstance(found, str):
        damage.append(f"{ID_FILE}: {found}")
        return None, False
    return found


def _read_checkpoint(directory: Path, damage: list[str]) -> int:
    try:
        raw = (directory / CHECKPOINT_FILE).read_bytes()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        damage.append(f"{CHECKPOINT_FILE}: cannot read: {exc}")
        return 0
    seq = decode_checkpoint(raw)
    if seq is None:
        damage.append(f"{CHECKPOINT_FILE}: offset 0: not a valid checkpoint ({len(raw)} bytes)")
        return 0
    return seq


def analyze(directory: Path) -> Layout:
    """Read everything in the journal directory and say what is intact; never raises."""
    damage: list[str] = []
    journal_id, old_id = _read_id(directory, damage)
    checkpoint_seq = _read_checkpoint(directory, damage)
    try:
        names = os.listdir(directory)
    except OSError as exc:
        return Layout(
            journal_id, old_id, checkpoint_seq, [], [f"{directory}: cannot list: {exc}"], None
        )
    found = sorted((first, n) for n in names if (first := segment_first_seq(n)) is not None)
    if journal_id is None and (found or CHECKPOINT_FILE in names) and not damage:
        damage.append(f"{ID_FILE}: file missing next to segments or a checkpoint")
    segments: list[SegmentInfo] = []
    torn = None
    prev_last: int | None = None
    for i, (first, name) in enumerate(found):
        is_last = i == len(found) - 1
        seg = SegmentInfo(first, name, 0, last_seq=first - 1)
        segments.append(seg)
        # A segment whose successor starts at or below checkpoint + 1 holds nothing the
        # store lacks (a crash between checkpoint and deletion left it): skip, even if damaged.
        if not is_last and found[i + 1][0] - 1 <= checkpoint_seq:
            seg.stale = True
            with contextlib.suppress(OSError):
                seg.size = (directory / name).stat().st_size
            continue
        try:
            data = (directory / name).read_bytes()
        except OSError as exc:
            damage.append(f"{name}: cannot read: {exc}")
            continue
        seg.size = len(data)
        result = scan(data)
        seg.end = result.end
        for offset, record in result.records:
            if record.seq != seg.last_seq + 1:
                damage.append(
                    f"{name}: offset {offset}: record seq {record.seq} where {seg.last_seq + 1} "
                    "was expected (a record is missing or out of order)"
                )
                seg.end = offset
                break
            seg.last_seq = record.seq
        else:
            if result.error is not None and result.torn and is_last:
                torn = (name, result.end, result.error)
            elif result.error is not None:
                where = "last segment" if is_last else "segment that is not the last one"
                damage.append(
                    f"{name}: offset {result.end}: {result.error} (intact records follow it "
                    f"or it is in a {where}, so it is not a torn append)"
                )
        if prev_last is None and first - 1 > checkpoint_seq:
            damage.append(
                f"{name}: offset 0: starts at seq {first} but the checkpoint is {checkpoint_seq}: "
                f"records {checkpoint_seq + 1}..{first - 1} are missing (a segment was deleted?)"
            )
        elif prev_last is not None and first <= prev_last:
            damage.append(
                f"{name}: offset 0: starts at seq {first} but the previous segment "
                f"ends at {prev_last}"
            )
        elif prev_last is not None and first - 1 > max(prev_last, checkpoint_seq):
            damage.append(
                f"{name}: offset 0: records {prev_last + 1}..{first - 1} are missing "
                "(a segment was deleted?)"
            )
        prev_last = seg.last_seq
    return Layout(journal_id, old_id, checkpoint_seq, segments, damage, torn)


def damaged_error(directory: Path, damage: list[str]) -> JournalError:
    more = f" (and {len(damage) - 1} more)" if len(damage) > 1 else ""
    return JournalError(
        f"journal '{directory}' is damaged: {damage[0]}{more}. Run `cacheway journal inspect "
        f"{directory}` to see the damage; to start empty, move '{directory}' away (its "
        "unflushed writes are then lost unless recovered by hand)"
    )


@dataclasses.dataclass
class JournalReport:
    """What :func:`inspect` found; ``damage`` is empty for a healthy journal."""

    path: str
    id: str | None
    segments: list[tuple[str, int]]  # (file name, size in bytes)
    records: int  # intact writes a reopen would replay (seq > checkpoint_seq, not dropped)
    first_seq: int | None  # first write to replay
    last_seq: int
    checkpoint_seq: int
    bytes: int
    damage: list[str]


def _live_records(directory: Path, live: list[SegmentInfo], checkpoint_seq: int) -> list[Record]:
    out: list[Record] = []
    for seg in live:
        with contextlib.suppress(OSError):  # analyze() has reported it as damage
            data = (directory / seg.name).read_bytes()[: seg.end]
            out.extend(r for _, r in scan(data).records if checkpoint_seq < r.seq <= seg.last_seq)
    return out


def inspect(path: str | os.PathLike[str]) -> JournalReport:
    """Describe the journal at ``path`` without locking or changing anything.

    >>> import tempfile, os
    >>> from cacheway.core.journal_records import DELETE
    >>> from cacheway.writeback.journal import Journal
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with Journal(os.path.join(tmp, "j"), fsync="never") as j:
    ...         _ = j.append("", "k", DELETE)
    ...     inspect(os.path.join(tmp, "j")).records
    1
    """
    directory = Path(os.fspath(path))
    if not directory.is_dir():
        raise JournalError(f"no journal at '{directory}' (a journal is a directory)")
    found = analyze(directory)
    damage = list(found.damage)
    if found.torn is not None:
        name, offset, why = found.torn
        damage.append(f"{name}: offset {offset}: {why} (a torn last record; opening drops it)")
    live = [s for s in found.segments if not s.stale]
    writes = void_dropped(_live_records(directory, live, found.checkpoint_seq))
    return JournalReport(
        path=str(directory),
        id=found.id,
        segments=[(s.name, s.size) for s in found.segments],
        records=len(writes),
        first_seq=writes[0].seq if writes else None,
        last_seq=max([found.checkpoint_seq] + [s.last_seq for s in live]),
        checkpoint_seq=found.checkpoint_seq,
        bytes=sum(s.size for s in found.segments),
        damage=damage,
    )
