//! Metrics of the delivery state, events, the decision log and outcomes.

use super::Catalog;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// Labels of an event count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// `applied`, `duplicate`, `buffered` (queued while the store is down)
    /// or `busy` (refused with 503), counting events; `invalid` counts
    /// batches refused with a 4xx.
    pub result: &'static str,
}

/// Labels of a delivery state operation count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateOpLabels {
    /// What: `read_ok`, `read_fallback` (last-known values used),
    /// `read_error`, `write_error`, `events_buffered`, `events_dropped`,
    /// `events_refused` (the embedded store could not make them durable;
    /// answered 503), `events_flushed`, `pacing_applied`, `pacing_refused` (the write rule
    /// refused a stale or same-tick step), `pacing_dropped` (writer queue
    /// full).
    pub op: &'static str,
}

/// Labels of the decision log's record counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLogLabels {
    /// `written`, `dropped` (queue full), `refused` (outcomes: queue full,
    /// answered 503) or `failed` (I/O).
    pub state: &'static str,
}

/// Publishes a count since start: a count that never left 0 has no series
/// (it never happened); one that did is set whatever it is now. A written
/// count can go back down, to 0 too: the rows of a Parquet file that could
/// not be finished move from written to failed, and a series left at its
/// last non-zero value would count them twice.
fn set_count(family: &Family<DecisionLogLabels, Gauge>, labels: &DecisionLogLabels, n: u64) {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    if n > 0 {
        family.get_or_create(labels).set(n);
    } else if let Some(g) = family.get(labels) {
        g.set(n);
    }
}

/// Delivery state, event, decision log and outcome metrics.
pub struct StateMetrics {
    /// Decision log records since start, by what became of them.
    pub decision_log: Family<DecisionLogLabels, Gauge>,
    /// Outcome events since start (`POST /v1/outcomes`), by what became of
    /// them.
    pub outcome_events: Family<DecisionLogLabels, Gauge>,
    /// The decision log's disk budget since start: `deleted_files`,
    /// `deleted_bytes`, `paused_records`, `paused_events`.
    pub decision_log_budget: Family<DecisionLogLabels, Gauge>,
    /// 1 while the decision log is paused by its disk budget or its disk
    /// is full, else 0.
    pub decision_log_paused: Gauge,
    /// Delivery state store operations since start, by what became of them.
    pub state_ops: Family<StateOpLabels, Gauge>,
    /// 1 while the delivery state store is degraded (scoring on last-known
    /// values, events queued), else 0.
    pub state_degraded: Gauge,
    /// Events queued for the delivery state store now.
    pub state_queued_events: Gauge,
    /// `POST /v1/events`: events by what became of them.
    pub events: Family<EventLabels, Counter>,
    /// Scoring requests answered in organic order because the listener and
    /// session counts a frequency cap relies on were unknown.
    /// (Created on first use: most deployments never see one.)
    pub counts_unknown: Family<super::NoLabels, Counter>,
}

