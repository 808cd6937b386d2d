//! One behavioural suite run against both stores (`embedded::*` and
//! `redis::*`), plus the embedded store's durability tests.

mod support;

use std::sync::Arc;

use oasis_state::{
    CampaignState, EmbeddedConfig, EmbeddedStore, EventKind, PacingState, PacingWrite, RedisConfig,
    RedisStore, StateQuery, StateSnapshot, StateStore,
};
use support::{DAY, EventExt, HOUR, RedisServer, T0, impression};

const TICK: i64 = 1_000;

type Store = Arc<dyn StateStore>;

/// A store and what must live as long as it (its directory or server).
struct Backend {
    store: Store,
    _keep: Box<dyn std::any::Any + Send>,
}

fn embedded() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
    Backend {
        store: Arc::new(store),
        _keep: Box::new(dir),
    }
}

async fn redis() -> Backend {
    let server = RedisServer::start();
    let mut config = RedisConfig::new(server.url());
    // Correctness tests on a loaded machine: a generous budget.
    config.timeout = std::time::Duration::from_secs(5);
    let store = RedisStore::connect(config).await.unwrap();
    Backend {
        store: Arc::new(store),
        _keep: Box::new(server),
    }
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let b = super::embedded();
                    super::$name(&b.store).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let b = super::redis().await;
                    super::$name(&b.store).await;
                }
            )*
        }
    };
}

suite!(
    dedup_counts_an_event_once,
    impression_window_slides_over_24h,
    session_plays_count_per_session,
    holder_share_is_position_weighted_over_7_days,
    delivered_counts_promoted_impressions_with_a_campaign,
    pacing_write_rule,
    pacing_concurrent_steps_one_per_tick,
    pacing_stale_reads_across_ticks_lose_no_update,
    a_late_event_retried_is_a_duplicate,
);

fn query<'a>(
    now_ms: i64,
    tracks: &'a [&'a str],
    campaigns: &'a [&'a str],
    holders: &'a [&'a str],
) -> StateQuery<'a> {
    StateQuery {
        now_ms,
        listener_id: "l1",
        session_id: "s1",
        tracks,
        campaigns,
        holders,
    }
}

async fn read(store: &Store, q: StateQuery<'_>) -> StateSnapshot {
    store.read(&q).await.unwrap()
}

async fn dedup_counts_an_event_once(store: &Store) {
    let e1 = impression("e1", T0, "l1", "t1")
        .campaign("c1")
        .holder("h1", 1);
    let e2 = impression("e2", T0 + 1, "l1", "t1").campaign("c1");
    let r = store.record(&[e1.clone(), e1.clone(), e2]).await.unwrap();
    assert_eq!((r.applied, r.duplicates), (2, 1));
    let r = store.record(&[e1]).await.unwrap();
    assert_eq!((r.applied, r.duplicates), (0, 1));
    let s = read(store, query(T0 + 10, &["t1"], &["c1"], &["h1"])).await;
    assert_eq!(s.campaigns[0].delivered, 2);
    assert_eq!(s.impressions_24h, vec![2]);
    assert_eq!(s.exposure_share_7d, vec![Some(1.0)]);
}

/// One de-duplication rule for both stores: an id is remembered for the
/// window on the server's clock from when it was recorded, however late
/// its event time.
async fn a_late_event_retried_is_a_duplicate(store: &Store) {
    let newest = impression("newest", T0 + 3 * DAY, "l1", "t1");
    let late = impression("late", T0 + DAY, "l1", "t2");
    let r = store.record(&[newest, late.clone()]).await.unwrap();
    assert_eq!((r.applied, r.duplicates), (2, 0));
    let r = store
        .record(&[impression("next", T0 + 3 * DAY + 1, "l1", "t1")])
        .await
        .unwrap();
    assert_eq!(r.applied, 1);
    let r = store.record(&[late]).await.unwrap();
    assert_eq!(
        (r.applied, r.duplicates),
        (0, 1),
        "the retry changes nothing"
    );
}

