//! The Redis store: replicas with no shared disk share the rollout state
//! through a redis-server.
//!
//! Keys (prefix [`RedisControlConfig::prefix`], default [`DEFAULT_PREFIX`]):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `rollout` | string | the rollout document (JSON, its `revision` inside) |
//! | `revision` | string | the committed revision |
//! | `audit` | list | audit entries (JSON lines), the last 10,000 |
//! | `replicas` | hash | replica id → its heartbeat ([`ReplicaStatus`] JSON) |
//! | `changes` | pub/sub channel | the new revision after every commit |
//!
//! A commit is one Lua script ([`COMMIT_SCRIPT`]): compare the revision,
//! write the document, bump the revision, append the audit entry, publish.
//! Every operation runs under [`RedisControlConfig::timeout`], so a dead
//! Redis refuses changes quickly and never blocks serving.

use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{RedisError, Script};
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::{ControlStore, ReplicaStatus, StoreError, Versioned};
use crate::control::audit::{AuditEntry, Recent};
use crate::control::rollout::RolloutFile;
use crate::control::versions::VersionRecord;

const STORE: &str = "redis";

/// Default key prefix (`--control-store-prefix`).
pub const DEFAULT_PREFIX: &str = "oasis:control:";

/// Audit entries kept in the store.
const AUDIT_KEEP: i64 = 10_000;

/// KEYS: rollout, revision, audit. ARGV: expected revision, document,
/// audit line, channel, audit entries kept, new revision. Returns `{1, new}`
/// or `{0, current}`.
const COMMIT_SCRIPT: &str = r"
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if current ~= tonumber(ARGV[1]) then
  return {0, current}
end
local new = tonumber(ARGV[6])
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], new)
redis.call('RPUSH', KEYS[3], ARGV[3])
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[5]), -1)
redis.call('PUBLISH', ARGV[4], new)
return {1, new}
";

/// How to reach the store.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisControlConfig {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// Prefix of every key and of the channel.
    pub prefix: String,
    /// Budget of one operation (connecting included).
    pub timeout: Duration,
}

impl RedisControlConfig {
    /// The store at `url` with the default prefix and a 500 ms budget.
    pub fn new(url: impl Into<String>) -> Self {
        RedisControlConfig {
            url: url.into(),
            prefix: DEFAULT_PREFIX.into(),
            timeout: Duration::from_millis(500),
        }
    }
}

/// The rollout state in Redis.
pub struct RedisStore {
    config: RedisControlConfig,
    client: ::redis::Client,
    conn: ConnectionManager,
    commit: Script,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        store: STORE,
        message: e.to_string(),
    }
}

fn invalid(e: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid {
        store: STORE,
        message: e.to_string(),
    }
}

impl RedisStore {
    /// The store, connecting lazily: a Redis that is down fails operations
    /// (not this call) until it comes up. Needs a tokio runtime.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a URL that does not parse.
    pub fn new(config: RedisControlConfig) -> Result<Self, StoreError> {
        let client = ::redis::Client::open(config.url.as_str())
            .map_err(|e| invalid(format!("bad --control-store URL {:?}: {e}", config.url)))?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager)
            .map_err(unavailable)?;
        Ok(RedisStore {
            config,
            client,
            conn,
            commit: Script::new(COMMIT_SCRIPT),
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.config.prefix)
    }

    /// `fut` under the operation budget.
    async fn timed<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.config.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => Err(unavailable(format!(
                "no answer within {} ms",
                self.config.timeout.as_millis()
            ))),
        }
    }
}

