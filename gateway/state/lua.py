"""The Redis backend's Lua scripts: one per hot-path call, each atomic and one round trip
(``BATCH`` runs a turn's ``after`` reports and ``before`` tickets as one call).

They mirror :mod:`gateway.state.memory`, :mod:`gateway.state.circuits` and
:mod:`gateway.state.windows` line for line; the contract suite holds both to the same answers.
Arguments: ``ARGV[1]`` key prefix, ``ARGV[2]`` now (epoch seconds), ``ARGV[3]`` a JSON
document (:mod:`gateway.state.codec`; ``BEFORE`` takes the candidates' part of its ticket as
``ARGV[4]``, ``AFTER`` the breaker settings);
the answer is JSON too. Key names are built from the
prefix inside the scripts; in Redis Cluster the prefix is a hash tag (``{glmgw}``), so every key
a script touches is in one slot, and the scripts are sent to that slot's master
(:mod:`gateway.state.redis_conn`).

Keys (``P`` = prefix)::

    P:cb:open            ZSET  tripped circuits -> until when they refuse callers
    P:cb:ids             SET   every deployment ever recorded
    P:cb:<tid>           HASH  consecutive trips open_until probe_until requests failures
                               last_failure
    P:lat                HASH  deployment -> mean latency of successes (EWMA), seconds
    P:ew:<tid>:r|f       HASH  error-rate window buckets (attempts, failures)
    P:rl:d|k:<id>:r|t    HASH  per-minute windows (requests, tokens) of a deployment / key
    P:rs:<kid>           HASH  cost reservations in flight (micro-USD, one-minute buckets)
    P:sp:<kid>:<period>  STR   settled spend in micro-USD
    P:if:<kid>           ZSET  in-flight slots of a key with max_in_flight -> when each expires
    P:sf:<tid>           ZSET  in-flight slots of a spread deployment -> when each expires
    P:key:<kid>          HASH  json, revoked
    P:keys               SET   key ids;  P:keys:ver  STR  bumped on every key change
    P:dn:<proc>:<n>      STR   bitmap: reports already applied (a replayed one is skipped),
                               one bit per report id of a process, 65536 a key, >= 1 day
    P:done:<report id>   STR   the same for an id of another form, 1 day
    P:pin:<session>      STR   a session's pinned deployment: ``<tid>\n<until>`` (PX: its TTL)
"""

from __future__ import annotations

