"""How journal records are laid out in bytes, and the scanner that reads them back; also
the small files beside them (``id``, ``checkpoint``) and the segments' names. Pure: bytes
in, records (or the reason there are none) out; reading and writing the files is
:mod:`cacheway.writeback.journal` and its helpers' business.

Each record is framed so that a torn write (a crash mid-append) or a flipped byte is
detected rather than replayed::

    magic    4 bytes   b"CWJ\\x02" (the last byte is the format version; records of
                       version 1, which knew no DROP, are still read); b"CWJ\\x03" for a
                       record that carries an expiry (``expire=``)
    length   u32 LE    size of the body
    crc      u32 LE    zlib.crc32 of magic + length + body
    body     kind u8, ns_len u16, key_len u32, delta_len u8,
             namespace (UTF-8), key (UTF-8), delta (signed little-endian, delta_len bytes),
             [format 3: expires_at f64 LE, the wall-clock time the write's data ends]
             payload, seq u64

A DROP record (format 2) voids the earlier records of its key up to the seq in its delta:
the flusher gave those writes to ``on_dead_letter``, so a replay must not apply them. A
VERSION record gives the key's last write before it the version in its delta: the one a
shared backend's clock (Redis) stamped the write with once it was accepted, so a replay
applies it set-if-newer and never over a later write another process acknowledged.

The sequence number sits at the end of the body so that the checksum of everything before
it is computed outside the journal's lock; only 8 bytes are folded in once the seq is known.

>>> rec = decode_at(encode_record(7, "ns", "k", ADD, b"", -3), 0)
>>> rec[0] if isinstance(rec, tuple) else rec  # doctest: +NORMALIZE_WHITESPACE
Record(seq=7, namespace='ns', key='k', kind=2, payload=b'', delta=-3, expires_at=None,
       version=None)
"""

from __future__ import annotations

import re
import struct
import zlib
from typing import NamedTuple

from cacheway.errors import ConfigError, InvalidKeyError

__all__ = [
    "ADD",
    "CHECKPOINT_FILE",
    "DELETE",
    "DROP",
    "ID_FILE",
    "KINDS",
    "LOCK_FILE",
    "MAGIC",
    "MAGIC_EXPIRES",
    "SET",
    "VERSION",
    "Encoded",
    "Record",
    "Scan",
    "decode_at",
    "decode_checkpoint",
    "decode_id",
    "encode",
    "encode_checkpoint",
    "encode_id",
    "encode_record",
    "find_record",
    "scan",
    "segment_first_seq",
    "segment_name",
    "void_dropped",
]

SET = 0
DELETE = 1
ADD = 2
DROP = 3
VERSION = 4
KINDS = (SET, DELETE, ADD)  # the writes; DROP and VERSION are the journal's own

MAGIC = b"CWJ\x02"
_MAGIC_V1 = b"CWJ\x01"
MAGIC_EXPIRES = b"CWJ\x03"  # a record of format 2 plus its expiry
_KINDS_OF = {MAGIC: (*KINDS, DROP, VERSION), _MAGIC_V1: KINDS,
             MAGIC_EXPIRES: (*KINDS, DROP, VERSION)}
_F64 = struct.Struct("<d")
_MAGIC_PREFIX = MAGIC[:3]
_HEADER = struct.Struct("<4sII")
_LENGTH = struct.Struct("<I")
_FIXED = struct.Struct("<BHIB")
_SEQ = struct.Struct("<Q")
_MIN_BODY = _FIXED.size + _SEQ.size
_MAX_BODY = 0xFFFFFFFF
# A variable-length delta keeps small counters small and still takes any int a counter
# can sensibly hold (far past +-2**63), instead of silently wrapping at 64 bits.
_MAX_DELTA_BYTES = 255
_MAX_SEQ = 2**64 - 1


