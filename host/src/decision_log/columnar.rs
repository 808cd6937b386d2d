//! The columnar decision log: Parquet files (zstd pages) with one row per
//! logged decision, in the layout the data team's tools read fastest.
//!
//! A row holds what a [JSON line](super::record) holds, but as typed
//! columns rather than the request's text: the record's own fields (`logged_at`,
//! `request_id`, `route`, `variant`, `arm`, `shadow`, the policy version,
//! `settings_sha256`, the fallback, timings and resources), the request's
//! context as scalar columns, and everything per candidate as **list
//! columns aligned by candidate index** (`candidate_id[i]`, `relevance[i]`,
//! `campaign_id[i]`, `features[i]`, `score[i]`, `eligible[i]`,
//! `reasons[i]`, `promoted[i]`, `propensity[i]`, …), so that one
//! `UNNEST` of several lists (DuckDB) or one `explode` (pandas) gives a row
//! per candidate. The full column list is in
//! `docs/decision-logs-and-replay.md` ("Parquet schema").
//!
//! # Exact numbers
//!
//! Every number is stored in binary (`DOUBLE`, `BIGINT`, …), as the server
//! held it: the request's floats are those the server parsed from the body
//! (the same parser replay uses on a JSON line), the decisions those the
//! policy returned, and the delivery-state fill (`state`, sparse JSON, as in
//! the JSON line) is read back with a correctly rounded parser. A row read
//! back rebuilds the same batch the policy saw, bit for bit, without a JSON
//! parse ([`ParquetRows::replay_record`]).
//!
//! # Versions
//!
//! Each file's key-value metadata holds [`SCHEMA_VERSION_KEY`] =
//! [`SCHEMA_VERSION`] and [`KIND_KEY`] (`decisions` or `outcomes`). Columns
//! may be added without a new version (readers look columns up by name and
//! ignore the ones they do not know); removing or retyping one bumps it,
//! and a reader refuses a file of a newer version, naming it.
//!
//! # Files
//!
//! The writer ([`super::writer`]) writes `<name>.parquet.tmp` and renames it
//! to `<name>.parquet` once closed (footer written, synced), so a reader
//! never sees a half-written file: a crash leaves a `.tmp` file that readers
//! ignore (and the disk budget counts).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, ListBuilder, StringBuilder,
    TimestampMillisecondBuilder, UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float64Type, Int64Type, TimestampMillisecondType, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, ListArray, PrimitiveArray,
    RecordBatch, StringArray, TimestampMillisecondArray, UInt16Array, UInt32Array, UInt64Array,
};
use arrow_schema::{Field, Schema, SchemaRef};
use oasis_contract::Surface;
use oasis_contract::reason::PROMOTED;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde_json::value::RawValue;

use super::body::Pseudonymiser;
use super::outcomes::{DeliveryFields, EventKind, OutcomeEvent};
use super::record::{
    DecisionColumnsRecord, DecisionRecord, FallbackRecord, PolicyRefRecord, ReplayRecord,
    TimingRecord, UsageRecord,
};
use super::writer::PendingRecord;
use crate::delivery::Fill;
use crate::request::columns::{self, CandidateColumns, Columnar};
use crate::request::{
    Features, RequestCampaign, RequestCandidate, RequestContext, RequestHolder, ScoreRequest,
    ValidRequest,
};

/// The version of the Parquet layout written by this build.
pub const SCHEMA_VERSION: u32 = 2;
/// Key-value metadata key of the layout's version.
pub const SCHEMA_VERSION_KEY: &str = "oasis.decision_log.schema_version";
/// Key-value metadata key of the file's kind: `decisions` or `outcomes`.
pub const KIND_KEY: &str = "oasis.decision_log.kind";
/// zstd level of the pages: the library's default, fast.
const ZSTD_LEVEL: i32 = 3;
/// Rows per row group at most (a row group is held in memory, encoded,
/// until it is written).
const ROW_GROUP_ROWS: usize = 1024;

/// A Parquet file or row that is not one this build can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// A column is missing or has another type.
    #[error("column `{column}` is missing or is not {expected}")]
    Column {
        /// The column.
        column: &'static str,
        /// The Arrow type expected.
        expected: &'static str,
    },
    /// The file is not a decision log file of a version this reader knows.
    #[error("{0}")]
    Version(String),
    /// A row's values are inconsistent (lists of different lengths, an
    /// unknown surface, an unreadable state).
    #[error("row {row}: {message}")]
    Row {
        /// Row index in its batch.
        row: usize,
        /// What is wrong.
        message: String,
    },
}

/// Checks a file's key-value metadata: its kind is `kind` and its schema
/// version one this reader knows.
///
/// # Errors
/// [`SchemaError::Version`] naming what was found.
pub fn check_metadata(kv: Option<&Vec<KeyValue>>, kind: &'static str) -> Result<(), SchemaError> {
    let get = |key: &str| {
        kv.and_then(|kv| kv.iter().find(|e| e.key == key))
            .and_then(|e| e.value.as_deref())
    };
    let Some(version) = get(SCHEMA_VERSION_KEY) else {
        return Err(SchemaError::Version(format!(
            "not an oasis decision log file (no `{SCHEMA_VERSION_KEY}` in its metadata)"
        )));
    };
    match version.parse::<u32>() {
        Ok(v) if (1..=SCHEMA_VERSION).contains(&v) => {}
        _ => {
            return Err(SchemaError::Version(format!(
                "schema version {version:?}; this build reads versions 1 to {SCHEMA_VERSION} (a newer oasis wrote it?)"
            )));
        }
    }
    match get(KIND_KEY) {
        Some(k) if k == kind => Ok(()),
        other => Err(SchemaError::Version(format!(
            "a file of {} where {kind} were expected",
            other.unwrap_or("unknown kind")
        ))),
    }
}

/// The writer properties of a log file of `kind`: zstd pages, bounded row
/// groups, the schema version in the key-value metadata.
pub(super) fn properties(kind: &'static str) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(ZSTD_LEVEL).expect("a valid zstd level"),
        ))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_key_value_metadata(Some(vec![
            KeyValue::new(SCHEMA_VERSION_KEY.into(), SCHEMA_VERSION.to_string()),
            KeyValue::new(KIND_KEY.into(), kind.to_string()),
        ]))
        .set_created_by(format!("oasis {}", env!("CARGO_PKG_VERSION")))
        .build()
}

type Strings = ListBuilder<StringBuilder>;
type Floats = ListBuilder<Float64Builder>;
type Ints = ListBuilder<Int64Builder>;
type U32s = ListBuilder<UInt32Builder>;

/// Decision rows being built (the writer thread's buffer of one file).
pub(super) struct DecisionRows {
    rows: usize,
    /// Bytes appended, roughly (for the file's size estimate).
    bytes: usize,
    at: TimestampMillisecondBuilder,
    request_id: StringBuilder,
    route: StringBuilder,
    variant: StringBuilder,
    arm: StringBuilder,
    shadow: BooleanBuilder,
    policy: StringBuilder,
    policy_version: StringBuilder,
    digest: StringBuilder,
    settings_sha256: StringBuilder,
    fallback_policy: StringBuilder,
    fallback_version: StringBuilder,
    fallback_digest: StringBuilder,
    fallback_error_kind: StringBuilder,
    fallback_error: StringBuilder,
    server_us: UInt64Builder,
    policy_us: UInt64Builder,
    usage_wall_us: UInt64Builder,
    usage_peak_memory_bytes: UInt64Builder,
    usage_fuel: UInt64Builder,
    request_route: StringBuilder,
    listener_id: StringBuilder,
    session_id: StringBuilder,
    surface: StringBuilder,
    market: StringBuilder,
    timestamp_ms: Int64Builder,
    seed: UInt64Builder,
    slate_size: UInt32Builder,
    debug: BooleanBuilder,
    context_feature_names: Strings,
    context_features: Floats,
    candidate_id: Strings,
    relevance: Floats,
    artist: Strings,
    rights_holder: Strings,
    impressions_24h: U32s,
    session_promoted: U32s,
    campaign_id: Strings,
    campaigns_id: Strings,
    campaigns_start_ms: Ints,
    campaigns_end_ms: Ints,
    campaigns_surfaces: ListBuilder<Strings>,
    campaigns_markets: ListBuilder<Strings>,
    campaigns_delivery_target: Floats,
    campaigns_delivered: Floats,
    campaigns_expected_by_now: Floats,
    campaigns_pacing_integral: Floats,
    campaigns_pacing_last_error: Floats,
    campaigns_pacing_updated_ms: Ints,
    campaigns_commission_bps: U32s,
    feature_names: Strings,
    features: ListBuilder<Floats>,
    holder_ids: Strings,
    holder_exposure_share_7d: Floats,
    score: Floats,
    eligible: ListBuilder<BooleanBuilder>,
    reasons: ListBuilder<UInt16Builder>,
    promoted: ListBuilder<BooleanBuilder>,
    propensity: Floats,
    state: StringBuilder,
}

impl Default for DecisionRows {
    fn default() -> Self {
        DecisionRows {
            rows: 0,
            bytes: 0,
            at: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            request_id: StringBuilder::new(),
            route: StringBuilder::new(),
            variant: StringBuilder::new(),
            arm: StringBuilder::new(),
            shadow: BooleanBuilder::new(),
            policy: StringBuilder::new(),
            policy_version: StringBuilder::new(),
            digest: StringBuilder::new(),
            settings_sha256: StringBuilder::new(),
            fallback_policy: StringBuilder::new(),
            fallback_version: StringBuilder::new(),
            fallback_digest: StringBuilder::new(),
            fallback_error_kind: StringBuilder::new(),
            fallback_error: StringBuilder::new(),
            server_us: UInt64Builder::new(),
            policy_us: UInt64Builder::new(),
            usage_wall_us: UInt64Builder::new(),
            usage_peak_memory_bytes: UInt64Builder::new(),
            usage_fuel: UInt64Builder::new(),
            request_route: StringBuilder::new(),
            listener_id: StringBuilder::new(),
            session_id: StringBuilder::new(),
            surface: StringBuilder::new(),
            market: StringBuilder::new(),
            timestamp_ms: Int64Builder::new(),
            seed: UInt64Builder::new(),
            slate_size: UInt32Builder::new(),
            debug: BooleanBuilder::new(),
            context_feature_names: Strings::default(),
            context_features: Floats::default(),
            candidate_id: Strings::default(),
            relevance: Floats::default(),
            artist: Strings::default(),
            rights_holder: Strings::default(),
            impressions_24h: U32s::default(),
            session_promoted: U32s::default(),
            campaign_id: Strings::default(),
            campaigns_id: Strings::default(),
            campaigns_start_ms: Ints::default(),
            campaigns_end_ms: Ints::default(),
            campaigns_surfaces: ListBuilder::new(Strings::default()),
            campaigns_markets: ListBuilder::new(Strings::default()),
            campaigns_delivery_target: Floats::default(),
            campaigns_delivered: Floats::default(),
            campaigns_expected_by_now: Floats::default(),
            campaigns_pacing_integral: Floats::default(),
            campaigns_pacing_last_error: Floats::default(),
            campaigns_pacing_updated_ms: Ints::default(),
            campaigns_commission_bps: U32s::default(),
            feature_names: Strings::default(),
            features: ListBuilder::new(Floats::default()),
            holder_ids: Strings::default(),
            holder_exposure_share_7d: Floats::default(),
            score: Floats::default(),
            eligible: ListBuilder::new(BooleanBuilder::new()),
            reasons: ListBuilder::new(UInt16Builder::new()),
            promoted: ListBuilder::new(BooleanBuilder::new()),
            propensity: Floats::default(),
            state: StringBuilder::new(),
        }
    }
}

