//! `oasis fleet status`: every replica's generation, age and refusals, as
//! the control store's heartbeats hold them (`GET /admin/v1/fleet`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::Value;

/// Arguments of `oasis fleet`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Any replica of the fleet (its admin listener).
    #[arg(long, env = "OASIS_URL", global = true)]
    pub url: Option<String>,
    /// File holding the admin token (as `oasis rollout`). Default:
    /// $OASIS_ADMIN_TOKEN.
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// Print the server's JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// What to show.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Each replica's generation, revision, heartbeat age and refusals.
    Status,
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let url = args
        .url
        .as_deref()
        .unwrap_or(super::rollout::DEFAULT_URL)
        .trim_end_matches('/')
        .to_string();
    let token = super::rollout::admin_token(args.token_file.as_deref())?;
    let token = token.context("no admin token: pass --token-file or set OASIS_ADMIN_TOKEN")?;
    let Command::Status = args.command;
    let resp = reqwest::Client::new()
        .get(format!("{url}/admin/v1/fleet"))
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status();
    let text = resp.text().await.context("reading the response")?;
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    if !status.is_success() {
        if !args.json {
            eprintln!(
                "refused by {url} ({} {}): {}",
                status.as_u16(),
                v["error"]["kind"].as_str().unwrap_or("error"),
                v["error"]["message"].as_str().unwrap_or("(no message)")
            );
        }
        return Ok(ExitCode::from(1));
    }
    if !args.json {
        print!("{}", render(&v));
    }
    Ok(ExitCode::SUCCESS)
}

/// The human-readable table of a `/admin/v1/fleet` answer.
fn render(v: &Value) -> String {
    let mut out = format!(
        "control store {}, committed revision {}\n",
        v["store"].as_str().unwrap_or("?"),
        v["revision"]
    );
    let replicas = v["replicas"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!(
        "{:<28} {:<24} {:>8} {:>8}  {}\n",
        "REPLICA", "GENERATION", "REVISION", "AGE", "STATE"
    ));
    for r in &replicas {
        let age = r["age_ms"].as_u64().unwrap_or(0);
        let behind = r["revision"].as_u64() < v["revision"].as_u64();
        out.push_str(&format!(
            "{:<28} {:<24} {:>8} {:>7.1}s  {}{}\n",
            r["replica"].as_str().unwrap_or("?"),
            r["generation"].as_str().unwrap_or("?"),
            r["revision"],
            age as f64 / 1000.0,
            r["state"].as_str().unwrap_or("?"),
            if behind { " (behind)" } else { "" }
        ));
        for f in r["refusals"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "    refused {}: {}\n",
                f["what"].as_str().unwrap_or("?"),
                f["reason"].as_str().unwrap_or("?")
            ));
        }
        for f in r["registry_failures"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "    registry {}: {}\n",
                f["what"].as_str().unwrap_or("?"),
                f["reason"].as_str().unwrap_or("?")
            ));
        }
    }
    if replicas.is_empty() {
        out.push_str("no heartbeats yet\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_generations_ages_and_refusals() {
        let v = serde_json::json!({"store": "redis", "revision": 4, "replicas": [
            {"replica": "a:1", "generation": "g4-abcdefabcdef", "revision": 4, "state": "applied", "refusals": [], "age_ms": 300},
            {"replica": "b:2", "generation": "g3-000000000000", "revision": 3, "state": "refused",
             "refusals": [{"what": "p", "reason": "does not load"}], "age_ms": 1200}]});
        let t = render(&v);
        assert!(t.contains("committed revision 4"), "{t}");
        assert!(t.contains("g4-abcdefabcdef") && t.contains("0.3s"), "{t}");
        assert!(
            t.contains("refused (behind)") && t.contains("refused p: does not load"),
            "{t}"
        );
    }
}