async fn impression_window_slides_over_24h(store: &Store) {
    let t = T0 + 5 * HOUR + 123;
    store
        .record(&[
            impression("a", t, "l1", "t1"),
            impression("b", t + HOUR, "l1", "t1"),
            impression("c", t, "l1", "t2").organic(),
            impression("d", t, "l2", "t3"),
            impression("e", t, "l1", "t4").kind(EventKind::Stream),
        ])
        .await
        .unwrap();
    let tracks = ["t1", "t2", "t3", "t4", "t1", "unknown"];
    let at = |now| async move {
        read(store, query(now, &tracks, &[], &[]))
            .await
            .impressions_24h
    };
    assert_eq!(
        at(t - 1).await,
        vec![0, 0, 0, 0, 0, 0],
        "not before it happened"
    );
    assert_eq!(at(t).await, vec![1, 0, 0, 0, 1, 0]);
    assert_eq!(at(t + HOUR).await, vec![2, 0, 0, 0, 2, 0]);
    assert_eq!(
        at(t + 23 * HOUR + 59 * 60_000).await,
        vec![2, 0, 0, 0, 2, 0]
    );
    assert_eq!(
        at(t + DAY + 1).await,
        vec![1, 0, 0, 0, 1, 0],
        "the first left the window"
    );
    assert_eq!(at(t + HOUR + DAY + 1).await, vec![0, 0, 0, 0, 0, 0]);
    // Another listener's impressions are its own.
    let q = StateQuery {
        listener_id: "l2",
        ..query(t, &tracks, &[], &[])
    };
    assert_eq!(read(store, q).await.impressions_24h, vec![0, 0, 1, 0, 0, 0]);
}

async fn session_plays_count_per_session(store: &Store) {
    let stream = |id: &str, session: &str, track: &str| {
        impression(id, T0, "l1", track)
            .kind(EventKind::Stream)
            .session(session)
    };
    store
        .record(&[
            stream("p1", "s1", "t1"),
            stream("p2", "s1", "t1"),
            stream("p3", "s2", "t1"),
            stream("p4", "s1", "t2").organic(),
            impression("p5", T0, "l1", "t2").session("s1"),
            stream("p6", "s1", "t3").kind(EventKind::Skip),
        ])
        .await
        .unwrap();
    let tracks = ["t1", "t2", "t3"];
    let s1 = read(store, query(T0 + HOUR, &tracks, &[], &[])).await;
    assert_eq!(s1.session_promoted, vec![2, 0, 0]);
    let q = StateQuery {
        session_id: "s2",
        ..query(T0 + HOUR, &tracks, &[], &[])
    };
    assert_eq!(read(store, q).await.session_promoted, vec![1, 0, 0]);
    let q = StateQuery {
        session_id: "s3",
        ..query(T0 + HOUR, &tracks, &[], &[])
    };
    assert_eq!(read(store, q).await.session_promoted, vec![0, 0, 0]);
    // Idle for longer than the session idle time (24 h): forgotten.
    let idle = read(store, query(T0 + DAY + 1, &tracks, &[], &[])).await;
    assert_eq!(idle.session_promoted, vec![0, 0, 0]);
}

