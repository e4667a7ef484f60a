//! The `kbin` binary: parse the command line, run, render the error chain once.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = kbin::cli::Cli::parse();
    match kbin::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            kbin::error::render(&err, &mut std::io::stderr().lock());
            ExitCode::FAILURE
        }
    }
}
