use crate::cli::GlobalArgs;
use crate::error::{Exit, Result};
use serde::Serialize;

#[derive(Serialize)]
struct Version {
    version: &'static str,
    commit: &'static str,
    target: &'static str,
}

pub fn run(g: &GlobalArgs) -> Result<Exit> {
    let v = Version {
        version: env!("CARGO_PKG_VERSION"),
        commit: option_env!("KUBECTL_CANARY_GIT_COMMIT").unwrap_or("unknown"),
        target: option_env!("KUBECTL_CANARY_TARGET").unwrap_or("unknown"),
    };
    if !crate::output::structured(g.output, &v)? {
        println!(
            "kubectl-canary v{} (commit {}, {})",
            v.version, v.commit, v.target
        );
    }
    Ok(Exit::Ok)
}