async fn holder_share_is_position_weighted_over_7_days(store: &Store) {
    let holders = ["A", "B", "C"];
    let shares = |now| async move {
        read(store, query(now, &[], &[], &holders))
            .await
            .exposure_share_7d
    };
    assert_eq!(
        shares(T0).await,
        vec![None, None, None],
        "nothing recorded at all"
    );
    store
        .record(&[
            impression("a", T0, "l1", "t1").holder("A", 1),
            impression("b", T0, "l2", "t2").holder("B", 3).organic(),
            impression("c", T0, "l1", "t3")
                .holder("C", 2)
                .kind(EventKind::Save),
            impression("d", T0, "l1", "t4").holder("C", 0),
        ])
        .await
        .unwrap();
    // weights 1 and 1/log2(4) = 0.5: shares 1/1.5 and 0.5/1.5.
    assert_eq!(
        shares(T0).await,
        vec![Some(2.0 / 3.0), Some(1.0 / 3.0), Some(0.0)]
    );
    assert_eq!(
        shares(T0 + 7 * DAY - 1).await,
        vec![Some(2.0 / 3.0), Some(1.0 / 3.0), Some(0.0)]
    );
    assert_eq!(
        shares(T0 + 7 * DAY + HOUR).await,
        vec![None, None, None],
        "left the 7-day window"
    );

    // A second day: B gets a position-1 impression; both days are in the window.
    store
        .record(&[impression("e", T0 + DAY, "l3", "t5").holder("B", 1)])
        .await
        .unwrap();
    assert_eq!(
        shares(T0 + DAY).await,
        vec![Some(1.0 / 2.5), Some(1.5 / 2.5), Some(0.0)]
    );
    // Once the first day has left the window only B's second impression counts.
    assert_eq!(
        shares(T0 + 7 * DAY + HOUR).await,
        vec![Some(0.0), Some(1.0), Some(0.0)]
    );
}

async fn delivered_counts_promoted_impressions_with_a_campaign(store: &Store) {
    store
        .record(&[
            impression("1", T0, "l1", "t1").campaign("c1"),
            impression("2", T0, "l2", "t1").campaign("c1"),
            impression("3", T0, "l1", "t2").campaign("c2"),
            impression("4", T0, "l1", "t1").campaign("c1").organic(),
            impression("5", T0, "l1", "t1")
                .campaign("c1")
                .kind(EventKind::Stream),
            impression("6", T0, "l1", "t1")
                .campaign("c1")
                .kind(EventKind::Save),
            impression("7", T0, "l1", "t1"),
        ])
        .await
        .unwrap();
    // All time: years later still counted.
    let s = read(store, query(T0 + 400 * DAY, &[], &["c1", "c2", "c3"], &[])).await;
    let delivered: Vec<u64> = s.campaigns.iter().map(|c| c.delivered).collect();
    assert_eq!(delivered, vec![2, 1, 0]);
    assert_eq!(s.campaigns[2], CampaignState::default());
}

fn step(
    campaign: &str,
    based_on_ms: i64,
    at_ms: i64,
    integral: f64,
    last_error: f64,
) -> PacingWrite {
    PacingWrite {
        campaign_id: campaign.into(),
        based_on_ms,
        at_ms,
        integral,
        last_error,
    }
}

async fn pacing_write_rule(store: &Store) {
    let t = T0 + 10 * TICK + 250;
    let integral = 0.1 + 0.2; // not a short decimal: must round-trip exactly
    assert_eq!(
        store
            .write_pacing(&[step("c1", 0, t, integral, -1e-300)])
            .await
            .unwrap(),
        vec![true]
    );
    let s = read(store, query(t, &[], &["c1"], &[])).await;
    let stored = PacingState {
        integral,
        last_error: -1e-300,
        updated_ms: t,
    };
    assert_eq!(s.campaigns[0].pacing, Some(stored));
    assert_eq!(s.campaigns[0].delivered, 0);

    let results = store
        .write_pacing(&[
            step("c1", 0, t + TICK, 9.0, 9.0), // stale: the state is no longer "none"
            step("c1", t - 1, t + TICK, 9.0, 9.0), // stale: another update
            step("c1", t, t + 500, 9.0, 9.0),  // same tick as the stored update
            step("c1", t, t + 750, 2.0, 0.5),  // next tick (t + 750 crosses it)
            step("c2", 0, t, 1.0, 1.0),        // another campaign, no state yet
        ])
        .await
        .unwrap();
    assert_eq!(results, vec![false, false, false, true, true]);
    let s = read(store, query(t, &[], &["c1", "c2"], &[])).await;
    assert_eq!(
        s.campaigns[0].pacing,
        Some(PacingState {
            integral: 2.0,
            last_error: 0.5,
            updated_ms: t + 750
        })
    );
    assert_eq!(
        s.campaigns[1].pacing,
        Some(PacingState {
            integral: 1.0,
            last_error: 1.0,
            updated_ms: t
        })
    );
    // Pacing and delivery live side by side.
    store
        .record(&[impression("x", t, "l1", "t1").campaign("c1")])
        .await
        .unwrap();
    let s = read(store, query(t, &[], &["c1"], &[])).await;
    assert_eq!(s.campaigns[0].delivered, 1);
    assert_eq!(s.campaigns[0].pacing.map(|p| p.updated_ms), Some(t + 750));
}