_HELPERS = """
local P, now = ARGV[1], tonumber(ARGV[2])
local RS, RN, CS, CN = 1, 60, 60, 15
local OPEN = P .. ':cb:open'
local cfg = nil  -- the breaker settings (a call with reports)

-- The window's sum (stale buckets dropped) and its HGETALL reply: the live buckets are
-- only listed (live_of) when a refusal needs them, not on every call. A bucket id as long as
-- a non-negative edge's is compared as a string (digits of equal length compare as their
-- numbers: no tonumber for each of up to 60 ids per window); any other is parsed.
local function wsum(key, size, n)
  local edge = math.floor(now / size) - n
  local es = edge >= 0 and tostring(edge) or ''
  local el = #es
  local all = redis.call('HGETALL', key)
  local sum, stale = 0, nil
  for i = 1, #all, 2 do
    local b = all[i]
    local old
    if #b == el then old = b <= es else old = tonumber(b) <= edge end
    if old then
      if stale == nil then stale = {} end
      stale[#stale + 1] = b
    else
      sum = sum + tonumber(all[i + 1])
    end
  end
  if stale ~= nil then redis.call('HDEL', key, unpack(stale)) end
  return sum, all
end

local function live_of(all, size, n)
  local edge = math.floor(now / size) - n
  local live = {}
  for i = 1, #all, 2 do
    local b = tonumber(all[i])
    if b > edge then live[#live + 1] = {b, tonumber(all[i + 1])} end
  end
  return live
end

local function room_in(all, used, limit, need, size, n)
  if need > limit then return -1 end
  local live = live_of(all, size, n)
  table.sort(live, function(a, b) return a[1] < b[1] end)
  local freed = 0
  for _, e in ipairs(live) do
    freed = freed + e[2]
    if used - freed + need <= limit then return (e[1] + n) * size - now end
  end
  return 0
end

local function reset_in(all, size, n)
  local newest = nil
  for _, e in ipairs(live_of(all, size, n)) do
    if newest == nil or e[1] > newest then newest = e[1] end
  end
  if newest == nil then return 0 end
  return (newest + n) * size - now
end

-- A report applied already (a replay after a lost answer) is skipped. An id made by
-- gateway.state.redis (``<process hex>-<counter hex>``) is one bit of a per-process bitmap
-- of 65536 reports (8 KiB), kept at least a day after its newest bit; any other id is a key
-- of its own for a day.
local DAY = 86400
local kept = {}  -- bitmaps whose TTL this call has seen to
local function fresh(rid)
  local who, n = string.match(rid, '^(%x+)%-(%x+)$')
  if who == nil or #n > 12 then
    return redis.call('SET', P .. ':done:' .. rid, 1, 'NX', 'EX', DAY) ~= false
  end
  n = tonumber(n, 16)
  local key = P .. ':dn:' .. who .. ':' .. math.floor(n / 65536)
  if redis.call('SETBIT', key, n % 65536, '1') == 1 then return false end
  if not kept[key] then
    kept[key] = true
    if redis.call('TTL', key) < DAY then redis.call('EXPIRE', key, DAY + 3600) end
  end
  return true
end

local EMPTY = {}  -- read-only

-- An error window got a new bucket: the buckets of the window before it go (stale: no sum
-- counts them). Rate windows are summed, and so swept, by the request that writes them; an
-- error window is read only on a failure or a health read, and while its deployment only
-- succeeds it would keep a field per bucket for as long as traffic keeps it alive. Each new
-- bucket sweeps the n + 2 ids a window behind it: with buckets at most n apart (further, and
-- the hash has expired) every stale one is swept.
local function sweep(key, bucket, n)
  local old = {}
  for b = bucket - 2 * n - 2, bucket - n - 1 do old[#old + 1] = string.format('%d', b) end
  redis.call('HDEL', key, unpack(old))
end

-- Add to a window's bucket; a new bucket gives the hash a window to live past it (and, for
-- an error window, sweeps: ``swept``).
local function bump(key, bucket, amount, size, n, swept)
  if redis.call('HINCRBY', key, bucket, amount) == amount then
    redis.call('EXPIRE', key, (n + 1) * size)
    if swept then sweep(key, bucket, n) end
  end
end

-- A candidate with limits of its own: nil when it has room, and the share of them used.
local function saturation(id, c, tokens)
  if c == nil then return nil, 0 end  -- no limits of its own
  local base = P .. ':rl:d:' .. id
  local use = 0
  if c.rpm then
    local used, live = wsum(base .. ':r', RS, RN)
    if used + 1 > c.rpm then return {room_in(live, used, c.rpm, 1, RS, RN), 'rpm', c.rpm} end
    use = used / c.rpm
  end
  if c.tpm then
    local used, live = wsum(base .. ':t', RS, RN)
    if used + tokens > c.tpm then
      return {room_in(live, used, c.tpm, tokens, RS, RN), 'tpm', c.tpm}
    end
    use = math.max(use, used / c.tpm)
  end
  return nil, use
end

local function judge(k, tokens)
  local revoked = redis.call('HGET', P .. ':key:' .. k.id, 'revoked')
  if revoked ~= '0' then return {refused = 'revoked', retry = 0} end
  local base = P .. ':rl:k:' .. k.id
  local ur, lr = wsum(base .. ':r', RS, RN)
  local ut, lt = wsum(base .. ':t', RS, RN)
  local spend = tonumber(redis.call('GET', P .. ':sp:' .. k.id .. ':' .. k.period) or '0')
  local reserved = wsum(P .. ':rs:' .. k.id, CS, CN)
  local held = 0
  if k.mif then
    local IF = P .. ':if:' .. k.id
    redis.call('ZREMRANGEBYSCORE', IF, '-inf', now)
    held = redis.call('ZCARD', IF)
  end
  local v = {retry = 0, spend = spend, budget = k.budget, rpm = k.rpm, tpm = k.tpm, mif = k.mif}
  if k.rpm and ur + 1 > k.rpm then
    v.refused, v.retry = 'rpm', room_in(lr, ur, k.rpm, 1, RS, RN)
  elseif k.tpm and ut + tokens > k.tpm then
    v.refused, v.retry = 'tpm', room_in(lt, ut, k.tpm, tokens, RS, RN)
  elseif k.budget and spend + reserved + k.cost > k.budget then
    if k.cheap and spend + reserved + k.cheap <= k.budget then
      v.downgraded = true
    else
      v.refused, v.retry = 'budget', (k.pend and (k.pend - now) or -1)
    end
  end
  if not v.refused and k.mif and held + 1 > k.mif then
    v.refused, v.retry = 'concurrency', 1
  end
  local taken = v.refused and 0 or 1
  if k.mif then v.held = held + taken end
  v.cost = (v.refused and 0) or (v.downgraded and k.cheap) or k.cost
  v.rpm_left = math.max(0, (k.rpm or 0) - ur - taken)
  v.tpm_left = math.max(0, (k.tpm or 0) - ut - tokens * taken)
  local full = (math.floor(now / RS) + RN) * RS - now
  v.rpm_reset = v.refused and reset_in(lr, RS, RN) or full
  v.tpm_reset = v.refused and reset_in(lt, RS, RN) or full
  v.reserved = reserved + v.cost
  return v
end

-- Read once per script call (a BATCH call runs many tickets): the keys' version (no script
-- changes it) and the tripped circuits (``touch_open`` after a write to them drops the copy).
local ver_seen, open_seen = nil, nil
local function keys_ver()
  if ver_seen == nil then ver_seen = tonumber(redis.call('GET', P .. ':keys:ver') or '0') end
  return ver_seen
end
local function open_list()
  if open_seen == nil then
    open_seen = redis.call('ZRANGE', OPEN, '0', '-1', 'WITHSCORES')
  end
  return open_seen
end
local function touch_open() open_seen = nil end
-- Deployments whose latency this call has answered already: View.latency_s only feeds the
-- replica's snapshot, so a batch's tickets answer each one once (the first that asks).
local lat_sent = nil
-- Latencies this call's reports have read or moved, and those to write back (once each, by
-- lat_flush, before any ticket reads them): a batch's reports on one deployment read and
-- write its mean once, not once each.
local lat_now, lat_moved = {}, nil
local function lat_of(id)
  local v = lat_now[id]
  if v == nil then
    v = tonumber(redis.call('HGET', P .. ':lat', id)) or false
    lat_now[id] = v
  end
  return v or nil
end
-- Successes on a quiet circuit (closed, nothing to reset: all its fields 0) only count: this
-- call adds them up per deployment and error-window bucket and writes each sum once
-- (cb_flush: before anything else reads or writes that circuit, and at the end of the reports).
local quiet, counted, buckets = {}, {}, {}
local function count_ok(id, eb)
  counted[id] = (counted[id] or 0) + 1
  local b = buckets[id]
  if b == nil then
    b = {}
    buckets[id] = b
  end
  b[eb] = (b[eb] or 0) + 1
end
local function cb_flush(id)
  local n = counted[id]
  if n == nil then return end
  counted[id] = nil
  if redis.call('HINCRBY', P .. ':cb:' .. id, 'requests', n) == n then
    redis.call('SADD', P .. ':cb:ids', id)
  end
  local key, ebs = P .. ':ew:' .. id .. ':r', {}
  for eb in pairs(buckets[id]) do ebs[#ebs + 1] = eb end
  table.sort(ebs)  -- (oldest first: a newer bucket's sweep reaches the older ones)
  for _, eb in ipairs(ebs) do bump(key, eb, buckets[id][eb], cfg.wsize, 12, true) end
  buckets[id] = nil
end
local function cb_flush_all()
  for id in pairs(counted) do cb_flush(id) end
end
local function lat_flush()
  if lat_moved == nil then return end
  local args = {}
  for id in pairs(lat_moved) do
    args[#args + 1] = id
    args[#args + 1] = tostring(lat_now[id])
  end
  redis.call('HSET', P .. ':lat', unpack(args))
  lat_moved = nil
end

-- A ticket's candidates' part (``cands``, ``lim``, ``pk``: the same bytes for every ticket of
-- a plan head) is decoded once per call and shared, read-only, by the tickets that send it.
local parts = {}
local function ticket_of(doc, part)
  local t, c = cjson.decode(doc), parts[part]
  if c == nil then
    c = cjson.decode(part)
    parts[part] = c
  end
  t.cands, t.lim, t.pk, t.lease_s = c.cands, c.lim, c.pk, c.lease_s
  return t
end

local function wadd(key, bucket, amount, size, n, swept)
  local cur = math.floor(now / size)
  if amount == 0 or bucket <= cur - n then return end
  bump(key, bucket, amount, size, n, swept)
end

-- A report's outcome on its deployment's circuit (mirrors gateway.state.circuits).
local function rate_hit(id)
  local seen = wsum(P .. ':ew:' .. id .. ':r', cfg.wsize, 12)
  if seen < cfg.wmin then return false end
  local failed = wsum(P .. ':ew:' .. id .. ':f', cfg.wsize, 12)
  return failed >= cfg.rate * seen
end

local function lat_move(o)
  local lat = lat_of(o.id)
  lat_now[o.id] = lat and (lat + cfg.alpha * (o.lat - lat)) or o.lat
  if lat_moved == nil then lat_moved = {} end
  lat_moved[o.id] = true
end

local function circuit(o)
  if o.ok and quiet[o.id] then
    count_ok(o.id, math.floor(now / cfg.wsize))
    lat_move(o)
    return
  end
  cb_flush(o.id)
  quiet[o.id] = nil
  local key = P .. ':cb:' .. o.id
  local c = redis.call('HMGET', key, 'consecutive', 'trips', 'open_until', 'probe_until')
  local consecutive, trips = tonumber(c[1]) or 0, tonumber(c[2]) or 0
  local open_until = tonumber(c[3]) or 0
  local eb = math.floor(now / cfg.wsize)
  if redis.call('HINCRBY', key, 'requests', '1') == 1 then  -- a deployment's first outcome
    redis.call('SADD', P .. ':cb:ids', o.id)
  end
  wadd(P .. ':ew:' .. o.id .. ':r', eb, 1, cfg.wsize, 12, true)
  if o.ok then
    lat_move(o)
    -- A closed circuit that never tripped since its last reset has nothing to reset: a
    -- circuit in OPEN always has trips >= 1 (a trip, open_until and a probe's lease all
    -- need one), and probe_until is only set while it is in OPEN.
    if c[1] ~= '0' then redis.call('HSET', key, 'consecutive', 0) end
    if open_until <= now and (trips ~= 0 or open_until ~= 0 or (tonumber(c[4]) or 0) ~= 0) then
      redis.call('HSET', key, 'trips', 0, 'open_until', 0, 'probe_until', 0)
      redis.call('ZREM', OPEN, o.id)
      touch_open()
    end
    quiet[o.id] = open_until <= now  -- then all its fields are 0
    return
  end
  redis.call('HINCRBY', key, 'failures', 1)
  wadd(P .. ':ew:' .. o.id .. ':f', eb, 1, cfg.wsize, 12, true)
  consecutive = consecutive + 1
  redis.call('HSET', key, 'consecutive', consecutive, 'last_failure', o.cls or '')
  local explicit = (o.cd and o.cd > 0) and o.cd or nil
  if open_until > now then
    if explicit then
      local u = math.max(open_until, now + math.min(explicit, cfg.maxe))
      redis.call('HSET', key, 'open_until', tostring(u))
      local held = tonumber(redis.call('HGET', key, 'probe_until') or '0')
      redis.call('ZADD', OPEN, math.max(u, held), o.id)
      touch_open()
    end
    return
  end
  local cd = nil
  if explicit then
    cd = math.min(explicit, cfg.maxe)
  elseif trips > 0 or consecutive >= cfg.threshold or rate_hit(o.id) then
    cd = math.min(cfg.cooldown * 2 ^ math.min(trips, 16), cfg.maxc)
  end
  if cd then
    redis.call('HSET', key, 'trips', trips + 1, 'open_until', tostring(now + cd), 'probe_until', 0)
    redis.call('ZADD', OPEN, now + cd, o.id)
    touch_open()
  end
end

local function among(outcomes, id)  -- the report recorded an outcome of this deployment
  for _, o in ipairs(outcomes) do
    if o.id == id then return true end
  end
  return false
end
"""

