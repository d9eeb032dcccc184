"""How journal records are laid out in bytes, and the scanner that reads them back.

Each record is framed so that a torn write (a crash mid-append) or a flipped byte is
detected rather than replayed::

    magic    4 bytes   b"CWJ\\x01" (the last byte is the format version)
    length   u32 LE    size of the body
    crc      u32 LE    zlib.crc32 of magic + length + body
    body     kind u8, ns_len u16, key_len u32, delta_len u8,
             namespace (UTF-8), key (UTF-8), delta (signed little-endian, delta_len bytes),
             payload, seq u64

The sequence number sits at the end of the body so that the checksum of everything before
it is computed outside the journal's lock; only 8 bytes are folded in once the seq is known.

>>> rec = decode_at(encode_record(7, "ns", "k", ADD, b"", -3), 0)
>>> rec[0] if isinstance(rec, tuple) else rec
Record(seq=7, namespace='ns', key='k', kind=2, payload=b'', delta=-3)
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

from cacheway.errors import ConfigError, InvalidKeyError

__all__ = [
    "ADD",
    "DELETE",
    "KINDS",
    "MAGIC",
    "SET",
    "Encoded",
    "Record",
    "Scan",
    "decode_at",
    "encode",
    "encode_record",
    "find_record",
    "scan",
]

SET = 0
DELETE = 1
ADD = 2
KINDS = (SET, DELETE, ADD)

MAGIC = b"CWJ\x01"
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
    """One journaled write: ``kind`` is SET (payload = value bytes), DELETE or ADD (delta)."""

    seq: int
    namespace: str
    key: str
    kind: int
    payload: bytes
    delta: int


class Encoded(NamedTuple):
    """A record encoded up to its sequence number (see :func:`encode`)."""

    prefix: bytes  # kind, lengths, namespace, key, delta
    payload: bytes | bytearray | memoryview
    length: int  # body length
    crc: int  # crc32 of magic + length + body without the trailing seq

    @property
    def size(self) -> int:
        return _HEADER.size + self.length

    def frame(self, seq: int) -> list[bytes | bytearray | memoryview]:
        """The buffers (for ``os.writev``) of this record numbered ``seq``."""
        seq_bytes = _SEQ.pack(seq)
        header = _HEADER.pack(MAGIC, self.length, zlib.crc32(seq_bytes, self.crc))
        return [header, self.prefix, self.payload, seq_bytes]


def _utf8(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidKeyError(f"journal {what} must be a str, not {type(value).__name__}")
    # surrogatepass: any Python str round-trips, even one holding lone surrogates.
    return value.encode("utf-8", "surrogatepass")


def encode(
    namespace: str, key: str, kind: int, payload: bytes | bytearray | memoryview, delta: int
) -> Encoded:
    """Validate and encode everything of a record except its seq."""
    ns_bytes = _utf8(namespace, "namespace")
    key_bytes = _utf8(key, "key")
    if isinstance(kind, bool) or kind not in KINDS:
        raise ConfigError(f"journal record kind {kind!r} is not one of {KINDS} (SET, DELETE, ADD)")
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise ConfigError(f"journal payload must be bytes, not {type(payload).__name__}")
    if isinstance(delta, bool) or not isinstance(delta, int):
        raise ConfigError(f"journal delta must be an int, not {type(delta).__name__}")
    if len(ns_bytes) > 0xFFFF:
        raise ConfigError(f"namespace of {len(ns_bytes)} bytes is longer than 65535 bytes")
    delta_bytes = b"" if delta == 0 else delta.to_bytes((delta.bit_length() + 8) // 8, "little", signed=True)
    if len(delta_bytes) > _MAX_DELTA_BYTES:
        raise ConfigError(f"counter delta of {delta.bit_length()} bits is too large to journal")
    payload_len = payload.nbytes if isinstance(payload, memoryview) else len(payload)
    length = _FIXED.size + len(ns_bytes) + len(key_bytes) + len(delta_bytes) + payload_len + _SEQ.size
    if length > _MAX_BODY:
        raise ConfigError(f"journal record of {length} bytes is larger than 4 GiB")
    prefix = b"".join(
        (_FIXED.pack(kind, len(ns_bytes), len(key_bytes), len(delta_bytes)), ns_bytes, key_bytes, delta_bytes)
    )
    crc = zlib.crc32(payload, zlib.crc32(prefix, zlib.crc32(MAGIC + _LENGTH.pack(length))))
    return Encoded(prefix, payload, length, crc)


def encode_record(
    seq: int, namespace: str, key: str, kind: int, payload: bytes = b"", delta: int = 0
) -> bytes:
    """The framed bytes of one record (handy for tests and tools)."""
    if not 0 < seq <= _MAX_SEQ:
        raise ConfigError(f"journal seq {seq} is outside 1..2**64-1")
    return b"".join(bytes(part) for part in encode(namespace, key, kind, payload, delta).frame(seq))


def decode_at(data: bytes | memoryview, pos: int) -> tuple[Record, int] | str:
    """The record starting at ``pos`` and its framed size, or why there is none.

    Never raises on any byte content: every inconsistency comes back as a reason.
    """
    view = memoryview(data)
    end = len(view)
    if end - pos < _HEADER.size:
        return f"incomplete record header ({end - pos} of {_HEADER.size} bytes)"
    magic, length, crc = _HEADER.unpack_from(view, pos)
    if magic != MAGIC:
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
    if kind not in KINDS:
        return f"unknown record kind {kind}"
    ns_at = body + _FIXED.size
    key_at = ns_at + ns_len
    delta_at = key_at + key_len
    payload_at = delta_at + delta_len
    seq_at = body_end - _SEQ.size
    if payload_at > seq_at:
        return "field lengths run past the end of the record"
    try:
        namespace = bytes(view[ns_at:key_at]).decode("utf-8", "surrogatepass")
        key = bytes(view[key_at:delta_at]).decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return "namespace or key is not valid UTF-8"
    delta = int.from_bytes(view[delta_at:payload_at], "little", signed=True)
    (seq,) = _SEQ.unpack_from(view, seq_at)
    record = Record(seq, namespace, key, kind, bytes(view[payload_at:seq_at]), delta)
    return record, body_end - pos


def find_record(data: bytes, start: int) -> int | None:
    """The offset of the first intact record at or after ``start``, or None."""
    pos = data.find(MAGIC, start)
    while pos >= 0:
        if isinstance(decode_at(data, pos), tuple):
            return pos
        pos = data.find(MAGIC, pos + 1)
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