async fn pacing_concurrent_steps_one_per_tick(store: &Store) {
    const TASKS: usize = 8;
    const TICKS: i64 = 50;
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let barrier = barrier.clone();
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut applied = Vec::new();
            for tick in 1..=TICKS {
                barrier.wait().await;
                let now = T0 + tick * TICK + task as i64;
                let s = store.read(&query(now, &[], &["race"], &[])).await.unwrap();
                let (based_on, integral) = s.campaigns[0]
                    .pacing
                    .map_or((0, 0.0), |p| (p.updated_ms, p.integral));
                let delta = (tick * 100 + task as i64) as f64; // unique per proposal
                let ok = store
                    .write_pacing(&[step("race", based_on, now, integral + delta, delta)])
                    .await
                    .unwrap();
                if ok[0] {
                    applied.push((tick, delta));
                }
            }
            applied
        }));
    }
    let mut applied = Vec::new();
    for h in handles {
        applied.extend(h.await.unwrap());
    }
    applied.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let ticks: Vec<i64> = applied.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        ticks,
        (1..=TICKS).collect::<Vec<_>>(),
        "exactly one applied step per tick"
    );
    let s = store
        .read(&query(T0 + (TICKS + 1) * TICK, &[], &["race"], &[]))
        .await
        .unwrap();
    let p = s.campaigns[0].pacing.unwrap();
    let sum: f64 = applied.iter().map(|(_, d)| d).sum();
    assert_eq!(
        p.integral, sum,
        "no lost update: the integral is the sum of the applied steps"
    );
    assert_eq!(p.last_error, applied.last().unwrap().1);
}

// ---- embedded only: durability -------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_reopened_sees_everything() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig::new(dir.path().join("nested/state.redb"));
    let tracks = ["t1", "t2"];
    let q = StateQuery {
        now_ms: T0 + HOUR,
        listener_id: "l1",
        session_id: "s1",
        tracks: &tracks,
        campaigns: &["c1"],
        holders: &["A", "B"],
    };
    let before = {
        let store = EmbeddedStore::open(config.clone()).unwrap();
        store
            .record(&[
                impression("1", T0, "l1", "t1")
                    .campaign("c1")
                    .holder("A", 1),
                impression("2", T0, "l1", "t1").kind(EventKind::Stream),
                impression("3", T0, "l1", "t2").holder("B", 3),
            ])
            .await
            .unwrap();
        assert_eq!(
            store
                .write_pacing(&[step("c1", 0, T0, 0.25, -0.5)])
                .await
                .unwrap(),
            vec![true]
        );
        store.read(&q).await.unwrap()
    };
    assert_eq!(before.impressions_24h, vec![1, 1]);
    let store = EmbeddedStore::open(config).unwrap();
    assert_eq!(store.read(&q).await.unwrap(), before);
    // The de-dup ids survived too.
    let r = store
        .record(&[impression("1", T0, "l1", "t1").campaign("c1")])
        .await
        .unwrap();
    assert_eq!(r.duplicates, 1);
}