_BEFORE_BODY = """
-- (open, lat, sat and a lease's probes are only written when not empty: the answer is
-- encoded, and read, member by member)
local out = {}
local ver = keys_ver()
if ver ~= 0 then out.ver = ver end
if t.pin then
  local v = redis.call('GET', P .. ':pin:' .. t.pin)
  local tid, till
  if v then tid, till = string.match(v, '^(.*)\\n([^\\n]+)$') end
  if tid and tonumber(till) > now then out.pin = {tid, till} end  -- (as written: a number)
end
local tripped, opened = EMPTY, nil
local zl = open_list()
if #zl > 0 then tripped = {} end
for i = 1, #zl, 2 do
  local until_ = tonumber(zl[i + 1])
  tripped[zl[i]] = true
  if until_ > now then
    if opened == nil then opened = {} end
    opened[zl[i]] = until_ - now
  end
end
out.open = opened

local lim = t.lim or EMPTY

local avail, half, ids = nil, EMPTY, t.cands
if #zl == 0 and t.lim == nil and t.fl == nil then
  avail = ids  -- all of them (shared with the call's other tickets: copied before a change)
else
  local spread = {}
  if t.fl then
    out.use = {}
    for _, id in ipairs(t.fl.ids) do spread[id] = true end
  end
  avail, half = {}, {}
  for _, id in ipairs(ids) do
    if opened == nil or opened[id] == nil then
      local sat, use = saturation(id, lim[id], t.tokens)
      if sat then
        if out.sat == nil then out.sat = {} end
        out.sat[id] = sat
      else
        avail[#avail + 1] = id
        if tripped[id] then half[#half + 1] = id end
        if use > 0 and spread[id] then out.use[id] = use end
      end
    end
  end
end
if out.pin and t.pk and #avail > 1 then  -- an available pinned candidate goes first
  if avail == ids then avail = {unpack(ids)} end
  for i, id in ipairs(avail) do
    if id == out.pin[1] then
      for _, k in ipairs(t.pk) do
        if k == id then table.insert(avail, 1, table.remove(avail, i)) break end
      end
      break
    end
  end
end
local ask = ids
if lat_sent == nil then
  lat_sent = {}
elseif lat_sent[ids] then  -- these candidates (this part's table) were answered
  ask = EMPTY
else
  ask = {}
  for _, id in ipairs(ids) do
    if not lat_sent[id] then ask[#ask + 1] = id end
  end
end
lat_sent[ids] = true
if #ask > 0 then
  local lats, lat = redis.call('HMGET', P .. ':lat', unpack(ask)), nil
  for i, id in ipairs(ask) do
    lat_sent[id] = true
    if lats[i] then
      if lat == nil then lat = {} end
      lat[id] = tonumber(lats[i])
    end
  end
  out.lat = lat
end
local fl = t.fl
if fl then
  out.inf = {}
  for _, id in ipairs(fl.ids) do
    local F = P .. ':sf:' .. id
    redis.call('ZREMRANGEBYSCORE', F, '-inf', now)
    out.inf[id] = redis.call('ZCARD', F)
  end
end
if #avail == 0 then return cjson.encode(out) end

local v = nil
if t.key then
  v = judge(t.key, t.tokens)
  out.verdict = v
end
if t.reserve == false or (v and v.refused) then return cjson.encode(out) end

local sec = math.floor(now)
local lease = {second = sec}
if #half > 0 then
  local probes = {}
  for _, id in ipairs(half) do
    redis.call('HSET', P .. ':cb:' .. id, 'probe_until', tostring(now + t.lease_s))
    redis.call('ZADD', OPEN, now + t.lease_s, id)
    probes[#probes + 1] = id
  end
  touch_open()
  lease.probes = probes
end
local first = avail[1]
if not (v and v.downgraded) and lim[first] then
  local base = P .. ':rl:d:' .. first
  wadd(base .. ':r', sec, 1, RS, RN)
  wadd(base .. ':t', sec, t.tokens, RS, RN)
  lease.dep = first
end
if fl and not (v and v.downgraded) and out.inf[first] then
  local id = first
  local F = P .. ':sf:' .. id
  redis.call('ZADD', F, now + fl.hold, fl.slot)
  local ttl = math.ceil(fl.hold) + 1
  if redis.call('TTL', F) < ttl then redis.call('EXPIRE', F, ttl) end
  out.inf[id] = out.inf[id] + 1
  lease.fdep, lease.fslot = id, fl.slot
end
if t.key then
  local base = P .. ':rl:k:' .. t.key.id
  wadd(base .. ':r', sec, 1, RS, RN)
  wadd(base .. ':t', sec, t.tokens, RS, RN)
  wadd(P .. ':rs:' .. t.key.id, math.floor(now / CS), v.cost, CS, CN)
  lease.cost = v.cost
  if t.key.mif then
    local IF = P .. ':if:' .. t.key.id
    redis.call('ZADD', IF, now + t.key.hold, t.key.slot)
    local ttl = math.ceil(t.key.hold) + 1
    if redis.call('TTL', IF) < ttl then redis.call('EXPIRE', IF, ttl) end
    lease.slot = t.key.slot
  end
end
out.lease = lease
return cjson.encode(out)
"""
"""What ``before`` does with its ticket ``t`` (a chunk ending in ``return``)."""
BEFORE = _HELPERS + "local t = ticket_of(ARGV[3], ARGV[4])\n" + _BEFORE_BODY

