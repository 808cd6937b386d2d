//! `oasis new <name> [--lang rust|python]`: scaffold a policy (a Rust crate,
//! or a Python package) that builds, tests and passes its golden fixture out
//! of the box.
//!
//! ```text
//! oasis new my-boost --path policies/my-boost
//! cargo test -p my-boost                                   # unit tests and the fixture, natively
//! scripts/build-policies                                    # the component
//! oasis test target/guests/wasm32-wasip2/policy/my_boost.wasm policies/my-boost/fixtures
//! ```
//!
//! The crate holds a small but real policy (promote eligible campaign
//! tracks by a fixed `boost`), its settings with validation and
//! documentation, unit tests written with the SDK's harness, a golden
//! fixture with its expected output, and an example manifest. The SDK is a
//! path dependency: `--sdk` names it, or it is found in an enclosing Oasis
//! checkout. Inside a Cargo workspace the crate is left to join it (as
//! `policies/*` does here); elsewhere it gets a `[workspace]` of its own.
//!
//! With `--lang python` the same policy, tests and fixture come as a Python
//! package for the Python SDK (`guest-sdk-python/`):
//!
//! ```text
//! oasis new my-boost --lang python --path policies-python/my_boost
//! (cd policies-python/my_boost && ../../.venv/bin/pytest)   # unit tests + fixture, natively
//! scripts/build-python-policy policies-python/my_boost     # the component
//! oasis test target/python/my_boost.wasm policies-python/my_boost/fixtures
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};

/// Arguments of `oasis new`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy's name: lowercase letters, digits and dashes (the crate
    /// name and the policy name in its metadata).
    pub name: String,
    /// Where to create the crate (default: ./<name>). Must not exist.
    #[arg(long)]
    pub path: Option<PathBuf>,
    /// The Oasis guest SDK directory (default: `guest-sdk` of the Oasis
    /// checkout the crate is created in).
    #[arg(long)]
    pub sdk: Option<PathBuf>,
    /// The language of the policy: a Rust crate or a Python package.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    pub lang: Lang,
}

/// The language `oasis new` scaffolds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// A crate for the Rust SDK (`guest-sdk/`).
    Rust,
    /// A package for the Python SDK (`guest-sdk-python/`), built with componentize-py.
    Python,
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let name = &args.name;
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || !name.starts_with(|c: char| c.is_ascii_lowercase())
    {
        bail!(
            "policy name {name:?}: use 1-64 lowercase letters, digits and dashes, starting with a letter (e.g. `my-boost`)"
        );
    }
    let dir = args.path.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() {
        bail!("{} exists already; choose another --path", dir.display());
    }
    // A scaffold that fails half-way (no SDK found, a file that cannot be
    // written) removes what it created: otherwise the retry, with the
    // problem fixed, is refused because the directory exists.
    let cleanup = RemoveUnlessKept(Some(dir.clone()));
    let result = match args.lang {
        Lang::Python => execute_python(name, &dir, args.sdk.as_deref()),
        Lang::Rust => execute_rust(&args, name, &dir),
    };
    if result.is_ok() {
        cleanup.keep();
    }
    result
}

/// Removes a directory when dropped, unless [`keep`](Self::keep) was called.
struct RemoveUnlessKept(Option<PathBuf>);

