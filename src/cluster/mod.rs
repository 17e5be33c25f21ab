//! The cluster side: a kube client from kubectl's flags, the rollout state store, the
//! Deployments, Events and pod facts, and the driver that turns core transitions into
//! cluster side effects (idempotent, re-runnable after a crash at any point).

pub mod client;
pub mod clock;
pub mod driver;
pub mod dryrun;
pub mod events;
pub mod lease;
pub mod loaded;
pub mod mesh;
pub mod metrics;
pub mod notify;
pub mod runner;
pub mod sink;
pub mod state;
pub mod watch_cache;
pub mod workloads;
pub mod world;

pub use client::{Session, connect};

/// A kube error in words an operator can act on.
pub fn describe_kube_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => format!(
            "permission denied: {} (check your RBAC, or --as/--as-group)",
            s.message
        ),
        kube::Error::Api(s) => format!("Kubernetes API: {} ({})", s.message, s.code),
        other => format!("Kubernetes API: {other}"),
    }
}
