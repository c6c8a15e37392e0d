package storage

import "github.com/redis/go-redis/v9"

// The transition scripts. Each runs atomically in Redis; each checks every
// key's type before its first write, and Redis refuses a script for lack of
// memory only at its first write, so a transition is either complete or not
// applied at all.
//
// KEYS: 1 record hash, 2–5 the state indexes (queued, running, succeeded,
// failed), 6 the published stream.
// ARGV: 1 id, 2 now (RFC 3339), 3 now (µs, index score), 4 TTL (ms),
// 5 record key prefix, then the script's own arguments.
const transitionPrelude = `
local rec, id, now, score, ttl, recprefix = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local index = {queued = KEYS[2], running = KEYS[3], succeeded = KEYS[4], failed = KEYS[5]}

local function checkTypes()
  local want = {'hash', 'zset', 'zset', 'zset', 'zset', 'stream'}
  for i = 1, #KEYS do
    local t = redis.call('TYPE', KEYS[i])['ok']
    if t ~= 'none' and t ~= want[i] then
      return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' holds a ' .. t .. ', not a ' .. want[i])
    end
  end
end

-- move files the record under state only, and drops index members among
-- the oldest whose record has expired (List prunes the rest).
local function move(state)
  for _, k in pairs(index) do
    redis.call('ZREM', k, id)
  end
  local k = index[state]
  redis.call('ZADD', k, score, id)
  for _, m in ipairs(redis.call('ZRANGE', k, 0, 9)) do
    if m ~= id and redis.call('EXISTS', recprefix .. m) == 0 then
      redis.call('ZREM', k, m)
    end
  end
end
`

// createScript: ARGV 6… field/value pairs. A new record gets them all
// (state queued). An existing one (say a bare record a worker's Start made
// before the enqueuer wrote it) gets the fields it lacks, unless a field it
// has holds another value: then nothing is written. 'id', 'attempts' and
// 'queue' never conflict. Returns {1} if created, {0} if the record existed
// (and was filled in), or {-1, names of the differing fields…}.
var createScript = redis.NewScript(transitionPrelude + `
if redis.call('EXISTS', rec) == 1 then
  local differ, fill = {-1}, {}
  for i = 6, #ARGV - 1, 2 do
    local f, v = ARGV[i], ARGV[i + 1]
    if f ~= 'id' and f ~= 'attempts' then
      local cur = redis.call('HGET', rec, f)
      if not cur then
        table.insert(fill, f)
        table.insert(fill, v)
      elseif cur ~= v and f ~= 'queue' then
        table.insert(differ, f)
      end
    end
  end
  if #differ > 1 then return differ end
  if #fill > 0 then
    local e = checkTypes() if e then return e end
    redis.call('HSET', rec, 'updated_at', now, unpack(fill))
    redis.call('PEXPIRE', rec, ttl)
  end
  return {0}
end
local e = checkTypes() if e then return e end
redis.call('HSET', rec, 'state', 'queued', 'created_at', now, 'updated_at', now, unpack(ARGV, 6))
redis.call('PEXPIRE', rec, ttl)
move('queued')
return {1}
`)

// startScript: ARGV 6 attempt. Returns 0 for a succeeded record, else 1.
var startScript = redis.NewScript(transitionPrelude + `
local st = redis.call('HGET', rec, 'state')
if st == 'succeeded' then return 0 end
local e = checkTypes() if e then return e end
if not st then redis.call('HSET', rec, 'id', id, 'created_at', now) end
redis.call('HSET', rec, 'state', 'running', 'attempts', ARGV[6], 'started_at', now, 'updated_at', now)
redis.call('HDEL', rec, 'finished_at', 'progress_done', 'progress_total')
redis.call('PEXPIRE', rec, ttl)
move('running')
return 1
`)

// progressScript: KEYS 1 record only; ARGV 6 done, 7 total. Returns 0 for a
// missing or succeeded record, else 1.
var progressScript = redis.NewScript(`
local rec, now, ttl = KEYS[1], ARGV[2], ARGV[4]
local st = redis.call('HGET', rec, 'state')
if (not st) or st == 'succeeded' then return 0 end
redis.call('HSET', rec, 'progress_done', ARGV[6], 'progress_total', ARGV[7], 'updated_at', now)
redis.call('PEXPIRE', rec, ttl)
return 1
`)

// succeedScript: ARGV 6 stream MAXLEN, 7… field/value pairs of the
// outcome. Returns 1 the first time, 0 (having written nothing) after.
var succeedScript = redis.NewScript(transitionPrelude + `
local st = redis.call('HGET', rec, 'state')
if st == 'succeeded' then return 0 end
local e = checkTypes() if e then return e end
if not st then redis.call('HSET', rec, 'id', id, 'created_at', now, 'attempts', 0) end
if #ARGV > 6 then redis.call('HSET', rec, unpack(ARGV, 7)) end
redis.call('HSET', rec, 'state', 'succeeded', 'finished_at', now, 'updated_at', now)
redis.call('PEXPIRE', rec, ttl)
move('succeeded')
local names = {'type', 'event_id', 'result', 'base_digest', 'layer_digest'}
local vals = redis.call('HMGET', rec, unpack(names))
local entry = {'id', id}
for i, n in ipairs(names) do
  if vals[i] then
    table.insert(entry, n)
    table.insert(entry, vals[i])
  end
end
table.insert(entry, 'finished_at')
table.insert(entry, now)
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[6], '*', unpack(entry))
return 1
`)

// failScript: ARGV 6 message, 7 final ("1") or not ("0"). Returns 0 for a
// succeeded record, else 1. A final failure's reason stays: a handler that
// notices its cancellation after the operator's cancel was recorded does
// not overwrite "cancelled by an operator" with its own "interrupted".
var failScript = redis.NewScript(transitionPrelude + `
local st = redis.call('HGET', rec, 'state')
if st == 'succeeded' then return 0 end
if st == 'failed' and ARGV[7] ~= '1' then return 1 end
local e = checkTypes() if e then return e end
if not st then redis.call('HSET', rec, 'id', id, 'created_at', now, 'attempts', 0, 'state', 'running') end
redis.call('HSET', rec, 'last_error', ARGV[6], 'updated_at', now)
if ARGV[7] == '1' then
  redis.call('HSET', rec, 'state', 'failed', 'finished_at', now)
  move('failed')
elseif not st then
  move('running')
end
redis.call('PEXPIRE', rec, ttl)
return 1
`)

// pruneScript: KEYS 1 a state index; ARGV 1 record key prefix, 2 the
// index's state, 3… members. Removes the members whose record is gone or in
// another state, checked atomically. Returns how many it removed.
var pruneScript = redis.NewScript(`
local n = 0
for i = 3, #ARGV do
  if redis.call('HGET', ARGV[1] .. ARGV[i], 'state') ~= ARGV[2] then
    n = n + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return n
`)
