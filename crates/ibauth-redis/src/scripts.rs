//! The Lua scripts: every call that reads and then writes is one script, so Redis runs it
//! atomically (nothing else runs between its commands) and it costs one round trip. Scripts
//! are sent by hash (`EVALSHA`) and loaded on a `NOSCRIPT` (after a restart, or on a new
//! server) by `redis::Script`.
//!
//! Conventions: values are bounded here before they are sent back (a foreign or damaged value
//! is refused by an `IBAUTH_CORRUPT` error instead of crossing the wire); the lease key holds
//! `holder .. ' ' .. generation` (holders may hold spaces, generations are digits: split at the
//! last space); counters are decimal strings. Timestamps are the server's (`TIME`), in
//! milliseconds — below 2^53, so exact as Lua numbers, and printed by Lua as plain digits.

/// Shared helpers, prepended to the scripts that use them.
const PRELUDE: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- A counter that never goes back: the next value is above the stored one and at least the
-- server's time in milliseconds, so it keeps growing even if Redis lost the stored one
-- (a restart without persistence, a failover to a replica that had not received it).
local function bump(key)
  local stored = redis.call('GET', key)
  local last = 0
  if stored then
    last = tonumber(stored)
    if not last then return redis.error_reply('IBAUTH_CORRUPT counter ' .. key .. ' is not a number') end
  end
  local nxt = last + 1
  local floor = now_ms()
  if floor > nxt then nxt = floor end
  local text = string.format('%.0f', nxt)
  redis.call('SET', key, text)
  return text
end
-- nil when the lease key holds exactly `expected`; otherwise the reply for a fenced write:
-- {0, current lease value} (when there is one of a sane size).
local function fenced(key, expected)
  local cur = redis.call('GET', key)
  if cur == expected then return nil end
  if cur and string.len(cur) <= 1024 then return {0, cur} end
  return {0}
end
"#;

/// KEYS: lease, generation counter, last grant. ARGV: holder, ttl ms.
/// → {1, generation} granted (new, or the holder's own lease renewed);
///   {0, holder, generation, pttl} held by another.
const ACQUIRE: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then
  if string.len(cur) > 1024 then return redis.error_reply('IBAUTH_CORRUPT lease value of ' .. string.len(cur) .. ' bytes') end
  local sp = string.find(cur, ' [^ ]*$')
  if not sp then return redis.error_reply('IBAUTH_CORRUPT lease value without a generation') end
  local holder = string.sub(cur, 1, sp - 1)
  local gen = string.sub(cur, sp + 1)
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, gen}
  end
  return {0, holder, gen, redis.call('PTTL', KEYS[1])}
end
local gen = bump(KEYS[2])
if type(gen) == 'table' then return gen end
local value = ARGV[1] .. ' ' .. gen
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
redis.call('SET', KEYS[3], value)
return {1, gen}
"#;

/// KEYS: lease. ARGV: expected lease value, ttl ms. → {1} or fenced.
const RENEW: &str = r#"
local f = fenced(KEYS[1], ARGV[1])
if f then return f end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1}
"#;

/// KEYS: lease, last grant. ARGV: expected lease value, channel, event. → 1 released, 0 not
/// held (a no-op).
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"#;

/// KEYS: lease, last grant. → nil (never granted, or released); {lease value, pttl} (live);
/// {last grant, 0} (expired).
const LEASE_INFO: &str = r#"
local cur = redis.call('GET', KEYS[1])
local pttl = 0
if cur then
  pttl = redis.call('PTTL', KEYS[1])
else
  cur = redis.call('GET', KEYS[2])
  if not cur then return false end
end
if string.len(cur) > 1024 then return redis.error_reply('IBAUTH_CORRUPT lease value of ' .. string.len(cur) .. ' bytes') end
return {cur, pttl}
"#;

/// KEYS: lease, document, version counter, identities set. ARGV: expected lease value,
/// key id, bytes, generation, channel, identity. → {1, version} or fenced.
const STORE: &str = r#"
local f = fenced(KEYS[1], ARGV[1])
if f then return f end
local v = bump(KEYS[3])
if type(v) == 'table' then return v end
redis.call('HSET', KEYS[2], 'key_id', ARGV[2], 'bytes', ARGV[3], 'version', v, 'generation', ARGV[4])
redis.call('SADD', KEYS[4], ARGV[6])
redis.call('PUBLISH', ARGV[5], 'saved ' .. v .. '\n' .. ARGV[6])
return {1, v}
"#;

/// KEYS: lease, document, identities set. ARGV: expected lease value, channel, identity.
/// → {1} or fenced.
const REMOVE: &str = r#"
local f = fenced(KEYS[1], ARGV[1])
if f then return f end
if redis.call('DEL', KEYS[2]) == 1 then
  redis.call('SREM', KEYS[3], ARGV[3])
  redis.call('PUBLISH', ARGV[2], 'removed\n' .. ARGV[3])
