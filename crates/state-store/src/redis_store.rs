//! The Redis backend. Every multi-step change is one Lua script, so concurrent nodes never see half a
//! change; time checks use the caller's `now` (kept in the records) and key TTLs only collect garbage.
//! The connection goes to one address, or to the primary Redis Sentinel names (`sentinel.rs`); with
//! `replicas` set, durable writes (appends, commits, leases, blobs, batches) are followed by `WAIT`
//! on the same link and reported as [`StateError::NotReplicated`] when the replicas do not confirm.
//!
//! Key layout, all under `{prefix}:`:
//! `reg:{aor}` hash contact -> binding JSON; `presence` / `presence-version` hashes agent -> state / version;
//! `version` the store-wide version counter; `queue:{q}` sorted set of call ids, `queue-payload:{q}` hash;
//! `blob:{ns}:{key}` hash {v, d, x}; `lease:{name}` hash {holder, token, until}; `fence:{name}` counter;
//! `bus:{topic}` pub/sub channel; `stream:{name}` stream with one field `d`; `rate:{key}` hash {m, t}.

use crate::batch::{BatchOutcome, BatchWrite, WriteBatch};
use crate::commit::StreamCommit;
use crate::error::{StateError, StateResult};
use crate::sentinel::{Conn, SentinelConn, needs_new_primary};
use crate::types::{
    Aor, Binding, BlobWrite, Expect, Fence, FencingToken, Lease, QueueEntry, QueueOrder, RateDecision,
    StreamEntry, StreamEntryId, TokenBucket, Versioned, WriteOutcome,
};
use domain::{AgentId, CallId, QueueId, Timestamp};
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection, PubSubStream};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamInfoGroupsReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, Script, Value};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

mod streams;

/// How long one command may take before the call fails (blocking stream reads get their own budget).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections kept for blocking stream reads between calls.
const MAX_IDLE_BLOCKING_CONNECTIONS: usize = 4;

/// Scripts, loaded once per process; `invoke_async` sends EVALSHA and falls back to loading the source.
struct Scripts {
    reg_upsert: Script,
    reg_live: Script,
    presence_put: Script,
    blob_put: Script,
    blob_delete: Script,
    queue_add: Script,
    queue_remove: Script,
    queue_list: Script,
    lease_acquire: Script,
    lease_renew: Script,
    lease_release: Script,
    rate_take: Script,
    apply_batch: Script,
    stream_commit: Script,
}

