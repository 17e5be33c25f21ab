//! Policies and hooks shipped with the plugin, compiled into the binary so they work from a
//! krew install where no source tree exists. Files on disk take precedence by path.

/// (name, file name, source) of each shipped policy, the default first.
pub const POLICIES: &[(&str, &str, &str)] = &[
    (
        "default",
        "policies/default.rhai",
        include_str!("../policies/default.rhai"),
    ),
    (
        "istio-runbook",
        "policies/istio-runbook.rhai",
        include_str!("../policies/istio-runbook.rhai"),
    ),
    (
        "progressive-review",
        "policies/progressive-review.rhai",
        include_str!("../policies/progressive-review.rhai"),
    ),
    (
        "relative-to-stable",
        "policies/relative-to-stable.rhai",
        include_str!("../policies/relative-to-stable.rhai"),
    ),
    (
        "eighty-twenty",
        "policies/eighty-twenty.rhai",
        include_str!("../policies/eighty-twenty.rhai"),
    ),
    (
        "statistical",
        "policies/statistical.rhai",
        include_str!("../policies/statistical.rhai"),
    ),
];

/// (name, source) of each shipped hook, importable as `import "NAME" as x;`.
pub const PLUGINS: &[(&str, &str)] = &[
    ("kafka-lag", include_str!("../plugins/kafka-lag.rhai")),
    (
        "cassandra-latency",
        include_str!("../plugins/cassandra-latency.rhai"),
    ),
    (
        "gateway-overhead",
        include_str!("../plugins/gateway-overhead.rhai"),
    ),
];

pub fn policy(name: &str) -> Option<(&'static str, &'static str)> {
    POLICIES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, file, text)| (*file, *text))
}

pub fn plugin(name: &str) -> Option<&'static str> {
    PLUGINS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

pub fn policy_names() -> String {
    POLICIES
        .iter()
        .map(|(n, _, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}
