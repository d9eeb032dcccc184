"""How RedisBackend lays out its entries in Redis, and the Lua scripts that change them.

Every entry starts with a 9-byte header::

    check (1 byte) | version (7 bytes, big-endian) | flag (1 byte) | payload or token

``flag`` is 0 for a value (the serializer's bytes follow), 1 for a tombstone (nothing
follows), 2 for a fill lease (a random token follows) and 3 for "not found". ``check``
is ``sum(i * byte_i for the 8 bytes after it, i = 1..8) % 251``: any single flipped bit
in the header changes it (251 is prime and no weight times a power of two below 256 is a
multiple of it), and an all-zero header (an unversioned value, the hot path) checks out
as it is. Versions are below 2**53: store sequences and Redis's clock in microseconds
both are, and a Lua number is exact up to there.

Damage cannot stick. A script that finds at a key anything that is not a well-formed
entry (a wrong check byte, a version of 2**53 or more, an unknown flag, another Redis
type, foreign bytes) or a marker (tombstone, lease, not-found) without an expiry treats
the key as empty: the next write, lease or fill replaces it. Python readers only look at
the flag and the payload (a damaged version does not change the value), so the check
costs the hot path nothing. Every marker a script writes carries an expiry.

Headers are compared byte by byte, not with Lua's ``<``: Redis sets LC_COLLATE from the
environment and Lua compares strings with strcoll, which is neither bytewise nor safe
with the NUL bytes a fixed-width version is full of.
"""

from __future__ import annotations

from operator import mul

from ..errors import BackendError

__all__ = [
    "CLOCK", "DELETE_IF_NEWER", "DELETE_IF_SAME", "HLEN", "LEASE_ACQUIRED", "LEASE_FILL",
    "LEASE_GET", "LEASE_HELD", "LEASE_NOT_FOUND", "LEASE_RELEASE", "LEASE_VALUE",
    "MAX_VERSION", "NOT_FOUND", "PUBLISH", "SET_IF_NEWER", "TOMBSTONE", "VALUE", "VALUE0",
    "VERSIONS", "header",
]

HLEN = 9
CLOCK = "~clock"  # the hybrid clock's key under the prefix (no engine key lacks a ':')
VALUE, TOMBSTONE, LEASE, NOT_FOUND = 0, 1, 2, 3
MAX_VERSION = 2**53 - 1
VALUE0 = bytes(HLEN)  # the header of every unversioned value: its check is 0 too
_WEIGHTS = range(1, 8)

LEASE_ACQUIRED, LEASE_HELD, LEASE_NOT_FOUND, LEASE_VALUE = 1, 2, 3, 0


def header(version: int, flag: int) -> bytes:
    """The 9-byte header of an entry of ``version`` and ``flag``."""
    if version.__class__ is not int or not 0 <= version <= MAX_VERSION:
        raise BackendError(
            f"version {version!r} is outside 0..2**53-1, the range a store sequence or "
            "Redis's clock issues; RedisBackend cannot keep it"
        )
    vb = version.to_bytes(7, "big")
    check = (sum(map(mul, vb, _WEIGHTS)) + 8 * flag) % 251
    return bytes((check,)) + vb + bytes((flag,))


COMMON = """
local function check(h)
  local s = 0
  for i = 2, 9 do s = s + (i - 1) * string.byte(h, i) end
  return s % 251
end
local function header(ver, flag)
  local tail = ver .. string.char(flag)
  return string.char(check('\\0' .. tail)) .. tail
end
local function cmp(cur, new)
  for i = 2, 8 do
    local a, b = string.byte(cur, i), string.byte(new, i)
    if a ~= b then if a < b then return -1 else return 1 end end
  end
  return 0
end
local function current(key)
  local cur = redis.pcall('GET', key)
  if type(cur) ~= 'string' or string.len(cur) < 9 then return nil, nil end
  if string.byte(cur, 1) ~= check(cur) or string.byte(cur, 2) >= 32 then return nil, nil end
  local flag = string.byte(cur, 9)
  if flag == 0 then return cur, 0 end
  if flag > 3 or (flag == 1 and string.len(cur) ~= 9) then return nil, nil end
  if redis.call('PTTL', key) < 0 then return nil, nil end
  return cur, flag
end
local function put(key, value, px)
  if px ~= '' then
    redis.call('SET', key, value, 'PX', px)
  elseif string.byte(value, 9) ~= 0 then
    return redis.error_reply('cacheway: a marker needs an expiry')
  else
    redis.call('SET', key, value)
  end
end
"""

# KEYS[1] key; ARGV[1] new entry (header + payload); ARGV[2] PX milliseconds or ''.
# A stored value of the same version is the same value: left alone. A tombstone of the
# same version is an invalidation published with the version of the row that replaced
# it (write-around), so the fill of exactly that row may land; older ones may not.
SET_IF_NEWER = COMMON + """
local cur, flag = current(KEYS[1])
if cur then
  local c = cmp(cur, ARGV[1])
  if c > 0 or (c == 0 and flag == 0) then return 0 end
end
local err = put(KEYS[1], ARGV[1], ARGV[2])
if err then return err end
return 1
"""

# KEYS[1] key; ARGV[1] tombstone (header only); ARGV[2] PX milliseconds.
DELETE_IF_NEWER = COMMON + """
local cur, flag = current(KEYS[1])
if cur and cmp(cur, ARGV[1]) >= 0 then return 0 end
local err = put(KEYS[1], ARGV[1], ARGV[2])
if err then return err end
return 1
"""

