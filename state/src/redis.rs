//! The Redis store: many Oasis replicas share one redis-server.
//!
//! **Why this layout.** A read is on the scoring hot path and must be one
//! round trip whatever the number of candidates, so everything of one
//! listener is one hash (field per track) and everything of one session is
//! one hash: a read is one pipeline of `HMGET`s and `HGETALL`s, a command per
//! listener, session, campaign and holder, none per track. Writes are Lua
//! scripts, so each event (de-dup check and all its effects) and each pacing
//! step (the compare-and-set of the write rule) is atomic however many
//! replicas write at once.
//!
//! Keys (prefix [`RedisConfig::prefix`], default `oasis:`):
//!
//! | key | type | fields | expiry |
//! |---|---|---|---|
//! | `c:{campaign}` | hash | `d` delivered, `pi` `pe` `pu` pacing integral, last error, updated_ms | none (a campaign's life) |
//! | `l:{listener}` | hash | track → comma-separated promoted impression times (the last 24 h, at most [`MAX_IMPRESSIONS_PER_PAIR`]) | 25 h after the last write |
//! | `s:{session}` | hash | track → promoted plays; `""` → time of the latest play | idle time + 1 h after the last write |
//! | `h:{holder}` | hash | hour number → attention (fixed point, 1e-9) | 8 days after the last write; hours older than 7 days pruned on write |
//! | `ht` | hash | hour number → attention of all holders | as `h:` |
//! | `e:{event id}` | string | the event time | de-dup window |
//!
//! Windows are applied on read with the caller's time (as in the embedded
//! store); TTLs are wall-clock and only bound memory, which is why they are
//! a little longer than the windows. A listener hash that grows past 512
//! tracks is swept for tracks with nothing left in the window.
//!
//! Reads run under [`RedisConfig::timeout`], writes under
//! [`RedisConfig::write_timeout`], and fail with [`StoreError::Timeout`]; connection failures are
//! [`StoreError::Unavailable`]. The [`ConnectionManager`] reconnects by itself
//! in the background.

use std::collections::HashMap;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{FromRedisValue, RedisError, Script, Value};
use async_trait::async_trait;
use tracing::info;

use crate::model::{self, hour_of};
use crate::{
    CampaignState, DeliveryEvent, MAX_IMPRESSIONS_PER_PAIR, PacingState, PacingWrite, Recorded,
    StateQuery, StateSnapshot, StateStore, StoreError,
};

const STORE: &str = "redis";
/// Events per script call: a flush of many buffered events is cut into
/// calls this size, so one call never blocks redis-server for long.
const RECORD_CHUNK: usize = 256;
/// Keys and arguments per event in [`RECORD_SCRIPT`].
const KEYS_PER_EVENT: usize = 6;

/// Configuration of the [`RedisStore`].
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port[/db]` (or `rediss://`, `unix://`).
    pub url: String,
    /// Prefix of every key, so several deployments can share a server.
    pub prefix: String,
    /// Budget of a read (and of connecting and `PING`).
    pub timeout: Duration,
    /// Budget of a write (`record`, `write_pacing`): writes are off the
    /// request path, and a batch of events takes longer than a read; a
    /// write that merely queues behind others must not count as a failure.
    pub write_timeout: Duration,
    /// The pacing tick (see [`PacingWrite`]); the same on every replica.
    pub tick_ms: i64,
    /// A session idle this long (event time) is forgotten.
    pub session_idle_ms: i64,
    /// Event ids are remembered this long (wall clock, a key TTL).
    pub dedup_window_ms: i64,
}

impl RedisConfig {
    /// Defaults (`oasis:` prefix, 50 ms read and 1 s write timeouts, 1 s tick, 24 h session idle
    /// and de-dup window) for the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "oasis:".into(),
            timeout: Duration::from_millis(50),
            write_timeout: Duration::from_secs(1),
            tick_ms: crate::DEFAULT_TICK_MS,
            session_idle_ms: crate::DEFAULT_SESSION_IDLE_MS,
            dedup_window_ms: crate::DEFAULT_DEDUP_WINDOW_MS,
        }
    }
}

/// The Redis store (see the [module docs](self)). Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), oasis_state::StoreError> {
/// use oasis_state::{RedisConfig, RedisStore, StateStore};
/// let store = RedisStore::connect(RedisConfig::new("redis://127.0.0.1:6379")).await?;
/// store.ping().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    config: RedisConfig,
    conn: ConnectionManager,
    record_script: Script,
    pacing_script: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.config.url)
            .field("prefix", &self.config.prefix)
            .finish()
    }
}

