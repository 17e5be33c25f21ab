//! The schedule a policy declares: weights, gates and evaluation interval.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// What to do when the policy itself fails (throws, exceeds a limit, returns garbage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    #[default]
    Hold,
    Pause,
    Rollback,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Canary weights in percent, increasing, the last one 100.
    pub steps: Vec<u32>,
    /// Minimum time at a step before the policy may advance.
    #[serde(with = "humantime_serde")]
    pub min_step_time: Duration,
    /// Minimum canary requests at a step before the policy may advance.
    pub min_requests: u64,
    /// Time between evaluations.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    pub on_error: OnError,
    /// Canary replica count (the stable keeps its own).
    pub canary_replicas: u32,
    /// Pause for a human when the rollout has no verdict after this long (no verdict in time
    /// is not evidence against the canary; see `evaluate`).
    #[serde(with = "humantime_serde", default)]
    pub max_duration: Option<Duration>,
    /// Named metric queries the policy and its hooks read (name → PromQL template).
    #[serde(default)]
    pub queries: BTreeMap<String, String>,
    /// Metric names to read per-track metrics from. `None`: follow the traffic provider
    /// (Istio → istio, SMI → linkerd, NGINX → nginx, Gateway API → the mesh the pods are
    /// in, else generic).
    #[serde(default)]
    pub metrics: Option<MetricsFlavour>,
    /// Headers that route matching requests to the canary before any weight (any one of
    /// them matches; a Linkerd runbook sends `x-canary`, `x-user-tier` and `x-region`).
    #[serde(default)]
    pub header_routes: Vec<HeaderRoute>,
    /// After the canary's weight goes to 0, how long to wait (proxies converge) before the
    /// canary is scaled down or deleted. Like Argo Rollouts' `scaleDownDelaySeconds`.
    #[serde(with = "humantime_serde", default = "default_scale_down_delay")]
    pub scale_down_delay: Duration,
    /// Ceiling for the canary's replicas, which otherwise follow the weight
    /// (ceil(weight × stable's replicas), never below `canary_replicas`).
    #[serde(default)]
    pub max_canary_replicas: Option<u32>,
    /// How long a canary with traffic may have no ready pod before it is rolled back (a
    /// pod restarting or rescheduled); crash-looping rolls back at once.
    #[serde(with = "humantime_serde", default = "default_readiness_grace")]
    pub readiness_grace: Duration,
    /// Roll back a canary that had traffic but no runner for this long (None: never). The
    /// next `step` or `run` that takes the rollout acts on it.
    #[serde(with = "humantime_serde", default)]
    pub max_unattended: Option<Duration>,
}

fn default_readiness_grace() -> Duration {
    Duration::from_secs(30)
}

fn default_scale_down_delay() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderRoute {
    pub name: String,
    pub value: String,
}

/// Metric name families the Prometheus backend knows.
/// The metric families the built-in per-track queries are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsFlavour {
    Istio,
    Linkerd,
    Nginx,
    Generic,
}

impl MetricsFlavour {
    pub const ALL: [MetricsFlavour; 4] = [
        MetricsFlavour::Istio,
        MetricsFlavour::Linkerd,
        MetricsFlavour::Nginx,
        MetricsFlavour::Generic,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MetricsFlavour::Istio => "istio",
            MetricsFlavour::Linkerd => "linkerd",
            MetricsFlavour::Nginx => "nginx",
            MetricsFlavour::Generic => "generic",
        }
    }

    /// Parses a flavour's name; the error names the known ones.
    pub fn parse(name: &str) -> Result<MetricsFlavour, String> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| {
                format!(
                    "must be one of {}, got {name:?}",
                    Self::ALL.map(MetricsFlavour::name).join(", ")
                )
            })
    }
}

impl std::fmt::Display for MetricsFlavour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            steps: vec![5, 25, 50, 100],
            min_step_time: Duration::from_secs(300),
            min_requests: 1000,
            interval: Duration::from_secs(30),
            on_error: OnError::Hold,
            canary_replicas: 1,
            max_duration: None,
            queries: BTreeMap::new(),
            metrics: None,
            header_routes: Vec::new(),
            scale_down_delay: default_scale_down_delay(),
            readiness_grace: default_readiness_grace(),
            max_canary_replicas: None,
            max_unattended: None,
        }
    }
}

impl Schedule {
    /// Checks the contract; the message says which field is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.steps.is_empty() {
            return Err("schedule.steps must list at least one weight".into());
        }
        if self.steps.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!(
                "schedule.steps must increase strictly, got {:?}",
                self.steps
            ));
        }
        if let Some(bad) = self.steps.iter().find(|w| **w == 0 || **w > 100) {
            return Err(format!("schedule.steps: weight {bad} is outside 1..=100"));
        }
        if self.steps.last() != Some(&100) {
            return Err(format!(
                "schedule.steps must end at 100 (full traffic before promotion), got {:?}",
                self.steps
            ));
        }
        if self.interval.is_zero() {
            return Err("schedule.interval must be greater than 0".into());
        }
        if self.canary_replicas == 0 {
            return Err("schedule.canary_replicas must be at least 1".into());
        }
        if let Some(max) = self.max_canary_replicas
            && max < self.canary_replicas
        {
            return Err(format!(
                "schedule.max_canary_replicas ({max}) must be at least canary_replicas ({})",
                self.canary_replicas
            ));
        }
        Ok(())
    }

    pub fn weight_at(&self, step: usize) -> u32 {
        self.steps[step.min(self.steps.len() - 1)]
    }

    pub fn is_last(&self, step: usize) -> bool {
        step + 1 >= self.steps.len()
    }
}
