//! The example policies called natively: each policy crate linked into this
//! binary as a Rust library, fed the same columnar request the host sends a
//! component (`oasis::columnar::batch`: only the declared columns), and its
//! output checked with the contract's rules, as the host checks a
//! component's.

use oasis::bindings::{WitDecisions, WitRequest, WitSurface, wit_reason};
use oasis_sdk::{
    Campaign, Candidates, Context, Decisions, Holders, Policy, Request, Surface, SurfaceSet,
};

/// Names of the example policies, as their manifests and components are named.
pub const POLICIES: [&str; 6] = [
    "baseline",
    "epsilon-greedy",
    "exposure-fairness",
    "freq-cap-diversity",
    "guarded-boost",
    "pid-pacing",
];

type ScoreFn = dyn Fn(&Request) -> Result<Decisions, String> + Send + Sync;

/// One example policy, compiled natively, with its settings parsed once.
pub struct Native {
    /// Policy name.
    pub name: String,
    /// Policy version.
    pub version: String,
    /// Candidate feature columns the host sends it (required, then optional).
    pub columns: Vec<String>,
    /// Context features it declared.
    pub context: Vec<String>,
    score: Box<ScoreFn>,
}

fn make<P: Policy + 'static>(settings_json: &str) -> anyhow::Result<Native>
where
    P::Settings: Send + Sync + 'static,
{
    let settings = oasis_sdk::parse_settings::<P>(settings_json)
        .map_err(|e| anyhow::anyhow!("settings: {e}"))?;
    let meta = P::metadata();
    Ok(Native {
        columns: oasis_contract::feature_columns(&meta.required_features, &meta.optional_features),
        context: meta.context_features.clone(),
        name: meta.name,
        version: meta.version,
        score: Box::new(move |req: &Request| {
            req.check_shape().map_err(|e| e.to_string())?;
            let d = P::score(&settings, req).map_err(|e| e.to_string())?;
            d.check(req).map_err(|v| v.to_string())?;
            Ok(d)
        }),
    })
}

impl Native {
    /// Example policy `name` with `settings_json` (as in its manifest).
    pub fn new(name: &str, settings_json: &str) -> anyhow::Result<Native> {
        match name {
            "baseline" => make::<baseline::Baseline>(settings_json),
            "epsilon-greedy" => make::<epsilon_greedy::EpsilonGreedy>(settings_json),
            "exposure-fairness" => make::<exposure_fairness::ExposureFairness>(settings_json),
            "freq-cap-diversity" => make::<freq_cap_diversity::FreqCapDiversity>(settings_json),
            "guarded-boost" => make::<guarded_boost::GuardedBoost>(settings_json),
            "pid-pacing" => make::<pid_pacing::PidPacing>(settings_json),
            other => anyhow::bail!("no native build of policy `{other}`"),
        }
    }

    /// The columnar request for this policy: what the host would send its
    /// component.
    pub fn batch(&self, req: &oasis::ValidRequest<'_>) -> WitRequest {
        oasis::columnar::batch(req, &self.columns, &self.context)
    }

    /// Scores `batch` natively: the request moved into the SDK's types (a
    /// copy of every column, standing in for the copy into guest memory),
    /// the policy, and the contract's output check.
    pub fn call(&self, batch: &WitRequest) -> Result<WitDecisions, String> {
        let req = sdk_request(batch);
        let d = (self.score)(&req)?;
        Ok(wit_decisions(d))
    }
}

/// The settings of example policy `name` as JSON, from its manifest
/// (`examples/policies/<name>.toml`, `[settings]`); `{}` when it has none.
pub fn manifest_settings(root: &std::path::Path, name: &str) -> anyhow::Result<String> {
    let path = root.join(format!("examples/policies/{name}.toml"));
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let v: toml::Value = toml::from_str(&text)?;
    let settings = v
        .get("settings")
        .cloned()
        .unwrap_or(toml::Value::Table(Default::default()));
    Ok(serde_json::to_string(&settings)?)
}

fn surface(s: WitSurface) -> Surface {
    let i = match s {
        WitSurface::Radio => 0,
        WitSurface::Autoplay => 1,
        WitSurface::DailyMix => 2,
        WitSurface::ArtistMix => 3,
        WitSurface::MoodMix => 4,
        WitSurface::DecadeMix => 5,
        WitSurface::GenreMix => 6,
        WitSurface::Other => 7,
    };
    Surface::ALL[i]
}

/// The host's columnar request in the SDK's types, as the component's
/// bindings would build it in guest memory.
pub fn sdk_request(r: &WitRequest) -> Request {
    let c = &r.context;
    let k = &r.candidates;
    Request {
        context: Context {
            request_id: c.request_id.clone(),
            listener_id: c.listener_id.clone(),
            session_id: c.session_id.clone(),
            surface: surface(c.surface),
            market: c.market,
            timestamp_ms: c.timestamp_ms,
            seed: c.seed,
            feature_names: c.feature_names.clone(),
            features: c.features.clone(),
            slate_size: c.slate_size,
        },
        candidates: Candidates {
            count: k.count,
            relevance: k.relevance.clone(),
            feature_names: k.feature_names.clone(),
            features: k.features.clone(),
            campaign: k.campaign.clone(),
            artist: k.artist.clone(),
            rights_holder: k.rights_holder.clone(),
            impressions_24h: k.impressions_24h.clone(),
            session_promoted: k.session_promoted.clone(),
        },
        campaigns: r
            .campaigns
            .iter()
            .map(|c| Campaign {
                key: c.key,
                start_ms: c.start_ms,
                end_ms: c.end_ms,
                // Same bit order as the contract (pinned by the host's tests).
                surfaces: SurfaceSet::from_bits_retain(c.surfaces.as_array()[0] as u8),
                markets: c.markets.clone(),
                delivery_target: c.delivery_target,
                delivered: c.delivered,
                expected_by_now: c.expected_by_now,
                pacing_integral: c.pacing_integral,
                pacing_last_error: c.pacing_last_error,
                pacing_updated_ms: c.pacing_updated_ms,
                commission_bps: c.commission_bps,
            })
            .collect(),
        holders: Holders {
            count: r.holders.count,
            exposure_share_7d: r.holders.exposure_share_7d.clone(),
        },
    }
}

/// The SDK's decisions in the host's types (what a component returns).
pub fn wit_decisions(d: Decisions) -> WitDecisions {
    use oasis::bindings::{WitCampaignUpdate, WitDebugValue};
    WitDecisions {
        scores: d.scores,
        eligible: d.eligible,
        reasons: d.reasons.iter().map(|r| wit_reason(r.bits())).collect(),
        propensity: d.propensity,
        debug: d
            .debug
            .into_iter()
            .map(|v| WitDebugValue {
                name: v.name.into(),
                candidate: v.candidate,
                value: v.value,
            })
            .collect(),
        campaign_updates: d
            .campaign_updates
            .into_iter()
            .map(|u| WitCampaignUpdate {
                campaign: u.campaign,
                pacing_integral: u.pacing_integral,
                pacing_last_error: u.pacing_last_error,
            })
            .collect(),
    }
}