impl DecisionRows {
    /// The schema of a decision file.
    pub fn schema() -> SchemaRef {
        DecisionRows::default().finish().schema()
    }

    /// Rows buffered.
    pub(super) fn len(&self) -> usize {
        self.rows
    }

    /// Bytes buffered, roughly (uncompressed).
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Appends one record whose request body parsed as `req`; listener and
    /// session ids are pseudonymised when `p` is given.
    pub(super) fn append(
        &mut self,
        r: &PendingRecord,
        req: &ScoreRequest<'_>,
        p: Option<&Pseudonymiser>,
    ) {
        self.rows += 1;
        self.bytes += r.request.len() / 3 + 64 * r.decisions.scores.len() + 512;
        self.at.append_value(r.at_ms as i64);
        self.request_id.append_value(&r.request_id);
        self.route.append_value(&r.route);
        self.variant.append_value(&r.variant);
        self.arm.append_value(&r.arm);
        self.shadow.append_value(r.shadow);
        self.policy.append_value(&*r.policy.name);
        self.policy_version.append_value(&r.policy.version);
        self.digest.append_value(&r.policy.digest);
        self.settings_sha256.append_value(&r.settings_sha256);
        let f = r.fallback.as_ref();
        self.fallback_policy
            .append_option(f.map(|f| &*f.policy.name));
        self.fallback_version
            .append_option(f.map(|f| &f.policy.version));
        self.fallback_digest
            .append_option(f.map(|f| &f.policy.digest));
        self.fallback_error_kind
            .append_option(f.map(|f| &f.error_kind));
        self.fallback_error.append_option(f.map(|f| &f.error));
        self.server_us.append_value(r.timing.server_us);
        self.policy_us.append_value(r.timing.policy_us);
        let u = r.usage.as_ref();
        self.usage_wall_us.append_option(u.map(|u| u.wall_us));
        self.usage_peak_memory_bytes
            .append_option(u.map(|u| u.peak_memory_bytes));
        self.usage_fuel.append_option(u.and_then(|u| u.fuel));

        let c = &req.context;
        self.request_route.append_option(req.route.as_deref());
        fn id<'x>(p: Option<&Pseudonymiser>, id: &'x str) -> Cow<'x, str> {
            match p {
                Some(p) => Cow::Owned(p.pseudonym(id)),
                None => Cow::Borrowed(id),
            }
        }
        self.listener_id.append_value(id(p, &c.listener_id));
        self.session_id.append_value(id(p, &c.session_id));
        self.surface.append_value(c.surface.name());
        self.market.append_value(&c.market);
        self.timestamp_ms.append_value(c.timestamp_ms);
        self.seed.append_option(c.seed);
        self.slate_size.append_option(c.slate_size);
        self.debug.append_value(req.debug);
        for (name, v) in c.features.iter() {
            self.context_feature_names.values().append_value(name);
            self.context_features.values().append_option(v);
        }
        self.context_feature_names.append(true);
        self.context_features.append(true);

        // The request's feature names in first-seen order, and each
        // candidate's values aligned to them (the batch's own rule: a
        // later value of a name replaces an earlier one, null = missing).
        let mut names: Vec<&str> = Vec::new();
        for cand in &req.candidates {
            for (name, _) in cand.features.iter() {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        let mut row = vec![None; names.len()];
        let mut seen = foldhash::HashSet::<&str>::default();
        for cand in &req.candidates {
            self.candidate_id.values().append_value(&cand.id);
            self.relevance.values().append_value(cand.relevance);
            self.artist.values().append_value(&cand.artist);
            self.rights_holder
                .values()
                .append_value(&cand.rights_holder);
            self.impressions_24h
                .values()
                .append_option(cand.impressions_24h);
            self.session_promoted
                .values()
                .append_option(cand.session_promoted);
            let camp = cand.campaign.as_ref();
            self.campaign_id
                .values()
                .append_option(camp.map(|k| &*k.id));
            // A campaign's details once per request (its copies agree: the
            // request was validated), in order of first appearance.
            if let Some(k) = camp
                && seen.insert(&*k.id)
            {
                self.append_campaign(k);
            }
            row.iter_mut().for_each(|v| *v = None);
            for (name, v) in cand.features.iter() {
                if let (Some(j), Some(v)) = (names.iter().position(|n| *n == name), v) {
                    row[j] = Some(v);
                }
            }
            for v in &row {
                self.features.values().values().append_option(*v);
            }
            self.features.values().append(true);
        }
        for name in &names {
            self.feature_names.values().append_value(name);
        }
        for l in [
            &mut self.candidate_id,
            &mut self.artist,
            &mut self.rights_holder,
            &mut self.campaign_id,
            &mut self.campaigns_id,
            &mut self.feature_names,
        ] {
            l.append(true);
        }
        for l in [
            &mut self.relevance,
            &mut self.campaigns_delivery_target,
            &mut self.campaigns_delivered,
            &mut self.campaigns_expected_by_now,
            &mut self.campaigns_pacing_integral,
            &mut self.campaigns_pacing_last_error,
        ] {
            l.append(true);
        }
        for l in [
            &mut self.campaigns_start_ms,
            &mut self.campaigns_end_ms,
            &mut self.campaigns_pacing_updated_ms,
        ] {
            l.append(true);
        }
        for l in [
            &mut self.impressions_24h,
            &mut self.session_promoted,
            &mut self.campaigns_commission_bps,
        ] {
            l.append(true);
        }
        self.campaigns_surfaces.append(true);
        self.campaigns_markets.append(true);
        self.features.append(true);

        match &req.rights_holders {
            Some(holders) => {
                // Sorted: a map has no order, and a file should not depend
                // on a hasher's.
                let mut sorted: Vec<(&str, &RequestHolder)> =
                    holders.iter().map(|(k, v)| (&**k, v)).collect();
                sorted.sort_by(|a, b| a.0.cmp(b.0));
                for (k, v) in sorted {
                    self.holder_ids.values().append_value(k);
                    self.holder_exposure_share_7d
                        .values()
                        .append_value(v.exposure_share_7d);
                }
                self.holder_ids.append(true);
                self.holder_exposure_share_7d.append(true);
            }
            None => {
                self.holder_ids.append(false);
                self.holder_exposure_share_7d.append(false);
            }
        }

        let d = &r.decisions;
        self.score.values().append_slice(&d.scores);
        self.score.append(true);
        self.eligible.values().append_slice(&d.eligible);
        self.eligible.append(true);
        self.reasons.values().append_slice(&d.reasons);
        self.reasons.append(true);
        for b in &d.reasons {
            self.promoted.values().append_value(b & PROMOTED != 0);
        }
        self.promoted.append(true);
        self.propensity.values().append_slice(&d.propensity);
        self.propensity.append(true);
        // The fill is sparse and rarely queried: JSON, as in the JSON line,
        // read back with exact float parsing (`Fill`'s `Deserialize`).
        self.state.append_option(
            r.state
                .as_deref()
                .map(|f| serde_json::to_string(f).expect("a fill encodes")),
        );
    }

    /// Appends one entry to the row's campaign table (`campaigns_*`).
    fn append_campaign(&mut self, k: &RequestCampaign<'_>) {
        self.campaigns_id.values().append_value(&k.id);
        self.campaigns_start_ms.values().append_value(k.start_ms);
        self.campaigns_end_ms.values().append_value(k.end_ms);
        match &k.surfaces {
            Some(surfaces) => {
                for s in surfaces {
                    self.campaigns_surfaces
                        .values()
                        .values()
                        .append_value(s.name());
                }
                self.campaigns_surfaces.values().append(true);
            }
            None => self.campaigns_surfaces.values().append(false),
        }
        for m in &k.markets {
            self.campaigns_markets.values().values().append_value(m);
        }
        self.campaigns_markets.values().append(true);
        self.campaigns_delivery_target
            .values()
            .append_value(k.delivery_target);
        self.campaigns_delivered.values().append_option(k.delivered);
        self.campaigns_expected_by_now
            .values()
            .append_option(k.expected_by_now);
        self.campaigns_pacing_integral
            .values()
            .append_option(k.pacing_integral);
        self.campaigns_pacing_last_error
            .values()
            .append_option(k.pacing_last_error);
        self.campaigns_pacing_updated_ms
            .values()
            .append_option(k.pacing_updated_ms);
        self.campaigns_commission_bps
            .values()
            .append_value(k.commission_bps);
    }

    /// The buffered rows as one batch; the buffer is empty afterwards.
    pub(super) fn finish(&mut self) -> RecordBatch {
        self.rows = 0;
        self.bytes = 0;
        let columns: Vec<(&'static str, ArrayRef)> = vec![
            ("logged_at", Arc::new(self.at.finish())),
            ("request_id", Arc::new(self.request_id.finish())),
            ("route", Arc::new(self.route.finish())),
            ("variant", Arc::new(self.variant.finish())),
            ("arm", Arc::new(self.arm.finish())),
            ("shadow", Arc::new(self.shadow.finish())),
            ("policy", Arc::new(self.policy.finish())),
            ("policy_version", Arc::new(self.policy_version.finish())),
            ("digest", Arc::new(self.digest.finish())),
            ("settings_sha256", Arc::new(self.settings_sha256.finish())),
            ("fallback_policy", Arc::new(self.fallback_policy.finish())),
            ("fallback_version", Arc::new(self.fallback_version.finish())),
            ("fallback_digest", Arc::new(self.fallback_digest.finish())),
            (
                "fallback_error_kind",
                Arc::new(self.fallback_error_kind.finish()),
            ),
            ("fallback_error", Arc::new(self.fallback_error.finish())),
            ("server_us", Arc::new(self.server_us.finish())),
            ("policy_us", Arc::new(self.policy_us.finish())),
            ("usage_wall_us", Arc::new(self.usage_wall_us.finish())),
            (
                "usage_peak_memory_bytes",
                Arc::new(self.usage_peak_memory_bytes.finish()),
            ),
            ("usage_fuel", Arc::new(self.usage_fuel.finish())),
            ("request_route", Arc::new(self.request_route.finish())),
            ("listener_id", Arc::new(self.listener_id.finish())),
            ("session_id", Arc::new(self.session_id.finish())),
            ("surface", Arc::new(self.surface.finish())),
            ("market", Arc::new(self.market.finish())),
            ("timestamp_ms", Arc::new(self.timestamp_ms.finish())),
            ("seed", Arc::new(self.seed.finish())),
            ("slate_size", Arc::new(self.slate_size.finish())),
            ("debug", Arc::new(self.debug.finish())),
            (
                "context_feature_names",
                Arc::new(self.context_feature_names.finish()),
            ),
            ("context_features", Arc::new(self.context_features.finish())),
            ("candidate_id", Arc::new(self.candidate_id.finish())),
            ("relevance", Arc::new(self.relevance.finish())),
            ("artist", Arc::new(self.artist.finish())),
            ("rights_holder", Arc::new(self.rights_holder.finish())),
            ("impressions_24h", Arc::new(self.impressions_24h.finish())),
            ("session_promoted", Arc::new(self.session_promoted.finish())),
            ("campaign_id", Arc::new(self.campaign_id.finish())),
            ("campaigns_id", Arc::new(self.campaigns_id.finish())),
            (
                "campaigns_start_ms",
                Arc::new(self.campaigns_start_ms.finish()),
            ),
            ("campaigns_end_ms", Arc::new(self.campaigns_end_ms.finish())),
            (
                "campaigns_surfaces",
                Arc::new(self.campaigns_surfaces.finish()),
            ),
            (
                "campaigns_markets",
                Arc::new(self.campaigns_markets.finish()),
            ),
            (
                "campaigns_delivery_target",
                Arc::new(self.campaigns_delivery_target.finish()),
            ),
            (
                "campaigns_delivered",
                Arc::new(self.campaigns_delivered.finish()),
            ),
            (
                "campaigns_expected_by_now",
                Arc::new(self.campaigns_expected_by_now.finish()),
            ),
            (
                "campaigns_pacing_integral",
                Arc::new(self.campaigns_pacing_integral.finish()),
            ),
            (
                "campaigns_pacing_last_error",
                Arc::new(self.campaigns_pacing_last_error.finish()),
            ),
            (
                "campaigns_pacing_updated_ms",
                Arc::new(self.campaigns_pacing_updated_ms.finish()),
            ),
            (
                "campaigns_commission_bps",
                Arc::new(self.campaigns_commission_bps.finish()),
            ),
            ("feature_names", Arc::new(self.feature_names.finish())),
            ("features", Arc::new(self.features.finish())),
            ("holder_ids", Arc::new(self.holder_ids.finish())),
            (
                "holder_exposure_share_7d",
                Arc::new(self.holder_exposure_share_7d.finish()),
            ),
            ("score", Arc::new(self.score.finish())),
            ("eligible", Arc::new(self.eligible.finish())),
            ("reasons", Arc::new(self.reasons.finish())),
            ("promoted", Arc::new(self.promoted.finish())),
            ("propensity", Arc::new(self.propensity.finish())),
            ("state", Arc::new(self.state.finish())),
        ];
        batch(columns)
    }
}

