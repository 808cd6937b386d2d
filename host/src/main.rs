//! `oasis`: run, test, inspect and serve promotion-scoring policies.
//!
//! ```text
//! oasis run policy.wasm --request examples/request.json
//! oasis test policy.wasm policies/baseline/fixtures
//! oasis inspect policy.wasm
//! ```

mod cli;

use clap::Parser;

/// mimalloc instead of glibc malloc: under load, a request's buffers are
/// often freed on another tokio worker than the one that allocated them,
/// and glibc then takes the other thread's arena lock (~3 futex calls per
/// request measured); mimalloc frees such blocks without a lock
/// (BENCHMARKS.md "Session 19").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    // Kept to the end: dropping it flushes buffered traces.
    let _traces = oasis::telemetry::logging::init(args.log_format, &args.log_level);
    match cli::execute(args) {
        Ok(code) => code,
        Err(e) => {
            // The chain may carry a policy's own text (a panic message).
            eprintln!("error: {}", oasis::visible(&format!("{e:#}")));
            std::process::ExitCode::from(cli::exit_code(&e))
        }
    }
}