/// Fence check shared by every fenced script: KEYS[fence] holds the latest token of the lease; the
/// write goes ahead only if the presented token (ARGV[token], '' for an unfenced write) is that one.
macro_rules! fence_check {
    ($fence_key:literal, $token_arg:literal) => {
        concat!(
            "if ARGV[",
            $token_arg,
            "] ~= '' then\n  local f = tonumber(redis.call('GET', KEYS[",
            $fence_key,
            "]) or '0')\n  if f ~= tonumber(ARGV[",
            $token_arg,
            "]) then return {-1, f} end\nend\n"
        )
    };
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    // KEYS: reg hash. ARGV: contact, binding JSON, GC TTL ms, '1' if live at now.
    reg_upsert: Script::new(
        r"
if ARGV[4] == '0' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local ttl = tonumber(ARGV[3])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
",
    ),
    // KEYS: reg hash. ARGV: now ms. Drops lapsed (and undecodable) bindings, returns the live ones.
    reg_live: Script::new(
        r"
local all = redis.call('HGETALL', KEYS[1])
local now = tonumber(ARGV[1])
local live = {}
for i = 1, #all, 2 do
  local ok, b = pcall(cjson.decode, all[i + 1])
  local at = ok and type(b) == 'table' and tonumber(b['expires_at'])
  if at and at > now then
    live[#live + 1] = all[i + 1]
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return live
",
    ),
    // KEYS: presence hash, presence-version hash, version counter. ARGV: agent, expect, data.
    presence_put: Script::new(
        r"
local cur = redis.call('HGET', KEYS[2], ARGV[1])
cur = cur and tonumber(cur)
if ARGV[2] == 'absent' then
  if cur then return {0, cur} end
elseif ARGV[2] ~= 'any' then
  if cur ~= tonumber(ARGV[2]) then return {0, cur or 0} end
end
local v = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], v)
return {1, v}
",
    ),
    // KEYS: blob hash, version counter, fence counter.
    // ARGV: now, expect, data, expires-at ('0' never), GC TTL ms ('0' none), fence token ('' none).
    blob_put: Script::new(concat!(
        fence_check!("3", "6"),
        r"
local cur = false
local h = redis.call('HMGET', KEYS[1], 'v', 'x')
if h[1] then
  local x = tonumber(h[2]) or 0
  if x ~= 0 and x <= tonumber(ARGV[1]) then redis.call('DEL', KEYS[1]) else cur = tonumber(h[1]) end
end
if ARGV[2] == 'absent' then
  if cur then return {0, cur} end
elseif ARGV[2] ~= 'any' then
  if cur ~= tonumber(ARGV[2]) then return {0, cur or 0} end
end
local v = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'v', v, 'd', ARGV[3], 'x', ARGV[4])
if ARGV[5] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[5]) else redis.call('PERSIST', KEYS[1]) end
return {1, v}
"
    )),
    // KEYS: blob hash, fence counter. ARGV: fence token.
    blob_delete: Script::new(concat!(
        fence_check!("2", "1"),
        "return {1, redis.call('DEL', KEYS[1])}\n"
    )),
    // KEYS: queue zset, payload hash, fence counter. ARGV: fence token, call, score, payload.
    queue_add: Script::new(concat!(
        fence_check!("3", "1"),
        r"
local added = redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
return {1, added}
"
    )),
    // KEYS: queue zset, payload hash, fence counter. ARGV: fence token, call.
    queue_remove: Script::new(concat!(
        fence_check!("3", "1"),
        r"
local removed = redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[2])
return {1, removed}
"
    )),
    // KEYS: queue zset, payload hash. Returns call, score, payload triples in order.
    queue_list: Script::new(
        r"
local ids = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local out = {}
for i = 1, #ids, 2 do
  out[#out + 1] = ids[i]
  out[#out + 1] = ids[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], ids[i]) or ''
end
return out
",
    ),
    // KEYS: lease hash, fence counter. ARGV: now, holder, new expiry, GC TTL ms. Returns {token} or nil.
    lease_acquire: Script::new(
        r"
local h = redis.call('HMGET', KEYS[1], 'holder', 'token', 'until')
if h[1] and (tonumber(h[3]) or 0) > tonumber(ARGV[1]) then
  if h[1] ~= ARGV[2] then return false end
  redis.call('HSET', KEYS[1], 'until', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {tonumber(h[2])}
end
local t = redis.call('INCR', KEYS[2])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'holder', ARGV[2], 'token', t, 'until', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {t}
",
    ),
    // KEYS: lease hash. ARGV: now, holder, token, new expiry, GC TTL ms.
    lease_renew: Script::new(
        r"
local h = redis.call('HMGET', KEYS[1], 'holder', 'token', 'until')
if h[1] == ARGV[2] and tonumber(h[2]) == tonumber(ARGV[3]) and (tonumber(h[3]) or 0) > tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'until', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0
",
    ),
    // KEYS: lease hash. ARGV: holder, token.
    lease_release: Script::new(
        r"
local h = redis.call('HMGET', KEYS[1], 'holder', 'token')
if h[1] == ARGV[1] and tonumber(h[2]) == tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
",
    ),
    // KEYS: bucket hash. ARGV: capacity, refill per second, cost, now ms, ms to fill.
    // Mirrors `TokenBucket::take` in integer millitokens. Returns {allowed, remaining, retry-after ms}.
    rate_take: Script::new(
        r"
local cap = tonumber(ARGV[1]) * 1000
local rate = tonumber(ARGV[2])
local need = tonumber(ARGV[3]) * 1000
local now = tonumber(ARGV[4])
local fill = tonumber(ARGV[5])
local h = redis.call('HMGET', KEYS[1], 'm', 't')
local level = cap
if h[1] then
  local elapsed = now - (tonumber(h[2]) or now)
  if elapsed < 0 then elapsed = 0 end
  if elapsed > fill then elapsed = fill end
  level = math.min((tonumber(h[1]) or cap) + elapsed * rate, cap)
end
local allowed, wait = 0, 0
if level >= need then
  level = level - need
  allowed = 1
else
  wait = math.ceil((need - level) / rate)
end
redis.call('HSET', KEYS[1], 'm', level, 't', ARGV[4])
redis.call('PEXPIRE', KEYS[1], fill + 1000)
return {allowed, math.floor(level / 1000), wait}
",
    ),
    // KEYS: fence counter, version counter, presence hash, presence-version hash, then each write's keys.
    // ARGV: fence token, then each write as a tag and its arguments:
    //   qa <call> <score> <payload> (keys: zset, payload hash)   qr <call> (keys: zset, payload hash)
    //   pp <agent> <expect> <data>                               bp <data> <expires-at> <gc ttl> (key: blob)
    //   bd (key: blob)
    // Returns {-1, current token}, {0, 1-based index, current version or 0}, or {1, result per write}.
    apply_batch: Script::new(concat!(
        fence_check!("1", "1"),
        r"
local ops, a, k = {}, 2, 5
while a <= #ARGV do
  local tag = ARGV[a]
  if tag == 'qa' then
    ops[#ops + 1] = {tag, KEYS[k], KEYS[k + 1], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]}
    k, a = k + 2, a + 4
  elseif tag == 'qr' then
    ops[#ops + 1] = {tag, KEYS[k], KEYS[k + 1], ARGV[a + 1]}
    k, a = k + 2, a + 2
  elseif tag == 'pp' then
    ops[#ops + 1] = {tag, ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]}
    a = a + 4
  elseif tag == 'bp' then
    ops[#ops + 1] = {tag, KEYS[k], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]}
    k, a = k + 1, a + 4
  elseif tag == 'bd' then
    ops[#ops + 1] = {tag, KEYS[k]}
    k, a = k + 1, a + 1
  else
    return redis.error_reply('unknown batch write ' .. tostring(tag))
  end
end
for i, o in ipairs(ops) do
  if o[1] == 'pp' and o[3] ~= 'any' then
    local cur = redis.call('HGET', KEYS[4], o[2])
    cur = cur and tonumber(cur)
    if o[3] == 'absent' then
      if cur then return {0, i, cur} end
    elseif cur ~= tonumber(o[3]) then
      return {0, i, cur or 0}
    end
  end
end
local out = {1}
for _, o in ipairs(ops) do
  local r = 0
  if o[1] == 'qa' then
    r = redis.call('ZADD', o[2], o[5], o[4])
    redis.call('HSET', o[3], o[4], o[6])
  elseif o[1] == 'qr' then
    r = redis.call('ZREM', o[2], o[4])
    redis.call('HDEL', o[3], o[4])
  elseif o[1] == 'pp' then
    r = redis.call('INCR', KEYS[2])
    redis.call('HSET', KEYS[3], o[2], o[4])
    redis.call('HSET', KEYS[4], o[2], r)
  elseif o[1] == 'bp' then
    r = redis.call('INCR', KEYS[2])
    redis.call('DEL', o[2])
    redis.call('HSET', o[2], 'v', r, 'd', o[3], 'x', o[4])
    if o[5] ~= '0' then redis.call('PEXPIRE', o[2], o[5]) end
  elseif o[1] == 'bd' then
    r = redis.call('DEL', o[2])
  end
  out[#out + 1] = r
end
return out
"
    )),
    // KEYS: lease hash, fence counter, version counter, then each operation's key.
    // ARGV: holder, token, then each operation as a tag and its arguments:
    //   e <last id or empty> (key: stream)         a <max len or 0> <payload> (key: stream)
    //   k <group> <n> <id>... (key: stream)         b <data> (key: blob)
    //   t <min id> (key: stream)                    d (key: stream)
    // Returns {-1, current token} when the lease is no longer held as granted, {-2} when an expected
    // stream ends elsewhere, else {1, appended id...}. Nothing is written before every check passed.
    stream_commit: Script::new(
        r"
local h = redis.call('HMGET', KEYS[1], 'holder', 'token')
local f = tonumber(redis.call('GET', KEYS[2]) or '0')
if h[1] ~= ARGV[1] or tonumber(h[2]) ~= tonumber(ARGV[2]) or f ~= tonumber(ARGV[2]) then
  return {-1, f}
end
local ops, a, k = {}, 3, 4
while a <= #ARGV do
  local tag = ARGV[a]
  if tag == 'e' then
    local last = redis.call('XREVRANGE', KEYS[k], '+', '-', 'COUNT', 1)
    local id = ''
    if last[1] then id = last[1][1] end
    if id ~= ARGV[a + 1] then return {-2} end
    k, a = k + 1, a + 2
  elseif tag == 'a' then
    ops[#ops + 1] = {tag, KEYS[k], ARGV[a + 1], ARGV[a + 2]}
    k, a = k + 1, a + 3
  elseif tag == 'k' then
    local n = tonumber(ARGV[a + 2])
    ops[#ops + 1] = {tag, KEYS[k], ARGV[a + 1], a + 3, n}
    k, a = k + 1, a + 3 + n
  elseif tag == 'b' then
    ops[#ops + 1] = {tag, KEYS[k], ARGV[a + 1]}
    k, a = k + 1, a + 2
  elseif tag == 't' then
    ops[#ops + 1] = {tag, KEYS[k], ARGV[a + 1]}
    k, a = k + 1, a + 2
  elseif tag == 'd' then
    ops[#ops + 1] = {tag, KEYS[k]}
    k, a = k + 1, a + 1
  else
    return redis.error_reply('unknown commit operation ' .. tostring(tag))
  end
end
local out = {1}
for _, o in ipairs(ops) do
  if o[1] == 'a' then
    if o[3] == '0' then
      out[#out + 1] = redis.call('XADD', o[2], '*', 'd', o[4])
    else
      out[#out + 1] = redis.call('XADD', o[2], 'MAXLEN', '~', o[3], '*', 'd', o[4])
    end
  elseif o[1] == 'k' then
    local i = 0
    while i < o[5] do
      local j = math.min(i + 500, o[5])
      -- A group that does not exist (never read) has nothing to acknowledge: not an error.
      redis.pcall('XACK', o[2], o[3], unpack(ARGV, o[4] + i, o[4] + j - 1))
      i = j
    end
  elseif o[1] == 'b' then
    local v = redis.call('INCR', KEYS[3])
    redis.call('DEL', o[2])
    redis.call('HSET', o[2], 'v', v, 'd', o[3], 'x', 0)
  elseif o[1] == 't' then
    redis.call('XTRIM', o[2], 'MINID', o[3])
  elseif o[1] == 'd' then
    redis.call('DEL', o[2])
  end
end
return out
",
    ),
});

/// How long Redis keeps a key with a time-bound record after it lapses, so a node whose clock runs a
/// little behind still finds it: the record's own expiry decides, the TTL only frees memory.
fn gc_ttl_ms(ttl: Duration) -> u64 {
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX / 4);
    ms.saturating_mul(2).saturating_add(1_000)
}

fn expect_arg(expect: Expect) -> String {
    match expect {
        Expect::Any => "any".to_string(),
        Expect::Absent => "absent".to_string(),
        Expect::Version(v) => v.to_string(),
    }
}

fn token_arg(fence: Option<&Fence>) -> String {
    fence.map_or_else(String::new, |f| f.token.0.to_string())
}

/// Reads the `{code, n}` reply of a script: -1 is a stale fence, otherwise `n` is the result.
fn fenced_reply(reply: &[i64], fence: Option<&Fence>) -> StateResult<(i64, i64)> {
    let (code, n) = match reply {
        [code, n] => (*code, *n),
        _ => return Err(corrupt("script reply", "unexpected shape")),
    };
    if code == -1 {
        return Err(stale_fence(fence, n));
    }
    Ok((code, n))
}

/// The error for a script that refused a fenced write; `current` is the lease's latest token.
fn stale_fence(fence: Option<&Fence>, current: i64) -> StateError {
    match fence {
        Some(fence) => StateError::StaleFence {
            lease: fence.lease.clone(),
            presented: fence.token,
            current: FencingToken(u64::try_from(current).unwrap_or(0)),
        },
        None => corrupt("script reply", "fence rejected without a fence"),
    }
}

fn corrupt(location: impl Into<String>, reason: impl Into<String>) -> StateError {
    StateError::Corrupt {
        location: location.into(),
        reason: reason.into(),
    }
}

fn version_of(n: i64) -> Option<u64> {
    u64::try_from(n).ok().filter(|v| *v > 0)
}

fn write_outcome(code: i64, n: i64) -> WriteOutcome {
    match (code, version_of(n)) {
        (1, Some(version)) => WriteOutcome::Written { version },
        (_, current) => WriteOutcome::Conflict { current },
    }
}

/// Agent id -> stored presence record, as HGETALL returns it.
type PresenceData = Vec<(String, Vec<u8>)>;

/// The Redis backend. Clones share one multiplexed, self-reconnecting connection.
#[derive(Clone)]
pub(crate) struct RedisStore {
    source: Source,
    conn: Conn,
    prefix: String,
    /// Idle links for blocking reads, with the generation of the primary they reach.
    blocking_conns: Arc<Mutex<Vec<(u64, MultiplexedConnection)>>>,
    /// Durable writes wait until this many replicas have them (`WAIT`); 0: no wait.
    replicas: u32,
}

/// What [`RedisStore::connect_sentinel`] needs.
pub(crate) struct SentinelSettings<'a> {
    pub(crate) sentinels: &'a [String],
    pub(crate) service: &'a str,
    pub(crate) prefix: &'a str,
    pub(crate) db: i64,
    pub(crate) username: Option<&'a str>,
    pub(crate) password: Option<&'a str>,
    pub(crate) replicas: u32,
}

/// Where new links (subscriptions, blocking reads) go.
#[derive(Clone)]
enum Source {
    Direct(Client),
    Sentinel(SentinelConn),
}

/// How long a durable write waits for its replicas before it is reported as not confirmed.
const REPLICA_TIMEOUT: Duration = Duration::from_secs(1);

impl RedisStore {
    /// Connects (failing fast if Redis cannot be reached) and keeps keys under `prefix`.
    pub(crate) async fn connect(url: &str, prefix: &str) -> StateResult<Self> {
        // The URL may carry a password: the error names what failed, not the URL.
        let client =
            Client::open(url).map_err(|e| StateError::Config(format!("bad Redis URL ({:?})", e.kind())))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(3);
        let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        Ok(Self {
            source: Source::Direct(client),
            conn: Conn::Direct(conn),
            prefix: prefix.to_string(),
            blocking_conns: Arc::default(),
            replicas: 0,
        })
    }

    /// Connects to the primary the sentinels name for `service` and follows it across failovers.
    pub(crate) async fn connect_sentinel(settings: &SentinelSettings<'_>) -> StateResult<Self> {
        let mut primary = redis::RedisConnectionInfo::default().set_db(settings.db);
        if let Some(user) = settings.username {
            primary = primary.set_username(user);
        }
        if let Some(password) = settings.password {
            primary = primary.set_password(password);
        }
        let node = redis::sentinel::SentinelNodeConnectionInfo::default().set_redis_connection_info(primary);
        // The URLs may carry passwords: errors name what failed, not the URL.
        let sentinel = redis::sentinel::SentinelClient::build(
            settings.sentinels.to_vec(),
            settings.service.to_string(),
            Some(node),
            redis::sentinel::SentinelServerType::Master,
        )
        .map_err(|e| StateError::Config(format!("bad sentinel configuration ({:?})", e.kind())))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let conn = SentinelConn::connect(sentinel, config, settings.db).await?;
        Ok(Self {
            source: Source::Sentinel(conn.clone()),
            conn: Conn::Sentinel(conn),
            prefix: settings.prefix.to_string(),
            blocking_conns: Arc::default(),
            replicas: settings.replicas,
        })
    }

    /// A client for new links, and the generation of the primary it reaches.
    async fn client(&self) -> StateResult<(Client, u64)> {
        match &self.source {
            Source::Direct(c) => Ok((c.clone(), 0)),
            Source::Sentinel(s) => Ok(s.client().await?),
        }
    }

    fn generation(&self) -> u64 {
        match &self.source {
            Source::Direct(_) => 0,
            Source::Sentinel(s) => s.generation(),
        }
    }

    /// The link for a durable write: pinned when the write must be confirmed by replicas.
    async fn write_conn(&self) -> StateResult<Conn> {
        if self.replicas == 0 {
            Ok(self.conn.clone())
        } else {
            Ok(self.conn.pin().await?)
        }
    }

    /// Waits until the replicas have every write sent on `conn` (when the store is configured to).
    async fn confirm(&self, conn: &mut Conn) -> StateResult<()> {
        if self.replicas == 0 {
            return Ok(());
        }
        let timeout_ms = u64::try_from(REPLICA_TIMEOUT.as_millis()).unwrap_or(1_000);
        let acknowledged: u32 = redis::cmd("WAIT")
            .arg(self.replicas)
            .arg(timeout_ms)
            .query_async(conn)
            .await?;
        if acknowledged < self.replicas {
            conn.distrust();
            return Err(StateError::NotReplicated {
                wanted: self.replicas,
                acknowledged,
            });
        }
        Ok(())
    }

    pub(crate) async fn ping(&self) -> StateResult<()> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut k = self.prefix.clone();
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    fn fence_key(&self, fence: Option<&Fence>) -> String {
        self.key(&["fence", fence.map_or("", |f| f.lease.as_str())])
    }

    // ---- registrations ----

    pub(crate) async fn upsert_binding(
        &self,
        aor: &Aor,
        binding: &Binding,
        now: Timestamp,
    ) -> StateResult<()> {
        let json = serde_json::to_string(binding)?;
        let ttl = gc_ttl_ms(binding.expires_at.since(now));
        let live = if binding.is_live(now) { "1" } else { "0" };
        let mut conn = self.conn.clone();
        let _: i64 = SCRIPTS
            .reg_upsert
            .key(self.key(&["reg", aor.as_str()]))
            .arg(&binding.contact)
            .arg(json)
            .arg(ttl)
            .arg(live)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    pub(crate) async fn remove_binding(&self, aor: &Aor, contact: &str) -> StateResult<bool> {
        let n: i64 = redis::cmd("HDEL")
            .arg(self.key(&["reg", aor.as_str()]))
            .arg(contact)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(n > 0)
    }

    pub(crate) async fn remove_all_bindings(&self, aor: &Aor) -> StateResult<usize> {
        let key = self.key(&["reg", aor.as_str()]);
        let (n, _): (usize, i64) = redis::pipe()
            .atomic()
            .cmd("HLEN")
            .arg(&key)
            .cmd("DEL")
            .arg(&key)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(n)
    }

    pub(crate) async fn live_bindings(&self, aor: &Aor, now: Timestamp) -> StateResult<Vec<Binding>> {
        let raw: Vec<Vec<u8>> = SCRIPTS
            .reg_live
            .key(self.key(&["reg", aor.as_str()]))
            .arg(now.as_millis())
            .invoke_async(&mut self.conn.clone())
            .await?;
        let mut out = raw
            .iter()
            .map(|j| serde_json::from_slice::<Binding>(j).map_err(|e| corrupt("registration", e.to_string())))
            .collect::<StateResult<Vec<_>>>()?;
        out.sort_by(|a, b| a.contact.cmp(&b.contact));
        Ok(out)
    }

    // ---- maps ----

    pub(crate) async fn map_update(
        &self,
        map: &str,
        put: &[(String, Vec<u8>)],
        remove: &[String],
    ) -> StateResult<()> {
        let key = self.key(&["map", map]);
        let mut pipe = redis::pipe();
        pipe.atomic();
        if !put.is_empty() {
            pipe.cmd("HSET").arg(&key);
            for (field, value) in put {
                pipe.arg(field).arg(value.as_slice());
            }
            pipe.ignore();
        }
        if !remove.is_empty() {
            pipe.cmd("HDEL").arg(&key).arg(remove).ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    pub(crate) async fn map_take(&self, map: &str, field: &str) -> StateResult<bool> {
        let removed: u64 = redis::cmd("HDEL")
            .arg(self.key(&["map", map]))
            .arg(field)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(removed == 1)
    }

    pub(crate) async fn map_entries(&self, map: &str) -> StateResult<Vec<(String, Vec<u8>)>> {
        let entries: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(self.key(&["map", map]))
            .query_async(&mut self.conn.clone())
            .await?;
        let mut out: Vec<(String, Vec<u8>)> = entries.into_iter().collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    // ---- presence ----

    pub(crate) async fn put_presence(
        &self,
        agent: &AgentId,
        expect: Expect,
        data: &[u8],
    ) -> StateResult<WriteOutcome> {
        let reply: Vec<i64> = SCRIPTS
            .presence_put
            .key(self.key(&["presence"]))
            .key(self.key(&["presence-version"]))
            .key(self.key(&["version"]))
            .arg(agent.as_str())
            .arg(expect_arg(expect))
            .arg(data)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let (code, n) = fenced_reply(&reply, None)?;
        Ok(write_outcome(code, n))
    }

    pub(crate) async fn get_presence(&self, agent: &AgentId) -> StateResult<Option<Versioned<Vec<u8>>>> {
        let (data, version): (Option<Vec<u8>>, Option<u64>) = redis::pipe()
            .atomic()
            .cmd("HGET")
            .arg(self.key(&["presence"]))
            .arg(agent.as_str())
            .cmd("HGET")
            .arg(self.key(&["presence-version"]))
            .arg(agent.as_str())
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(match (data, version) {
            (Some(value), Some(version)) => Some(Versioned { version, value }),
            _ => None,
        })
    }

    pub(crate) async fn list_presence(&self) -> StateResult<Vec<(AgentId, Versioned<Vec<u8>>)>> {
        let (data, versions): (PresenceData, HashMap<String, u64>) = redis::pipe()
            .atomic()
            .cmd("HGETALL")
            .arg(self.key(&["presence"]))
            .cmd("HGETALL")
            .arg(self.key(&["presence-version"]))
            .query_async(&mut self.conn.clone())
            .await?;
        let mut out = Vec::with_capacity(data.len());
        for (agent, value) in data {
            let Some(&version) = versions.get(&agent) else {
                continue;
            };
            let agent = AgentId::new(&agent).map_err(|e| corrupt("presence agent id", e.to_string()))?;
            out.push((agent, Versioned { version, value }));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    pub(crate) async fn remove_presence(&self, agent: &AgentId) -> StateResult<bool> {
        let (n, _): (i64, i64) = redis::pipe()
            .atomic()
            .cmd("HDEL")
            .arg(self.key(&["presence"]))
            .arg(agent.as_str())
            .cmd("HDEL")
            .arg(self.key(&["presence-version"]))
            .arg(agent.as_str())
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(n > 0)
    }

    // ---- queues ----

    pub(crate) async fn queue_add(
        &self,
        queue: &QueueId,
        entry: &QueueEntry,
        fence: Option<&Fence>,
    ) -> StateResult<bool> {
        let reply: Vec<i64> = SCRIPTS
            .queue_add
            .key(self.key(&["queue", queue.as_str()]))
            .key(self.key(&["queue-payload", queue.as_str()]))
            .key(self.fence_key(fence))
            .arg(token_arg(fence))
            .arg(entry.call.as_str())
            .arg(entry.order.get())
            .arg(&entry.payload)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let (_, added) = fenced_reply(&reply, fence)?;
        Ok(added > 0)
    }

    pub(crate) async fn queue_remove(
        &self,
        queue: &QueueId,
        call: &CallId,
        fence: Option<&Fence>,
    ) -> StateResult<bool> {
        let reply: Vec<i64> = SCRIPTS
            .queue_remove
            .key(self.key(&["queue", queue.as_str()]))
            .key(self.key(&["queue-payload", queue.as_str()]))
            .key(self.fence_key(fence))
            .arg(token_arg(fence))
            .arg(call.as_str())
            .invoke_async(&mut self.conn.clone())
            .await?;
        let (_, removed) = fenced_reply(&reply, fence)?;
        Ok(removed > 0)
    }

    pub(crate) async fn queue_list(&self, queue: &QueueId) -> StateResult<Vec<QueueEntry>> {
        let flat: Vec<Vec<u8>> = SCRIPTS
            .queue_list
            .key(self.key(&["queue", queue.as_str()]))
            .key(self.key(&["queue-payload", queue.as_str()]))
            .invoke_async(&mut self.conn.clone())
            .await?;
        let mut out = Vec::with_capacity(flat.len() / 3);
        for triple in flat.chunks(3) {
            let [call, score, payload] = triple else {
                return Err(corrupt("queue list", "reply is not call/score/payload triples"));
            };
            let call = std::str::from_utf8(call)
                .ok()
                .and_then(|s| CallId::new(s).ok())
                .ok_or_else(|| corrupt(format!("queue {queue}"), "member is not a call id"))?;
            let score: f64 = std::str::from_utf8(score)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| corrupt(format!("queue {queue}"), "score is not a number"))?;
            // Scores were written from i64 within ±2^53, so the cast is exact.
            #[allow(clippy::cast_possible_truncation)]
            let order = QueueOrder::new(score as i64)?;
            out.push(QueueEntry {
                call,
                order,
                payload: payload.clone(),
            });
        }
        Ok(out)
    }

    pub(crate) async fn queue_len(&self, queue: &QueueId) -> StateResult<usize> {
        Ok(redis::cmd("ZCARD")
            .arg(self.key(&["queue", queue.as_str()]))
            .query_async(&mut self.conn.clone())
            .await?)
    }

    // ---- blobs ----

    pub(crate) async fn put_blob(
        &self,
        ns: &str,
        key: &str,
        data: &[u8],
        opts: &BlobWrite,
        now: Timestamp,
    ) -> StateResult<WriteOutcome> {
        let fence = opts.fence.as_ref();
        let (expires_at, gc) = match opts.ttl {
            Some(ttl) => ((now + ttl).as_millis(), gc_ttl_ms(ttl)),
            None => (0, 0),
        };
        let mut conn = self.write_conn().await?;
        let reply: Vec<i64> = SCRIPTS
            .blob_put
            .key(self.key(&["blob", ns, key]))
            .key(self.key(&["version"]))
            .key(self.fence_key(fence))
            .arg(now.as_millis())
            .arg(expect_arg(opts.expect))
            .arg(data)
            .arg(expires_at)
            .arg(gc)
            .arg(token_arg(fence))
            .invoke_async(&mut conn)
            .await?;
        let (code, n) = fenced_reply(&reply, fence)?;
        self.confirm(&mut conn).await?;
        Ok(write_outcome(code, n))
    }

    pub(crate) async fn get_blob(
        &self,
        ns: &str,
        key: &str,
        now: Timestamp,
    ) -> StateResult<Option<Versioned<Vec<u8>>>> {
        let (version, data, expires_at): (Option<u64>, Option<Vec<u8>>, Option<i64>) = redis::cmd("HMGET")
            .arg(self.key(&["blob", ns, key]))
            .arg("v")
            .arg("d")
            .arg("x")
            .query_async(&mut self.conn.clone())
            .await?;
        let lapsed = expires_at.is_some_and(|x| x != 0 && x <= now.as_millis());
        Ok(match (version, data) {
            (Some(version), Some(value)) if !lapsed => Some(Versioned { version, value }),
            _ => None,
        })
    }

    pub(crate) async fn delete_blob(&self, ns: &str, key: &str, fence: Option<&Fence>) -> StateResult<bool> {
        let mut conn = self.write_conn().await?;
        let reply: Vec<i64> = SCRIPTS
            .blob_delete
            .key(self.key(&["blob", ns, key]))
            .key(self.fence_key(fence))
            .arg(token_arg(fence))
            .invoke_async(&mut conn)
            .await?;
        let (_, n) = fenced_reply(&reply, fence)?;
        self.confirm(&mut conn).await?;
        Ok(n > 0)
    }

    // ---- batches ----

    pub(crate) async fn apply_batch(&self, batch: &WriteBatch, now: Timestamp) -> StateResult<BatchOutcome> {
        let fence = batch.fence.as_ref();
        let mut inv = SCRIPTS.apply_batch.prepare_invoke();
        inv.key(self.fence_key(fence))
            .key(self.key(&["version"]))
            .key(self.key(&["presence"]))
            .key(self.key(&["presence-version"]))
            .arg(token_arg(fence));
        for write in &batch.writes {
            match write {
                BatchWrite::QueueAdd { queue, entry } => {
                    inv.key(self.key(&["queue", queue.as_str()]))
                        .key(self.key(&["queue-payload", queue.as_str()]))
                        .arg("qa")
                        .arg(entry.call.as_str())
                        .arg(entry.order.get())
                        .arg(&entry.payload);
                }
                BatchWrite::QueueRemove { queue, call } => {
                    inv.key(self.key(&["queue", queue.as_str()]))
                        .key(self.key(&["queue-payload", queue.as_str()]))
                        .arg("qr")
                        .arg(call.as_str());
                }
                BatchWrite::Presence { agent, expect, data } => {
                    inv.arg("pp")
                        .arg(agent.as_str())
                        .arg(expect_arg(*expect))
                        .arg(data);
                }
                BatchWrite::PutBlob { ns, key, data, ttl } => {
                    let (expires_at, gc) = match ttl {
                        Some(ttl) => ((now + *ttl).as_millis(), gc_ttl_ms(*ttl)),
                        None => (0, 0),
                    };
                    inv.key(self.key(&["blob", ns, key]))
                        .arg("bp")
                        .arg(data)
                        .arg(expires_at)
                        .arg(gc);
                }
                BatchWrite::DeleteBlob { ns, key } => {
                    inv.key(self.key(&["blob", ns, key])).arg("bd");
                }
            }
        }
        let mut conn = self.write_conn().await?;
        let reply: Vec<i64> = inv.invoke_async(&mut conn).await?;
        if reply.first() == Some(&1) {
            self.confirm(&mut conn).await?;
        }
        match reply.as_slice() {
            [-1, current] => Err(stale_fence(fence, *current)),
            [0, index, current] => Ok(BatchOutcome::Conflict {
                index: usize::try_from(*index - 1).unwrap_or(0),
                current: version_of(*current),
            }),
            [1, results @ ..] => Ok(BatchOutcome::Applied(
                results.iter().map(|r| u64::try_from(*r).unwrap_or(0)).collect(),
            )),
            _ => Err(corrupt("batch reply", "unexpected shape")),
        }
    }

    // ---- leases ----

    pub(crate) async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> StateResult<Option<Lease>> {
        let expires_at = now + ttl;
        let mut conn = self.write_conn().await?;
        let reply: Option<Vec<u64>> = SCRIPTS
            .lease_acquire
            .key(self.key(&["lease", name]))
            .key(self.key(&["fence", name]))
            .arg(now.as_millis())
            .arg(holder)
            .arg(expires_at.as_millis())
            .arg(gc_ttl_ms(ttl))
            .invoke_async(&mut conn)
            .await?;
        if reply.is_some() {
            self.confirm(&mut conn).await?;
        }
        Ok(match reply.as_deref() {
            Some([token]) => Some(Lease {
                name: name.to_string(),
                holder: holder.to_string(),
                token: FencingToken(*token),
                expires_at,
            }),
            _ => None,
        })
    }

    pub(crate) async fn renew_lease(
        &self,
        lease: &Lease,
        ttl: Duration,
        now: Timestamp,
    ) -> StateResult<Option<Lease>> {
        let expires_at = now + ttl;
        let mut conn = self.write_conn().await?;
        let renewed: i64 = SCRIPTS
            .lease_renew
            .key(self.key(&["lease", &lease.name]))
            .arg(now.as_millis())
            .arg(&lease.holder)
            .arg(lease.token.0)
            .arg(expires_at.as_millis())
            .arg(gc_ttl_ms(ttl))
            .invoke_async(&mut conn)
            .await?;
        if renewed == 1 {
            self.confirm(&mut conn).await?;
        }
        Ok((renewed == 1).then(|| Lease {
            expires_at,
            ..lease.clone()
        }))
    }

    pub(crate) async fn release_lease(&self, lease: &Lease) -> StateResult<bool> {
        let released: i64 = SCRIPTS
            .lease_release
            .key(self.key(&["lease", &lease.name]))
            .arg(&lease.holder)
            .arg(lease.token.0)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(released == 1)
    }

    // ---- rate limiting ----

    pub(crate) async fn rate_take(
        &self,
        key: &str,
        bucket: TokenBucket,
        cost: u32,
        now: Timestamp,
    ) -> StateResult<RateDecision> {
        let reply: Vec<i64> = SCRIPTS
            .rate_take
            .key(self.key(&["rate", key]))
            .arg(bucket.capacity)
            .arg(bucket.refill_per_sec)
            .arg(cost)
            .arg(now.as_millis())
            .arg(bucket.fill_ms())
            .invoke_async(&mut self.conn.clone())
            .await?;
        match reply.as_slice() {
            [allowed, remaining, wait] => Ok(RateDecision {
                allowed: *allowed == 1,
                remaining: u32::try_from(*remaining).unwrap_or(0),
                retry_after_ms: u64::try_from(*wait).unwrap_or(0),
            }),
            _ => Err(corrupt("rate limiter reply", "unexpected shape")),
        }
    }

    // ---- event bus ----

    pub(crate) async fn publish(&self, topic: &str, payload: &[u8]) -> StateResult<usize> {
        Ok(redis::cmd("PUBLISH")
            .arg(self.key(&["bus", topic]))
            .arg(payload)
            .query_async(&mut self.conn.clone())
            .await?)
    }

    /// A dedicated connection subscribed to the topic; returns once Redis confirmed the subscription,
    /// so anything published afterwards is delivered.
    pub(crate) async fn subscribe(&self, topic: &str) -> StateResult<PubSubStream> {
        let (client, _) = self.client().await?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(self.key(&["bus", topic])).await?;
        Ok(pubsub.into_on_message())
    }
}