#[tokio::test]
async fn embedded_expires_old_data_but_answers_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
    store
        .record(&[
            impression("old", T0, "l1", "t1")
                .holder("A", 1)
                .kind(EventKind::Impression),
            impression("play", T0, "l1", "t1").kind(EventKind::Stream),
        ])
        .await
        .unwrap();
    // Eight days later (event time): the compaction removes the old data.
    store
        .record(&[impression("new", T0 + 8 * DAY, "l2", "t9").holder("B", 1)])
        .await
        .unwrap();
    let q = StateQuery {
        now_ms: T0 + 8 * DAY,
        listener_id: "l1",
        session_id: "s1",
        tracks: &["t1"],
        campaigns: &[],
        holders: &["A", "B"],
    };
    let s = store.read(&q).await.unwrap();
    assert_eq!(s.impressions_24h, vec![0]);
    assert_eq!(s.session_promoted, vec![0]);
    assert_eq!(s.exposure_share_7d, vec![Some(0.0), Some(1.0)]);
    drop(store);
    // What was removed is gone from the file too; the id "old" is still
    // remembered: ids are kept for 24 h of the server's clock from when
    // they were recorded (here: a moment ago), not by event time.
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
    let q = StateQuery {
        now_ms: T0 + HOUR,
        ..q
    };
    let s = store.read(&q).await.unwrap();
    assert_eq!((s.impressions_24h, s.session_promoted), (vec![0], vec![0]));
    assert_eq!(
        s.exposure_share_7d,
        vec![None, None],
        "the old hours were removed"
    );
    let r = store
        .record(&[impression("old", T0 + 8 * DAY, "l1", "t1")])
        .await
        .unwrap();
    assert_eq!((r.applied, r.duplicates), (0, 1));
}

static FAKE_NOW: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(T0);

fn fake_now() -> i64 {
    FAKE_NOW.load(std::sync::atomic::Ordering::SeqCst)
}

/// Event ids are forgotten 24 h of the server's clock after they were
/// recorded, whatever the events' own times (Redis's rule: a key's TTL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_event_ids_are_forgotten_a_window_after_they_were_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::new(dir.path());
    config.clock = fake_now;
    let store = EmbeddedStore::open(config).unwrap();
    let e = impression("x", T0 - 30 * DAY, "l1", "t1");
    assert_eq!(
        store
            .record(std::slice::from_ref(&e))
            .await
            .unwrap()
            .applied,
        1
    );
    FAKE_NOW.store(T0 + DAY - 1, std::sync::atomic::Ordering::SeqCst);
    let r = store.record(std::slice::from_ref(&e)).await.unwrap();
    assert_eq!(r.duplicates, 1, "remembered for 24 h of the server's clock");
    FAKE_NOW.store(T0 + DAY + 1, std::sync::atomic::Ordering::SeqCst);
    let r = store
        .record(&[impression("y", T0, "l1", "t2")])
        .await
        .unwrap();
    assert_eq!(r.applied, 1);
    let r = store.record(&[e]).await.unwrap();
    assert_eq!(r.applied, 1, "forgotten after 24 h of the server's clock");
}

/// A late event (48 h before the newest) retried after a restart is still
/// a duplicate: the id is remembered by when it was recorded, not by its
/// event time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_late_event_retried_after_a_restart_is_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let late = impression("late", T0 + DAY, "l1", "t2").campaign("c1");
    {
        let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
        let newest = impression("newest", T0 + 3 * DAY, "l1", "t1");
        let r = store.record(&[newest, late.clone()]).await.unwrap();
        assert_eq!(r.applied, 2);
    }
    let store: Store = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
    let r = store
        .record(&[impression("next", T0 + 3 * DAY + 1, "l1", "t1")])
        .await
        .unwrap();
    assert_eq!(r.applied, 1);
    let r = store.record(&[late]).await.unwrap();
    assert_eq!((r.applied, r.duplicates), (0, 1), "applied twice");
    let s = read(&store, query(T0 + 3 * DAY, &[], &["c1"], &[])).await;
    assert_eq!(s.campaigns[0].delivered, 1);
}

