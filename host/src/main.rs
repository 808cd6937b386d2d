//! `oasis`: run, test, inspect and serve promotion-scoring policies.
//!
//! ```text
//! oasis run policy.wasm --request examples/request.json
//! oasis test policy.wasm policies/baseline/fixtures
//! oasis inspect policy.wasm
//! ```

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    oasis::telemetry::logging::init(args.log_format, &args.log_level);
    match cli::execute(args) {
        Ok(code) => code,
        Err(e) => {
            // The chain may carry a policy's own text (a panic message).
            eprintln!("error: {}", oasis::visible(&format!("{e:#}")));
            std::process::ExitCode::from(cli::exit_code(&e))
        }
    }
}
