//! What a policy can decide at one evaluation, and the numbers behind it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Named numbers a policy records at an evaluation. `None` means "no data":
/// it is kept distinct from zero all the way to the output.
pub type Observations = BTreeMap<String, Option<f64>>;

/// The policy's verdict for one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Decision {
    /// Go to the next step of the schedule, or to a chosen weight.
    Advance {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to_weight: Option<u32>,
        reason: String,
    },
    /// Stay at the current weight and evaluate again later.
    Hold { reason: String },
    /// Stop and wait for a human (`kubectl canary resume|promote|rollback`).
    Pause { reason: String },
    /// Send all traffic back to stable.
    Rollback { reason: String },
    /// Make the canary the new stable.
    Promote { reason: String },
}

impl Decision {
    pub fn action(&self) -> &'static str {
        match self {
            Decision::Advance { .. } => "advance",
            Decision::Hold { .. } => "hold",
            Decision::Pause { .. } => "pause",
            Decision::Rollback { .. } => "rollback",
            Decision::Promote { .. } => "promote",
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Decision::Advance { reason, .. }
            | Decision::Hold { reason }
            | Decision::Pause { reason }
            | Decision::Rollback { reason }
            | Decision::Promote { reason } => reason,
        }
    }

    pub fn hold(reason: impl Into<String>) -> Self {
        Decision::Hold {
            reason: reason.into(),
        }
    }
}

/// Why a policy produced no decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum PolicyFailure {
    /// A value the policy read was missing: inconclusive, never a pass.
    NoData(String),
    /// The policy threw, hit a sandbox limit or returned something that is not a decision.
    Error(String),
}

/// One evaluation as recorded in history and shown by `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub at: chrono::DateTime<chrono::Utc>,
    pub step: usize,
    pub weight: u32,
    pub decision: Decision,
    #[serde(default)]
    pub observations: Observations,
    /// Resolved metric queries and their values (PromQL text → value), so a
    /// decision can be traced back to the exact data behind it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub queries: BTreeMap<String, Option<f64>>,
    /// Once recorded: the values of those queries, by index into the rollout's
    /// `query_texts` (see `Rollout::queries_of`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<u32, Option<f64>>,
    /// Ready canary pods when evaluated (the readiness gate's memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_ready: Option<u32>,
    /// Policy log lines (`print`/`debug`) emitted during this evaluation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<String>,
}