/// Applies a batch of events, each atomically: `SET NX` of the event id
/// first, the effects only when it was new. Per event: 6 keys (event id,
/// campaign, listener, session, holder, all holders) and 7 arguments (at_ms,
/// track, delivered?, impression?, play?, attention units, hour).
const RECORD_SCRIPT: &str = r#"
local dedup_ttl = tonumber(ARGV[1])
local listener_ttl = tonumber(ARGV[2])
local session_ttl = tonumber(ARGV[3])
local holder_ttl = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local max_ts = tonumber(ARGV[6])
local keep_hours = tonumber(ARGV[7])
local applied = 0
local n = #KEYS / 6
for i = 0, n - 1 do
  local k = i * 6
  local a = 7 + i * 7
  local at_s = ARGV[a + 1]
  local at = tonumber(at_s)
  local track = ARGV[a + 2]
  if redis.call('SET', KEYS[k + 1], at_s, 'NX', 'PX', dedup_ttl) then
    applied = applied + 1
    if ARGV[a + 3] == '1' then
      redis.call('HINCRBY', KEYS[k + 2], 'd', 1)
    end
    if ARGV[a + 4] == '1' then
      local lkey = KEYS[k + 3]
      local ts = { { at, at_s } }
      local newest = at
      local cur = redis.call('HGET', lkey, track)
      if cur then
        for s in string.gmatch(cur, '[^,]+') do
          local t = tonumber(s)
          ts[#ts + 1] = { t, s }
          if t > newest then newest = t end
        end
      end
      local cutoff = newest - window
      local keep = {}
      for _, p in ipairs(ts) do
        if p[1] > cutoff then keep[#keep + 1] = p end
      end
      table.sort(keep, function(x, y) return x[1] < y[1] end)
      local parts = {}
      for j = math.max(1, #keep - max_ts + 1), #keep do parts[#parts + 1] = keep[j][2] end
      redis.call('HSET', lkey, track, table.concat(parts, ','))
      redis.call('PEXPIRE', lkey, listener_ttl)
      local len = redis.call('HLEN', lkey)
      if len > 512 and len % 64 == 0 then
        local all = redis.call('HGETALL', lkey)
        for j = 1, #all, 2 do
          local last = 0
          local any = false
          for s in string.gmatch(all[j + 1], '[^,]+') do
            local t = tonumber(s)
            if not any or t > last then last = t end
            any = true
          end
          if not any or last <= cutoff then redis.call('HDEL', lkey, all[j]) end
        end
      end
    end
    if ARGV[a + 5] == '1' then
      local skey = KEYS[k + 4]
      redis.call('HINCRBY', skey, track, 1)
      local last = redis.call('HGET', skey, '')
      if not last or tonumber(last) < at then redis.call('HSET', skey, '', at_s) end
      redis.call('PEXPIRE', skey, session_ttl)
    end
    local units = ARGV[a + 6]
    if units ~= '0' then
      local hour = ARGV[a + 7]
      local oldest = tonumber(hour) - keep_hours
      for _, hkey in ipairs({ KEYS[k + 5], KEYS[k + 6] }) do
        redis.call('HINCRBY', hkey, hour, units)
        redis.call('PEXPIRE', hkey, holder_ttl)
        if redis.call('HLEN', hkey) > keep_hours + 24 then
          for _, f in ipairs(redis.call('HKEYS', hkey)) do
            if tonumber(f) < oldest then redis.call('HDEL', hkey, f) end
          end
        end
      end
    end
  end
end
return applied
"#;

/// The pacing write rule, per campaign key: applies (integral, last error,
/// at) when the stored `pu` (0 when absent) equals based_on and at falls in
/// a later tick. ARGV: tick_ms, then per key based_on, at, integral, last
/// error.
const PACING_SCRIPT: &str = r#"
local tick = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local a = 1 + (i - 1) * 4
  local based = tonumber(ARGV[a + 1])
  local at = tonumber(ARGV[a + 2])
  local cur = redis.call('HGET', KEYS[i], 'pu')
  local stored = 0
  if cur then stored = tonumber(cur) end
  if stored == based and math.floor(at / tick) > math.floor(stored / tick) then
    redis.call('HSET', KEYS[i], 'pi', ARGV[a + 3], 'pe', ARGV[a + 4], 'pu', ARGV[a + 2])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"#;

impl RedisStore {
    /// Connects to `config.url` (within `config.timeout`) and checks the
    /// server answers. Fails with [`StoreError::Unavailable`] or
    /// [`StoreError::Timeout`] when it does not; use
    /// [`connect_lazy`](Self::connect_lazy) to start without the server.
    pub async fn connect(config: RedisConfig) -> Result<Self, StoreError> {
        let store = Self::connect_lazy(config)?;
        store.ping().await?;
        info!(url = %store.config.url, prefix = %store.config.prefix, "redis state store connected");
        Ok(store)
    }

    /// Creates the store without connecting: the first operation connects,
    /// and an unreachable server fails operations (not this call) until it
    /// comes up. For a host that must start while Redis is down (wrapped in
    /// [`Guarded`](crate::Guarded)). Needs a tokio runtime.
    pub fn connect_lazy(config: RedisConfig) -> Result<Self, StoreError> {
        let client =
            ::redis::Client::open(config.url.as_str()).map_err(|e| StoreError::Unavailable {
                store: STORE,
                message: format!("bad redis url {:?}: {e}", config.url),
            })?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            // Per operation, `timed` enforces the read or the write budget.
            .set_response_timeout(Some(config.write_timeout.max(config.timeout)))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|e| unavailable(&e))?;
        Ok(Self {
            config,
            conn,
            record_script: Script::new(RECORD_SCRIPT),
            pacing_script: Script::new(PACING_SCRIPT),
        })
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}{id}", self.config.prefix)
    }

    /// `fut` under the read budget.
    async fn timed<T>(
        &self,
        fut: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        self.within(self.config.timeout, fut).await
    }

    /// `fut` under the write budget.
    async fn timed_write<T>(
        &self,
        fut: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        self.within(self.config.write_timeout, fut).await
    }

    async fn within<T>(
        &self,
        budget: Duration,
        fut: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        let timeout = || StoreError::Timeout {
            store: STORE,
            ms: budget.as_millis() as u64,
        };
        match tokio::time::timeout(budget, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.is_timeout() => Err(timeout()),
            Ok(Err(e)) => Err(unavailable(&e)),
            Err(_) => Err(timeout()),
        }
    }

    fn corrupt(key: &str, message: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            store: STORE,
            key: key.to_string(),
            message: message.to_string(),
        }
    }
}

