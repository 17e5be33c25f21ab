//! The binary's edge: parse arguments, run the command, report errors in a friendly way.

use crate::cli::Cli;
use clap::Parser;
use std::process::ExitCode;

pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    match crate::commands::dispatch(cli).await {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("error: {e}");
            e.exit().into()
        }
    }
}