#[async_trait::async_trait]
impl ControlStore for RedisStore {
    fn kind(&self) -> &'static str {
        STORE
    }

    fn shared(&self) -> bool {
        true
    }

    async fn load(&self) -> Result<Versioned, StoreError> {
        let mut conn = self.conn.clone();
        let (doc, revision): (Option<String>, Option<u64>) = self
            .timed(
                ::redis::cmd("MGET")
                    .arg(self.key("rollout"))
                    .arg(self.key("revision"))
                    .query_async(&mut conn),
            )
            .await?;
        let revision = revision.unwrap_or(0);
        let doc: RolloutFile = match doc {
            Some(json) => serde_json::from_str(&json).map_err(|e| {
                invalid(format!(
                    "{}rollout is not valid rollout state ({e})",
                    self.config.prefix
                ))
            })?,
            None => RolloutFile::default(),
        };
        Ok(Versioned { revision, doc })
    }

    async fn commit(
        &self,
        expected: u64,
        doc: &RolloutFile,
        audit: &AuditEntry,
    ) -> Result<u64, StoreError> {
        let mut doc = doc.clone();
        doc.revision = expected.max(doc.revision) + 1;
        let json = serde_json::to_string(&doc).map_err(invalid)?;
        let line = serde_json::to_string(audit).map_err(invalid)?;
        let mut conn = self.conn.clone();
        let mut inv = self.commit.prepare_invoke();
        inv.key(self.key("rollout"))
            .key(self.key("revision"))
            .key(self.key("audit"))
            .arg(expected)
            .arg(json)
            .arg(line)
            .arg(self.key("changes"))
            .arg(AUDIT_KEEP)
            .arg(doc.revision);
        let (ok, revision): (u8, u64) = self.timed(inv.invoke_async(&mut conn)).await?;
        if ok == 1 {
            Ok(revision)
        } else {
            Err(StoreError::Conflict {
                expected,
                current: revision,
            })
        }
    }

    async fn put_status(&self, status: &ReplicaStatus) -> Result<(), StoreError> {
        let json = serde_json::to_string(status).map_err(invalid)?;
        let mut conn = self.conn.clone();
        self.timed(
            ::redis::cmd("HSET")
                .arg(self.key("replicas"))
                .arg(&status.replica)
                .arg(json)
                .query_async::<()>(&mut conn),
        )
        .await
    }

    async fn put_version(&self, record: &VersionRecord, wasm: &[u8]) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let json = serde_json::to_string(record).map_err(invalid)?;
        // The module under its digest (content-addressed: written once),
        // then the record that names it.
        let () = self
            .timed(
                ::redis::pipe()
                    .cmd("SET")
                    .arg(self.key(&format!("module:{}", record.digest)))
                    .arg(wasm)
                    .arg("NX")
                    .ignore()
                    .cmd("HSET")
                    .arg(self.key("versions"))
                    .arg(format!("{}@{}", record.policy, record.digest))
                    .arg(json)
                    .ignore()
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    async fn get_version(
        &self,
        key: &str,
        digest: &str,
    ) -> Result<Option<(VersionRecord, Vec<u8>)>, StoreError> {
        let mut conn = self.conn.clone();
        let (record, wasm): (Option<String>, Option<Vec<u8>>) = self
            .timed(
                ::redis::pipe()
                    .cmd("HGET")
                    .arg(self.key("versions"))
                    .arg(format!("{key}@{digest}"))
                    .cmd("GET")
                    .arg(self.key(&format!("module:{digest}")))
                    .query_async(&mut conn),
            )
            .await?;
        let (Some(record), Some(wasm)) = (record, wasm) else {
            return Ok(None);
        };
        let record: VersionRecord = serde_json::from_str(&record).map_err(invalid)?;
        let actual = crate::cache::digest(&wasm);
        if actual != digest || record.digest != digest {
            return Err(StoreError::Invalid {
                store: STORE,
                message: format!("version {key}@{digest}: the stored module is {actual}"),
            });
        }
        Ok(Some((record, wasm)))
    }

    async fn recent_audit(&self, limit: usize) -> Result<Option<Recent>, StoreError> {
        let mut conn = self.conn.clone();
        let start = -(limit.clamp(1, AUDIT_KEEP as usize) as i64);
        let lines: Vec<String> = self
            .timed(
                ::redis::cmd("LRANGE")
                    .arg(self.key("audit"))
                    .arg(start)
                    .arg(-1)
                    .query_async(&mut conn),
            )
            .await?;
        let mut recent = Recent {
            entries: Vec::with_capacity(lines.len()),
            skipped: 0,
        };
        for line in &lines {
            match serde_json::from_str::<AuditEntry>(line) {
                Ok(e) => recent.entries.push(e),
                Err(_) => recent.skipped += 1,
            }
        }
        Ok(Some(recent))
    }

    async fn list_status(&self) -> Result<Vec<ReplicaStatus>, StoreError> {
        let mut conn = self.conn.clone();
        let all: Vec<(String, String)> = self
            .timed(
                ::redis::cmd("HGETALL")
                    .arg(self.key("replicas"))
                    .query_async(&mut conn),
            )
            .await?;
        let mut out: Vec<ReplicaStatus> = all
            .iter()
            .filter_map(|(_, json)| serde_json::from_str(json).ok())
            .collect();
        out.sort_by(|a, b| a.replica.cmp(&b.replica));
        Ok(out)
    }

    async fn watch(&self, changed: Arc<tokio::sync::Notify>, shutdown: CancellationToken) {
        let channel = self.key("changes");
        loop {
            let subscribed = async {
                let mut pubsub = self.timed(self.client.get_async_pubsub()).await?;
                self.timed(pubsub.subscribe(&channel)).await?;
                Ok::<_, StoreError>(pubsub)
            }
            .await;
            match subscribed {
                Ok(mut pubsub) => {
                    tracing::debug!(%channel, "subscribed to control store changes");
                    // A (re)subscription may have missed a change.
                    changed.notify_one();
                    let mut messages = pubsub.on_message();
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            m = messages.next() => match m {
                                Some(_) => changed.notify_one(),
                                None => break,
                            },
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot subscribe to control store changes; polling")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}