/// One event dated far ahead of the server's clock (a time in microseconds)
/// must not move the embedded store's expiry clock: everybody else's
/// counts, sessions, holder exposure and event ids stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_a_future_event_expires_no_one_elses_data() {
    let dir = tempfile::tempdir().unwrap();
    let store: Store = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
    let mine = [
        impression("a", T0, "l1", "t1").holder("A", 1),
        impression("b", T0, "l1", "t1").kind(EventKind::Stream),
    ];
    store.record(&mine).await.unwrap();
    let micros = impression("far", T0 * 1000, "l2", "t9").holder("B", 1);
    store.record(&[micros]).await.unwrap();
    // A second event crosses an hour of the (unmoved) clock.
    store
        .record(&[impression("c", T0 + HOUR, "l3", "t3")])
        .await
        .unwrap();
    let s = read(&store, query(T0 + HOUR, &["t1"], &[], &["A"])).await;
    assert_eq!(s.impressions_24h, vec![1], "l1's count was compacted away");
    assert_eq!(
        s.session_promoted,
        vec![1],
        "s1's plays were compacted away"
    );
    assert_eq!(s.exposure_share_7d, vec![Some(1.0)]);
    let r = store.record(&mine).await.unwrap();
    assert_eq!(r.duplicates, 2, "the ids were forgotten: applied twice");
}

#[test]
fn embedded_corrupt_or_foreign_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.redb");
    std::fs::write(&garbage, vec![0x5a; 64 * 1024]).unwrap();
    let e = EmbeddedStore::open(EmbeddedConfig::new(&garbage))
        .unwrap_err()
        .to_string();
    assert!(e.contains(&garbage.display().to_string()), "{e}");

    let foreign = dir.path().join("foreign.redb");
    {
        let db = redb::Database::create(&foreign).unwrap();
        let w = db.begin_write().unwrap();
        w.open_table(redb::TableDefinition::<&str, u64>::new("someone_else"))
            .unwrap()
            .insert("k", 1)
            .unwrap();
        w.commit().unwrap();
    }
    let e = EmbeddedStore::open(EmbeddedConfig::new(&foreign))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&foreign.display().to_string()) && e.contains("another program"),
        "{e}"
    );

    // A valid database whose tail was cut off (a damaged copy).
    let truncated = dir.path().join("truncated.redb");
    {
        let _ = EmbeddedStore::open(EmbeddedConfig::new(&truncated)).unwrap();
    }
    let len = std::fs::metadata(&truncated).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap();
    f.set_len(len / 3).unwrap();
    drop(f);
    let e = EmbeddedStore::open(EmbeddedConfig::new(&truncated))
        .unwrap_err()
        .to_string();
    assert!(e.contains(&truncated.display().to_string()), "{e}");
}

const KILL9_CHILD: &str = "OASIS_STATE_KILL9_CHILD_DB";

