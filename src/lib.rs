//! kubectl-canary: canary rollouts on Kubernetes, steered by Rhai policy scripts.
//!
//! - [`core`]: pure decision core (state machine, gates, statistics).
//! - [`policy`]: sandboxed Rhai engine, policy contract and bindings.
//! - [`sim`]: offline simulator driving the same core on a virtual clock.

pub mod core;
pub mod policy;