/// A batch of `columns`, every field nullable.
fn batch(columns: Vec<(&'static str, ArrayRef)>) -> RecordBatch {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, a)| Field::new(*name, a.data_type().clone(), true))
        .collect();
    let arrays = columns.into_iter().map(|(_, a)| a).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("builders of one row count")
}

/// Outcome rows being built.
pub(super) struct OutcomeRows {
    rows: usize,
    request_id: StringBuilder,
    candidate_id: StringBuilder,
    event: StringBuilder,
    value: Float64Builder,
    at: TimestampMillisecondBuilder,
    event_id: StringBuilder,
    listener_id: StringBuilder,
    session_id: StringBuilder,
    campaign_id: StringBuilder,
    rights_holder: StringBuilder,
    promoted: BooleanBuilder,
    position: UInt32Builder,
}

impl Default for OutcomeRows {
    fn default() -> Self {
        OutcomeRows {
            rows: 0,
            request_id: StringBuilder::new(),
            candidate_id: StringBuilder::new(),
            event: StringBuilder::new(),
            value: Float64Builder::new(),
            at: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            event_id: StringBuilder::new(),
            listener_id: StringBuilder::new(),
            session_id: StringBuilder::new(),
            campaign_id: StringBuilder::new(),
            rights_holder: StringBuilder::new(),
            promoted: BooleanBuilder::new(),
            position: UInt32Builder::new(),
        }
    }
}

impl OutcomeRows {
    /// The schema of an outcome file.
    pub fn schema() -> SchemaRef {
        OutcomeRows::default().finish().schema()
    }

    /// Rows buffered.
    pub(super) fn len(&self) -> usize {
        self.rows
    }

    /// Appends one event (its value as given: `null` when it had none).
    pub(super) fn append(&mut self, e: &OutcomeEvent) {
        self.rows += 1;
        self.request_id.append_value(&e.request_id);
        self.candidate_id.append_value(&e.candidate_id);
        self.event.append_value(event_name(e.event));
        self.value.append_option(e.value);
        self.at.append_option(e.at_ms.map(|t| t as i64));
        let d = &e.delivery;
        self.event_id.append_option(d.event_id.as_deref());
        self.listener_id.append_option(d.listener_id.as_deref());
        self.session_id.append_option(d.session_id.as_deref());
        self.campaign_id.append_option(d.campaign_id.as_deref());
        self.rights_holder.append_option(d.rights_holder.as_deref());
        self.promoted.append_option(d.promoted);
        self.position.append_option(d.position);
    }

    /// The buffered rows as one batch; the buffer is empty afterwards.
    pub(super) fn finish(&mut self) -> RecordBatch {
        self.rows = 0;
        batch(vec![
            ("request_id", Arc::new(self.request_id.finish())),
            ("candidate_id", Arc::new(self.candidate_id.finish())),
            ("event", Arc::new(self.event.finish())),
            ("value", Arc::new(self.value.finish())),
            ("event_at", Arc::new(self.at.finish())),
            ("event_id", Arc::new(self.event_id.finish())),
            ("listener_id", Arc::new(self.listener_id.finish())),
            ("session_id", Arc::new(self.session_id.finish())),
            ("campaign_id", Arc::new(self.campaign_id.finish())),
            ("rights_holder", Arc::new(self.rights_holder.finish())),
            ("promoted", Arc::new(self.promoted.finish())),
            ("position", Arc::new(self.position.finish())),
        ])
    }
}

fn event_name(e: EventKind) -> &'static str {
    match e {
        EventKind::Impression => "impression",
        EventKind::Stream => "stream",
        EventKind::Skip => "skip",
        EventKind::Save => "save",
    }
}

fn event_kind(name: &str) -> Option<EventKind> {
    Some(match name {
        "impression" => EventKind::Impression,
        "stream" => EventKind::Stream,
        "skip" => EventKind::Skip,
        "save" => EventKind::Save,
        _ => return None,
    })
}

// ---------------------------------------------------------------- reading

fn column<'b>(b: &'b RecordBatch, name: &'static str) -> Option<&'b ArrayRef> {
    b.column_by_name(name)
}

fn strings<'b>(b: &'b RecordBatch, name: &'static str) -> Result<&'b StringArray, SchemaError> {
    column(b, name)
        .and_then(|a| a.as_string_opt::<i32>())
        .ok_or(SchemaError::Column {
            column: name,
            expected: "Utf8",
        })
}

fn primitive<'b, T: arrow_array::ArrowPrimitiveType>(
    b: &'b RecordBatch,
    name: &'static str,
    expected: &'static str,
) -> Result<&'b PrimitiveArray<T>, SchemaError> {
    column(b, name)
        .and_then(|a| a.as_primitive_opt::<T>())
        .ok_or(SchemaError::Column {
            column: name,
            expected,
        })
}

fn booleans<'b>(b: &'b RecordBatch, name: &'static str) -> Result<&'b BooleanArray, SchemaError> {
    column(b, name)
        .and_then(|a| a.as_boolean_opt())
        .ok_or(SchemaError::Column {
            column: name,
            expected: "Boolean",
        })
}

/// A list column and its values.
#[derive(Clone, Copy)]
struct List<'b, V> {
    list: &'b ListArray,
    values: &'b V,
}

impl<V> List<'_, V> {
    /// The range of `values` of `row` (empty when null).
    fn span(&self, row: usize) -> std::ops::Range<usize> {
        if self.list.is_null(row) {
            return 0..0;
        }
        let o = self.list.value_offsets();
        o[row] as usize..o[row + 1] as usize
    }
}

fn list<'b, V: 'static>(
    b: &'b RecordBatch,
    name: &'static str,
    expected: &'static str,
    values: impl Fn(&'b ArrayRef) -> Option<&'b V>,
) -> Result<List<'b, V>, SchemaError> {
    let err = SchemaError::Column {
        column: name,
        expected,
    };
    let list = column(b, name)
        .and_then(|a| a.as_list_opt::<i32>())
        .ok_or(err.clone())?;
    let values = values(list.values()).ok_or(err)?;
    Ok(List { list, values })
}

fn str_list<'b>(
    b: &'b RecordBatch,
    name: &'static str,
) -> Result<List<'b, StringArray>, SchemaError> {
    list(b, name, "List<Utf8>", |a| a.as_string_opt::<i32>())
}

/// The per-candidate string columns [`read_schema`] asks to read as
/// string views: the strings stay in the decoded pages (or the dictionary)
/// instead of being copied into one buffer per column, which halved their
/// decode (candidate ids 9.2 -> 5.7 µs a 300-candidate row,
/// `oasis-bench parquet-decode`).
pub const VIEW_COLUMNS: [&str; 3] = ["candidate_id", "artist", "rights_holder"];

/// The schema to read a decision file with: the file's own, with the items
/// of [`VIEW_COLUMNS`] as `Utf8View`; `None` when the file's are not
/// `List<Utf8>` (then the reader's check names the column).
pub fn read_schema(file: &Schema) -> Option<SchemaRef> {
    use arrow_schema::DataType;
    let fields = file
        .fields()
        .iter()
        .map(|f| {
            if !VIEW_COLUMNS.contains(&f.name().as_str()) {
                return Some(f.clone());
            }
            match f.data_type() {
                DataType::List(item) if item.data_type() == &DataType::Utf8 => {
                    let item = item.as_ref().clone().with_data_type(DataType::Utf8View);
                    Some(Arc::new(
                        f.as_ref()
                            .clone()
                            .with_data_type(DataType::List(Arc::new(item))),
                    ))
                }
                _ => None,
            }
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Arc::new(Schema::new_with_metadata(
        fields,
        file.metadata().clone(),
    )))
}

/// A string column read either way: plain (`Utf8`, as written) or as views
/// (`Utf8View`, as [`read_schema`] reads the big ones).
#[derive(Clone, Copy)]
enum Strs<'b> {
    Plain(&'b StringArray),
    View(&'b arrow_array::StringViewArray),
}

impl<'b> Strs<'b> {
    fn value(&self, i: usize) -> &'b str {
        match *self {
            Strs::Plain(a) => a.value(i),
            Strs::View(a) => a.value(i),
        }
    }
}

/// A list column of strings read either way ([`Strs`]).
#[derive(Clone, Copy)]
struct StrList<'b> {
    list: &'b ListArray,
    values: Strs<'b>,
}

impl StrList<'_> {
    fn span(&self, row: usize) -> std::ops::Range<usize> {
        List {
            list: self.list,
            values: &(),
        }
        .span(row)
    }
}

