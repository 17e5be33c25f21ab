//! Library errors. The binary turns them into a friendly report and an exit code.

use crate::policy::PolicyError;
use crate::sim::scenario::ScenarioError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// Bad arguments or input files: exit code 2.
    #[error("{0}")]
    Usage(String),
    /// The rollout's state does not allow the command now (promote a rolled-back rollout).
    #[error("{0}")]
    Refused(String),
    #[error(
        "`kubectl canary {0}` needs a cluster and is not built yet in this version.\n\
         Try it offline: `kubectl canary simulate --policy FILE --scenario NAME`."
    )]
    NotBuilt(&'static str),
    #[error("cannot write output: {0}")]
    Output(String),
    #[error("{0}")]
    Other(String),
    /// Talking to the cluster failed (connection, permissions, missing objects).
    #[error("{0}")]
    Cluster(String),
    /// A Kubernetes API call failed; its status (code, reason) stays reachable as the source.
    #[error("{message}")]
    Kube {
        message: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// Optimistic concurrency: somebody else wrote the rollout state between our read and write.
    #[error(
        "another operator changed rollout {namespace}/{service} at the same time; nothing was \
         lost — re-run the command to continue from the new state (`kubectl canary status {service} -n {namespace}`)"
    )]
    Conflict { namespace: String, service: String },
    /// A newer state of the rollout exists than the one this command planned from.
    #[error(
        "the rollout moved on while this command ran (state generation {theirs}, this command planned from {ours}); nothing of the newer state was undone — re-run the command to continue from it"
    )]
    Superseded { ours: u64, theirs: u64 },
    #[error(transparent)]
    Plan(#[from] crate::core::plan::Refusal),
    /// A `run` holds the rollout's lease.
    #[error(
        "rollout {namespace}/{service} is driven by `kubectl canary run` {holder} (lease renewed \
         {renewed_secs_ago}s ago, lapses in {expires_in_secs}s); stepping it now would race that \
         runner. Stop it, wait for its lease to lapse, or pass --force"
    )]
    Leased {
        namespace: String,
        service: String,
        holder: String,
        renewed_secs_ago: i64,
        expires_in_secs: i64,
    },
    #[error(transparent)]
    Provider(#[from] crate::providers::ProviderError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube {
            message: crate::cluster::describe_kube_error(&e),
            source: Box::new(e),
        }
    }
}

impl Error {
    /// The HTTP status code of a failed Kubernetes API call.
    pub fn api_code(&self) -> Option<u16> {
        match self {
            Error::Kube { source, .. } => match source.as_ref() {
                kube::Error::Api(s) => Some(s.code),
                _ => None,
            },
            _ => None,
        }
    }

    /// The exit code the binary reports this error with.
    pub fn exit(&self) -> Exit {
        match self {
            Error::Usage(_) | Error::Policy(PolicyError::Read { .. }) => Exit::Usage,
            _ => Exit::Error,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Process exit codes, documented in `--help` and the README so CI can branch on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Ok = 0,
    Error = 1,
    Usage = 2,
    RolledBack = 3,
    Paused = 4,
    Running = 5,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_errors_keep_their_status() {
        let status = kube::core::Status::failure("configmaps \"x\" is forbidden", "Forbidden")
            .with_code(403);
        let e: Error = kube::Error::Api(Box::new(status)).into();
        assert_eq!(e.api_code(), Some(403));
        assert!(e.to_string().starts_with("permission denied"), "{e}");
        let source = std::error::Error::source(&e).expect("the kube error is the source");
        assert!(source.to_string().contains("forbidden"), "{source}");
        assert_eq!(e.exit(), Exit::Error);
        assert_eq!(Error::Usage("--x".into()).exit(), Exit::Usage);
    }
}