_AFTER_BODY = """
if r.rid and not fresh(r.rid) then return 0 end
local tokens, cost = r.tokens or 0, r.cost or 0  -- left out when 0
local outcomes = r.outcomes
for _, o in ipairs(outcomes) do circuit(o) end

local lease = r.lease
local skip = lease and lease.dep
local sec = math.floor(now)
for _, id in ipairs(r.attempts or EMPTY) do
  if id == skip then
    skip = nil
  else
    wadd(P .. ':rl:d:' .. id .. ':r', sec, 1, RS, RN)
  end
end
if not lease then
  if r.by and tokens > 0 then wadd(P .. ':rl:d:' .. r.by .. ':t', sec, tokens, RS, RN) end
  return 1
end
local ls = lease.second
if lease.dep then
  if skip then wadd(P .. ':rl:d:' .. lease.dep .. ':r', ls, -1, RS, RN) end
  wadd(P .. ':rl:d:' .. lease.dep .. ':t', ls, -lease.tokens, RS, RN)
end
if r.by and tokens > 0 then wadd(P .. ':rl:d:' .. r.by .. ':t', ls, tokens, RS, RN) end
if lease.fdep then redis.call('ZREM', P .. ':sf:' .. lease.fdep, lease.fslot) end
if lease.key then
  if lease.slot then redis.call('ZREM', P .. ':if:' .. lease.key, lease.slot) end
  wadd(P .. ':rl:k:' .. lease.key .. ':t', ls, tokens - lease.tokens, RS, RN)
  wadd(P .. ':rs:' .. lease.key, math.floor(ls / CS), -lease.cost, CS, CN)
  if cost > 0 then
    local sp = P .. ':sp:' .. lease.key .. ':' .. lease.period
    redis.call('INCRBY', sp, cost)
    if lease.pend then redis.call('EXPIREAT', sp, math.floor(lease.pend) + 90 * 86400) end
  end
end
for _, id in ipairs(lease.probes) do  -- (tripped: never a quiet one)
  local key = P .. ':cb:' .. id
  if not among(outcomes, id) and redis.call('ZSCORE', OPEN, id) then
    redis.call('HSET', key, 'probe_until', 0)
    redis.call('ZADD', OPEN, tonumber(redis.call('HGET', key, 'open_until') or '0'), id)
    touch_open()
  end
end
return 1
"""
"""What ``after`` does with its report ``r`` (a chunk ending in ``return``)."""
AFTER = (
    _HELPERS
    + "local r = cjson.decode(ARGV[3])\ncfg = cjson.decode(ARGV[4])\n"
    + "local function after_one()\n"
    + _AFTER_BODY
    + "end\nlocal done = after_one()\ncb_flush_all()\nlat_flush()\nreturn done\n"
)
"""``ARGV[3]`` the report, ``ARGV[4]`` the breaker settings (:func:`~gateway.state.codec.
breaker_doc`)."""