fn view_list<'b>(b: &'b RecordBatch, name: &'static str) -> Result<StrList<'b>, SchemaError> {
    let err = SchemaError::Column {
        column: name,
        expected: "List<Utf8>",
    };
    let list = column(b, name)
        .and_then(|a| a.as_list_opt::<i32>())
        .ok_or(err.clone())?;
    let values = list.values();
    let values = if let Some(a) = values.as_string_opt::<i32>() {
        Strs::Plain(a)
    } else if let Some(a) = values.as_string_view_opt() {
        Strs::View(a)
    } else {
        return Err(err);
    };
    Ok(StrList { list, values })
}

fn prim_list<'b, T: arrow_array::ArrowPrimitiveType>(
    b: &'b RecordBatch,
    name: &'static str,
    expected: &'static str,
) -> Result<List<'b, PrimitiveArray<T>>, SchemaError> {
    list(b, name, expected, |a| a.as_primitive_opt::<T>())
}

fn nested<'b, V: 'static>(
    b: &'b RecordBatch,
    name: &'static str,
    expected: &'static str,
    values: impl Fn(&'b ArrayRef) -> Option<&'b V>,
) -> Result<(List<'b, ListArray>, &'b V), SchemaError> {
    let outer = list(b, name, expected, |a| a.as_list_opt::<i32>())?;
    let inner = values(outer.values.values()).ok_or(SchemaError::Column {
        column: name,
        expected,
    })?;
    Ok((outer, inner))
}

fn opt_str(a: &StringArray, i: usize) -> Option<&str> {
    (!a.is_null(i)).then(|| a.value(i))
}

fn opt<T: arrow_array::ArrowPrimitiveType>(a: &PrimitiveArray<T>, i: usize) -> Option<T::Native> {
    (!a.is_null(i)).then(|| a.value(i))
}

/// The campaign columns of a decision batch. Schema version 2 keeps each
/// request's distinct campaigns once (`campaigns_*`, one entry per campaign
/// in order of first appearance), matched to candidates by `campaign_id`;
/// version 1 repeated them per candidate (`campaign_*`), and is still read.
/// (Most candidates are organic: the per-candidate columns were eleven lists
/// of nulls, ~17 µs of a 65 µs row decode at 300 candidates.)
struct CampaignColumns<'b> {
    /// Version 2: the table's ids. `None`: version 1, per candidate.
    ids: Option<List<'b, StringArray>>,
    start_ms: List<'b, Int64Array>,
    end_ms: List<'b, Int64Array>,
    surfaces: (List<'b, ListArray>, &'b StringArray),
    markets: (List<'b, ListArray>, &'b StringArray),
    delivery_target: List<'b, Float64Array>,
    delivered: List<'b, Float64Array>,
    expected_by_now: List<'b, Float64Array>,
    pacing_integral: List<'b, Float64Array>,
    pacing_last_error: List<'b, Float64Array>,
    pacing_updated_ms: List<'b, Int64Array>,
    commission_bps: List<'b, UInt32Array>,
}

/// The column names of [`CampaignColumns`] after the id, in both versions.
const CAMPAIGN_COLUMNS: [[&str; 11]; 2] = [
    [
        "campaign_start_ms",
        "campaign_end_ms",
        "campaign_surfaces",
        "campaign_markets",
        "campaign_delivery_target",
        "campaign_delivered",
        "campaign_expected_by_now",
        "campaign_pacing_integral",
        "campaign_pacing_last_error",
        "campaign_pacing_updated_ms",
        "campaign_commission_bps",
    ],
    [
        "campaigns_start_ms",
        "campaigns_end_ms",
        "campaigns_surfaces",
        "campaigns_markets",
        "campaigns_delivery_target",
        "campaigns_delivered",
        "campaigns_expected_by_now",
        "campaigns_pacing_integral",
        "campaigns_pacing_last_error",
        "campaigns_pacing_updated_ms",
        "campaigns_commission_bps",
    ],
];

/// One row's view of its campaign columns: where its entries start, and
/// (version 2) the table's ids.
struct CampaignTableRow {
    /// Version 2: the range of the row's table entries.
    table: Option<std::ops::Range<usize>>,
    /// Start of the row's entries in each of the 11 columns.
    starts: [usize; 11],
    /// Version 2: the next table entry not yet matched (entries are in order
    /// of first appearance, so a new campaign is usually this one).
    next: usize,
}

impl<'b> CampaignColumns<'b> {
    fn new(b: &'b RecordBatch) -> Result<Self, SchemaError> {
        let v2 = column(b, "campaigns_id").is_some();
        let n = &CAMPAIGN_COLUMNS[usize::from(v2)];
        let f64s = |k: usize| prim_list::<Float64Type>(b, n[k], "List<Float64>");
        let i64s = |k: usize| prim_list::<Int64Type>(b, n[k], "List<Int64>");
        let list_strs =
            |k: usize| nested(b, n[k], "List<List<Utf8>>", |a| a.as_string_opt::<i32>());
        Ok(CampaignColumns {
            ids: if v2 {
                Some(str_list(b, "campaigns_id")?)
            } else {
                None
            },
            start_ms: i64s(0)?,
            end_ms: i64s(1)?,
            surfaces: list_strs(2)?,
            markets: list_strs(3)?,
            delivery_target: f64s(4)?,
            delivered: f64s(5)?,
            expected_by_now: f64s(6)?,
            pacing_integral: f64s(7)?,
            pacing_last_error: f64s(8)?,
            pacing_updated_ms: i64s(9)?,
            commission_bps: prim_list::<UInt32Type>(b, n[10], "List<UInt32>")?,
        })
    }

    /// `row`'s campaign entries, checked: version 2, every column as long
    /// as the table; version 1, as the `n` candidates.
    fn table(&self, row: usize, n: usize) -> Result<CampaignTableRow, String> {
        let spans = [
            self.start_ms.span(row),
            self.end_ms.span(row),
            self.surfaces.0.span(row),
            self.markets.0.span(row),
            self.delivery_target.span(row),
            self.delivered.span(row),
            self.expected_by_now.span(row),
            self.pacing_integral.span(row),
            self.pacing_last_error.span(row),
            self.pacing_updated_ms.span(row),
            self.commission_bps.span(row),
        ];
        let table = self.ids.as_ref().map(|ids| ids.span(row));
        let (len, of) = match &table {
            Some(t) => (t.len(), "campaigns in campaigns_id"),
            None => (n, "candidates"),
        };
        let version = usize::from(table.is_some());
        if let Some(k) = spans.iter().position(|s| s.len() != len) {
            return Err(format!(
                "{} has {} entries for {len} {of}",
                CAMPAIGN_COLUMNS[version][k],
                spans[k].len()
            ));
        }
        Ok(CampaignTableRow {
            next: table.as_ref().map_or(0, |t| t.start),
            table,
            starts: spans.map(|s| s.start),
        })
    }

