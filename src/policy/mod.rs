//! Rhai policies and hooks: the sandboxed engine, the `ctx` bindings and the contract.

pub mod context;
pub mod engine;
pub mod resolver;
pub mod schedule;

pub use crate::core::decision::PolicyFailure;
pub use context::ContextData;
pub use engine::{Limits, Policy, PolicyEngine, PolicyError, PolicyOutcome};

/// Loads a policy by path, or by the name of a shipped policy (`default`, `statistical`, …).
pub fn load(
    engine: &PolicyEngine,
    name_or_path: &str,
    limits: &Limits,
) -> Result<Policy, PolicyError> {
    let path = std::path::Path::new(name_or_path);
    if path.exists() {
        return engine.compile_file(path, limits);
    }
    match crate::shipped::policy(name_or_path) {
        Some((file, text)) => engine.compile(file, text, limits),
        None => Err(PolicyError::Read {
            path: name_or_path.to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "no such file, and not a shipped policy ({})",
                    crate::shipped::policy_names()
                ),
            ),
        }),
    }
}