class Record(NamedTuple):
    """One journaled write: ``kind`` is SET (payload = value bytes), DELETE or ADD (delta);
    or DROP: the records of the key with seq <= ``delta`` are void; or VERSION: the key's
    last write before it was given version ``delta`` by a shared backend's clock."""

    seq: int
    namespace: str
    key: str
    kind: int
    payload: bytes
    delta: int
    expires_at: float | None = None  # when the write's data ends (expire=; format 3)
    #: the version a shared backend's clock gave the write (from its VERSION record)
    version: int | None = None


class Encoded(NamedTuple):
    """A record encoded up to its sequence number (see :func:`encode`)."""

    prefix: bytes  # kind, lengths, namespace, key, delta
    payload: bytes | bytearray | memoryview
    length: int  # body length
    crc: int  # crc32 of magic + length + body without the trailing seq
    magic: bytes = MAGIC

    @property
    def size(self) -> int:
        return _HEADER.size + self.length

    def frame(self, seq: int) -> list[bytes | bytearray | memoryview]:
        """The buffers (for ``os.writev``) of this record numbered ``seq``."""
        seq_bytes = _SEQ.pack(seq)
        header = _HEADER.pack(self.magic, self.length, zlib.crc32(seq_bytes, self.crc))
        return [header, self.prefix, self.payload, seq_bytes]