    /// Candidate `i`'s campaign `id`, rebuilt from its entry.
    fn campaign<'a>(
        &'a self,
        t: &mut CampaignTableRow,
        i: usize,
        id: &'a str,
    ) -> Result<RequestCampaign<'a>, String> {
        let at = self.entry_of(t, i, id)?;
        self.entry(t, at, id)
    }

    /// The position, from the row's first entry, of candidate `i`'s
    /// campaign `id`: version 2, its entry in the table; version 1, `i`.
    fn entry_of(&self, t: &mut CampaignTableRow, i: usize, id: &str) -> Result<usize, String> {
        Ok(match (&t.table, &self.ids) {
            (Some(table), Some(ids)) => {
                let next = t.next;
                let j = if next < table.end && ids.values.value(next) == id {
                    t.next = next + 1;
                    next
                } else {
                    // A campaign seen before (or a file not in first-
                    // appearance order: anywhere in the table).
                    (table.start..table.end)
                        .find(|&j| ids.values.value(j) == id)
                        .ok_or_else(|| {
                            format!(
                                "candidate {i}'s campaign_id {id:?} is not among the request's campaigns_id"
                            )
                        })?
                };
                j - table.start
            }
            _ => i,
        })
    }

    /// The campaign `id` of the row's entry `at` (from its first).
    fn entry<'a>(
        &'a self,
        t: &CampaignTableRow,
        at: usize,
        id: &'a str,
    ) -> Result<RequestCampaign<'a>, String> {
        let s = |k: usize| t.starts[k] + at;
        let strings = |(rows, values): &(List<'a, ListArray>, &'a StringArray), k: usize| {
            let j = s(k);
            (!rows.values.is_null(j)).then(|| {
                let o = rows.values.value_offsets();
                (o[j] as usize..o[j + 1] as usize).map(|x| values.value(x))
            })
        };
        let surfaces = match strings(&self.surfaces, 2) {
            None => None,
            Some(names) => Some(
                names
                    .map(|name| {
                        Surface::from_name(name).ok_or_else(|| format!("unknown surface {name:?}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let markets = strings(&self.markets, 3)
            .map(|m| m.map(Cow::Borrowed).collect())
            .unwrap_or_default();
        let f = |l: &List<'_, Float64Array>, k: usize| opt(l.values, s(k));
        Ok(RequestCampaign {
            id: Cow::Borrowed(id),
            start_ms: opt(self.start_ms.values, s(0)).unwrap_or(0),
            end_ms: opt(self.end_ms.values, s(1)).unwrap_or(0),
            surfaces,
            markets,
            delivery_target: f(&self.delivery_target, 4).unwrap_or(0.0),
            delivered: f(&self.delivered, 5),
            expected_by_now: f(&self.expected_by_now, 6),
            pacing_integral: f(&self.pacing_integral, 7),
            pacing_last_error: f(&self.pacing_last_error, 8),
            pacing_updated_ms: opt(self.pacing_updated_ms.values, s(9)),
            commission_bps: opt(self.commission_bps.values, s(10)).unwrap_or(0),
        })
    }
}

/// The per-candidate lists beside `candidate_id`, in the order of
/// [`ParquetRows::candidate_spans`].
const CANDIDATE_LISTS: [&str; 7] = [
    "relevance",
    "artist",
    "rights_holder",
    "impressions_24h",
    "session_promoted",
    "campaign_id",
    "features",
];

/// The typed columns of one decision batch, looked up once per batch.
pub struct ParquetRows<'b> {
    rows: usize,
    at: &'b TimestampMillisecondArray,
    request_id: &'b StringArray,
    route: &'b StringArray,
    variant: &'b StringArray,
    arm: &'b StringArray,
    shadow: &'b BooleanArray,
    policy: &'b StringArray,
    policy_version: &'b StringArray,
    digest: &'b StringArray,
    settings_sha256: &'b StringArray,
    fallback_policy: &'b StringArray,
    fallback_version: &'b StringArray,
    fallback_digest: &'b StringArray,
    fallback_error_kind: &'b StringArray,
    fallback_error: &'b StringArray,
    server_us: &'b UInt64Array,
    policy_us: &'b UInt64Array,
    usage_wall_us: &'b UInt64Array,
    usage_peak_memory_bytes: &'b UInt64Array,
    usage_fuel: &'b UInt64Array,
    request_route: &'b StringArray,
    listener_id: &'b StringArray,
    session_id: &'b StringArray,
    surface: &'b StringArray,
    market: &'b StringArray,
    timestamp_ms: &'b Int64Array,
    seed: &'b UInt64Array,
    slate_size: &'b UInt32Array,
    debug: &'b BooleanArray,
    context_feature_names: List<'b, StringArray>,
    context_features: List<'b, Float64Array>,
    candidate_id: StrList<'b>,
    relevance: List<'b, Float64Array>,
    artist: StrList<'b>,
    rights_holder: StrList<'b>,
    impressions_24h: List<'b, UInt32Array>,
    session_promoted: List<'b, UInt32Array>,
    campaign_id: List<'b, StringArray>,
    campaigns: CampaignColumns<'b>,
    feature_names: List<'b, StringArray>,
    features: (List<'b, ListArray>, &'b Float64Array),
    holder_ids: List<'b, StringArray>,
    holder_exposure_share_7d: List<'b, Float64Array>,
    score: List<'b, Float64Array>,
    eligible: List<'b, BooleanArray>,
    reasons: List<'b, UInt16Array>,
    propensity: List<'b, Float64Array>,
    state: &'b StringArray,
}

/// Feature values of one row, owned (a candidate's `Features::Row`
/// borrows them).
#[derive(Debug, Default)]
pub struct FeatureBuffer {
    names: Vec<String>,
    /// Row-major, one row per candidate; NaN = missing.
    values: Vec<f64>,
}

impl<'b> ParquetRows<'b> {
    /// Looks up the columns of a decision batch.
    ///
    /// # Errors
    /// [`SchemaError::Column`] naming a column that is missing or of
    /// another type.
    pub fn new(b: &'b RecordBatch) -> Result<Self, SchemaError> {
        use arrow_array::types::TimestampMillisecondType as Ts;
        let f64s = |n| prim_list::<Float64Type>(b, n, "List<Float64>");
        let u32s = |n| prim_list::<UInt32Type>(b, n, "List<UInt32>");
        let strs = |n| str_list(b, n);
        Ok(ParquetRows {
            rows: b.num_rows(),
            at: primitive::<Ts>(b, "logged_at", "Timestamp(ms)")?,
            request_id: strings(b, "request_id")?,
            route: strings(b, "route")?,
            variant: strings(b, "variant")?,
            arm: strings(b, "arm")?,
            shadow: booleans(b, "shadow")?,
            policy: strings(b, "policy")?,
            policy_version: strings(b, "policy_version")?,
            digest: strings(b, "digest")?,
            settings_sha256: strings(b, "settings_sha256")?,
            fallback_policy: strings(b, "fallback_policy")?,
            fallback_version: strings(b, "fallback_version")?,
            fallback_digest: strings(b, "fallback_digest")?,
            fallback_error_kind: strings(b, "fallback_error_kind")?,
            fallback_error: strings(b, "fallback_error")?,
            server_us: primitive::<UInt64Type>(b, "server_us", "UInt64")?,
            policy_us: primitive::<UInt64Type>(b, "policy_us", "UInt64")?,
            usage_wall_us: primitive::<UInt64Type>(b, "usage_wall_us", "UInt64")?,
            usage_peak_memory_bytes: primitive::<UInt64Type>(
                b,
                "usage_peak_memory_bytes",
                "UInt64",
            )?,
            usage_fuel: primitive::<UInt64Type>(b, "usage_fuel", "UInt64")?,
            request_route: strings(b, "request_route")?,
            listener_id: strings(b, "listener_id")?,
            session_id: strings(b, "session_id")?,
            surface: strings(b, "surface")?,
            market: strings(b, "market")?,
            timestamp_ms: primitive::<Int64Type>(b, "timestamp_ms", "Int64")?,
            seed: primitive::<UInt64Type>(b, "seed", "UInt64")?,
            slate_size: primitive::<UInt32Type>(b, "slate_size", "UInt32")?,
            debug: booleans(b, "debug")?,
            context_feature_names: strs("context_feature_names")?,
            context_features: f64s("context_features")?,
            candidate_id: view_list(b, "candidate_id")?,
            relevance: f64s("relevance")?,
            artist: view_list(b, "artist")?,
            rights_holder: view_list(b, "rights_holder")?,
            impressions_24h: u32s("impressions_24h")?,
            session_promoted: u32s("session_promoted")?,
            campaign_id: strs("campaign_id")?,
            campaigns: CampaignColumns::new(b)?,
            feature_names: strs("feature_names")?,
            features: nested(b, "features", "List<List<Float64>>", |a| {
                a.as_primitive_opt::<Float64Type>()
            })?,
            holder_ids: strs("holder_ids")?,
            holder_exposure_share_7d: f64s("holder_exposure_share_7d")?,
            score: f64s("score")?,
            eligible: list(b, "eligible", "List<Boolean>", |a| a.as_boolean_opt())?,
            reasons: prim_list::<UInt16Type>(b, "reasons", "List<UInt16>")?,
            propensity: f64s("propensity")?,
            state: strings(b, "state")?,
        })
    }

    /// Rows in the batch.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// `row`'s request id.
    pub fn request_id(&self, row: usize) -> &str {
        self.request_id.value(row)
    }

    /// Whether the batch has no row.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Loads `row`'s candidate features into `buf` (before
    /// [`request`](Self::request) on the same row).
    pub fn load_features(&self, row: usize, buf: &mut FeatureBuffer) {
        buf.names.clear();
        buf.values.clear();
        let names = self.feature_names.span(row);
        buf.names
            .extend(names.map(|j| self.feature_names.values.value(j).to_owned()));
        let (rows, values) = &self.features;
        for c in rows.span(row) {
            let span = if rows.values.is_null(c) {
                0..0
            } else {
                let o = rows.values.value_offsets();
                o[c] as usize..o[c + 1] as usize
            };
            let width = buf.names.len();
            let got = span.len().min(width);
            buf.values
                .extend(span.take(got).map(|j| opt(values, j).unwrap_or(f64::NAN)));
            buf.values
                .extend(std::iter::repeat_n(f64::NAN, width - got));
        }
    }

    fn row_error(row: usize, message: impl Into<String>) -> SchemaError {
        SchemaError::Row {
            row,
            message: message.into(),
        }
    }

    /// `row`'s candidate ids and, in [`CANDIDATE_LISTS`] order, the spans of
    /// its other per-candidate lists, each checked to have one entry per
    /// candidate, and `buf` checked to hold this row's features.
    fn candidate_spans(
        &self,
        row: usize,
        buf: &FeatureBuffer,
    ) -> Result<(std::ops::Range<usize>, [std::ops::Range<usize>; 7]), String> {
        let ids = self.candidate_id.span(row);
        let n = ids.len();
        let spans = [
            self.relevance.span(row),
            self.artist.span(row),
            self.rights_holder.span(row),
            self.impressions_24h.span(row),
            self.session_promoted.span(row),
            self.campaign_id.span(row),
            self.features.0.span(row),
        ];
        if let Some(k) = spans.iter().position(|s| s.len() != n) {
            return Err(format!(
                "{} has {} entries for {n} candidates",
                CANDIDATE_LISTS[k],
                spans[k].len()
            ));
        }
        if buf.values.len() != n * buf.names.len() {
            return Err("the feature buffer was loaded for another row".into());
        }
        Ok((ids, spans))
    }

    /// `row`'s request, rebuilt from its columns (strings borrowed from the
    /// batch, candidate features from `buf`, loaded by
    /// [`load_features`](Self::load_features) for this row).
    ///
    /// # Errors
    /// [`SchemaError::Row`]: candidate lists of different lengths, an
    /// unknown surface.
    pub fn request<'a>(
        &'a self,
        row: usize,
        buf: &'a FeatureBuffer,
    ) -> Result<ScoreRequest<'a>, SchemaError> {
        let err = |m: String| Self::row_error(row, m);
        let (ids, spans) = self.candidate_spans(row, buf).map_err(err)?;
        let n = ids.len();
        let width = buf.names.len();
        let start = |k: usize| spans[k].start;
        let mut table = self.campaigns.table(row, n).map_err(err)?;
        let mut candidates = Vec::with_capacity(n);
        for i in 0..n {
            let campaign = match opt_str(self.campaign_id.values, start(5) + i) {
                None => None,
                Some(id) => Some(Box::new(
                    self.campaigns.campaign(&mut table, i, id).map_err(err)?,
                )),
            };
            candidates.push(RequestCandidate {
                id: Cow::Borrowed(self.candidate_id.values.value(ids.start + i)),
                relevance: self.relevance.values.value(start(0) + i),
                artist: Cow::Borrowed(self.artist.values.value(start(1) + i)),
                rights_holder: Cow::Borrowed(self.rights_holder.values.value(start(2) + i)),
                impressions_24h: opt(self.impressions_24h.values, start(3) + i),
                session_promoted: opt(self.session_promoted.values, start(4) + i),
                campaign,
                features: if width == 0 {
                    Features::default()
                } else {
                    Features::Row {
                        names: &buf.names,
                        values: &buf.values[i * width..(i + 1) * width],
                    }
                },
            });
        }
        Ok(ScoreRequest {
            route: opt_str(self.request_route, row).map(Cow::Borrowed),
            context: self.context(row)?,
            candidates,
            rights_holders: self.rights_holders(row)?,
            debug: !self.debug.is_null(row) && self.debug.value(row),
        })
    }

    /// `row`'s request context.
    fn context(&self, row: usize) -> Result<RequestContext<'_>, SchemaError> {
        let err = |m: String| Self::row_error(row, m);
        let surface = self.surface.value(row);
        let surface = Surface::from_name(surface)
            .ok_or_else(|| err(format!("unknown surface {surface:?}")))?;
        let cf_names = self.context_feature_names.span(row);
        let cf_values = self.context_features.span(row);
        if cf_names.len() != cf_values.len() {
            return Err(err(format!(
                "context_features has {} values for {} names",
                cf_values.len(),
                cf_names.len()
            )));
        }
        let context_features = cf_names
            .zip(cf_values)
            .map(|(j, k)| {
                (
                    Cow::Borrowed(self.context_feature_names.values.value(j)),
                    opt(self.context_features.values, k),
                )
            })
            .collect();
        Ok(RequestContext {
            request_id: Cow::Borrowed(self.request_id.value(row)),
            listener_id: Cow::Borrowed(self.listener_id.value(row)),
            session_id: Cow::Borrowed(self.session_id.value(row)),
            surface,
            market: Cow::Borrowed(self.market.value(row)),
            timestamp_ms: self.timestamp_ms.value(row),
            seed: opt(self.seed, row),
            features: Features::Named(context_features),
            slate_size: opt(self.slate_size, row),
        })
    }

    /// `row`'s rights-holder table, when the request sent one.
    #[allow(clippy::type_complexity)]
    fn rights_holders(
        &self,
        row: usize,
    ) -> Result<Option<HashMap<Cow<'_, str>, RequestHolder>>, SchemaError> {
        if self.holder_ids.list.is_null(row) {
            return Ok(None);
        }
        let ids = self.holder_ids.span(row);
        let shares = self.holder_exposure_share_7d.span(row);
        if ids.len() != shares.len() {
            return Err(Self::row_error(
                row,
                format!(
                    "holder_exposure_share_7d has {} values for {} holders",
                    shares.len(),
                    ids.len()
                ),
            ));
        }
        Ok(Some(
            ids.zip(shares)
                .map(|(j, k)| {
                    (
                        Cow::Borrowed(self.holder_ids.values.value(j)),
                        RequestHolder {
                            exposure_share_7d: self.holder_exposure_share_7d.values.value(k),
                        },
                    )
                })
                .collect(),
        ))
    }

    /// `row`'s request checked on its columns and packed straight into a
    /// [`ValidRequest`] ([`crate::request::columns`]: each campaign of the
    /// row's table, each artist and holder checked once, the features as one
    /// matrix), with the features of `buf`, loaded by
    /// [`load_features`](Self::load_features) for this row. `None` when that
    /// path does not take the row (a version-1 file, lists of different
    /// lengths, anything invalid): [`request`](Self::request) and
    /// [`Validate::validate`](crate::request::Validate::validate) then say
    /// what is wrong, exactly as they always did.
    pub fn valid_request<'a>(
        &'a self,
        row: usize,
        buf: &'a FeatureBuffer,
        max_candidates: usize,
    ) -> Option<ValidRequest<'a>> {
        let (ids, spans) = self.candidate_spans(row, buf).ok()?;
        let n = ids.len();
        let mut table = self.campaigns.table(row, n).ok()?;
        let (Some(entries), Some(table_ids)) = (table.table.clone(), &self.campaigns.ids) else {
            return None;
        };
        let campaigns = (0..entries.len())
            .map(|at| {
                let id = table_ids.values.value(entries.start + at);
                self.campaigns.entry(&table, at, id).ok()
            })
            .collect::<Option<Vec<_>>>()?;
        let campaign_ids = spans[5].start;
        let mut campaign = Vec::with_capacity(n);
        for i in 0..n {
            campaign.push(match opt_str(self.campaign_id.values, campaign_ids + i) {
                None => -1,
                Some(id) => self.campaigns.entry_of(&mut table, i, id).ok()? as i64,
            });
        }
        let candidates = RowCandidates {
            ids: (self.candidate_id.values, ids.start),
            relevance: &self.relevance.values.values()[spans[0].clone()],
            artist: (self.artist.values, spans[1].start),
            rights_holder: (self.rights_holder.values, spans[2].start),
            impressions_24h: (self.impressions_24h.values, spans[3].start),
            session_promoted: (self.session_promoted.values, spans[4].start),
            campaign,
            buf,
        };
        columns::validate(
            Columnar {
                route: opt_str(self.request_route, row).map(Cow::Borrowed),
                context: self.context(row).ok()?,
                candidates,
                campaigns,
                rights_holders: self.rights_holders(row).ok()?,
                debug: !self.debug.is_null(row) && self.debug.value(row),
            },
            max_candidates,
        )
    }

    /// `row`'s decision columns.
    pub fn decisions(&self, row: usize) -> DecisionColumnsRecord {
        let f = |l: &List<'_, Float64Array>| l.values.values()[l.span(row)].to_vec();
        DecisionColumnsRecord {
            scores: f(&self.score),
            eligible: self
                .eligible
                .span(row)
                .map(|j| self.eligible.values.value(j))
                .collect(),
            reasons: self.reasons.values.values()[self.reasons.span(row)].to_vec(),
            propensity: f(&self.propensity),
        }
    }

    /// `row`'s delivery-state fill.
    ///
    /// # Errors
    /// [`SchemaError::Row`] when the `state` JSON does not read.
    pub fn state(&self, row: usize) -> Result<Option<Fill>, SchemaError> {
        opt_str(self.state, row)
            .map(|s| {
                serde_json::from_str(s)
                    .map_err(|e| Self::row_error(row, format!("state does not read: {e}")))
            })
            .transpose()
    }

    fn policy_ref(&self, row: usize) -> PolicyRefRecord {
        PolicyRefRecord {
            name: self.policy.value(row).to_owned(),
            version: self.policy_version.value(row).to_owned(),
            digest: self.digest.value(row).to_owned(),
        }
    }

    /// `row` as replay reads it: the request rebuilt in place (no JSON
    /// parse), borrowing from the batch and `buf` (see
    /// [`load_features`](Self::load_features)).
    ///
    /// # Errors
    /// As [`request`](Self::request) and [`state`](Self::state).
    pub fn replay_record<'a>(
        &'a self,
        row: usize,
        buf: &'a FeatureBuffer,
    ) -> Result<ReplayRecord<'a>, SchemaError> {
        let request = self.request(row, buf)?;
        let mut record = self.replay_fields(row)?;
        record.request = Some(request);
        Ok(record)
    }

    /// `row` as replay reads it, without its request (`request` is `None`):
    /// for a row whose request comes from
    /// [`valid_request`](Self::valid_request).
    ///
    /// # Errors
    /// As [`state`](Self::state).
    pub fn replay_fields(&self, row: usize) -> Result<ReplayRecord<'_>, SchemaError> {
        Ok(ReplayRecord {
            request_id: Cow::Borrowed(self.request_id.value(row)),
            route: Cow::Borrowed(self.route.value(row)),
            variant: Cow::Borrowed(self.variant.value(row)),
            arm: Cow::Borrowed(self.arm.value(row)),
            shadow: self.shadow.value(row),
            policy: self.policy_ref(row),
            settings_sha256: Cow::Borrowed(self.settings_sha256.value(row)),
            request: None,
            state: self.state(row)?,
            decisions: self.decisions(row),
        })
    }

    /// `row` as a [`DecisionRecord`]: its `request` is the request rebuilt
    /// from the columns and written as JSON (the same values, floats in
    /// their shortest round-trip form; not the original text).
    ///
    /// # Errors
    /// As [`replay_record`](Self::replay_record).
    pub fn decision_record(&self, row: usize) -> Result<DecisionRecord, SchemaError> {
        let mut buf = FeatureBuffer::default();
        self.load_features(row, &mut buf);
        let request = self.request(row, &buf)?;
        let json = serde_json::to_string(&request).expect("a request encodes");
        let fallback = opt_str(self.fallback_policy, row).map(|name| FallbackRecord {
            policy: PolicyRefRecord {
                name: name.to_owned(),
                version: opt_str(self.fallback_version, row)
                    .unwrap_or_default()
                    .to_owned(),
                digest: opt_str(self.fallback_digest, row)
                    .unwrap_or_default()
                    .to_owned(),
            },
            error_kind: opt_str(self.fallback_error_kind, row)
                .unwrap_or_default()
                .to_owned(),
            error: opt_str(self.fallback_error, row)
                .unwrap_or_default()
                .to_owned(),
        });
        Ok(DecisionRecord {
            v: super::record::VERSION,
            at_ms: self.at.value(row) as u64,
            request_id: self.request_id.value(row).to_owned(),
            route: self.route.value(row).to_owned(),
            variant: self.variant.value(row).to_owned(),
            arm: self.arm.value(row).to_owned(),
            shadow: self.shadow.value(row),
            policy: self.policy_ref(row),
            settings_sha256: self.settings_sha256.value(row).to_owned(),
            fallback,
            request: RawValue::from_string(json).expect("serde_json writes JSON"),
            state: self.state(row)?,
            decisions: self.decisions(row),
            timing: TimingRecord {
                server_us: self.server_us.value(row),
                policy_us: self.policy_us.value(row),
            },
            usage: opt(self.usage_wall_us, row).map(|wall_us| UsageRecord {
                wall_us,
                peak_memory_bytes: opt(self.usage_peak_memory_bytes, row).unwrap_or(0),
                fuel: opt(self.usage_fuel, row),
            }),
        })
    }
}