/// A child process (this test binary, re-run with an env var) records events
/// one call at a time and prints the id of each after `record` returned; the
/// parent SIGKILLs it mid-stream and reopens the database: every printed id
/// must be there.
#[test]
fn embedded_survives_kill_9() {
    if let Ok(path) = std::env::var(KILL9_CHILD) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let store = EmbeddedStore::open(EmbeddedConfig::new(path)).unwrap();
            for i in 0.. {
                let e = impression(&format!("k{i}"), T0 + i, "l1", "t1")
                    .campaign("c1")
                    .holder("A", 1);
                store.record(&[e]).await.unwrap();
                println!("acked k{i}");
            }
        });
        unreachable!();
    }
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kill9.redb");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "embedded_survives_kill_9",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KILL9_CHILD, &db)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    while acked.len() < 40 {
        let line = lines
            .next()
            .expect("the child stopped before 40 events")
            .unwrap();
        if let Some(id) = line.strip_prefix("acked ") {
            acked.push(id.to_string());
        }
    }
    child.kill().unwrap(); // SIGKILL, mid-write most likely
    child.wait().unwrap();
    for line in lines {
        if let Some(id) = line.unwrap().strip_prefix("acked ") {
            acked.push(id.to_string());
        }
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = EmbeddedStore::open(EmbeddedConfig::new(&db)).expect("reopens after kill -9");
        let q = StateQuery {
            now_ms: T0 + 1000,
            listener_id: "l1",
            session_id: "s1",
            tracks: &["t1"],
            campaigns: &["c1"],
            holders: &["A"],
        };
        let s = store.read(&q).await.unwrap();
        let delivered = s.campaigns[0].delivered;
        assert!(
            delivered >= acked.len() as u64,
            "{delivered} delivered < {} acked",
            acked.len()
        );
        let again: Vec<_> = acked
            .iter()
            .enumerate()
            .map(|(i, id)| impression(id, T0 + i as i64, "l1", "t1").campaign("c1"))
            .collect();
        let r = store.record(&again).await.unwrap();
        assert_eq!(
            r.duplicates,
            acked.len() as u64,
            "every acknowledged event is in the database"
        );
    });
}

/// Every round, 8 tasks read the same state, then each proposes a step in a
/// *later* tick than the stored one (two different ticks between them): the
/// tick rule alone would let several land and lose the steps between them;
/// the `based_on` compare lets exactly one land per round.
async fn pacing_stale_reads_across_ticks_lose_no_update(store: &Store) {
    const TASKS: usize = 8;
    const ROUNDS: i64 = 50;
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let (barrier, store) = (barrier.clone(), store.clone());
        handles.push(tokio::spawn(async move {
            let mut applied = Vec::new();
            for round in 1..=ROUNDS {
                let s = store.read(&query(T0, &[], &["stale"], &[])).await.unwrap();
                let (based_on, integral) = s.campaigns[0]
                    .pacing
                    .map_or((0, 0.0), |p| (p.updated_ms, p.integral));
                barrier.wait().await; // everyone has read the same state
                let at = T0 + (round * 10 + (task % 2) as i64) * TICK + task as i64;
                let delta = (round * 100 + task as i64) as f64;
                let ok = store
                    .write_pacing(&[step("stale", based_on, at, integral + delta, delta)])
                    .await
                    .unwrap();
                if ok[0] {
                    applied.push((round, delta));
                }
                barrier.wait().await; // the round is over before the next read
            }
            applied
        }));
    }
    let mut applied = Vec::new();
    for h in handles {
        applied.extend(h.await.unwrap());
    }
    applied.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rounds: Vec<i64> = applied.iter().map(|(r, _)| *r).collect();
    assert_eq!(
        rounds,
        (1..=ROUNDS).collect::<Vec<_>>(),
        "exactly one applied step per round"
    );
    let s = store.read(&query(T0, &[], &["stale"], &[])).await.unwrap();
    let sum: f64 = applied.iter().map(|(_, d)| d).sum();
    assert_eq!(
        s.campaigns[0].pacing.unwrap().integral,
        sum,
        "no lost update"
    );
}

#[test]
fn a_database_open_elsewhere_is_refused_naming_the_ways_out() {
    // A second server on the same policy directory opens the same default
    // state file: the error must say what to do, not only what happened.
    let dir = tempfile::tempdir().unwrap();
    let _first = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
    let Err(e) = EmbeddedStore::open(EmbeddedConfig::new(dir.path())) else {
        panic!("a second open of one database succeeded");
    };
    let message = e.to_string();
    for way in ["--state-dir", "--state off", "--state redis"] {
        assert!(message.contains(way), "{way} missing from: {message}");
    }
}
