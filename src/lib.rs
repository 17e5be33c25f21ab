//! kubectl-canary: canary rollouts on Kubernetes, steered by Rhai policy scripts.
//!
//! - [`core`]: pure decision core (state machine, gates, statistics). No I/O.
//! - [`policy`]: sandboxed Rhai engine, policy contract and bindings.
//! - [`controller`]: one evaluation (facts → policy → core), shared by simulate and cluster.
//! - [`lifecycle`]: runs the core's plans of effects against a world (cluster, simulator, fakes).
//! - [`sim`]: offline simulator driving the same loop on a virtual clock.
//! - [`report`]: a rollout as a self-contained HTML report, with rollback timings.
//! - [`cli`], [`commands`], [`output`], [`app`]: the command-line edge.
#![forbid(unsafe_code)]

/// The decision core, a crate of its own (`crates/core`) so that it cannot do I/O: it has
/// no Kubernetes client, async runtime or HTTP client to do it with.
pub use kubectl_canary_core as core;

pub mod app;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod controller;
pub mod error;
pub mod lifecycle;
pub mod metrics;
pub mod output;
pub mod policy;
pub mod providers;
pub mod report;
pub mod shipped;
pub mod sim;
