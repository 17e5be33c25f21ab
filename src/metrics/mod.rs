//! Metrics bindings: where per-track metrics and named queries come from. The simulator
//! fills [`crate::core::facts::Facts`] itself; against a cluster, a [`MetricsSource`]
//! (Prometheus) does, before the policy runs.

pub mod diagnose;
pub mod prometheus;
pub mod templates;

use crate::core::facts::TrackMetrics;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// What to fetch for one evaluation.
#[derive(Debug, Clone)]
pub struct MetricsRequest {
    pub namespace: String,
    /// The Service users call (and the stable Deployment's name).
    pub service: String,
    pub stable_workload: String,
    pub canary_workload: String,
    /// Metric family of the built-in queries.
    pub flavour: crate::core::schedule::MetricsFlavour,
    /// Counts (`requests`, `errors`) cover [step_started, now].
    pub step_started: DateTime<Utc>,
    pub now: DateTime<Utc>,
    /// Named queries of the policy and its hooks (name → PromQL template).
    pub queries: BTreeMap<String, String>,
    /// Fetch the step's per-interval latency samples (range queries) too.
    pub latency_samples: bool,
}

/// Everything fetched for one evaluation. Missing values are `None`, never 0.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsData {
    pub stable: TrackMetrics,
    pub canary: TrackMetrics,
    pub queries: BTreeMap<String, Option<f64>>,
    /// Resolved PromQL text → value, recorded in history.
    pub resolved: BTreeMap<String, Option<f64>>,
    /// Queries that failed, by name → error: `canary.p95`-style names for the built-in
    /// metrics, the declared name for named queries. A failed query has no value, like one
    /// without data; this is how a policy tells the two apart (`ctx.query_error`).
    pub failed: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics backend {url}: {message}")]
    Backend { url: String, message: String },
    #[error("query template {name:?}: {message}")]
    Template { name: String, message: String },
}

/// A metrics backend. Implementations issue all queries of one evaluation concurrently
/// and map NaN, ±Inf, empty results and errors to `None`.
pub trait MetricsSource {
    fn fetch(
        &self,
        req: &MetricsRequest,
    ) -> impl std::future::Future<Output = Result<MetricsData, MetricsError>> + Send;
}
