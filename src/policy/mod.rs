//! Rhai policies and hooks: the sandboxed engine, the `ctx` bindings and the contract.

pub mod context;
pub mod engine;
pub mod resolver;
pub mod schedule;

pub use context::ContextData;
pub use crate::core::decision::PolicyFailure;
pub use engine::{Limits, Policy, PolicyEngine, PolicyError, PolicyOutcome};
