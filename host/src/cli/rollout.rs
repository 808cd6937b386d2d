//! `oasis rollout`: the operator's client of the admin API.
//!
//! ```text
//! oasis rollout status [ROUTE]
//! oasis rollout upload POLICY FILE.wasm
//! oasis rollout canary ROUTE VERSION --percent 5
//! oasis rollout promote ROUTE | unpin ROUTE | rollback ROUTE [--reason TEXT]
//! oasis rollout kill ROUTE | revive ROUTE
//! oasis rollout shadow ROUTE POLICY[@VERSION] --on | --off
//! oasis rollout versions POLICY | audit [--limit N]
//! ```
//!
//! Human-readable output by default, the server's JSON with `--json`. Exit
//! status: 0 done, 1 refused by the server (the message says why), 2 could
//! not ask (connection, token, arguments).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::Value;

/// Arguments of `oasis rollout`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server (its admin listener for changes). Commands that only read
    /// (status, versions, audit) default to http://127.0.0.1:8080; commands
    /// that change state refuse to guess and need this or $OASIS_URL.
    #[arg(long, env = "OASIS_URL", global = true)]
    pub url: Option<String>,
    /// File holding the admin token (`name token` per line: the first line's
    /// token is used; or the token alone). Default: $OASIS_ADMIN_TOKEN.
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// Who you are, recorded in the audit log beside the token's name.
    #[arg(long = "as", env = "USER", global = true)]
    pub actor: Option<String>,
    /// Print the server's JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// Make the change only if the rollout is still at this revision (as
    /// `status` or the last change printed it): sent as `If-Match`; another
    /// operator's change in between is refused with a conflict naming the
    /// current revision.
    #[arg(long, global = true)]
    pub if_revision: Option<u64>,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Routes with their stable, canary, baseline, shadows and guardrails.
    Status {
        /// One route (default: all).
        route: Option<String>,
    },
    /// The stored versions of a policy.
    Versions {
        /// Policy key.
        policy: String,
    },
    /// Upload a module as a new version of a policy (validated by the server).
    Upload {
        /// Policy key.
        policy: String,
        /// The component (.wasm).
        file: PathBuf,
    },
    /// Start a canary of a stored version, or change its share.
    Canary {
        /// Route.
        route: String,
        /// Version: `sha256:` and its digest, or a unique prefix of 12 hex digits or more (as printed).
        version: String,
        /// Share of listeners, in (0, 100].
        #[arg(long)]
        percent: f64,
    },
    /// Make the route's canary its stable version.
    Promote {
        /// Route.
        route: String,
    },
    /// Drop the pinned stable version (set by promote): the route serves
    /// the directory's version again. Audited as `unpin`, not a rollback.
    Unpin {
        /// Route.
        route: String,
    },
    /// Stop the canary, or return to the previous stable version.
    Rollback {
        /// Route.
        route: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Serve the route's baseline (kill switch on).
    Kill {
        /// Route.
        route: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Turn the kill switch off.
    Revive {
        /// Route.
        route: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Add (`--on`) or remove (`--off`) a shadow policy.
    Shadow {
        /// Route.
        route: String,
        /// `key`, or `key@sha256:…` (a digest or a unique prefix of 12 hex digits or more).
        policy: String,
        /// Add it.
        #[arg(long, conflicts_with = "off", required_unless_present = "off")]
        on: bool,
        /// Remove it.
        #[arg(long)]
        off: bool,
    },
    /// The audit log's last entries.
    Audit {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(args))
}

/// The server commands that only read talk to when no `--url` is given.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

impl Command {
    /// Whether the command changes the server's state (and so refuses to
    /// guess which server is meant).
    fn changes_state(&self) -> bool {
        !matches!(
            self,
            Command::Status { .. } | Command::Versions { .. } | Command::Audit { .. }
        )
    }
}

/// The server to talk to, and how it was chosen (for the output's first
/// line): a change needs `--url` or `$OASIS_URL`, so that a fresh shell
/// never changes whatever server happens to listen on the default address.
fn server_url(args: &Args) -> anyhow::Result<(String, &'static str)> {
    match &args.url {
        Some(url) => Ok((url.trim_end_matches('/').to_string(), "")),
        None if args.command.changes_state() => bail!(
            "which server? this command changes state: pass --url (e.g. --url {DEFAULT_URL}) or set OASIS_URL"
        ),
        None => Ok((
            DEFAULT_URL.to_string(),
            " (the default; pass --url or set OASIS_URL for another)",
        )),
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (url, how) = server_url(&args)?;
    let client = Client::new(&args, url)?;
    if !args.json {
        // Every human-readable answer says which server gave it.
        println!("server {}{how}", client.base);
    }
    let (value, status) = match &args.command {
        Command::Status { route } => match route {
            Some(r) => client.get(&format!("/v1/routes/{r}")).await?,
            None => client.get("/v1/routes").await?,
        },
        Command::Versions { policy } => {
            client
                .get(&format!("/v1/policies/{policy}/versions"))
                .await?
        }
        Command::Audit { limit } => {
            client
                .get(&format!("/admin/v1/audit?limit={limit}"))
                .await?
        }
        Command::Upload { policy, file } => {
            let wasm =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            eprintln!(
                "uploading {} ({} bytes); the server compiles and checks it before storing it (a Python component takes up to a minute)",
                file.display(),
                wasm.len()
            );
            let path = format!("/admin/v1/policies/{policy}/versions");
            with_progress(client.post(&path, Body::Wasm(wasm))).await?
        }
        Command::Canary {
            route,
            version,
            percent,
        } => {
            let body = serde_json::json!({ "version": version, "percent": percent });
            client
                .post(
                    &format!("/admin/v1/routes/{route}/canary"),
                    Body::Json(body),
                )
                .await?
        }
        Command::Promote { route } => {
            client
                .post(&format!("/admin/v1/routes/{route}/promote"), Body::Empty)
                .await?
        }
        Command::Unpin { route } => {
            client
                .post(&format!("/admin/v1/routes/{route}/unpin"), Body::Empty)
                .await?
        }
        Command::Rollback { route, reason } => {
            let body = serde_json::json!({ "reason": reason });
            client
                .post(
                    &format!("/admin/v1/routes/{route}/rollback"),
                    Body::Json(body),
                )
                .await?
        }
        Command::Kill { route, reason } | Command::Revive { route, reason } => {
            let on = matches!(args.command, Command::Kill { .. });
            client
                .post(
                    &format!("/admin/v1/routes/{route}/kill"),
                    Body::Json(serde_json::json!({ "on": on, "reason": reason })),
                )
                .await?
        }
        Command::Shadow {
            route, policy, on, ..
        } => {
            let body = serde_json::json!({ "policy": policy, "on": on });
            client
                .post(
                    &format!("/admin/v1/routes/{route}/shadows"),
                    Body::Json(body),
                )
                .await?
        }
    };
    if !status.is_success() {
        let e = &value["error"];
        if args.json {
            println!("{}", serde_json::to_string_pretty(&value)?);
        } else {
            eprintln!(
                "refused by {} ({} {}): {}",
                client.base,
                status.as_u16(),
                e["kind"].as_str().unwrap_or("error"),
                e["message"].as_str().unwrap_or("(no message)")
            );
        }
        return Ok(ExitCode::from(1));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_human(&args.command, &value);
    }
    Ok(ExitCode::SUCCESS)
}

/// Awaits `f`, telling the user every 5 s that it is still waiting (an
/// upload's compile can take tens of seconds; silence looks like a hang).
async fn with_progress<T>(f: impl std::future::Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let mut f = std::pin::pin!(f);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    tick.tick().await;
    loop {
        tokio::select! {
            out = &mut f => return out,
            _ = tick.tick() => eprintln!(
                "  still compiling on the server… {} s",
                started.elapsed().as_secs()
            ),
        }
    }
}

enum Body {
    Empty,
    Json(Value),
    Wasm(Vec<u8>),
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    actor: Option<String>,
    if_revision: Option<u64>,
}

impl Client {
    fn new(args: &Args, base: String) -> anyhow::Result<Self> {
        let token = admin_token(args.token_file.as_deref())?;
        Ok(Client {
            http: reqwest::Client::new(),
            base,
            token,
            actor: args.actor.clone(),
            if_revision: args.if_revision,
        })
    }

    async fn get(&self, path: &str) -> anyhow::Result<(Value, reqwest::StatusCode)> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post(&self, path: &str, body: Body) -> anyhow::Result<(Value, reqwest::StatusCode)> {
        if self.token.is_none() {
            bail!("no admin token: pass --token-file or set OASIS_ADMIN_TOKEN");
        }
        let mut req = self.http.post(format!("{}{path}", self.base));
        if let Some(r) = self.if_revision {
            req = req.header("if-match", format!("\"{r}\""));
        }
        let req = match body {
            Body::Empty => req,
            Body::Json(v) => req.json(&v),
            Body::Wasm(bytes) => req.header("content-type", "application/wasm").body(bytes),
        };
        self.send(req).await
    }

    async fn send(
        &self,
        mut req: reqwest::RequestBuilder,
    ) -> anyhow::Result<(Value, reqwest::StatusCode)> {
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(a) = &self.actor {
            req = req.header("x-oasis-actor", a);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = resp.status();
        let text = resp.text().await.context("reading the response")?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((value, status))
    }
}

/// The admin token: from `token_file` when given ([`read_token`]), else
/// `$OASIS_ADMIN_TOKEN` (unset or empty: none). Shared with `oasis fleet`.
pub(crate) fn admin_token(token_file: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    match token_file {
        Some(path) => read_token(path).map(Some),
        None => Ok(std::env::var("OASIS_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())),
    }
}

/// The token of a token file: the second field of the first line that is
/// not blank or a comment, or the whole line if it has one field.
pub(crate) fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read token file {}", path.display()))?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .with_context(|| format!("{} holds no token", path.display()))?;
    let mut fields = line.split_whitespace();
    let first = fields.next().unwrap_or_default();
    Ok(fields.next().unwrap_or(first).to_string())
}

fn short(digest: &Value) -> String {
    let d = digest.as_str().unwrap_or("-");
    match d.strip_prefix("sha256:") {
        Some(h) if h.len() > 12 => format!("sha256:{}…", &h[..12]),
        _ => d.to_string(),
    }
}

/// `2026-11-26T00:57:03Z` for unix milliseconds.
fn utc(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// ` at 20% (was 5%)`: the canary share of an audit entry about a canary,
/// with the share before when a `canary.set` changed it.
fn audit_percent(e: &Value) -> String {
    let Some(p) = e["percent"].as_f64() else {
        return String::new();
    };
    let before = &e["before"]["canary"];
    let was = match before["percent"].as_f64() {
        Some(b) if e["action"] == "canary.set" && before["digest"] == e["digest"] && b != p => {
            format!(" (was {b}%)")
        }
        _ => String::new(),
    };
    format!(" at {p}%{was}")
}

fn percent(v: &Value) -> String {
    v.as_f64().map_or_else(|| v.to_string(), |p| p.to_string())
}

fn version(v: &Value) -> String {
    if v.is_null() {
        return "-".into();
    }
    format!(
        "{} {} {}",
        v["name"].as_str().unwrap_or("?"),
        v["version"].as_str().unwrap_or("?"),
        short(&v["digest"])
    )
}

/// Each arm's counts since the route's last rollout change: what tells a
/// canary that promotes nothing from a healthy one.
fn print_arms(r: &Value) {
    let Some(arms) = r["arms"].as_array().filter(|a| !a.is_empty()) else {
        return;
    };
    println!(
        "  arms since {}:",
        r["since"].as_str().unwrap_or("the first request")
    );
    for a in arms {
        let pct = |k: &str| a[k].as_f64().unwrap_or(0.0) * 100.0;
        let p99 = a["latency"]["p99_ms"]
            .as_f64()
            .map(|ms| format!(", p99 {ms:.2} ms"))
            .unwrap_or_default();
        println!(
            "    {:<11} {} requests, {:.1}% fell back, promoted {:.2}%, eligible {:.1}% of {} candidates{p99}",
            a["arm"].as_str().unwrap_or("?"),
            a["requests"],
            pct("fallback_rate"),
            pct("promoted_rate"),
            pct("eligible_rate"),
            a["candidates"],
        );
    }
}

/// A route's guardrail thresholds: what rolls a canary back by itself.
fn guardrails(g: &Value) -> String {
    if g.is_null() {
        return "none: a canary is rolled back only by an operator".into();
    }
    let error_rate = g["max_error_rate"]
        .as_f64()
        .map_or("no error-rate limit".to_string(), |r| {
            format!("error rate at most {:.1}%", r * 100.0)
        });
    let p99 = g["max_p99_ms"]
        .as_f64()
        .map_or("no p99 limit".to_string(), |ms| {
            format!("p99 at most {ms} ms")
        });
    let mut business = Vec::new();
    for metric in ["promoted", "eligible"] {
        let lo = g[format!("min_{metric}_ratio")].as_f64();
        let hi = g[format!("max_{metric}_ratio")].as_f64();
        match (lo, hi) {
            (Some(lo), Some(hi)) => {
                business.push(format!("{metric} rate {lo}x to {hi}x the stable arm's"))
            }
            (Some(lo), None) => {
                business.push(format!("{metric} rate at least {lo}x the stable arm's"))
            }
            (None, Some(hi)) => {
                business.push(format!("{metric} rate at most {hi}x the stable arm's"))
            }
            (None, None) => {}
        }
    }
    let business = if business.is_empty() {
        "; no business limit".to_string()
    } else {
        format!("; {}", business.join(", "))
    };
    format!(
        "{error_rate}, {p99}, over the canary's last {} requests, judged from {} on{business}",
        g["window"], g["min_samples"]
    )
}

/// The canary's promoted and eligible rates against the stable arm's over
/// the window `w`, with the bounds of `g`.
fn business_window(w: &Value, g: &Value) -> String {
    let pct = |v: &Value| {
        v.as_f64()
            .map_or("-".to_string(), |r| format!("{:.2}%", r * 100.0))
    };
    let bounds = |metric: &str| {
        let stable = w[format!("stable_{metric}_rate")].as_f64();
        let lo = g[format!("min_{metric}_ratio")].as_f64();
        let hi = g[format!("max_{metric}_ratio")].as_f64();
        match (stable, lo, hi) {
            (Some(s), Some(lo), Some(hi)) => {
                format!(" (bounds {:.2}% to {:.2}%)", lo * s * 100.0, hi * s * 100.0)
            }
            (Some(s), Some(lo), None) => format!(" (at least {:.2}%)", lo * s * 100.0),
            (Some(s), None, Some(hi)) => format!(" (at most {:.2}%)", hi * s * 100.0),
            _ => String::new(),
        }
    };
    format!(
        "business promoted {} vs stable {}{}, eligible {} vs stable {}{}, over {} stable requests",
        pct(&w["promoted_rate"]),
        pct(&w["stable_promoted_rate"]),
        bounds("promoted"),
        pct(&w["eligible_rate"]),
        pct(&w["stable_eligible_rate"]),
        bounds("eligible"),
        w["stable_samples"].as_u64().unwrap_or(0)
    )
}

/// The canary's guardrail window against the limits `g`.
fn canary_window(w: &Value, g: &Value) -> String {
    let samples = w["samples"].as_u64().unwrap_or(0);
    let limit = |v: &Value, f: &dyn Fn(f64) -> String| {
        v.as_f64()
            .map(|x| format!(" (limit {})", f(x)))
            .unwrap_or_default()
    };
    let p99 = w["p99_ms"]
        .as_f64()
        .map_or("-".to_string(), |ms| format!("{ms:.2} ms"));
    let judged = match g["min_samples"].as_u64() {
        Some(min) if samples < min => format!(", not judged before {min} samples"),
        _ => String::new(),
    };
    format!(
        "window {samples}{} samples: errors {:.1}%{}, p99 {p99}{}{judged}{}",
        g["window"]
            .as_u64()
            .map(|n| format!(" of {n}"))
            .unwrap_or_default(),
        w["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
        limit(&g["max_error_rate"], &|r| format!("{:.1}%", r * 100.0)),
        limit(&g["max_p99_ms"], &|ms| format!("{ms} ms")),
        if w["tripped"] == true {
            ", TRIPPED"
        } else {
            ""
        }
    )
}

fn print_route(r: &Value) {
    println!(
        "route {}  policy {}  salt {}{}",
        r["route"].as_str().unwrap_or("?"),
        r["policy"].as_str().unwrap_or("?"),
        r["salt"].as_str().unwrap_or("?"),
        if r["killed"] == true {
            "  KILLED (serving the baseline)"
        } else {
            ""
        }
    );
    println!(
        "  stable    {}{}",
        version(&r["stable"]),
        if r["pinned"] == true {
            "  (pinned)"
        } else {
            ""
        }
    );
    if r["directory"]["digest"] != r["stable"]["digest"] {
        println!("  directory {}", version(&r["directory"]));
    }
    let g = &r["guardrails"];
    if let Some(c) = r.get("canary").filter(|c| !c.is_null()) {
        println!(
            "  canary    {}  {}%",
            version(&c["version"]),
            percent(&c["percent"])
        );
        let w = &c["window"];
        if !w.is_null() {
            println!("            {}", canary_window(w, g));
            println!("            {}", business_window(w, g));
        }
        let f = &c["fleet_window"];
        if !f.is_null() {
            println!("            fleet {}", canary_window(f, g));
            println!("            fleet {}", business_window(f, g));
        }
    }
    println!("  guardrails {}", guardrails(g));
    println!("  baseline  {}", version(&r["baseline"]));
    print_arms(r);
    for s in r["shadows"].as_array().into_iter().flatten() {
        let d = &s["divergence"];
        let m = &d["mean"];
        let detail = if m.is_null() {
            format!(
                "no comparisons yet ({} calls failed)",
                d["errors"].as_u64().unwrap_or(0)
            )
        } else {
            format!(
                "{} samples: top-10 overlap {:.3}, rank corr {:.3}, score mae {:.4}, promoted {:+.2}%, eligible {:+.2}%, errors {:.1}%",
                d["samples"],
                m["topk_overlap"].as_f64().unwrap_or(0.0),
                m["rank_correlation"].as_f64().unwrap_or(0.0),
                m["score_mae"].as_f64().unwrap_or(0.0),
                m["promoted_share_diff"].as_f64().unwrap_or(0.0) * 100.0,
                m["eligibility_rate_diff"].as_f64().unwrap_or(0.0) * 100.0,
                d["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
            )
        };
        println!(
            "  shadow    {} ({}): {detail}",
            s["shadow"].as_str().unwrap_or("?"),
            version(&s["version"])
        );
    }
    if let Some(rb) = r.get("last_rollback").filter(|v| !v.is_null()) {
        println!(
            "  rollback  {}{} {} ({})",
            short(&rb["digest"]),
            rb["percent"]
                .as_f64()
                .map(|p| format!(" (canary at {p}%)"))
                .unwrap_or_default(),
            rb["reason"].as_str().unwrap_or(""),
            if rb["automatic"] == true {
                "guardrail"
            } else {
                "operator"
            }
        );
    }
    for p in r["problems"].as_array().into_iter().flatten() {
        println!("  PROBLEM   {}", p.as_str().unwrap_or(""));
    }
}

fn print_human(command: &Command, v: &Value) {
    match command {
        Command::Status { route: None } => {
            for r in v["routes"].as_array().into_iter().flatten() {
                print_route(r);
            }
        }
        Command::Status { route: Some(_) } => print_route(v),
        Command::Versions { .. } => {
            for r in v["versions"].as_array().into_iter().flatten() {
                println!(
                    "{}  {} {}  {} by {}  {} bytes",
                    r["digest"].as_str().unwrap_or("?"),
                    r["name"].as_str().unwrap_or("?"),
                    r["version"].as_str().unwrap_or("?"),
                    r["source"].as_str().unwrap_or("?"),
                    r["by"].as_str().unwrap_or("?"),
                    r["size_bytes"],
                );
            }
        }
        Command::Upload { policy, .. } => println!(
            "stored {} as a version of `{policy}` ({} {})",
            v["digest"].as_str().unwrap_or("?"),
            v["name"].as_str().unwrap_or("?"),
            v["version"].as_str().unwrap_or("?")
        ),
        Command::Audit { .. } => {
            for e in v["entries"].as_array().into_iter().flatten() {
                println!(
                    "{}  {:<20} {:<18} route={} {}{}{}",
                    utc(e["at_ms"].as_u64().unwrap_or(0)),
                    e["who"].as_str().unwrap_or("?"),
                    e["action"].as_str().unwrap_or("?"),
                    e["route"].as_str().unwrap_or("-"),
                    short(&e["digest"]),
                    audit_percent(e),
                    e["reason"]
                        .as_str()
                        .map(|r| format!("  ({r})"))
                        .unwrap_or_default()
                );
            }
        }
        _ => {
            let r = &v["rollout"];
            let canary = &r["canary"];
            println!(
                "{}: stable {}{}{}{}",
                v["route"].as_str().unwrap_or("?"),
                if r["stable"].is_null() {
                    "= directory version".to_string()
                } else {
                    short(&r["stable"])
                },
                if canary.is_null() {
                    String::new()
                } else {
                    format!(
                        ", canary {} at {}%",
                        short(&canary["digest"]),
                        percent(&canary["percent"])
                    )
                },
                if r["killed"] == true { ", KILLED" } else { "" },
                match r["shadows"].as_array() {
                    Some(s) if !s.is_empty() => format!(
                        ", shadows {}",
                        s.iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                    _ => String::new(),
                }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_unix_milliseconds() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_781_524_800_000), "2026-06-15T12:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn token_files_give_the_first_token() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "# tokens\n\nalice abcdef\nbob xyz\n").unwrap();
        assert_eq!(read_token(&f).unwrap(), "abcdef");
        std::fs::write(&f, "lonely-token\n").unwrap();
        assert_eq!(read_token(&f).unwrap(), "lonely-token");
    }
}
