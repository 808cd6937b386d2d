//! `Guarded` against a real redis-server that is killed and restarted, and
//! against an embedded store behind a switch (deterministic breaker checks).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use oasis_state::{
    DeliveryEvent, EmbeddedConfig, EmbeddedStore, GuardConfig, Guarded, HealthState, PacingWrite,
    Recorded, RedisConfig, RedisStore, SLOW_READS_TO_TRIP, Source, Sourced, StateQuery,
    StateSnapshot, StateStore, StoreError,
};
use support::{EventExt, HOUR, RedisServer, T0, impression};

fn query<'a>(campaigns: &'a [&'a str], holders: &'a [&'a str]) -> StateQuery<'a> {
    StateQuery {
        now_ms: T0 + HOUR,
        listener_id: "l1",
        session_id: "s1",
        tracks: &["t1"],
        campaigns,
        holders,
    }
}

fn step(based_on_ms: i64, at_ms: i64, integral: f64) -> PacingWrite {
    PacingWrite {
        campaign_id: "c1".into(),
        based_on_ms,
        at_ms,
        integral,
        last_error: 0.0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted() {
    let mut server = RedisServer::start();
    let mut config = RedisConfig::new(server.url());
    config.timeout = Duration::from_millis(300);
    let store = RedisStore::connect(config).await.unwrap();
    let guard = Guarded::new(
        Arc::new(store),
        GuardConfig {
            read_budget: Duration::from_millis(500),
            write_budget: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(400),
            ..GuardConfig::default()
        },
    );

    // Up: written through, read from the store (and remembered).
    let r = guard
        .record(&[impression("e1", T0, "l1", "t1")
            .campaign("c1")
            .holder("A", 1)])
        .await;
    assert_eq!(
        r.stored,
        Some(Recorded {
            applied: 1,
            duplicates: 0
        })
    );
    assert_eq!(
        guard.write_pacing(&[step(0, T0, 0.5)]).await.applied,
        vec![true]
    );
    let up = guard.read(&query(&["c1"], &["A"])).await;
    assert_eq!(up.source, Source::Store);
    assert_eq!(up.impressions_24h, vec![Sourced::Store(1)]);
    let c1 = *up.campaigns[0].value().unwrap();
    assert_eq!(c1.delivered, 1);
    assert_eq!(guard.health().state, HealthState::Ok);

    server.kill();

    // Down: reads come back (last-known), state is degraded, events queue.
    let started = Instant::now();
    let down = guard.read(&query(&["c1", "c9"], &["A"])).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a read with the store down took {:?}",
        started.elapsed()
    );
    assert_eq!(down.source, Source::LastKnown);
    assert_eq!(
        down.campaigns,
        vec![Sourced::LastKnown(c1), Sourced::Unknown]
    );
    assert_eq!(down.exposure_share_7d, vec![Sourced::LastKnown(Some(1.0))]);
    assert_eq!(down.impressions_24h, vec![Sourced::Unknown]);
    assert_eq!(down.session_promoted, vec![Sourced::Unknown]);
    assert!(
        matches!(
            guard.health().state,
            HealthState::Degraded {
                recovering: false,
                ..
            }
        ),
        "{:?}",
        guard.health()
    );

    let queued: Vec<DeliveryEvent> = (0..5)
        .map(|i| impression(&format!("q{i}"), T0 + i, "l1", "t1").campaign("c2"))
        .collect();
    let r = guard.record(&queued).await;
    assert_eq!((r.stored, r.buffered, r.dropped), (None, 5, 0));
    // Pacing continues locally under the write rule.
    let local = guard
        .write_pacing(&[step(T0, T0 + 1_000, 0.75), step(T0, T0 + 2_000, 9.0)])
        .await;
    assert_eq!(
        (local.applied, local.source),
        (vec![true, false], Source::LastKnown)
    );
    let h = guard.health();
    assert_eq!(h.queued_events, 5);
    assert!(
        h.counters.read_fallback >= 1 && h.counters.read_errors >= 1,
        "{h:?}"
    );

    server.restart();

    // Back: the breaker probes, the queue is flushed, health returns to ok.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = guard.read(&query(&["c2"], &[])).await;
        if guard.health().state == HealthState::Ok && s.source == Source::Store {
            // The restarted server has no persistence: c2 holds exactly the
            // flushed events.
            assert_eq!(
                s.campaigns,
                vec![Sourced::Store(oasis_state::CampaignState {
                    delivered: 5,
                    pacing: None
                })]
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery within 30 s: {:?}",
            guard.health()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let h = guard.health();
    assert_eq!(
        (
            h.queued_events,
            h.counters.events_flushed,
            h.counters.events_dropped
        ),
        (0, 5, 0)
    );
    // Written through again.
    let r = guard
        .record(&[impression("after", T0, "l1", "t1").campaign("c2")])
        .await;
    assert_eq!(
        r.stored,
        Some(Recorded {
            applied: 1,
            duplicates: 0
        })
    );
}

/// An embedded store that fails while `down` is set, counting the calls that
/// reached it.
struct Switch {
    inner: EmbeddedStore,
    down: AtomicBool,
    calls: AtomicU64,
    /// Reads take 100 ms (over any budget the tests set).
    slow: AtomicBool,
}

impl Switch {
    /// A switch, on, over a new embedded store in `dir`.
    fn up(dir: &std::path::Path) -> Arc<Switch> {
        Arc::new(Switch {
            inner: EmbeddedStore::open(EmbeddedConfig::new(dir)).unwrap(),
            down: AtomicBool::new(false),
            calls: AtomicU64::new(0),
            slow: AtomicBool::new(false),
        })
    }

    fn check(&self) -> Result<(), StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable {
                store: "embedded",
                message: "switched off".into(),
            })
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl StateStore for Switch {
    fn kind(&self) -> &'static str {
        "embedded"
    }
    async fn read(&self, q: &StateQuery<'_>) -> Result<StateSnapshot, StoreError> {
        self.check()?;
        if self.slow.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.inner.read(q).await
    }
    async fn record(&self, events: &[DeliveryEvent]) -> Result<Recorded, StoreError> {
        self.check()?;
        self.inner.record(events).await
    }
    async fn write_pacing(&self, writes: &[PacingWrite]) -> Result<Vec<bool>, StoreError> {
        self.check()?;
        self.inner.write_pacing(writes).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.check()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_skips_the_store_queue_overflows_and_flushes_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let switch = Switch::up(dir.path());
    let guard = Guarded::new(
        switch.clone(),
        GuardConfig {
            backoff_initial: Duration::from_millis(300),
            buffer_capacity: 3,
            flush_batch: 2,
            ..GuardConfig::default()
        },
    );
    guard.read(&query(&["c1"], &[])).await;
    switch.down.store(true, Ordering::SeqCst);
    let before = switch.calls.load(Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(
            guard.read(&query(&["c1"], &[])).await.source,
            Source::LastKnown
        );
    }
    // One failed call opened the breaker; the other 19 reads skipped the store.
    assert_eq!(switch.calls.load(Ordering::SeqCst) - before, 1);

    // The queue holds 3: the rest are dropped and reported.
    let events: Vec<DeliveryEvent> = (0..5)
        .map(|i| impression(&format!("e{i}"), T0 + i, "l1", "t1").campaign("c1"))
        .collect();
    let r = guard.record(&events).await;
    assert_eq!((r.buffered, r.dropped), (3, 2));
    // Pacing of a campaign with a last-known state continues locally.
    assert_eq!(
        guard.write_pacing(&[step(0, T0, 1.0)]).await.applied,
        vec![true]
    );
    assert_eq!(
        guard
            .write_pacing(&[step(0, T0 + 1_000, 1.0)])
            .await
            .applied,
        vec![false],
        "stale locally"
    );
    let h = guard.health();
    assert_eq!(
        (
            h.counters.events_dropped,
            h.counters.pacing_applied,
            h.counters.pacing_refused
        ),
        (2, 1, 1)
    );

    // Recovery: after the backoff a probe succeeds and the queue is flushed.
    switch.down.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(20);
    while guard.health().state != HealthState::Ok {
        assert!(
            Instant::now() < deadline,
            "no recovery: {:?}",
            guard.health()
        );
        guard.read(&query(&["c1"], &[])).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = guard.read(&query(&["c1"], &[])).await;
    let c1 = s.campaigns[0].value().unwrap();
    assert_eq!(c1.delivered, 3, "the queued events, not the dropped ones");
    assert_eq!(c1.pacing, None, "local pacing steps are not replayed");
    // The queued events were e0, e1, e2 in that order: re-recording them is
    // all duplicates, e3 and e4 are new.
    let r = switch.inner.record(&events).await.unwrap();
    assert_eq!((r.duplicates, r.applied), (3, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_occasional_slow_read_falls_back_without_stopping_writes() {
    let dir = tempfile::tempdir().unwrap();
    let switch = Switch::up(dir.path());
    let guard = Guarded::new(
        switch.clone(),
        GuardConfig {
            read_budget: Duration::from_millis(10),
            backoff_initial: Duration::from_secs(30),
            ..GuardConfig::default()
        },
    );
    guard.read(&query(&["c1"], &[])).await;
    switch.slow.store(true, Ordering::SeqCst);
    for i in 1..SLOW_READS_TO_TRIP {
        let snap = guard.read(&query(&["c1"], &[])).await;
        assert_eq!(snap.source, Source::LastKnown, "slow read {i} falls back");
        assert_eq!(guard.health().state, HealthState::Ok, "slow read {i}");
        // Events still go straight to the store.
        let e = impression(&format!("s{i}"), T0 + i as i64, "l1", "t1").campaign("c1");
        let r = guard.record(&[e]).await;
        assert_eq!((r.stored.map(|s| s.applied), r.buffered), (Some(1), 0));
    }
    // A fast read resets the count...
    switch.slow.store(false, Ordering::SeqCst);
    assert_eq!(guard.read(&query(&["c1"], &[])).await.source, Source::Store);
    // ...and reads slow without a break for SLOW_READS_TO_TRIP reads and
    // SLOW_STREAK_TO_TRIP (a hung store) open the breaker.
    switch.slow.store(true, Ordering::SeqCst);
    for _ in 0..SLOW_READS_TO_TRIP {
        guard.read(&query(&["c1"], &[])).await;
    }
    assert_eq!(
        guard.health().state,
        HealthState::Ok,
        "not yet: the streak is young"
    );
    tokio::time::sleep(oasis_state::SLOW_STREAK_TO_TRIP).await;
    guard.read(&query(&["c1"], &[])).await;
    assert!(matches!(guard.health().state, HealthState::Degraded { .. }));
    let r = guard
        .record(&[impression("late", T0, "l1", "t1").campaign("c1")])
        .await;
    assert_eq!((r.stored, r.buffered), (None, 1));
}

/// A guard over the embedded store whose writes always overrun their budget
/// (the write runs on the blocking pool; a zero budget gives up before it
/// returns), as a flood on a busy machine does: its breaker opens.
fn embedded_guard_overrun() -> (Guarded, EmbeddedStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
    let guard = Guarded::new(
        Arc::new(store.clone()),
        GuardConfig {
            write_budget: Duration::ZERO,
            backoff_initial: Duration::from_secs(60),
            backoff_max: Duration::from_secs(60),
            ..GuardConfig::default()
        },
    );
    (guard, store, dir)
}

/// The embedded store's reads are its own memory: a breaker opened by slow
/// writes must not turn them off (caps would then see no counts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_reads_stay_on_while_writes_overrun() {
    let (guard, store, _dir) = embedded_guard_overrun();
    store
        .record(&[impression("seen", T0, "l1", "t1")])
        .await
        .unwrap();
    // A tiny write may beat even a zero budget; the flood goes on until
    // one overruns.
    for i in 0..1000 {
        if matches!(guard.health().state, HealthState::Degraded { .. }) {
            break;
        }
        let _ = guard
            .record(&[impression(&format!("flood{i}"), T0, "l2", "t1")])
            .await;
    }
    assert!(
        matches!(guard.health().state, HealthState::Degraded { .. }),
        "the overrun opened the breaker"
    );
    let s = guard.read(&query(&[], &[])).await;
    assert_eq!(s.impressions_24h, vec![Sourced::Store(1)]);
    assert_eq!(s.source, Source::Store);
}

/// The embedded store promises that what it acknowledges is on disk: while
/// its writes overrun, events are refused (the caller answers 503 and the
/// client retries), never held in memory and acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_events_are_refused_not_held_in_memory_while_writes_overrun() {
    let (guard, _store, _dir) = embedded_guard_overrun();
    // A tiny write may beat even a zero budget: batches go on until one
    // overruns and later ones are refused (every round is checked).
    for round in 0..1000 {
        if guard.health().counters.events_refused >= 10 {
            break;
        }
        let events: Vec<DeliveryEvent> = (0..10)
            .map(|i| impression(&format!("e{round}-{i}"), T0, "l1", "t1"))
            .collect();
        let r = guard.record(&events).await;
        assert_eq!(r.buffered, 0, "round {round}: nothing is held in memory");
        assert!(
            r.stored.is_some() || r.refused == 10,
            "round {round}: written, or refused whole: {r:?}"
        );
        assert_eq!(
            r.dropped, 0,
            "round {round}: nothing queued, nothing dropped"
        );
    }
    let h = guard.health();
    assert_eq!(h.queued_events, 0);
    assert_eq!(h.counters.events_buffered, 0);
    assert!(h.counters.events_refused >= 10, "{:?}", h.counters);
}

/// The last-known values are those of the latest successful read: a
/// campaign already kept is updated, not left at its first value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_known_values_follow_the_latest_read() {
    let dir = tempfile::tempdir().unwrap();
    let switch = Switch::up(dir.path());
    let guard = Guarded::new(switch.clone(), GuardConfig::default());
    let q = query(&["c1", "c2"], &["h1"]);
    let first = guard.read(&q).await;
    assert_eq!(first.source, Source::Store);
    assert_eq!(first.campaigns[0].value().unwrap().delivered, 0);
    let events: Vec<DeliveryEvent> = (0..2)
        .map(|i| impression(&format!("e{i}"), T0 + i, "l1", "t1").campaign("c1"))
        .collect();
    switch.inner.record(&events).await.unwrap();
    let second = guard.read(&q).await;
    assert_eq!(second.campaigns[0].value().unwrap().delivered, 2);

    switch.down.store(true, Ordering::SeqCst);
    let down = guard.read(&q).await;
    assert_eq!(down.source, Source::LastKnown);
    assert_eq!(
        down.campaigns,
        second
            .campaigns
            .iter()
            .map(|c| Sourced::LastKnown(*c.value().unwrap()))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        down.exposure_share_7d,
        vec![Sourced::LastKnown(
            *second.exposure_share_7d[0].value().unwrap()
        )]
    );
}
