"""The Lua scripts of the queue: accepting writes, restoring copies' expiry, the
partition lock and the applied mark.

A write is accepted by one script per partition (:data:`ACCEPT`): it draws each write's
version from the partition's clock, writes the cached copy (when the cache's backend is
a RedisBackend on the same Redis: ``RedisBackend``'s entry layout, see
``backends/redis_format``) and XADDs the entry, all atomically, so the order of the
stream is the order of the versions and a reader never sees a copy whose entry is not
queued. Copies of pending writes are written without an expiry ("pinned": a copy that
expired while its write waits would let a read load the store's older row); the
consumer gives them their ttl back once the store has the write (:data:`SETTLE`). A
write of a namespace with ``expire=`` carries its expiry stamp (epoch seconds, the
entry's ``x``): its copy is pinned only until the stamp (the data ends then, and the
store's older rows ended before it), and never lives past it once settled.
"""

from __future__ import annotations

from ..backends import redis_format

__all__ = ["ACCEPT", "ITEM_ARGS", "LOCK_CHECK", "LOCK_RELEASE", "LOCK_RENEW", "SETTLE",
           "SET_MAX"]

#: ARGV slots per write in ACCEPT
ITEM_ARGS = 9

# KEYS[1] the stream; KEYS[2] the partition clock; KEYS[3..] copies (RedisBackend keys).
# ARGV[1] tombstone PX; ARGV[2] '1' when copies' payloads are JSON (a counter's copy is
# then a decimal the script adds to); ARGV[3] the number of writes; then ITEM_ARGS per
# write: namespace, key, kind ('0' SET, '1' DELETE, '2' ADD), payload, delta, ttl PX (''
# none), index of its copy in KEYS ('0': no copy here), base ('' none: a counter's value
# before this add, when the caller read it), expiry stamp (epoch seconds, '' none: a
# value's copy then lives until it, not pinned for good; the entry keeps it as 'x').
# Versions: v = max(last + 1, TIME in us, version held at the copy + 1), as RedisBackend's
# PUBLISH (same horizon: a clock or copy more than 2**40 us ahead of TIME is damage).
# Returns {-1, i, ...}: the writes i (counters) that need a base, nothing written; else
# {version, id, counter value ('' for other kinds), ...} per write.
ACCEPT = redis_format.COMMON + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local horizon = now + 1099511627776
local last = tonumber(redis.call('GET', KEYS[2]) or '')
if not last or last ~= last or last < 0 or last > horizon then last = 0 end
last = math.floor(last)
local json = ARGV[2] == '1'
local n = tonumber(ARGV[3])
local function counted(cur, flag)
  if flag == 1 or flag == 3 then return 0 end
  if flag == 0 and json then
    local p = string.sub(cur, 10)
    if string.len(p) <= 15 and string.match(p, '^%-?%d+$') then return tonumber(p) end
  end
  return nil