fn unavailable(e: &RedisError) -> StoreError {
    StoreError::Unavailable {
        store: STORE,
        message: e.to_string(),
    }
}

fn parse<T: FromRedisValue>(key: &str, v: Value) -> Result<T, StoreError> {
    T::from_redis_value(v).map_err(|e| RedisStore::corrupt(key, e))
}

fn parse_num<T: std::str::FromStr>(key: &str, field: &str, s: &str) -> Result<T, StoreError> {
    s.parse()
        .map_err(|_| RedisStore::corrupt(key, format!("field {field:?} is not a number: {s:?}")))
}

#[async_trait]
impl StateStore for RedisStore {
    fn kind(&self) -> &'static str {
        STORE
    }

    async fn read(&self, q: &StateQuery<'_>) -> Result<StateSnapshot, StoreError> {
        let listener_key = self.key("l:", q.listener_id);
        let session_key = self.key("s:", q.session_id);
        let campaign_keys: Vec<String> = q.campaigns.iter().map(|c| self.key("c:", c)).collect();
        let holder_keys: Vec<String> = q.holders.iter().map(|h| self.key("h:", h)).collect();
        let total_key = self.key("ht", "");

        let mut pipe = ::redis::pipe();
        if !q.tracks.is_empty() {
            pipe.cmd("HMGET").arg(&listener_key).arg(q.tracks);
            pipe.cmd("HMGET").arg(&session_key).arg("").arg(q.tracks);
        }
        for k in &campaign_keys {
            pipe.cmd("HMGET").arg(k).arg(&["d", "pi", "pe", "pu"]);
        }
        if !q.holders.is_empty() {
            pipe.cmd("HGETALL").arg(&total_key);
            for k in &holder_keys {
                pipe.cmd("HGETALL").arg(k);
            }
        }
        if pipe.is_empty() {
            return Ok(StateSnapshot::default());
        }
        let mut conn = self.conn.clone();
        let replies: Vec<Value> = self.timed(pipe.query_async(&mut conn)).await?;
        let mut replies = replies.into_iter();
        let mut next = |key: &str| {
            replies
                .next()
                .ok_or_else(|| Self::corrupt(key, "fewer replies than commands"))
        };

        let mut snap = StateSnapshot::default();
        if !q.tracks.is_empty() {
            let lists: Vec<Option<String>> = parse(&listener_key, next(&listener_key)?)?;
            snap.impressions_24h = lists
                .iter()
                .map(|list| {
                    let Some(list) = list else { return Ok(0) };
                    let mut n = 0u32;
                    for s in list.split(',').filter(|s| !s.is_empty()) {
                        let t: i64 = parse_num(&listener_key, "impressions", s)?;
                        n += u32::from(model::in_impression_window(t, q.now_ms));
                    }
                    Ok(n)
                })
                .collect::<Result<_, StoreError>>()?;
            let plays: Vec<Option<String>> = parse(&session_key, next(&session_key)?)?;
            let last: Option<i64> = plays[0]
                .as_deref()
                .map(|s| parse_num(&session_key, "", s))
                .transpose()?;
            let live = last.is_some_and(|l| q.now_ms - l <= self.config.session_idle_ms);
            snap.session_promoted = plays[1..]
                .iter()
                .map(|p| match p {
                    Some(s) if live => parse_num(&session_key, "plays", s),
                    _ => Ok(0),
                })
                .collect::<Result<_, StoreError>>()?;
        }
        for k in &campaign_keys {
            let f: Vec<Option<String>> = parse(k, next(k)?)?;
            let num = |i: usize, name: &str| -> Result<Option<f64>, StoreError> {
                f.get(i)
                    .cloned()
                    .flatten()
                    .map(|s| parse_num(k, name, &s))
                    .transpose()
            };
            let delivered: u64 = f[0]
                .as_deref()
                .map(|s| parse_num(k, "d", s))
                .transpose()?
                .unwrap_or(0);
            let updated: Option<i64> =
                f[3].as_deref().map(|s| parse_num(k, "pu", s)).transpose()?;
            let pacing = match updated {
                Some(updated_ms) => Some(PacingState {
                    integral: num(1, "pi")?.unwrap_or(0.0),
                    last_error: num(2, "pe")?.unwrap_or(0.0),
                    updated_ms,
                }),
                None => None,
            };
            snap.campaigns.push(CampaignState { delivered, pacing });
        }
        if !q.holders.is_empty() {
            let hours = model::exposure_hours(q.now_ms);
            let sum = |key: &str, v: Value| -> Result<u64, StoreError> {
                let m: HashMap<String, String> = parse(key, v)?;
                let mut total = 0u64;
                for (hour, units) in &m {
                    let hour: i64 = parse_num(key, "hour", hour)?;
                    if hours.contains(&hour) {
                        total += parse_num::<u64>(key, "attention", units)?;
                    }
                }
                Ok(total)
            };
            let total = sum(&total_key, next(&total_key)?)?;
            for k in &holder_keys {
                let units = sum(k, next(k)?)?;
                snap.exposure_share_7d.push(model::share(units, total));
            }
        }
        Ok(snap)
    }

    async fn record(&self, events: &[DeliveryEvent]) -> Result<Recorded, StoreError> {
        let mut out = Recorded::default();
        let hour_ms = model::HOUR_MS;
        for chunk in events.chunks(RECORD_CHUNK) {
            let mut inv = self.record_script.prepare_invoke();
            inv.arg(self.config.dedup_window_ms.max(1))
                .arg(crate::IMPRESSION_WINDOW_MS + hour_ms)
                .arg(self.config.session_idle_ms.max(0) + hour_ms)
                .arg((crate::EXPOSURE_WINDOW_HOURS + 24) * hour_ms)
                .arg(crate::IMPRESSION_WINDOW_MS)
                .arg(MAX_IMPRESSIONS_PER_PAIR)
                .arg(crate::EXPOSURE_WINDOW_HOURS);
            for e in chunk {
                let fx = model::effects(e);
                let (holder, units) = fx.attention.unwrap_or(("", 0));
                let keys = [
                    self.key("e:", &e.id),
                    self.key("c:", fx.delivered.unwrap_or("")),
                    self.key("l:", &e.listener_id),
                    self.key("s:", &e.session_id),
                    self.key("h:", holder),
                    self.key("ht", ""),
                ];
                debug_assert_eq!(keys.len(), KEYS_PER_EVENT);
                for k in keys {
                    inv.key(k);
                }
                inv.arg(e.at_ms)
                    .arg(&e.track_id)
                    .arg(u8::from(fx.delivered.is_some()))
                    .arg(u8::from(fx.impression))
                    .arg(u8::from(fx.play))
                    .arg(units)
                    .arg(hour_of(e.at_ms));
            }
            let mut conn = self.conn.clone();
            let applied: u64 = self.timed_write(inv.invoke_async(&mut conn)).await?;
            out.applied += applied;
            out.duplicates += chunk.len() as u64 - applied;
        }
        Ok(out)
    }

    async fn write_pacing(&self, writes: &[PacingWrite]) -> Result<Vec<bool>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.pacing_script.prepare_invoke();
        inv.arg(self.config.tick_ms.max(1));
        for w in writes {
            inv.key(self.key("c:", &w.campaign_id));
            // `{}` of an f64 is its shortest exact representation: the value
            // read back is the value written.
            inv.arg(w.based_on_ms)
                .arg(w.at_ms)
                .arg(w.integral.to_string())
                .arg(w.last_error.to_string());
        }
        let mut conn = self.conn.clone();
        let applied: Vec<u8> = self.timed_write(inv.invoke_async(&mut conn)).await?;
        if applied.len() != writes.len() {
            return Err(Self::corrupt("pacing script", "wrong number of results"));
        }
        Ok(applied.into_iter().map(|a| a == 1).collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let pong: String = self
            .timed(::redis::cmd("PING").query_async(&mut conn))
            .await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Unavailable {
                store: STORE,
                message: format!("PING answered {pong:?}"),
            })
        }
    }
}