impl RemoveUnlessKept {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveUnlessKept {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `oasis new` (Rust): the crate in `dir` (which does not exist).
fn execute_rust(args: &Args, name: &str, dir: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir.join("src"))
        .and_then(|()| std::fs::create_dir_all(dir.join("fixtures")))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let abs = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let sdk = match &args.sdk {
        Some(p) => p
            .canonicalize()
            .with_context(|| format!("--sdk {}: not found", p.display()))?,
        None => find_sdk(&abs).with_context(|| {
            format!(
                "no Oasis checkout (guest-sdk/) above {}: pass --sdk PATH/TO/guest-sdk",
                abs.display()
            )
        })?,
    };
    if !sdk.join("Cargo.toml").is_file() {
        bail!("{} is not the guest SDK (no Cargo.toml)", sdk.display());
    }
    let sdk_rel = relative(&abs, &sdk);
    let own_workspace = !in_workspace(&abs);
    for (file, text) in files(name, &sdk_rel, own_workspace) {
        std::fs::write(dir.join(&file), text)
            .with_context(|| format!("cannot write {}", dir.join(file).display()))?;
    }
    let crate_ident = name.replace('-', "_");
    println!("created {} (policy `{name}`)", dir.display());
    println!();
    println!("next:");
    println!(
        "  cargo test --manifest-path {}/Cargo.toml        # unit tests and the fixture, natively (the first build takes a minute or two)",
        dir.display()
    );
    println!(
        "  cargo build --manifest-path {}/Cargo.toml --target wasm32-wasip2 --profile policy",
        dir.display()
    );
    // The real target directory, not a `<target>` placeholder to work out:
    // $CARGO_TARGET_DIR, else the enclosing workspace's, else the crate's.
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t),
        None => abs
            .ancestors()
            .skip(1)
            .find(|a| {
                std::fs::read_to_string(a.join("Cargo.toml"))
                    .is_ok_and(|t| t.lines().any(|l| l.trim() == "[workspace]"))
            })
            .unwrap_or(&abs)
            .join("target"),
    };
    println!(
        "  oasis test {}/wasm32-wasip2/policy/{crate_ident}.wasm {}/fixtures",
        target.display(),
        dir.display()
    );
    println!(
        "  then copy the .wasm and {}/{name}.toml into the served policy directory",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `oasis new --lang python`: the package in `dir` (which does not exist).
fn execute_python(name: &str, dir: &Path, sdk: Option<&Path>) -> anyhow::Result<ExitCode> {
    let ident = name.replace('-', "_");
    for sub in [ident.as_str(), "tests", "fixtures"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let abs = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let sdk = match sdk {
        Some(p) => p
            .canonicalize()
            .with_context(|| format!("--sdk {}: not found", p.display()))?,
        None => abs
            .ancestors()
            .map(|a| a.join("guest-sdk-python"))
            .find(|p| p.join("oasis_sdk").is_dir())
            .with_context(|| {
                format!(
                    "no Oasis checkout (guest-sdk-python/) above {}: pass --sdk PATH/TO/guest-sdk-python",
                    abs.display()
                )
            })?,
    };
    if !sdk.join("oasis_sdk").join("__init__.py").is_file() {
        bail!("{} is not the Python SDK (no oasis_sdk/)", sdk.display());
    }
    let checkout = sdk.parent().unwrap_or(&sdk);
    let type_name = type_name(name);
    let fill = |t: &str| {
        t.replace("{name}", name)
            .replace("{ident}", &ident)
            .replace("{Type}", &type_name)
    };
    let files = [
        ("pyproject.toml".to_string(), fill(PY_PROJECT)),
        (format!("{ident}/__init__.py"), String::new()),
        (format!("{ident}/policy.py"), fill(PY_POLICY)),
        ("tests/test_policy.py".to_string(), fill(PY_TEST)),
        (
            "fixtures/basic.json".to_string(),
            FIXTURE.replace("{name}", name),
        ),
        (
            format!("{name}.toml"),
            format!(
                "# Manifest for the served policy directory: copy it next to {ident}.wasm.\nmodule = \"{ident}.wasm\"\nfallback = \"baseline\"\n\n[settings]\nboost = 0.1\n\n[limits]\n# A Python policy call takes milliseconds (docs/python.md).\ndeadline_ms = 50\n# Reusing an instance for up to N calls cuts a Python call from ~4.5 ms to\n# ~1.2 ms at 300 candidates, with weaker isolation (globals persist between\n# requests of this policy; any fault discards the instance). Off by default.\n# reuse_instance_calls = 1000\n"
            ),
        ),
    ];
    for (file, text) in files {
        std::fs::write(dir.join(&file), text)
            .with_context(|| format!("cannot write {}", dir.join(file).display()))?;
    }
    let root = checkout.display();
    println!("created {} (policy `{name}`, Python)", dir.display());
    println!();
    println!("next:");
    println!(
        "  {root}/scripts/setup-python                           # once: .venv with componentize-py and pytest"
    );
    println!(
        "  (cd {} && {root}/.venv/bin/pytest)          # unit tests and the fixture, natively",
        dir.display()
    );
    println!(
        "  oasis test {} {}/fixtures        # the fixtures natively, as oasis test compares them",
        dir.display(),
        dir.display()
    );
    println!(
        "  {root}/scripts/build-python-policy {} -o {ident}.wasm",
        dir.display()
    );
    println!("  oasis test {ident}.wasm {}/fixtures", dir.display());
    println!(
        "  then copy {ident}.wasm and {}/{name}.toml into the served policy directory",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `my-boost` -> `MyBoost`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// `guest-sdk` of the first ancestor of `dir` that has one.
fn find_sdk(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .map(|a| a.join("guest-sdk"))
        .find(|p| p.join("Cargo.toml").is_file())
}

/// Whether an ancestor of `dir` is a Cargo workspace root.
fn in_workspace(dir: &Path) -> bool {
    dir.ancestors().skip(1).any(|a| {
        std::fs::read_to_string(a.join("Cargo.toml"))
            .is_ok_and(|t| t.lines().any(|l| l.trim() == "[workspace]"))
    })
}

/// `to` relative to `from` (both absolute), with `/` separators.
fn relative(from: &Path, to: &Path) -> String {
    let (f, t): (Vec<_>, Vec<_>) = (from.components().collect(), to.components().collect());
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".into(); f.len() - common];
    parts.extend(
        t[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

/// The files of the crate: (path inside it, text).
fn files(name: &str, sdk: &str, own_workspace: bool) -> Vec<(String, String)> {
    let ident = name.replace('-', "_");
    let type_name = type_name(name);
    // Profiles live in the workspace's root: an enclosing workspace has
    // `policy` (this one's does); a crate of its own gets it here, so the
    // build command it prints works where it stands.
    let workspace = if own_workspace {
        "\n# A workspace of its own (it was not created inside one).\n[workspace]\n\n\
         # The component's profile: optimised, no debug info (~200 KB instead of\n\
         # ~3 MB); panic messages survive.\n\
         [profile.policy]\ninherits = \"release\"\ndebug = false\nstrip = \"debuginfo\"\n"
    } else {
        ""
    };
    vec![
        (
            "Cargo.toml".into(),
            format!(
                r#"[package]
name = "{name}"
description = "Promotes eligible campaign tracks by a fixed boost"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the WebAssembly component; rlib: native unit tests.
crate-type = ["cdylib", "rlib"]

[dependencies]
oasis-sdk = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}
{workspace}"#
            ),
        ),
        (
            "src/lib.rs".into(),
            LIB_RS.replace("{name}", name).replace("{Type}", &type_name),
        ),
        (
            "fixtures/basic.json".into(),
            FIXTURE.replace("{name}", name),
        ),
        ("build.rs".into(), BUILD_RS.into()),
        (
            format!("{name}.toml"),
            format!(
                "# Manifest for the served policy directory: copy it next to {ident}.wasm.\nmodule = \"{ident}.wasm\"\nfallback = \"baseline\"\n\n[settings]\nboost = 0.1\n\n[limits]\ndeadline_ms = 20\n"
            ),
        ),
    ]
}

/// The crate's build script: the component starts with 1 MiB of heap, as
/// the example policies do (the repository's `.cargo/config.toml`, whose
/// comment gives the figures). Here rather than in a cargo config, which
/// cargo reads from the working directory and so would miss
/// `cargo build --manifest-path`.
const BUILD_RS: &str = r#"//! Link settings of the policy's WebAssembly component.
//!
//! The component's initial linear memory holds 1 MiB of heap beyond its
//! stack and data (the linker's default leaves a few KiB), so that a large
//! request's allocations fit without growing memory during the call: each
//! growth costs the host two `mprotect`s of the instance's memory slot,
//! ~5 us a call at 1000 candidates (see the Oasis docs, "Performance").
//! Native builds (`cargo test`) are unaffected.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg-cdylib=--initial-heap=1048576");
    }
}
"#;

const LIB_RS: &str = r##"//! # {name}
//!
//! Promotes every eligible campaign track by a fixed `boost`:
//! `score = relevance + boost`, propensity 1 (deterministic). Organic tracks
//! and ineligible campaign tracks keep their relevance; the SDK's
//! `campaign_eligibility` says why a campaign track is not eligible (ended,
//! wrong surface or market).
//!
//! Start from here: read features you declare in `metadata()`, add
//! settings, and pin the behaviour in the tests and `fixtures/`.

use oasis_sdk::{Decisions, Eligibility, Metadata, Policy, PolicyError, Request};
use serde::{Deserialize, Serialize};

/// The policy.
pub struct {Type};

/// Operator settings (the manifest's `[settings]`); missing fields take
/// their defaults, unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Score added to an eligible campaign track, in [0, 1]. Default 0.1.
    pub boost: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { boost: 0.1 }
    }
}

impl Policy for {Type} {
    type Settings = Settings;

    fn metadata() -> Metadata {
        Metadata::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
            .description("Promotes eligible campaign tracks: score = relevance + boost.")
            .setting("boost", "score added to an eligible campaign track, in [0, 1]")
    }

    fn validate(s: &Settings) -> Result<(), String> {
        if !(0.0..=1.0).contains(&s.boost) {
            return Err(format!("boost must be in [0, 1], got {}", s.boost));
        }
        Ok(())
    }

    fn score(s: &Settings, req: &Request) -> Result<Decisions, PolicyError> {
        let mut out = Decisions::passthrough(req);
        for c in req.candidates() {
            match c.campaign_eligibility() {
                Eligibility::Organic => {}
                Eligibility::Ineligible(reason) => out.mark(c.index(), reason),
                Eligibility::Eligible(_) => out.promote(c.index(), s.boost, 1.0),
            }
        }
        Ok(out)
    }
}

oasis_sdk::export_policy!({Type});

#[cfg(test)]
mod tests {
    use super::*;
    use oasis_sdk::Reason;
    use oasis_sdk::testing::{
        CampaignSpec, CandidateSpec, NOW_MS, RequestBuilder, assert_close,
        assert_settings_documented, assert_settings_refused, run,
    };

    #[test]
    fn eligible_campaign_tracks_are_boosted_and_the_rest_kept() {
        let req = RequestBuilder::new()
            .campaign(CampaignSpec::new(1))
            .campaign(CampaignSpec::new(2).window(NOW_MS - 20 * 86_400_000, NOW_MS - 86_400_000))
            .candidate(CandidateSpec::new(0.5).campaign(0))
            .candidate(CandidateSpec::new(0.7))
            .candidate(CandidateSpec::new(0.6).campaign(1)) // ended
            .build();
        let out = run::<{Type}>(r#"{"boost": 0.2}"#, &req).unwrap();
        assert_close(out.scores[0], 0.7);
        assert!(out.reasons[0].contains(Reason::PROMOTED));
        assert_eq!(out.scores[1], 0.7);
        assert_eq!(out.reasons[1], Reason::ORGANIC);
        assert_eq!(out.scores[2], 0.6);
        assert!(out.reasons[2].contains(Reason::CAMPAIGN_INACTIVE));
        assert_eq!(out.eligible, vec![true, false, false]);
    }

    #[test]
    fn invalid_settings_name_the_setting_and_value() {
        let req = RequestBuilder::new().build();
        assert_settings_refused::<{Type}>(
            &req,
            &[
                (r#"{"boost": 2}"#, "boost must be in [0, 1], got 2"),
                (r#"{"bost": 0.1}"#, "unknown field `bost`"),
            ],
        );
    }

    #[test]
    fn settings_are_documented() {
        assert_settings_documented::<{Type}>(&[("boost", "0.1")]);
    }

    /// The golden fixtures of `fixtures/`, natively: what `oasis test`
    /// checks on the component, with the same comparison.
    #[test]
    fn golden_fixtures_pass_natively() {
        oasis_sdk::testing::assert_fixtures_pass::<{Type}>(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures"
        ));
    }
}
"##;

const PY_PROJECT: &str = r#"[project]
name = "{name}"
version = "0.1.0"
description = "Promotes eligible campaign tracks by a fixed boost"
requires-python = ">=3.11"
dependencies = ["oasis-sdk"]

[tool.pytest.ini_options]
# `import {ident}` from this directory; `oasis_sdk` comes from the Oasis
# checkout's .venv (scripts/setup-python).
pythonpath = ["."]
testpaths = ["tests"]

[tool.oasis]
# module:class that scripts/build-python-policy exports as the component.
policy = "{ident}.policy:{Type}"
fixtures = "fixtures"
"#;

const PY_POLICY: &str = r#""""{name}: promotes every eligible campaign track by a fixed ``boost``.

``score = relevance + boost``, propensity 1 (deterministic). Organic tracks
and ineligible campaign tracks keep their relevance; the SDK's
``campaign_eligibility`` says why a campaign track is not eligible (ended,
wrong surface or market).

Start from here: declare the features you read (``requires``/``optional``),
add settings, and pin the behaviour in the tests and ``fixtures/``.
"""

from dataclasses import dataclass

from oasis_sdk import Decisions, Policy


@dataclass
class Settings:
    # Score added to an eligible campaign track, in [0, 1].
    boost: float = 0.1


class {Type}(Policy):
    name = "{name}"
    version = "0.1.0"
    description = "Promotes eligible campaign tracks: score = relevance + boost."
    Settings = Settings
    settings_doc = {"boost": "score added to an eligible campaign track, in [0, 1]"}

    def validate(self, s):
        if not 0.0 <= s.boost <= 1.0:
            return f"boost must be in [0, 1], got {s.boost}"

    def score(self, s, req):
        out = Decisions.passthrough(req)
        for i, c in enumerate(req.campaign):
            if c < 0:
                continue  # organic
            e = req.campaign_eligibility(i)
            if e.eligible:
                out.promote(i, s.boost, 1.0)
            else:
                out.mark(i, e.reasons)
        return out
"#;

const PY_TEST: &str = r#""""Native tests of {name} (plain CPython, no wasm)."""

from pathlib import Path

import pytest

from oasis_sdk import metadata, reason as R
from oasis_sdk.testing import (
    DAY_MS, NOW_MS, CampaignSpec, CandidateSpec, RequestBuilder, assert_close,
    assert_settings_refused, check_fixture, run,
)
from {ident}.policy import {Type}

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_eligible_campaign_tracks_are_boosted_and_the_rest_kept():
    req = (
        RequestBuilder()
        .campaign(CampaignSpec(1))
        .campaign(CampaignSpec(2).window(NOW_MS - 20 * DAY_MS, NOW_MS - DAY_MS))
        .candidate(CandidateSpec(0.5).campaign(0))
        .candidate(CandidateSpec(0.7))
        .candidate(CandidateSpec(0.6).campaign(1))  # ended
        .build()
    )
    out = run({Type}, {"boost": 0.2}, req)
    assert_close(out.scores[0], 0.7)
    assert out.reasons[0] & R.PROMOTED
    assert (out.scores[1], out.reasons[1]) == (0.7, R.ORGANIC)
    assert out.scores[2] == 0.6 and out.reasons[2] & R.CAMPAIGN_INACTIVE
    assert out.eligible == [True, False, False]


def test_invalid_settings_name_the_setting_and_value():
    assert_settings_refused({Type}, RequestBuilder().build(), [
        ('{"boost": 2}', "boost must be in [0, 1], got 2"),
        ('{"bost": 0.1}', "unknown field `bost`"),
    ])


def test_settings_are_documented():
    m = metadata({Type}())
    assert [(s.name, s.default_json) for s in m.settings] == [("boost", "0.1")]
    assert all(s.description for s in m.settings)


@pytest.mark.parametrize("fixture", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.stem)
def test_golden_fixtures(fixture):
    assert check_fixture({Type}, fixture) == []
"#;

const FIXTURE: &str = r#"{
  "description": "An active campaign track is boosted by the default 0.1; an organic track and an ended campaign's track keep their relevance.",
  "tolerance": 1e-9,
  "request": {
    "context": {
      "request_id": "{name}-1",
      "listener_id": "listener-1",
      "session_id": "session-1",
      "surface": "radio",
      "market": "SE",
      "timestamp_ms": 1781524800000,
      "seed": 42
    },
    "candidates": [
      {
        "id": "t1",
        "relevance": 0.5,
        "artist": "artist-1",
        "rights_holder": "label-1",
        "campaign": {
          "id": "camp-active",
          "start_ms": 1780660800000,
          "end_ms": 1783252800000,
          "delivery_target": 1000.0,
          "delivered": 333.0,
          "expected_by_now": 333.0
        }
      },
      {
        "id": "t2",
        "relevance": 0.7,
        "artist": "artist-2",
        "rights_holder": "label-2"
      },
      {
        "id": "t3",
        "relevance": 0.6,
        "artist": "artist-3",
        "rights_holder": "label-2",
        "campaign": {
          "id": "camp-ended",
          "start_ms": 1778932800000,
          "end_ms": 1781438400000,
          "delivery_target": 1000.0,
          "delivered": 333.0,
          "expected_by_now": 333.0
        }
      }
    ]
  },
  "expected": [
    { "id": "t1", "score": 0.6, "eligible": true, "reasons": ["promoted"], "propensity": 1.0 },
    { "id": "t2", "score": 0.7, "eligible": false, "reasons": ["organic"], "propensity": 0.0 },
    { "id": "t3", "score": 0.6, "eligible": false, "reasons": ["campaign_inactive"], "propensity": 0.0 }
  ]
}
"#;
