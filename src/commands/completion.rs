use crate::cli::Cli;
use crate::error::{Exit, Result};
use clap::CommandFactory;

pub fn run(shell: clap_complete::Shell) -> Result<Exit> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "kubectl-canary", &mut std::io::stdout());
    Ok(Exit::Ok)
}