end
local need = {}
for i = 1, n do
  local a = 3 + (i - 1) * 9
  if ARGV[a + 3] == '2' and ARGV[a + 8] == '' then
    local ci = tonumber(ARGV[a + 7])
    local ok = false
    if ci > 0 then
      local cur, flag = current(KEYS[ci])
      ok = cur ~= nil and counted(cur, flag) ~= nil
    end
    if not ok then need[#need + 1] = i end
  end
end
if #need > 0 then
  table.insert(need, 1, -1)
  return need
end
local out = {}
for i = 1, n do
  local a = 3 + (i - 1) * 9
  local kind, payload, delta = ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local ci = tonumber(ARGV[a + 7])
  local v = math.max(last + 1, now)
  local cur, flag = nil, nil
  if ci > 0 then
    cur, flag = current(KEYS[ci])
    if cur then
      local held = 0
      for j = 2, 8 do held = held * 256 + string.byte(cur, j) end
      if held < horizon then v = math.max(v, held + 1) end
    end
  end
  local counter = ''
  local copy = payload
  if kind == '2' then
    local base = nil
    if cur then base = counted(cur, flag) end
    if base == nil then base = tonumber(ARGV[a + 8]) end
    local value = base + tonumber(delta)
    counter = string.format('%.0f', value)
    if json then copy = counter end
    payload = ''
  end
  if ci > 0 then
    local ver, m = {}, v
    for j = 7, 1, -1 do ver[j] = m % 256; m = math.floor(m / 256) end
    ver = string.char(unpack(ver))
    local err
    if kind == '1' then
      err = put(KEYS[ci], header(ver, 1), ARGV[1])
    else
      local px = ''
      if ARGV[a + 9] ~= '' then
        px = string.format('%.0f', math.max(1, math.floor(
          tonumber(ARGV[a + 9]) * 1000 - now / 1000)))
      end
      err = put(KEYS[ci], header(ver, 0) .. copy, px)
    end
    if err then return err end
  end
  local copyname = ''
  if ci > 0 then copyname = KEYS[ci] end
  local id = redis.call('XADD', KEYS[1], '*', 'n', ARGV[a + 1], 'k', ARGV[a + 2], 'o', kind,
    'p', payload, 'd', delta, 'v', string.format('%.0f', v), 't', ARGV[a + 6], 'c', copyname,
    'x', ARGV[a + 9])
  last = v
  out[#out + 1] = v
  out[#out + 1] = id
  out[#out + 1] = counter
end
redis.call('SET', KEYS[2], string.format('%.0f', last))
return out
"""

# KEYS the copies of a batch's keys; ARGV[3i - 2], ARGV[3i - 1], ARGV[3i]: the version
# of the write of KEYS[i] just applied, its ttl PX ('' none) and its expiry stamp (epoch
# seconds, '' none). A copy still holding exactly that write gets its ttl back when
# pinned (no expiry); with a stamp it lives min(ttl, what is left until the stamp), and
# is removed when the stamp has passed. A value older than the write (a fill that loaded
# the row before the write reached the store, after the copy was invalidated or
# evicted) is removed: the next read loads the store, which has the write now. Returns
# how many copies it changed.
SETTLE = redis_format.COMMON + """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local changed = 0
for i = 1, #KEYS do
  local cur, flag = current(KEYS[i])
  if flag == 0 then
    local held = 0
    for j = 2, 8 do held = held * 256 + string.byte(cur, j) end
    local v = tonumber(ARGV[3 * i - 2])
    local ttl, stamp = ARGV[3 * i - 1], ARGV[3 * i]
    if held < v then
      redis.call('DEL', KEYS[i])
      changed = changed + 1
    elseif held == v and stamp ~= '' then
      local px = math.floor(tonumber(stamp) * 1000 - now_ms)
      if ttl ~= '' then px = math.min(px, tonumber(ttl)) end
      local left = redis.call('PTTL', KEYS[i])
      if px < 1 then
        changed = changed + redis.call('DEL', KEYS[i])
      elseif left == -1 or left > px then
        changed = changed + redis.call('PEXPIRE', KEYS[i], string.format('%.0f', px))
      end
    elseif held == v and ttl ~= '' and redis.call('PTTL', KEYS[i]) == -1 then
      changed = changed + redis.call('PEXPIRE', KEYS[i], ttl)
    end
  end
end
return changed
"""

# KEYS[1] lock; ARGV[1] token; ARGV[2] PX. 1 while the token holds it.
LOCK_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# Before a batch is applied: KEYS[1] the partition's lock, KEYS[2] its stream; ARGV[1]
# token, ARGV[2] PX, ARGV[3] group, ARGV[4] this consumer's name, ARGV[5] the batch's
# first entry id ('' none). Returns 0: the lock is another's; 2: ours (renewed), but
# another consumer has entries of the stream delivered and unacknowledged (it read them
# after losing the lock: applying past them would trim them unapplied); 3: ours, but an
# entry older than the batch waits in our own pending list unseen (a read whose reply was
# lost and that the client sent again: it delivered entries we never got); 1: apply.
LOCK_CHECK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local p = redis.call('XPENDING', KEYS[2], ARGV[3])
if p[4] then
  for _, c in ipairs(p[4]) do
    if c[1] ~= ARGV[4] and tonumber(c[2]) > 0 then return 2 end
  end
end
if p[2] and ARGV[5] ~= '' then
  local am, an = string.match(p[2], '^(%d+)-(%d+)$')
  local bm, bn = string.match(ARGV[5], '^(%d+)-(%d+)$')
  am, an, bm, bn = tonumber(am), tonumber(an), tonumber(bm), tonumber(bn)
  if am < bm or (am == bm and an < bn) then return 3 end
end
return 1
"""

# KEYS[1] lock; ARGV[1] token.
LOCK_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS[1] the applied mark; ARGV[1] a stream id "ms-n": the mark only rises. (Ids are
# compared as two numbers: as one seq, ms * 2**20 + n, they pass 2**53, where a Lua
# number stops being exact.)
SET_MAX = """
local function parse(id)
  local ms, n = string.match(id or '', '^(%d+)-(%d+)$')
  if not ms then return -1, -1 end
  return tonumber(ms), tonumber(n)
end
local ms, n = parse(redis.call('GET', KEYS[1]))
local nms, nn = parse(ARGV[1])
if nms > ms or (nms == ms and nn > n) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""