def _utf8(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidKeyError(f"journal {what} must be a str, not {type(value).__name__}")
    # surrogatepass: any Python str round-trips, even one holding lone surrogates.
    return value.encode("utf-8", "surrogatepass")


def encode(
    namespace: str, key: str, kind: int, payload: bytes | bytearray | memoryview, delta: int,
    expires_at: float | None = None,
) -> Encoded:
    """Validate and encode everything of a record except its seq (``expires_at``: a
    record of format 3)."""
    ns_bytes = _utf8(namespace, "namespace")
    key_bytes = _utf8(key, "key")
    if isinstance(kind, bool) or kind not in _KINDS_OF[MAGIC]:
        raise ConfigError(
            f"journal record kind {kind!r} is not one of {KINDS} (SET, DELETE, ADD), DROP "
            "or VERSION"
        )
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise ConfigError(f"journal payload must be bytes, not {type(payload).__name__}")
    if isinstance(delta, bool) or not isinstance(delta, int):
        raise ConfigError(f"journal delta must be an int, not {type(delta).__name__}")
    if len(ns_bytes) > 0xFFFF:
        raise ConfigError(f"namespace of {len(ns_bytes)} bytes is longer than 65535 bytes")
    delta_bytes = (
        b"" if delta == 0 else delta.to_bytes((delta.bit_length() + 8) // 8, "little", signed=True)
    )
    if len(delta_bytes) > _MAX_DELTA_BYTES:
        raise ConfigError(f"counter delta of {delta.bit_length()} bits is too large to journal")
    payload_len = payload.nbytes if isinstance(payload, memoryview) else len(payload)
    magic, expiry = MAGIC, b""
    if expires_at is not None:
        magic, expiry = MAGIC_EXPIRES, _F64.pack(expires_at)
    length = (
        _FIXED.size + len(ns_bytes) + len(key_bytes) + len(delta_bytes) + len(expiry)
        + payload_len + _SEQ.size
    )
    if length > _MAX_BODY:
        raise ConfigError(f"journal record of {length} bytes is larger than 4 GiB")
    prefix = b"".join(
        (
            _FIXED.pack(kind, len(ns_bytes), len(key_bytes), len(delta_bytes)),
            ns_bytes,
            key_bytes,
            delta_bytes,
            expiry,
        )
    )
    crc = zlib.crc32(payload, zlib.crc32(prefix, zlib.crc32(magic + _LENGTH.pack(length))))
    return Encoded(prefix, payload, length, crc, magic)


def encode_record(
    seq: int, namespace: str, key: str, kind: int, payload: bytes = b"", delta: int = 0,
    expires_at: float | None = None,
) -> bytes:
    """The framed bytes of one record (handy for tests and tools)."""
    if not 0 < seq <= _MAX_SEQ:
        raise ConfigError(f"journal seq {seq} is outside 1..2**64-1")
    return b"".join(bytes(part) for part in encode(
        namespace, key, kind, payload, delta, expires_at).frame(seq))


def decode_at(data: bytes | memoryview, pos: int) -> tuple[Record, int] | str:
    """The record starting at ``pos`` and its framed size, or why there is none.

    Never raises on any byte content: every inconsistency comes back as a reason.
    """
    view = memoryview(data)
    end = len(view)
    if end - pos < _HEADER.size:
        return f"incomplete record header ({end - pos} of {_HEADER.size} bytes)"
    magic, length, crc = _HEADER.unpack_from(view, pos)
    kinds = _KINDS_OF.get(bytes(magic))
    if kinds is None:
        return f"no record starts here (bytes {bytes(magic)!r} are not the magic {MAGIC!r})"
    if length < _MIN_BODY:
        return f"record length {length} is shorter than the smallest record"
    body = pos + _HEADER.size
    body_end = body + length
    if body_end > end:
        return f"record of {length} bytes runs past the end of the file ({end - body} bytes left)"
    if zlib.crc32(view[body:body_end], zlib.crc32(view[pos : pos + 8])) != crc:
        return "checksum mismatch (the record is torn or its bytes changed)"
    kind, ns_len, key_len, delta_len = _FIXED.unpack_from(view, body)
    if kind not in kinds:
        return f"unknown record kind {kind} (format {magic[3]})"
    ns_at = body + _FIXED.size
    key_at = ns_at + ns_len
    delta_at = key_at + key_len
    payload_at = expiry_at = delta_at + delta_len
    if magic == MAGIC_EXPIRES:
        payload_at += _F64.size
    seq_at = body_end - _SEQ.size
    if payload_at > seq_at:
        return "field lengths run past the end of the record"
    try:
        namespace = bytes(view[ns_at:key_at]).decode("utf-8", "surrogatepass")
        key = bytes(view[key_at:delta_at]).decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return "namespace or key is not valid UTF-8"
    delta = int.from_bytes(view[delta_at:expiry_at], "little", signed=True)
    expires_at = _F64.unpack_from(view, expiry_at)[0] if payload_at > expiry_at else None
    (seq,) = _SEQ.unpack_from(view, seq_at)
    record = Record(seq, namespace, key, kind, bytes(view[payload_at:seq_at]), delta,
                    expires_at)
    return record, body_end - pos


def find_record(data: bytes, start: int) -> int | None:
    """The offset of the first intact record at or after ``start``, or None."""
    pos = data.find(_MAGIC_PREFIX, start)
    while pos >= 0:
        if isinstance(decode_at(data, pos), tuple):
            return pos
        pos = data.find(_MAGIC_PREFIX, pos + 1)
    return None


class Scan(NamedTuple):
    """What :func:`scan` found in one segment."""

    records: list[tuple[int, Record]]  # (offset, record) of the intact prefix
    end: int  # offset just past the last intact record
    error: str | None  # why the bytes at ``end`` are not a record
    torn: bool  # no intact record follows the error: it looks like a crash mid-append


def scan(data: bytes) -> Scan:
    """Decode the records of a segment up to the first damaged one.

    A damaged record followed by an intact one cannot be a torn append (appends only ever
    add at the end), so ``torn`` tells a crash's leftovers apart from real damage.
    """
    records: list[tuple[int, Record]] = []
    pos = 0
    while pos < len(data):
        found = decode_at(data, pos)
        if isinstance(found, str):
            return Scan(records, pos, found, find_record(data, pos + 1) is None)
        records.append((pos, found[0]))
        pos += found[1]
    return Scan(records, pos, None, False)


def void_dropped(records: list[Record]) -> list[Record]:
    """The writes of ``records`` (in seq order) that no later DROP record voids, each
    carrying the version of the VERSION record that follows it, if any.

    >>> w = Record(1, "", "k", SET, b"1", 0)
    >>> [(r.seq, r.version) for r in void_dropped([w, w._replace(seq=2, kind=VERSION,
    ...                                             delta=77), w._replace(seq=3)])]
    [(1, 77), (3, None)]
    """
    void: dict[tuple[str, str], int] = {}
    versioned = False
    for rec in records:
        if rec.kind == DROP:
            k = (rec.namespace, rec.key)
            void[k] = max(void.get(k, 0), rec.delta)
        elif rec.kind == VERSION:
            versioned = True
    if not void and not versioned:
        return records
    out: list[Record] = []
    last: dict[tuple[str, str], int] = {}  # each key's last write so far, its index in out
    for rec in records:
        k = (rec.namespace, rec.key)
        if rec.kind == VERSION:
            i = last.get(k)
            if i is not None:
                out[i] = out[i]._replace(version=rec.delta)
        elif rec.kind != DROP and rec.seq > void.get(k, 0):
            last[k] = len(out)
            out.append(rec)
    return out


# -- the files beside the segments -------------------------------------------------------

ID_FILE, LOCK_FILE, CHECKPOINT_FILE = "id", "lock", "checkpoint"
_SEGMENT_RE = re.compile(r"(\d{20})\.seg")
_ID_RE = re.compile(r"([0-9a-f]{32}) ([0-9a-f]{8})\n")
_OLD_ID_RE = re.compile(r"[0-9a-f]{32}\n")
_CHECKPOINT_FORMAT = struct.Struct("<4sQI")
_CHECKPOINT_MAGIC = b"CWCK"


def segment_name(seq: int) -> str:
    """Segments are named by their first seq, zero-padded so names sort like numbers.

    >>> segment_name(7), segment_first_seq(segment_name(7)), segment_first_seq("id")
    ('00000000000000000007.seg', 7, None)
    """
    return f"{seq:020d}.seg"


def segment_first_seq(name: str) -> int | None:
    """The first seq of the segment file ``name``, or None if it names no segment."""
    found = _SEGMENT_RE.fullmatch(name)
    return None if found is None else int(found.group(1))


def encode_checkpoint(seq: int) -> bytes:
    head = struct.pack("<4sQ", _CHECKPOINT_MAGIC, seq)
    return head + struct.pack("<I", zlib.crc32(head))


def decode_checkpoint(raw: bytes) -> int | None:
    """The seq of a ``checkpoint`` file's bytes, or None if they are not a checkpoint.

    >>> decode_checkpoint(encode_checkpoint(42)), decode_checkpoint(b"junk")
    (42, None)
    """
    if len(raw) == _CHECKPOINT_FORMAT.size:
        magic, seq, crc = _CHECKPOINT_FORMAT.unpack(raw)
        if magic == _CHECKPOINT_MAGIC and zlib.crc32(raw[:12]) == crc:
            return int(seq)
    return None


def encode_id(journal_id: str) -> bytes:
    """The ``id`` file: the id and its crc32, so a changed digit is refused, not trusted
    (stores key what they applied by the id: a wrong one would replay applied writes)."""
    return f"{journal_id} {zlib.crc32(journal_id.encode('ascii')):08x}\n".encode("ascii")


def decode_id(raw: bytes) -> tuple[str, bool] | str:
    """(id, in the old format without a checksum) of an ``id`` file's bytes, or why they
    hold no valid id.

    >>> decode_id(encode_id("ab" * 16))
    ('abababababababababababababababab', False)
    """
    text = raw.decode("ascii", "replace")
    if _OLD_ID_RE.fullmatch(text):
        return text[:32], True  # written before ids had a checksum: upgraded on open
    found = _ID_RE.fullmatch(text)
    if found is None:
        return f"offset 0: {raw[:60]!r} is not a journal id"
    if zlib.crc32(found.group(1).encode("ascii")) != int(found.group(2), 16):
        return (
            f"offset 0: checksum mismatch: the journal id {found.group(1)} changed "
            f"since it was written (stores know what they applied by this id: under a changed "
            f"one every record would be replayed again, counters twice). Put back the '{ID_FILE}' "
            "file from a copy of this journal"
        )
    return found.group(1), False
