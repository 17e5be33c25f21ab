//! One file per command. Each returns the process exit code or an error.

pub mod completion;
pub mod policy;
pub mod simulate;
pub mod version;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::error::{Error, Exit, Result};
use crate::policy::{Limits, PolicyEngine};

pub async fn dispatch(cli: Cli) -> Result<Exit> {
    let g = &cli.global;
    match cli.command {
        Command::Simulate(args) => simulate::run(g, &args),
        Command::Policy(cmd) => policy::run(g, cmd),
        Command::Version => version::run(g),
        Command::Completion(args) => completion::run(args.shell),
        Command::Complete { words } => completion::complete(&words),
        Command::Start(_) => Err(Error::NotBuilt("start")),
        Command::Step(_) => Err(Error::NotBuilt("step")),
        Command::Run(_) => Err(Error::NotBuilt("run")),
        Command::Status(_) => Err(Error::NotBuilt("status")),
        Command::Promote(_) => Err(Error::NotBuilt("promote")),
        Command::Rollback(_) => Err(Error::NotBuilt("rollback")),
        Command::Abort(_) => Err(Error::NotBuilt("abort")),
        Command::Pause(_) => Err(Error::NotBuilt("pause")),
        Command::Resume(_) => Err(Error::NotBuilt("resume")),
        Command::History(_) => Err(Error::NotBuilt("history")),
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