/// One row's candidate columns, as [`columns::validate`] reads them: each
/// a column of the batch and where the row's entries start in it.
struct RowCandidates<'a> {
    ids: (Strs<'a>, usize),
    relevance: &'a [f64],
    artist: (Strs<'a>, usize),
    rights_holder: (Strs<'a>, usize),
    impressions_24h: (&'a UInt32Array, usize),
    session_promoted: (&'a UInt32Array, usize),
    /// Per candidate, its campaign's entry in the row's table (-1 none).
    campaign: Vec<i64>,
    buf: &'a FeatureBuffer,
}

impl<'a> CandidateColumns<'a> for RowCandidates<'a> {
    fn len(&self) -> usize {
        self.relevance.len()
    }
    fn id(&self, i: usize) -> &'a str {
        self.ids.0.value(self.ids.1 + i)
    }
    fn relevance(&self, i: usize) -> f64 {
        self.relevance[i]
    }
    fn artist(&self, i: usize) -> &'a str {
        self.artist.0.value(self.artist.1 + i)
    }
    fn rights_holder(&self, i: usize) -> &'a str {
        self.rights_holder.0.value(self.rights_holder.1 + i)
    }
    fn impressions_24h(&self, i: usize) -> Option<u32> {
        opt(self.impressions_24h.0, self.impressions_24h.1 + i)
    }
    fn session_promoted(&self, i: usize) -> Option<u32> {
        opt(self.session_promoted.0, self.session_promoted.1 + i)
    }
    fn campaign(&self, i: usize) -> i64 {
        self.campaign[i]
    }
    fn features(&self) -> (&'a [String], &'a [f64]) {
        (&self.buf.names, &self.buf.values)
    }
}

