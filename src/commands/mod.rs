//! One file per command. Each returns the process exit code or an error.

pub mod abort;
pub mod check_metrics;
pub mod completion;
pub mod history;
pub mod install_runner;
pub mod pause;
pub mod policy;
pub mod promote;
pub mod report;
pub mod resume;
pub mod rollback;
pub mod run;
pub mod simulate;
pub mod start;
pub mod status;
pub mod step;
pub mod version;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::error::{Exit, Result};
use crate::policy::{Limits, PolicyEngine};

pub async fn dispatch(cli: Cli) -> Result<Exit> {
    let g = &cli.global;
    match cli.command {
        Command::Simulate(args) => simulate::run(g, &args),
        Command::Policy(cmd) => policy::run(g, cmd),
        Command::Version => version::run(g),
        Command::Completion(args) => completion::run(args.shell),
        Command::Complete { words } => completion::complete(&words),
        Command::Start(args) => start::run(g, &args).await,
        Command::Step(args) => step::run(g, &args).await,
        Command::Run(args) => run::run(g, &args).await,
        Command::Status(args) => status::run(g, &args).await,
        Command::Promote(args) => promote::run(g, &args).await,
        Command::Rollback(args) => rollback::run(g, &args).await,
        Command::Abort(args) => abort::run(g, &args).await,
        Command::Pause(args) => pause::run(g, &args).await,
        Command::Resume(args) => resume::run(g, &args).await,
        Command::History(args) => history::run(g, &args).await,
        Command::Report(args) => report::run(g, &args).await,
        Command::CheckMetrics(args) => check_metrics::run(g, &args).await,
        Command::InstallRunner(args) => install_runner::run(g, &args).await,
    }
}

/// The one policy engine of this process, with the user's plugin dirs.
pub fn engine(g: &GlobalArgs) -> PolicyEngine {
    let mut dirs = g.plugin_dirs.clone();
    // A `plugins/` folder beside the working directory is where teams keep their hooks.
    if std::path::Path::new("plugins").is_dir() {
        dirs.push("plugins".into());
    }
    PolicyEngine::new(dirs, &Limits::default())
}