BATCH = (
    _HELPERS
    + "cfg = ARGV[2] ~= '' and cjson.decode(ARGV[2]) or nil\n"
    + "local function after_one(r)\n"
    + _AFTER_BODY
    + "end\nlocal function before_one(t)\n"
    + _BEFORE_BODY
    + """end
local out, nb = {}, tonumber(ARGV[3])
local first = 4 + 3 * nb
for i = first, #ARGV, 2 do
  now = tonumber(ARGV[i])
  out[nb + (i - first) / 2 + 1] = after_one(cjson.decode(ARGV[i + 1]))
end
cb_flush_all()
lat_flush()
for i = 1, nb do
  now = tonumber(ARGV[1 + 3 * i])
  out[i] = before_one(ticket_of(ARGV[2 + 3 * i], ARGV[3 + 3 * i]))
end
return out
"""
)
"""A turn's ``after`` reports and ``before`` tickets in one call (one EVALSHA instead of one
each: :class:`gateway.state.autopipe.AutoPipeline` folds them): ``ARGV[2]`` the breaker
settings (``''`` without reports), ``ARGV[3]`` the number of tickets, then each ticket's now,
document and candidates' part, then each report's now and document. Reports are applied
first, in order, each at its own now, then the tickets in order; the answer is ``{each
before's answer ..., each after's answer ...}``."""

