//! What the outside world looks like at one evaluation: metrics per track, pod health,
//! named query results. Filled by an adapter (simulator or Prometheus + cluster) before
//! the policy runs, because policy functions cannot wait on I/O.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Track {
    Stable,
    Canary,
}

impl Track {
    pub fn as_str(self) -> &'static str {
        match self {
            Track::Stable => "stable",
            Track::Canary => "canary",
        }
    }
}

/// Traffic metrics of one track. `None` = no data (empty result, NaN, ±Inf, error).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrackMetrics {
    /// Requests since the current step started.
    pub requests: Option<f64>,
    /// Failed requests (5xx) since the current step started.
    pub errors: Option<f64>,
    /// Requests per second over the recent window.
    pub request_rate: Option<f64>,
    /// Share of failed requests over the recent window (0..=1).
    pub error_rate: Option<f64>,
    /// Latency quantiles over the recent window, milliseconds.
    pub latency_p50: Option<f64>,
    pub latency_p95: Option<f64>,
    pub latency_p99: Option<f64>,
    /// Latency observations (ms) for rank tests: single requests in simulation,
    /// per-interval p95 values from Prometheus.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_samples: Vec<f64>,
}

/// Pod health of one track as the cluster reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodFacts {
    pub desired: u32,
    pub ready: u32,
    pub restarts: u32,
    pub crash_looping: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    pub stable: TrackMetrics,
    pub canary: TrackMetrics,
    pub stable_pods: PodFacts,
    pub canary_pods: PodFacts,
    /// Named queries declared by the policy (name → value).
    #[serde(default)]
    pub queries: BTreeMap<String, Option<f64>>,
    /// The resolved query text behind every value, for history (text → value).
    #[serde(default)]
    pub resolved: BTreeMap<String, Option<f64>>,
    /// Queries that failed (`canary.p95`, a named query's name → error); see
    /// `MetricsData::failed`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed: BTreeMap<String, String>,
    /// The latency samples were not fetched (the policy was not known to read them), so
    /// empty `latency_samples` say nothing about the data.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub latency_samples_skipped: bool,
}

impl Facts {
    pub fn track(&self, track: Track) -> &TrackMetrics {
        match track {
            Track::Stable => &self.stable,
            Track::Canary => &self.canary,
        }
    }

    pub fn pods(&self, track: Track) -> &PodFacts {
        match track {
            Track::Stable => &self.stable_pods,
            Track::Canary => &self.canary_pods,
        }
    }
}

/// Turns a raw number into "data or no data": NaN and ±Inf are no data, never a pass.
pub fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}
