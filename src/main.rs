//! The `glora` binary: parses the command line and hands it to the library's CLI layer.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = glora::cli::Cli::parse();
    match glora::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
