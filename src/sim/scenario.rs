//! Scenario files: a simulated service (traffic, per-version error rate and latency, pod
//! health, hook signals), faults at given times, and optionally the expected outcome.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Longest virtual time to simulate; a rollout still running then is "inconclusive".
    #[serde(with = "humantime_serde", default = "default_duration")]
    pub duration: Duration,
    pub traffic: Traffic,
    pub stable: Version,
    pub canary: Version,
    #[serde(default)]
    pub pods: Pods,
    /// Hook signals answered to named queries (e.g. kafka_lag), canary side.
    #[serde(default)]
    pub signals: BTreeMap<String, f64>,
    #[serde(default)]
    pub faults: Vec<Fault>,
    #[serde(default)]
    pub expect: Option<Expectation>,
}

/// The longest scenario the simulator runs.
pub const MAX_SCENARIO_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

fn default_duration() -> Duration {
    Duration::from_secs(6 * 3600)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    /// Requests per second reaching the service (split by the canary weight).
    pub rps: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Version {
    /// Share of requests failing with 5xx (0..=1).
    pub error_rate: f64,
    /// Median latency in milliseconds (log-normal).
    pub latency_ms: f64,
    /// Log-normal sigma: 0.3 gives p99 ≈ 2× median.
    #[serde(default = "default_spread")]
    pub latency_spread: f64,
}

fn default_spread() -> f64 {
    0.3
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pods {
    pub stable: u32,
    pub canary: u32,
    /// Time for canary pods to become ready after creation.
    #[serde(with = "humantime_serde", default = "default_ready_after")]
    pub canary_ready_after: Duration,
    /// The canary crash-loops from the start (never ready).
    #[serde(default)]
    pub crash_loop: bool,
}

fn default_ready_after() -> Duration {
    Duration::from_secs(20)
}

impl Default for Pods {
    fn default() -> Self {
        Pods {
            stable: 3,
            canary: 1,
            canary_ready_after: default_ready_after(),
            crash_loop: false,
        }
    }
}

/// A change at a point in virtual time. Only the fields given change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    #[serde(default)]
    pub canary: Option<VersionChange>,
    #[serde(default)]
    pub stable: Option<VersionChange>,
    #[serde(default)]
    pub rps: Option<f64>,
    #[serde(default)]
    pub crash_loop: Option<bool>,
    #[serde(default)]
    pub signals: BTreeMap<String, f64>,
    /// Metrics backend outage: every metric is "no data" while true.
    #[serde(default)]
    pub metrics_down: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct VersionChange {
    pub error_rate: Option<f64>,
    pub latency_ms: Option<f64>,
    pub latency_spread: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Promoted,
    RolledBack,
    Paused,
    /// Still running when the scenario's duration ran out.
    Inconclusive,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Promoted => "promoted",
            Outcome::RolledBack => "rolled_back",
            Outcome::Paused => "paused",
            Outcome::Inconclusive => "inconclusive",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    pub outcome: Outcome,
    /// Latest acceptable virtual time for the outcome.
    #[serde(with = "humantime_serde", default)]
    pub within: Option<Duration>,
}

/// Built-in scenarios, compiled into the binary so `simulate` works anywhere.
pub const BUILTIN: &[(&str, &str)] = &[
    ("healthy", include_str!("scenarios/healthy.yaml")),
    ("error-spike", include_str!("scenarios/error-spike.yaml")),
    (
        "latency-regression",
        include_str!("scenarios/latency-regression.yaml"),
    ),
    ("no-traffic", include_str!("scenarios/no-traffic.yaml")),
    ("crash-loop", include_str!("scenarios/crash-loop.yaml")),
    ("kafka-lag", include_str!("scenarios/kafka-lag.yaml")),
    ("aa-pair", include_str!("scenarios/aa-pair.yaml")),
    (
        "aa-low-traffic",
        include_str!("scenarios/aa-low-traffic.yaml"),
    ),
    (
        "metrics-outage",
        include_str!("scenarios/metrics-outage.yaml"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("unknown scenario {0:?}: built-in scenarios are {1}; or pass a YAML file")]
    Unknown(String, String),
    #[error("{path}: cannot read scenario: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: invalid scenario: {message}")]
    Invalid { path: String, message: String },
}

impl Scenario {
    pub fn parse(path: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = serde_yaml_ng::from_str(text).map_err(|e| ScenarioError::Invalid {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        s.validate().map_err(|message| ScenarioError::Invalid {
            path: path.to_string(),
            message,
        })?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), String> {
        // The simulator steps through every interval: a duration without bound never ends.
        if self.duration > MAX_SCENARIO_DURATION {
            return Err(format!(
                "duration {} is longer than the limit of {}",
                humantime::format_duration(self.duration),
                humantime::format_duration(MAX_SCENARIO_DURATION)
            ));
        }
        let rate = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} must be within 0..=1, got {v}"))
            }
        };
        rate("stable.error_rate", self.stable.error_rate)?;
        rate("canary.error_rate", self.canary.error_rate)?;
        for (i, f) in self.faults.iter().enumerate() {
            for (side, change) in [("canary", &f.canary), ("stable", &f.stable)] {
                if let Some(e) = change.as_ref().and_then(|c| c.error_rate) {
                    rate(&format!("faults[{i}].{side}.error_rate"), e)?;
                }
            }
            if f.rps.is_some_and(|r| !(r >= 0.0 && r.is_finite())) {
                return Err(format!("faults[{i}].rps must be a non-negative number"));
            }
        }
        if !(self.traffic.rps >= 0.0 && self.traffic.rps.is_finite()) {
            return Err("traffic.rps must be a non-negative number".into());
        }
        if self.stable.latency_ms <= 0.0 || self.canary.latency_ms <= 0.0 {
            return Err("latency_ms must be positive".into());
        }
        Ok(())
    }

    pub fn builtin_names() -> String {
        BUILTIN
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A built-in name or a path to a YAML file.
    pub fn load(name_or_path: &str) -> Result<Scenario, ScenarioError> {
        if let Some((name, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return Scenario::parse(&format!("builtin:{name}"), text);
        }
        let path = std::path::Path::new(name_or_path);
        if path.exists() || name_or_path.ends_with(".yaml") || name_or_path.ends_with(".yml") {
            let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
                path: name_or_path.to_string(),
                source,
            })?;
            return Scenario::parse(name_or_path, &text);
        }
        Err(ScenarioError::Unknown(
            name_or_path.to_string(),
            Scenario::builtin_names(),
        ))
    }
}