/// The events of an outcome batch.
///
/// # Errors
/// [`SchemaError::Column`] naming a missing column; rows whose `event` is
/// unknown are skipped and counted in the second value.
pub fn outcome_events(b: &RecordBatch) -> Result<(Vec<OutcomeEvent>, u64), SchemaError> {
    let request_id = strings(b, "request_id")?;
    let candidate_id = strings(b, "candidate_id")?;
    let event = strings(b, "event")?;
    let value = primitive::<Float64Type>(b, "value", "Float64")?;
    let at = primitive::<TimestampMillisecondType>(b, "event_at", "Timestamp(ms)")?;
    let event_id = strings(b, "event_id")?;
    let listener_id = strings(b, "listener_id")?;
    let session_id = strings(b, "session_id")?;
    let campaign_id = strings(b, "campaign_id")?;
    let rights_holder = strings(b, "rights_holder")?;
    let promoted = booleans(b, "promoted")?;
    let position = primitive::<UInt32Type>(b, "position", "UInt32")?;
    let mut out = Vec::with_capacity(b.num_rows());
    let mut skipped = 0;
    let s = |a: &StringArray, i| opt_str(a, i).map(str::to_owned);
    for i in 0..b.num_rows() {
        let Some(kind) = opt_str(event, i).and_then(event_kind) else {
            skipped += 1;
            continue;
        };
        if request_id.is_null(i) || candidate_id.is_null(i) {
            skipped += 1;
            continue;
        }
        out.push(OutcomeEvent {
            request_id: request_id.value(i).to_owned(),
            candidate_id: candidate_id.value(i).to_owned(),
            event: kind,
            value: opt(value, i),
            at_ms: opt(at, i).map(|t| t as u64),
            delivery: DeliveryFields {
                event_id: s(event_id, i),
                listener_id: s(listener_id, i),
                session_id: s(session_id, i),
                campaign_id: s(campaign_id, i),
                rights_holder: s(rights_holder, i),
                promoted: (!promoted.is_null(i)).then(|| promoted.value(i)),
                position: opt(position, i),
            },
        });
    }
    Ok((out, skipped))
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use parquet::arrow::ArrowWriter;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;
    use crate::decision_log::writer::PendingFallback;
    use crate::delivery::CampaignFill;
    use crate::metadata::PolicyRef;
    use crate::request::Validate;

    /// A valid scoring request with `n` candidates that exercises every
    /// field: features absent, null, repeated, in another order; campaigns
    /// with and without surfaces, pacing and markets; rights holders; and
    /// floats whose text is not their shortest form.
    pub(in crate::decision_log) fn valid_body(i: usize, n: usize) -> String {
        let candidates: Vec<String> = (0..n)
            .map(|c| {
                let features = match c % 5 {
                    0 => format!(r#""p_skip": {}, "pop": 0.1, "age": {}"#, c as f64 * 0.1, 1e-7 * c as f64),
                    1 => r#""pop": 0.42119999999999996, "p_skip": null"#.to_string(),
                    2 => r#""p_skip": 0.3, "p_skip": 0.7, "extra": -2.5e3"#.to_string(),
                    3 => String::new(),
                    _ => r#""age": 123456789.12345678901234567890, "pop": 0.30000000000000004"#.to_string(),
                };
                let campaign = match c % 4 {
                    0 => format!(
                        r#", "campaign": {{"id": "cmp-{}", "start_ms": 1700000000000, "end_ms": 1900000000000,
                           "surfaces": ["radio", "daily_mix"], "markets": ["SE", "NO"], "delivery_target": 1000.5,
                           "delivered": {}, "commission_bps": 300}}"#,
                        c % 3,
                        (c % 3) as f64 / 3.0
                    ),
                    1 => format!(
                        r#", "campaign": {{"id": "cmp-x{}", "start_ms": 1, "end_ms": 1900000000000, "delivery_target": 7,
                           "expected_by_now": 0.1, "pacing_integral": -0.2, "pacing_last_error": 1e-300, "pacing_updated_ms": 5}}"#,
                        c
                    ),
                    _ => String::new(),
                };
                let counts = if c % 3 == 0 {
                    format!(r#", "impressions_24h": {}, "session_promoted": 0"#, c % 4)
                } else {
                    String::new()
                };
                format!(
                    r#"{{"id": "t{i}-{c}\u00e9", "relevance": {}, "artist": "a{}", "rights_holder": "h{}"{counts}{campaign}, "features": {{{features}}}}}"#,
                    (i * 31 + c) as f64 / 7.0,
                    c % 7,
                    c % 3
                )
            })
            .collect();
        let (holders, route, seed, slate) = if i.is_multiple_of(2) {
            (
                r#", "rights_holders": {"h0": {"exposure_share_7d": 0.1}, "h1": {"exposure_share_7d": 0.30000000000000004}}"#,
                r#""route": "radio", "#,
                r#", "seed": 18446744073709551615"#,
                r#", "slate_size": 10"#,
            )
        } else {
            ("", "", "", "")
        };
        format!(
            r#"{{{route}"context": {{"request_id": "r{i}", "listener_id": "u{}", "session_id": "s{i}", "surface": "radio",
              "market": "SE", "timestamp_ms": 1800000000000{seed}{slate}, "features": {{"hour": 21, "skip": null, "hour": 22}}}},
              "candidates": [{}]{holders}}}"#,
            i % 5,
            candidates.join(", ")
        )
    }

    pub(in crate::decision_log) fn pending(i: usize, n: usize) -> PendingRecord {
        let policy = Arc::new(PolicyRef {
            name: "pid-pacing".into(),
            version: "1.2.3".into(),
            digest: format!("sha256:{:064x}", 7),
            settings_sha256: None,
        });
        PendingRecord {
            at_ms: 1_790_000_000_000 + i as u64,
            request_id: format!("r{i}"),
            route: "radio".into(),
            variant: if i.is_multiple_of(2) {
                "stable"
            } else {
                "fallback"
            }
            .into(),
            arm: if i.is_multiple_of(2) {
                "stable"
            } else {
                "baseline"
            }
            .into(),
            shadow: i % 7 == 3,
            policy: policy.clone(),
            settings_sha256: "ab".repeat(32).into(),
            fallback: (i % 2 == 1).then(|| PendingFallback {
                policy: policy.clone(),
                error_kind: "trap".into(),
                error: "wasm trap: unreachable\n\"quoted\"".into(),
            }),
            request: Bytes::from(valid_body(i, n)),
            state: (i % 3 == 1).then(|| {
                Arc::new(Fill {
                    campaigns: vec![CampaignFill {
                        index: 0,
                        delivered: Some(0.1 + 0.2),
                        pacing: Some([1.0 / 3.0, -0.0, 1e300]),
                    }],
                    impressions_24h: vec![(0, i as u32 + 1)],
                    session_promoted: vec![(1, 2)],
                    exposure_share_7d: vec![(0, 14.0 * 0.1)],
                    counts_unknown: i.is_multiple_of(2),
                })
            }),
            decisions: DecisionColumnsRecord {
                scores: (0..n).map(|c| (i + c) as f64 * 0.1).collect(),
                eligible: (0..n).map(|c| c % 2 == 0).collect(),
                reasons: (0..n).map(|c| (c % 8) as u16).collect(),
                propensity: (0..n).map(|c| 1.0 / (c + 1) as f64).collect(),
            },
            timing: TimingRecord {
                server_us: 100 + i as u64,
                policy_us: 50,
            },
            usage: (!i.is_multiple_of(3)).then_some(UsageRecord {
                wall_us: 40,
                peak_memory_bytes: 1 << 20,
                fuel: i.is_multiple_of(2).then_some(12345),
            }),
        }
    }

    /// The batch a policy reading every feature would get from `req`
    /// (Debug text: every f64 printed in its round-trip form).
    pub(in crate::decision_log) fn batch_of(req: ScoreRequest<'_>, state: Option<&Fill>) -> String {
        valid_batch(req.validate(10_000).expect("a valid request"), state)
    }

    /// The batch of [`batch_of`] from a request already validated, with
    /// what validation packed beside it (keys, first candidates, counts).
    fn valid_batch(mut valid: ValidRequest<'_>, state: Option<&Fill>) -> String {
        let (names, _) = valid.feature_matrix();
        let context: Vec<String> = valid
            .context
            .features
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        if let Some(f) = state {
            f.apply(&mut valid);
        }
        let holders: Vec<&str> = (0..valid.holder_count())
            .map(|k| valid.holder_id(k as u32))
            .collect();
        let campaigns: Vec<&str> = (0..valid.campaigns().len())
            .map(|k| valid.campaign_id(k))
            .collect();
        format!(
            "{:?}\n{:?} {:?} {:?} {:?} {:?} {:?} {:?} {}",
            crate::columnar::batch(&valid, &names, &context),
            valid.artist_keys(),
            valid.holder_keys(),
            holders,
            campaigns,
            valid.campaign_sent(),
            valid.holders_sent(),
            valid.slate_size(),
            valid.counts_missing(),
        )
    }

    fn parquet_bytes(batch: &RecordBatch) -> Bytes {
        let mut out = Vec::new();
        let mut w =
            ArrowWriter::try_new(&mut out, batch.schema(), Some(properties("decisions"))).unwrap();
        w.write(batch).unwrap();
        w.close().unwrap();
        Bytes::from(out)
    }

    fn read_back(bytes: Bytes) -> Vec<RecordBatch> {
        let b = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
        check_metadata(
            b.metadata().file_metadata().key_value_metadata(),
            "decisions",
        )
        .unwrap();
        b.build().unwrap().map(Result::unwrap).collect()
    }

    #[test]
    fn rows_rebuild_the_batch_the_policy_saw_bit_for_bit() {
        let mut rows = DecisionRows::default();
        let records: Vec<PendingRecord> = (0..12).map(|i| pending(i, 23)).collect();
        for r in &records {
            let req = crate::request::parse(&r.request).unwrap();
            rows.append(r, &req, None);
        }
        assert_eq!(rows.len(), 12);
        let batches = read_back(parquet_bytes(&rows.finish()));
        assert_eq!(rows.len(), 0, "finish empties the buffer");
        let mut buf = FeatureBuffer::default();
        let mut i = 0;
        for b in &batches {
            let cols = ParquetRows::new(b).unwrap();
            for row in 0..cols.len() {
                let r = &records[i];
                cols.load_features(row, &mut buf);
                let mut back = cols.replay_record(row, &buf).unwrap();
                let request = back.request.take().unwrap();
                let original = crate::request::parse(&r.request).unwrap();
                let expected = batch_of(original, r.state.as_deref());
                assert_eq!(
                    batch_of(request, back.state.as_ref()),
                    expected,
                    "record {i}"
                );
                // Checked on the columns: the same batch and packing.
                let direct = cols
                    .valid_request(row, &buf, 10_000)
                    .expect("the direct path");
                assert_eq!(
                    valid_batch(direct, back.state.as_ref()),
                    expected,
                    "record {i}, direct"
                );
                assert_eq!(back.state.as_ref(), r.state.as_deref(), "state exact");
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&back.decisions.scores), bits(&r.decisions.scores));
                assert_eq!(
                    bits(&back.decisions.propensity),
                    bits(&r.decisions.propensity)
                );
                assert_eq!(back.decisions, r.decisions);
                assert_eq!(
                    (&*back.request_id, &*back.variant, &*back.arm, back.shadow),
                    (r.request_id.as_str(), &*r.variant, &*r.arm, r.shadow)
                );
                // The record form: every field, the request as JSON that
                // parses to the same batch.
                let d = cols.decision_record(row).unwrap();
                assert_eq!(d.at_ms, r.at_ms);
                assert_eq!(d.timing, r.timing);
                assert_eq!(d.usage, r.usage);
                assert_eq!(
                    d.fallback.as_ref().map(|f| f.error.as_str()),
                    r.fallback.as_ref().map(|f| f.error.as_str())
                );
                assert_eq!(d.settings_sha256, &*r.settings_sha256);
                assert_eq!(d.policy.digest, r.policy.digest);
                i += 1;
            }
        }
        assert_eq!(i, 12);
    }

    #[test]
    fn listener_and_session_ids_are_pseudonymised() {
        let p = Pseudonymiser::new(b"key").unwrap();
        let r = pending(0, 3);
        let req = crate::request::parse(&r.request).unwrap();
        let mut rows = DecisionRows::default();
        rows.append(&r, &req, Some(&p));
        let b = rows.finish();
        let cols = ParquetRows::new(&b).unwrap();
        let mut buf = FeatureBuffer::default();
        cols.load_features(0, &mut buf);
        let back = cols.request(0, &buf).unwrap();
        assert_eq!(back.context.listener_id, p.pseudonym("u0"));
        assert_eq!(back.context.session_id, p.pseudonym("s0"));
        assert_eq!(back.context.request_id, "r0");
    }

    #[test]
    fn outcome_rows_read_back_exactly() {
        let events: Vec<OutcomeEvent> = (0..5)
            .map(|i| OutcomeEvent {
                request_id: format!("r{i}"),
                candidate_id: "t".into(),
                event: [EventKind::Stream, EventKind::Skip, EventKind::Save][i % 3],
                value: (i % 2 == 0).then_some(0.1 * i as f64),
                at_ms: (i != 3).then_some(1_790_000_000_000 + i as u64),
                delivery: DeliveryFields {
                    event_id: Some(format!("e{i}")),
                    promoted: (i == 2).then_some(true),
                    position: Some(i as u32),
                    ..Default::default()
                },
            })
            .collect();
        let mut rows = OutcomeRows::default();
        for e in &events {
            rows.append(e);
        }
        let (back, skipped) = outcome_events(&rows.finish()).unwrap();
        assert_eq!(skipped, 0);
        assert_eq!(back, events);
    }

    #[test]
    fn files_of_another_kind_or_a_newer_version_are_refused() {
        let kv = |v: &str, kind: &str| {
            Some(vec![
                KeyValue::new(SCHEMA_VERSION_KEY.into(), v.to_string()),
                KeyValue::new(KIND_KEY.into(), kind.to_string()),
            ])
        };
        assert!(check_metadata(kv("1", "decisions").as_ref(), "decisions").is_ok());
        assert!(check_metadata(kv("2", "decisions").as_ref(), "decisions").is_ok());
        let e = check_metadata(kv("3", "decisions").as_ref(), "decisions").unwrap_err();
        assert!(e.to_string().contains("schema version \"3\""), "{e}");
        let e = check_metadata(kv("1", "outcomes").as_ref(), "decisions").unwrap_err();
        assert!(e.to_string().contains("outcomes"), "{e}");
        let e = check_metadata(None, "decisions").unwrap_err();
        assert!(
            e.to_string().contains("not an oasis decision log file"),
            "{e}"
        );
        // A batch without the columns replay needs.
        let b = batch(vec![(
            "request_id",
            Arc::new(StringArray::from(vec!["r"])) as ArrayRef,
        )]);
        let e = ParquetRows::new(&b).err().unwrap();
        assert!(e.to_string().contains("`logged_at`"), "{e}");
    }

    #[test]
    fn lists_of_different_lengths_are_a_row_error() {
        // A hand-made row whose relevance list is shorter than its ids.
        let r = pending(1, 4);
        let req = crate::request::parse(&r.request).unwrap();
        let mut rows = DecisionRows::default();
        rows.append(&r, &req, None);
        let b = rows.finish();
        let mut columns: Vec<(&'static str, ArrayRef)> = Vec::new();
        for (i, f) in b.schema().fields().iter().enumerate() {
            let name: &'static str = Box::leak(f.name().clone().into_boxed_str());
            let col = if name == "relevance" {
                let mut l = Floats::default();
                l.values().append_value(0.5);
                l.append(true);
                Arc::new(l.finish()) as ArrayRef
            } else {
                b.column(i).clone()
            };
            columns.push((name, col));
        }
        let b = batch(columns);
        let cols = ParquetRows::new(&b).unwrap();
        let mut buf = FeatureBuffer::default();
        cols.load_features(0, &mut buf);
        let e = cols.request(0, &buf).err().unwrap();
        assert!(
            e.to_string()
                .contains("relevance has 1 entries for 4 candidates"),
            "{e}"
        );
    }

    #[test]
    fn rows_the_column_check_refuses_get_the_general_path_s_error() {
        let r = pending(0, 13);
        let req = crate::request::parse(&r.request).unwrap();
        let mut rows = DecisionRows::default();
        rows.append(&r, &req, None);
        let b = rows.finish();
        // (column, its list of strings for the row, the error validation gives)
        let strings = |values: Vec<String>| {
            let mut l = Strings::default();
            for v in values {
                l.values().append_value(v);
            }
            l.append(true);
            Arc::new(l.finish()) as ArrayRef
        };
        let ids: Vec<String> = (0..13).map(|c| format!("t{c}")).collect();
        let mut twice = ids.clone();
        twice[7] = "t3".into();
        let mut control = ids.clone();
        control[5] = "t\u{85}5".into();
        let mut artists: Vec<String> = (0..13).map(|c| format!("a{}", c % 7)).collect();
        artists[9] = "a\n9".into();
        let mut long = ids.clone();
        long[2] = "x".repeat(crate::request::MAX_ID_BYTES + 1);
        for (column, values, error) in [
            (
                "candidate_id",
                twice,
                "`candidates[7].id` \"t3\" appears twice",
            ),
            (
                "candidate_id",
                control,
                "`candidates[5].id` must not contain control characters",
            ),
            (
                "artist",
                artists,
                "`candidates[9].artist` must not contain control characters",
            ),
            ("candidate_id", long, "`candidates[2].id` is longer than"),
        ] {
            let b = replaced(&b, column, strings(values));
            let cols = ParquetRows::new(&b).unwrap();
            let mut buf = FeatureBuffer::default();
            cols.load_features(0, &mut buf);
            assert!(
                cols.valid_request(0, &buf, 10_000).is_none(),
                "{column}: {error}"
            );
            let e = cols.request(0, &buf).unwrap().validate(10_000).unwrap_err();
            assert!(e.to_string().contains(error), "{e} ({error})");
        }
        // More candidates than the limit, a feature out of range.
        let cols = ParquetRows::new(&b).unwrap();
        let mut buf = FeatureBuffer::default();
        cols.load_features(0, &mut buf);
        assert!(cols.valid_request(0, &buf, 12).is_none());
        assert!(cols.valid_request(0, &buf, 13).is_some());
        let at = buf.values.iter().position(|v| !v.is_nan()).unwrap();
        buf.values[at] = 2e9;
        assert!(cols.valid_request(0, &buf, 13).is_none());
        // A campaign window that ends before it starts (checked once per
        // campaign of the table, not per candidate).
        let mut l = ListBuilder::new(Int64Builder::new());
        for _ in 0..6 {
            l.values().append_value(2_000_000_000_000);
        }
        l.append(true);
        let b = replaced(&b, "campaigns_start_ms", Arc::new(l.finish()));
        let cols = ParquetRows::new(&b).unwrap();
        let mut buf = FeatureBuffer::default();
        cols.load_features(0, &mut buf);
        assert!(cols.valid_request(0, &buf, 13).is_none());
        let e = cols.request(0, &buf).unwrap().validate(13).unwrap_err();
        assert!(
            e.to_string()
                .contains("`candidates[0].campaign.end_ms` must be after start_ms"),
            "{e}"
        );
    }

    /// `b` with column `name` replaced by `col`.
    fn replaced(b: &RecordBatch, name: &str, col: ArrayRef) -> RecordBatch {
        let columns = b
            .schema()
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let n: &'static str = Box::leak(f.name().clone().into_boxed_str());
                (
                    n,
                    if n == name {
                        col.clone()
                    } else {
                        b.column(i).clone()
                    },
                )
            })
            .collect();
        batch(columns)
    }

    #[test]
    fn a_request_s_campaigns_are_kept_once_each_in_order_of_first_appearance() {
        // pending(0, 13): candidates 0, 4, 8, 12 in cmp-0, cmp-1, cmp-2,
        // cmp-0 again; 1, 5, 9 in cmp-x1, cmp-x5, cmp-x9; the rest organic.
        let r = pending(0, 13);
        let req = crate::request::parse(&r.request).unwrap();
        let mut rows = DecisionRows::default();
        rows.append(&r, &req, None);
        let b = rows.finish();
        let ids = b.column_by_name("campaigns_id").unwrap().as_list::<i32>();
        let ids = ids.value(0);
        let ids: Vec<&str> = ids.as_string::<i32>().iter().flatten().collect();
        assert_eq!(
            ids,
            ["cmp-0", "cmp-x1", "cmp-1", "cmp-x5", "cmp-2", "cmp-x9"]
        );
        let per_candidate = b.column_by_name("campaign_id").unwrap().as_list::<i32>();
        assert_eq!(
            per_candidate.value(0).len(),
            13,
            "campaign_id stays per candidate"
        );
        let targets = b
            .column_by_name("campaigns_delivery_target")
            .unwrap()
            .as_list::<i32>()
            .value(0);
        assert_eq!(targets.len(), 6);
        // A candidate whose campaign is missing from the table is a row error.
        let mut l = Strings::default();
        l.values().append_value("cmp-0");
        l.append(true);
        let b = replaced(&b, "campaigns_id", Arc::new(l.finish()));
        let cols = ParquetRows::new(&b).unwrap();
        let mut buf = FeatureBuffer::default();
        cols.load_features(0, &mut buf);
        let e = cols.request(0, &buf).err().unwrap().to_string();
        assert!(
            e.contains("campaigns_start_ms has 6 entries for 1 campaigns in campaigns_id"),
            "{e}"
        );
    }

    #[test]
    fn files_of_schema_version_1_are_still_read() {
        // Written by the version-1 writer (campaigns repeated per candidate)
        // from `pending(i, 9)`, i = 0..6: changing `pending` breaks this
        // test, not the reader.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/decision-log/decisions-schema-v1.parquet"
        );
        let b = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(std::fs::read(path).unwrap()))
            .unwrap();
        let kv = b.metadata().file_metadata().key_value_metadata().cloned();
        check_metadata(kv.as_ref(), "decisions").unwrap();
        let version = kv
            .iter()
            .flatten()
            .find(|e| e.key == SCHEMA_VERSION_KEY)
            .and_then(|e| e.value.clone());
        assert_eq!(version.as_deref(), Some("1"));
        // As replay opens it: the big string columns as views.
        let batches: Vec<RecordBatch> =
            super::super::reader::open_parquet(std::path::Path::new(path), "decisions")
                .unwrap()
                .map(Result::unwrap)
                .collect();
        assert!(batches[0].column_by_name("campaigns_id").is_none());
        let ids = batches[0].column_by_name("candidate_id").unwrap();
        assert!(ids.as_list::<i32>().values().as_string_view_opt().is_some());
        let mut buf = FeatureBuffer::default();
        let mut i = 0;
        for b in &batches {
            let cols = ParquetRows::new(b).unwrap();
            for row in 0..cols.len() {
                let r = pending(i, 9);
                cols.load_features(row, &mut buf);
                let mut back = cols.replay_record(row, &buf).unwrap();
                let request = back.request.take().unwrap();
                let original = crate::request::parse(&r.request).unwrap();
                assert!(original.candidates.iter().any(|c| c.campaign.is_some()));
                assert_eq!(
                    batch_of(request, back.state.as_ref()),
                    batch_of(original, r.state.as_deref()),
                    "record {i}"
                );
                assert_eq!(back.decisions, r.decisions);
                i += 1;
            }
        }
        assert_eq!(i, 6);
    }
}