HEALTH = (
    _HELPERS
    + """
local wsize = tonumber(ARGV[3])
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', P .. ':cb:ids')) do
  local h = redis.call('HGETALL', P .. ':cb:' .. id)
  local e = {id = id, wr = wsum(P .. ':ew:' .. id .. ':r', wsize, 12)}
  e.wf = wsum(P .. ':ew:' .. id .. ':f', wsize, 12)
  for i = 1, #h, 2 do e[h[i]] = h[i + 1] end
  e.lat = redis.call('HGET', P .. ':lat', id) or nil
  out[#out + 1] = e
end
if #out == 0 then return '[]' end
return cjson.encode(out)
"""
)

OPEN_UNTIL = """
local P, now = ARGV[1], tonumber(ARGV[2])
local r = cjson.decode(ARGV[3])
local OPEN = P .. ':cb:open'
if r.till <= now then return 0 end
for _, id in ipairs(r.ids) do
  local key = P .. ':cb:' .. id
  redis.call('SADD', P .. ':cb:ids', id)
  local c = redis.call('HMGET', key, 'trips', 'open_until')
  local trips, open_until = tonumber(c[1]) or 0, tonumber(c[2]) or 0
  if r.till > open_until then
    redis.call('HSET', key, 'trips', math.max(trips, 1), 'open_until', tostring(r.till),
      'probe_until', 0, 'last_failure', r.reason)
    redis.call('ZADD', OPEN, r.till, id)
  end
end
return 1
"""
"""``StateStore.open_until``: ``ARGV[3]`` is ``{"ids": [...], "till": epoch, "reason": str}``;
mirrors :meth:`gateway.state.circuits.Circuit.hold_open`."""
PIN_GET = r"""
local now = tonumber(ARGV[2])
local v = redis.call('GET', ARGV[1] .. ':pin:' .. ARGV[3])
if not v then return false end
local tid, till = string.match(v, '^(.*)\n([^\n]+)$')
if not tid or tonumber(till) <= now then return false end
return v
"""
"""``ARGV[3]`` the session key: ``<tid>\n<until>``, or nil without a live pin."""

PIN_SET = r"""
local now = tonumber(ARGV[2])
local session, tid, ttl = string.match(ARGV[3], '^([^\n]+)\n(.*)\n([^\n]+)$')
ttl = tonumber(ttl)
local v = tid .. '\n' .. string.format('%.3f', now + ttl)
redis.call('SET', ARGV[1] .. ':pin:' .. session, v, 'PX', math.ceil(ttl * 1000))
return 1
"""
"""``ARGV[3]`` = ``<session>\n<tid>\n<ttl seconds>``: (re)pin, the TTL restarted."""