end
return {1}
"#;

/// KEYS: document. ARGV: the largest document. → nil; {0, length} too large;
/// {1, key_id, bytes, version, generation}.
const LOAD: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local n = redis.call('HSTRLEN', KEYS[1], 'bytes')
if n > tonumber(ARGV[1]) or redis.call('HSTRLEN', KEYS[1], 'key_id') > 1024
  or redis.call('HSTRLEN', KEYS[1], 'version') > 32 or redis.call('HSTRLEN', KEYS[1], 'generation') > 32 then
  return {0, n}
end
local f = redis.call('HMGET', KEYS[1], 'key_id', 'bytes', 'version', 'generation')
return {1, f[1], f[2], f[3], f[4]}
"#;

/// KEYS: identities set. ARGV: the most returned. → {0, count} too many; {1, members}.
const IDENTITIES: &str = r#"
local n = redis.call('SCARD', KEYS[1])
if n > tonumber(ARGV[1]) then return {0, n} end
return {1, redis.call('SMEMBERS', KEYS[1])}
"#;

/// KEYS: expiry zset, info hash. ARGV: member id, ttl ms, "leader about" text.
/// Drops members expired for a while, and lets both keys expire once every member would.
const HEARTBEAT: &str = r#"
local now = now_ms()
redis.call('HSET', KEYS[2], ARGV[1], string.format('%.0f', now) .. '\n' .. ARGV[3])
redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[2])), ARGV[1])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now), 'LIMIT', 0, 1000)
for _, id in ipairs(gone) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then
  local keep = tonumber(last[2]) - now + 60000
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', keep))
  redis.call('PEXPIRE', KEYS[2], string.format('%.0f', keep))
end
return 1
"#;

/// KEYS: expiry zset, info hash. ARGV: member id.
const LEAVE: &str = r#"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"#;

/// KEYS: expiry zset, info hash. ARGV: the most returned, the longest info.
/// → {now ms, id, info, id, info, …} for members whose expiry is after now.
const MEMBERS: &str = r#"
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%.0f', now), '+inf', 'LIMIT', 0, tonumber(ARGV[1]))
local out = {string.format('%.0f', now)}
for _, id in ipairs(ids) do
  local info = redis.call('HGET', KEYS[2], id)
  if info and string.len(info) <= tonumber(ARGV[2]) and string.len(id) <= 1024 then
    table.insert(out, id)
    table.insert(out, info)
  end
end
return out
"#;

/// KEYS: pacing lock, pacing document. ARGV: token, lock ttl ms, the largest document.
/// → {0, pttl} held by another; {1, document or nil} taken (again, if the token already held
/// it: a retried call); {2, length} too large (the lock is not taken).
const PACE_BEGIN: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return {0, redis.call('PTTL', KEYS[1])} end
local n = redis.call('STRLEN', KEYS[2])
if n > tonumber(ARGV[3]) then return {2, n} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, redis.call('GET', KEYS[2])}
"#;

/// KEYS: pacing lock, pacing document. ARGV: token, document. → 1 written, 0 the lock was
/// no longer this token's (nothing written).
const PACE_COMMIT: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[1])
return 1
"#;

/// KEYS: pacing lock. ARGV: token. Compare-and-delete.
const PACE_ABORT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
"#;

/// The scripts, hashed once per coordinator.
pub(crate) struct Scripts {
    pub acquire: redis::Script,
    pub renew: redis::Script,
    pub release: redis::Script,
    pub lease_info: redis::Script,
    pub store: redis::Script,
    pub remove: redis::Script,
    pub load: redis::Script,
    pub identities: redis::Script,
    pub heartbeat: redis::Script,
    pub leave: redis::Script,
    pub members: redis::Script,
    pub pace_begin: redis::Script,
    pub pace_commit: redis::Script,
    pub pace_abort: redis::Script,
}

impl Scripts {
    pub fn new() -> Self {
        let with_prelude = |body: &str| redis::Script::new(&format!("{PRELUDE}{body}"));
        Self {
            acquire: with_prelude(ACQUIRE),
            renew: with_prelude(RENEW),
            release: redis::Script::new(RELEASE),
            lease_info: redis::Script::new(LEASE_INFO),
            store: with_prelude(STORE),
            remove: with_prelude(REMOVE),
            load: redis::Script::new(LOAD),
            identities: redis::Script::new(IDENTITIES),
            heartbeat: with_prelude(HEARTBEAT),
            leave: redis::Script::new(LEAVE),
            members: with_prelude(MEMBERS),
            pace_begin: redis::Script::new(PACE_BEGIN),
            pace_commit: redis::Script::new(PACE_COMMIT),
            pace_abort: redis::Script::new(PACE_ABORT),
        }
    }
}