# Leases (the memcache idea): a reader that misses puts its own placeholder (flag 2 + a
# random token) in the key; only the holder loads from the store, and its fill lands only
# if the placeholder is still there, so any write meanwhile (which overwrites it) wins.
# The placeholder keeps the version of a tombstone it replaces as a floor, so a late
# write-through set older than that delete stays refused. "Not found" (flag 3) is shared
# with the waiters for a short while.
# KEYS[1] key; ARGV[1] token; ARGV[2] lease PX. Returns {1} acquired, {2} held by another,
# {3} not found, {0, entry} a value.
LEASE_GET = COMMON + """
local cur, flag = current(KEYS[1])
if flag == 0 then return {0, cur} end
if flag == 2 then return {2} end
if flag == 3 then return {3} end
local floor = string.rep('\\0', 7)
if flag == 1 then floor = string.sub(cur, 2, 8) end
redis.call('SET', KEYS[1], header(floor, 2) .. ARGV[1], 'PX', ARGV[2])
return {1}
"""

# A row older than the lease's floor was read before a delete that is not in the store
# yet (a write-back delete pending in another process): the fill is refused and the
# floor's tombstone put back, as LEASE_RELEASE does. Deleting the key instead would
# let the next reader's lease (floor 0) fill that same old row, and the copy would
# outlive the delete once it is flushed (guarantee 4).
# KEYS[1] key; ARGV[1] token; ARGV[2] entry, or '' for "not found"; ARGV[3] PX or '';
# ARGV[4] tombstone PX.
LEASE_FILL = COMMON + """
local cur, flag = current(KEYS[1])
if flag ~= 2 or string.sub(cur, 10) ~= ARGV[1] then return 0 end
local entry = ARGV[2]
if entry == '' then
  entry = header(string.sub(cur, 2, 8), 3)
elseif cmp(cur, entry) > 0 then
  redis.call('SET', KEYS[1], header(string.sub(cur, 2, 8), 1), 'PX', ARGV[4])
  return 0
end
local err = put(KEYS[1], entry, ARGV[3])
if err then return err end
return 1
"""

# A holder whose load failed gives its lease up, so the other readers load at once
# instead of polling out the lease (10 s by default) while the store is down; a lease
# that replaced a tombstone leaves that tombstone (its version stays the floor).
# KEYS[1] key; ARGV[1] token; ARGV[2] tombstone PX. Returns 1 when released.
LEASE_RELEASE = COMMON + """
local cur, flag = current(KEYS[1])
if flag ~= 2 or string.sub(cur, 10) ~= ARGV[1] then return 0 end
local floor = string.sub(cur, 2, 8)
if floor == string.rep('\\0', 7) then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], header(floor, 1), 'PX', ARGV[2])
end
return 1
"""

# The hybrid clock of a prefix: each accepted write gets
#     v = max(last + 1, Redis TIME in microseconds, version held at the key + 1)
# where `last` (kept at the clock key as a decimal string) is the version the previous
# publish handed out. Versions rise with every write under the prefix, from any process,
# even when TIME steps back (a failover, NTP) or the clock key was evicted; they stay
# near TIME (2**50.6 in 2025, exact as Lua numbers up to 2**53) and above every store
# sequence. A clock (or a version at the key) more than 2**40 us (12.7 days) ahead of
# TIME, or a clock that holds no number, is damage: it is ignored, so the versions stay
# far below 2**53. Values take ARGV[1] as PX ('' none), tombstones ARGV[2].
# KEYS[1] the clock; KEYS[2..n] entries; ARGV[2i+1], ARGV[2i+2] the kind ('1' DELETE,
# else a value) and payload of KEYS[i+1]. Returns the versions, one per entry.
PUBLISH = COMMON + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local horizon = now + 1099511627776
local last = tonumber(redis.call('GET', KEYS[1]) or '')
if not last or last ~= last or last < 0 or last > horizon then last = 0 end
last = math.floor(last)
local out = {}
for i = 2, #KEYS do
  local v = math.max(last + 1, now)
  local cur = current(KEYS[i])
  if cur then
    local held = 0
    for j = 2, 8 do held = held * 256 + string.byte(cur, j) end
    if held < horizon then v = math.max(v, held + 1) end
  end
  local ver, n = {}, v
  for j = 7, 1, -1 do ver[j] = n % 256; n = math.floor(n / 256) end
  ver = string.char(unpack(ver))
  local err
  if ARGV[2 * i - 1] == '1' then
    err = put(KEYS[i], header(ver, 1), ARGV[2])
  else
    err = put(KEYS[i], header(ver, 0) .. ARGV[2 * i], ARGV[1])
  end
  if err then return err end
  last = v
  out[#out + 1] = v
end
redis.call('SET', KEYS[1], string.format('%.0f', last))
return out
"""

# KEYS[1] key; ARGV[1] the exact bytes to remove (an entry that failed to decode).
DELETE_IF_SAME = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# ``n`` versions of the hybrid clock above (for writes that go to the store first:
# write-through, write-around), without writing any entry.
# KEYS[1] the clock; ARGV[1] n. Returns the versions.
VERSIONS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local horizon = now + 1099511627776
local last = tonumber(redis.call('GET', KEYS[1]) or '')
if not last or last ~= last or last < 0 or last > horizon then last = 0 end
last = math.floor(last)
local out = {}
for i = 1, tonumber(ARGV[1]) do
  last = math.max(last + 1, now)
  out[i] = last
end
redis.call('SET', KEYS[1], string.format('%.0f', last))
return out
"""