impl StateMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Catalog<'_>) -> Self {
        let m = StateMetrics {
            decision_log: Family::default(),
            outcome_events: Family::default(),
            decision_log_budget: Family::default(),
            decision_log_paused: Gauge::default(),
            state_ops: Family::default(),
            state_degraded: Gauge::default(),
            state_queued_events: Gauge::default(),
            events: Family::default(),
            counts_unknown: Family::default(),
        };
        registry.register(
            "state_operations",
            "Delivery state store operations since start, by op (read_ok, read_fallback, read_error, write_error, events_buffered, events_dropped, events_refused, events_flushed, pacing_applied, pacing_refused, pacing_dropped)",
            m.state_ops.clone(),
        );
        registry.register(
            "state_degraded",
            "1 while the delivery state store is degraded (last-known values, events queued)",
            m.state_degraded.clone(),
        );
        registry.register(
            "events",
            "POST /v1/events: events by result (applied, duplicate, buffered, invalid, busy)",
            m.events.clone(),
        );
        registry.register(
            "state_counts_unknown",
            "Scoring requests answered in organic order (nothing promoted) because the listener and session counts a frequency cap relies on were unknown",
            m.counts_unknown.clone(),
        );
        registry.register(
            "state_queued_events",
            "Events queued for the delivery state store",
            m.state_queued_events.clone(),
        );
        registry.register(
            "outcome_events",
            "Outcome events since start: written, refused (queue full, answered 503), failed (I/O)",
            m.outcome_events.clone(),
        );
        registry.register(
            "decision_log_records",
            "Decision log records since start: written, dropped (queue full), failed (I/O)",
            m.decision_log.clone(),
        );
        registry.register(
            "decision_log_budget",
            "Decision log disk budget since start: deleted_files, deleted_bytes (oldest files deleted), paused_records, paused_events (not written while paused)",
            m.decision_log_budget.clone(),
        );
        registry.register(
            "decision_log_paused",
            "1 while the decision log is paused by its disk budget or its disk is full (ENOSPC)",
            m.decision_log_paused.clone(),
        );
        m
    }

    /// Publishes the decision log's disk budget state.
    pub fn decision_log_budget(&self, b: &crate::decision_log::BudgetStats) {
        for (state, n) in [
            ("deleted_files", b.deleted_files),
            ("deleted_bytes", b.deleted_bytes),
            ("paused_records", b.paused_records),
            ("paused_events", b.paused_events),
        ] {
            set_count(&self.decision_log_budget, &DecisionLogLabels { state }, n);
        }
        self.decision_log_paused
            .set(i64::from(b.paused || b.disk_full));
    }

    /// Counts `n` events of `/v1/events` with `result`.
    pub fn events(&self, result: &'static str, n: u64) {
        if n > 0 {
            self.events.get_or_create(&EventLabels { result }).inc_by(n);
        }
    }

    /// Publishes the decision log's counts.
    pub fn decision_log_stats(&self, s: &crate::decision_log::DecisionLogStats) {
        for (state, n) in [
            ("written", s.written),
            ("dropped", s.dropped),
            ("failed", s.failed),
        ] {
            set_count(&self.decision_log, &DecisionLogLabels { state }, n);
        }
    }

    /// Publishes the outcome event counts.
    pub fn outcome_stats(&self, s: &crate::decision_log::OutcomeStats) {
        for (state, n) in [
            ("written", s.written),
            ("refused", s.refused),
            ("failed", s.failed),
        ] {
            set_count(&self.outcome_events, &DecisionLogLabels { state }, n);
        }
    }

    /// Publishes the delivery state store's health.
    pub fn state_stats(&self, h: &oasis_state::Health, pacing_dropped: u64) {
        let c = &h.counters;
        for (op, n) in [
            ("read_ok", c.read_ok),
            ("read_fallback", c.read_fallback),
            ("read_error", c.read_errors),
            ("write_error", c.write_errors),
            ("events_buffered", c.events_buffered),
            ("events_dropped", c.events_dropped),
            ("events_refused", c.events_refused),
            ("events_flushed", c.events_flushed),
            ("pacing_applied", c.pacing_applied),
            ("pacing_refused", c.pacing_refused),
            ("pacing_dropped", pacing_dropped),
        ] {
            if n > 0 {
                self.state_ops
                    .get_or_create(&StateOpLabels { op })
                    .set(n as i64);
            }
        }
        self.state_degraded
            .set(i64::from(h.state != oasis_state::HealthState::Ok));
        self.state_queued_events.set(h.queued_events as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    fn text(family: &Family<DecisionLogLabels, Gauge>) -> String {
        let mut registry = Registry::default();
        registry.register("records", "Records.", family.clone());
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        out
    }

    /// A count that went back to 0 is published as 0, not left at its last
    /// value (a full disk's lost Parquet file once showed its rows as both
    /// written and failed); one that never left 0 has no series.
    #[test]
    fn a_count_back_at_zero_is_published_as_zero() {
        let family = Family::<DecisionLogLabels, Gauge>::default();
        let written = DecisionLogLabels { state: "written" };
        let failed = DecisionLogLabels { state: "failed" };
        set_count(&family, &failed, 0);
        assert!(!text(&family).contains("failed"), "{}", text(&family));
        set_count(&family, &written, 105);
        assert!(text(&family).contains("records{state=\"written\"} 105"));
        set_count(&family, &written, 0);
        set_count(&family, &failed, 105);
        let t = text(&family);
        assert!(t.contains("records{state=\"written\"} 0"), "{t}");
        assert!(t.contains("records{state=\"failed\"} 105"), "{t}");
    }
}
