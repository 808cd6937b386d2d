//! Builds every guest component the tests use: the example policies in
//! `policies/` and the adversarial guests in `tests/guests/`, with a nested
//! `cargo build --target wasm32-wasip2 --profile policy` into its own target
//! directory (so it never contends for the outer build's lock).
//!
//! The wasm32-wasip2 target is added with rustup when missing: targets are
//! not installed automatically on every machine.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.join("../..").canonicalize().unwrap();
    for dir in [
        "policies",
        "guest-sdk",
        "wire",
        "contract",
        "wit",
        "tests/guests",
        // The guests' link settings (their initial heap).
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    let mut crates = Vec::new();
    for dir in ["policies", "tests/guests"] {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("Cargo.toml").exists())
            .collect();
        entries.sort();
        for path in entries {
            crates.push(package_name(&path.join("Cargo.toml")));
        }
    }

    ensure_target();
    // `$CARGO_TARGET_DIR/guests` (or `target/guests`), the directory
    // `scripts/build-policies` uses too, so each policy compiles once for both.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| root.join(d))
        .unwrap_or_else(|| root.join("target"))
        .join("guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--target", TARGET, "--profile", "policy"])
        .env("CARGO_TARGET_DIR", &target_dir);
    for c in &crates {
        cmd.args(["-p", c]);
    }
    // The outer build's flags are for the host target, not for wasm.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        // A build directory shared between work trees is locked by the
        // outer build: the guests build in their own.
        "CARGO_BUILD_BUILD_DIR",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("cannot run cargo to build the guest components");
    assert!(
        status.success(),
        "building the guest components failed (see the output above)"
    );

    let out_dir = target_dir.join(TARGET).join("policy");
    let mut consts = String::new();
    for c in &crates {
        let file = out_dir.join(format!("{}.wasm", c.replace('-', "_")));
        assert!(file.exists(), "{} was not produced", file.display());
        let ident = c.replace('-', "_").to_uppercase();
        consts.push_str(&format!(
            "/// Path of the `{c}` component.\npub const {ident}: &str = {:?};\n",
            file.display().to_string()
        ));
    }
    consts.push_str(&format!(
        "/// Every component, by crate name.\npub const ALL: &[(&str, &str)] = &[{}];\n",
        crates
            .iter()
            .map(|c| format!("({c:?}, {})", c.replace('-', "_").to_uppercase()))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    consts.push_str(&format!(
        "/// The repository root.\npub const ROOT: &str = {:?};\n",
        root.display().to_string()
    ));
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("components.rs");
    std::fs::write(out, consts).unwrap();
}

fn package_name(manifest: &Path) -> String {
    let text = std::fs::read_to_string(manifest).unwrap();
    let doc: toml::Table = toml::from_str(&text).unwrap();
    doc["package"]["name"].as_str().unwrap().to_string()
}

fn ensure_target() {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == TARGET)
        })
        .unwrap_or(false);
    if !installed {
        println!("cargo:warning=installing the {TARGET} target with rustup");
        let ok = Command::new("rustup")
            .args(["target", "add", TARGET])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "the {TARGET} target is missing and `rustup target add {TARGET}` failed"
        );
    }
}
