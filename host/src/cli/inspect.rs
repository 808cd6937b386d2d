//! `oasis inspect`: what a policy is, what it needs, what it accepts.
//!
//! When the policy does not load (its settings are refused, its smoke test
//! fails), what it says about itself is still printed, followed by the
//! failure, and the exit status is 3: the metadata is often what explains
//! the failure.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use oasis::PolicyInfo;

/// Arguments of `oasis inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy: a component (.wasm), or a manifest (.toml) naming one
    /// with its settings and limits.
    pub policy: PathBuf,
    /// Settings to validate: inline JSON, a JSON file, or a TOML file
    /// (settings, or a manifest's `[settings]`); defaults when absent.
    #[arg(long)]
    pub settings: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub limits: super::LimitArgs,
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = oasis::Runtime::new(oasis::RuntimeConfig {
        max_instances: super::CLI_INSTANCES,
        ..Default::default()
    })?;
    let target = super::PolicyArg::resolve(&args.policy)?;
    let (info, failure) = match target.load(&runtime, args.settings.as_deref(), &args.limits) {
        Ok(policy) => (policy.info().clone(), None),
        Err(failure) => {
            // Show what it says about itself, if it gets that far.
            let wasm = std::fs::read(&target.module)
                .with_context(|| format!("cannot read {}", target.module.display()))?;
            let limits = target
                .limits
                .map_or_else(|| args.limits.limits(), |l| args.limits.over(l));
            match oasis::Policy::describe(&runtime, &wasm, limits) {
                Ok(info) => (info, Some(failure)),
                Err(_) => return Err(failure),
            }
        }
    };
    if args.json {
        let mut v = serde_json::to_value(&info)?;
        if let Some(f) = &failure {
            v["load_error"] = oasis::visible(&format!("{f:#}")).into();
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print(&info);
        if let Some(f) = &failure {
            println!();
            println!("does not load: {}", oasis::visible(&format!("{f:#}")));
        }
    }
    Ok(match failure {
        None => ExitCode::SUCCESS,
        Some(_) => ExitCode::from(super::exit::LOAD_FAILED),
    })
}

fn print(i: &PolicyInfo) {
    println!("name:        {}", i.name);
    println!("version:     {}", i.version);
    println!("digest:      {}", i.digest);
    println!("size:        {} bytes", i.size_bytes);
    println!("sdk:         {}", i.sdk_version);
    println!("contract:    oasis:policy@{}", i.contract);
    println!("description: {}", i.description);
    println!("required features: {}", list(&i.required_features));
    println!("optional features: {}", list(&i.optional_features));
    println!("context features:  {}", list(&i.context_features));
    println!("settings:");
    if i.settings.is_empty() {
        println!("  (none)");
    }
    for s in &i.settings {
        println!("  {} = {}  {}", s.name, s.default_json, s.description);
    }
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(", ")
    }
}
