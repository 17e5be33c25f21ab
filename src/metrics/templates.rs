//! PromQL templates: the built-in per-flavour queries behind every [`TrackMetrics`] field,
//! and `{{placeholder}}` rendering for the named queries of policies and hooks.
//!
//! [`TrackMetrics`]: crate::core::facts::TrackMetrics
//!
//! # Placeholders
//!
//! Available to every template (named queries included):
//!
//! | placeholder           | value                                                        |
//! |-----------------------|--------------------------------------------------------------|
//! | `{{namespace}}`       | namespace of the rollout                                     |
//! | `{{service}}`         | the Service users call (= stable Deployment name)            |
//! | `{{stable_workload}}` | stable Deployment (`<service>`)                              |
//! | `{{canary_workload}}` | canary Deployment (`<service>-canary`)                       |
//! | `{{canary_service}}`  | canary Service (`<service>-canary`)                          |
//! | `{{window}}`          | recent range for rates/quantiles, e.g. `60s`                 |
//! | `{{step_window}}`     | range covering the current step, e.g. `312s` (see below)     |
//! | `{{step_seconds}}`    | the same as a number of seconds, e.g. `312`                  |
//!
//! Only in the built-in per-track templates (they are rendered once per track):
//! `{{workload}}` (the track's Deployment), `{{track}}` (`stable`/`canary`),
//! `{{track_selector}}` (`track!="canary"` for stable, whose pods carry no label of ours;
//! `track="canary"` for the canary),
//! `{{track_service}}` (`<service>` / `<service>-canary`), `{{nginx_canary}}` (empty for
//! stable, the canary Service name for canary: ingress-nginx's `canary` label) and
//! `{{quantile}}` (0.5, 0.95, 0.99).
//!
//! An unknown placeholder is an error ([`MetricsError::Template`]) naming it, never an
//! empty string: a typo must not silently select nothing (or everything).
//!
//! # Counts since the step started and `increase()` extrapolation
//!
//! `requests` and `errors` are `increase(counter[{{step_window}}])` evaluated at `now`,
//! where `step_window` = whole seconds from `step_started` to `now`, clamped to at least
//! two scrape intervals (`increase()` needs two samples inside its range; with a range of
//! one scrape interval it is usually empty). `increase()` extrapolates the difference
//! between the first and last sample in the range out to the range boundaries, so the
//! result is fractional and can be off by up to about (rate × one scrape interval) at each
//! edge; right after a step change the clamp also lets in up to two scrape intervals of
//! traffic from before the step. The Prometheus source therefore rounds counts to whole
//! requests, clamps them at ≥ 0 and caps `errors` at `requests`. They are estimates good to a
//! few scrape intervals of traffic, which is negligible against the hundreds of requests a
//! statistical decision needs. `x - x offset` is not used: it breaks on counter resets
//! and on series younger than the step (fresh canary pods).
//!
//! # Zero errors versus no data
//!
//! Meshes create a 5xx series only after the first 5xx. A bare
//! `sum(increase(..{code=~"5.."}[..]))` would then be empty (= no data) for a perfectly
//! healthy canary. The error templates use `(errors) or (0 * total)`: 0 when the track has
//! traffic series but no 5xx series, still empty when the track has no series at all.
//! The ratio `error_rate` is NaN (→ no data) when the track served nothing in the window.

use super::MetricsError;
pub use crate::core::schedule::MetricsFlavour;
use std::collections::BTreeMap;

/// Quantiles behind `latency_p50`, `latency_p95`, `latency_p99`.
pub const QUANTILES: [f64; 3] = [0.5, 0.95, 0.99];

/// The built-in queries of one flavour, for one track (rendered per track).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlavourTemplates {
    pub flavour: MetricsFlavour,
    /// Requests since the step started.
    pub requests: &'static str,
    /// 5xx responses since the step started (0, not empty, when there were none).
    pub errors: &'static str,
    /// Requests per second over `{{window}}`.
    pub request_rate: &'static str,
    /// Share of 5xx over `{{window}}`, 0..=1.
    pub error_rate: &'static str,
    /// Latency quantile `{{quantile}}` over `{{window}}`, milliseconds. Also used as a range
    /// query with `{{window}}` = the sample interval for `latency_samples` (per-interval p95).
    pub latency: &'static str,
}

// Selectors: how each family identifies one track.
//   istio:   reporter="destination" (a meshed client reports the same request again as
//            reporter="source"; counting both would double everything)
//   linkerd: inbound side of the track's Deployment
//   nginx:   the canary Ingress labels its requests canary="<canary Service>"; the primary
//            Ingress leaves canary="" (the service label keeps other apps of the namespace out)
//   generic: the canary's `track: canary` label (stable = every other pod of the service)
const ISTIO: FlavourTemplates = FlavourTemplates {
    flavour: MetricsFlavour::Istio,
    requests: r#"sum(increase(istio_requests_total{reporter="destination",destination_workload_namespace="{{namespace}}",destination_workload="{{workload}}"}[{{step_window}}]))"#,
    errors: r#"(sum(increase(istio_requests_total{reporter="destination",destination_workload_namespace="{{namespace}}",destination_workload="{{workload}}",response_code=~"5.."}[{{step_window}}])) or 0 * sum(increase(istio_requests_total{reporter="destination",destination_workload_namespace="{{namespace}}",destination_workload="{{workload}}"}[{{step_window}}])))"#,
    request_rate: r#"sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{namespace}}",destination_workload="{{workload}}"}[{{window}}]))"#,
    error_rate: r#"(sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{namespace}}",destination_workload="{{workload}}",response_code=~"5.."}[{{window}}])) or 0 * sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{namespace}}",destination_workload="{{workload}}"}[{{window}}]))) / sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{namespace}}",destination_workload="{{workload}}"}[{{window}}]))"#,
    latency: r#"histogram_quantile({{quantile}}, sum by (le) (rate(istio_request_duration_milliseconds_bucket{reporter="destination",destination_workload_namespace="{{namespace}}",destination_workload="{{workload}}"}[{{window}}])))"#,
};

const LINKERD: FlavourTemplates = FlavourTemplates {
    flavour: MetricsFlavour::Linkerd,
    requests: r#"sum(increase(response_total{direction="inbound",namespace="{{namespace}}",deployment="{{workload}}"}[{{step_window}}]))"#,
    errors: r#"(sum(increase(response_total{direction="inbound",namespace="{{namespace}}",deployment="{{workload}}",classification="failure"}[{{step_window}}])) or 0 * sum(increase(response_total{direction="inbound",namespace="{{namespace}}",deployment="{{workload}}"}[{{step_window}}])))"#,
    request_rate: r#"sum(rate(response_total{direction="inbound",namespace="{{namespace}}",deployment="{{workload}}"}[{{window}}]))"#,
    error_rate: r#"(sum(rate(response_total{direction="inbound",namespace="{{namespace}}",deployment="{{workload}}",classification="failure"}[{{window}}])) or 0 * sum(rate(response_total{direction="inbound",namespace="{{namespace}}",deployment="{{workload}}"}[{{window}}]))) / sum(rate(response_total{direction="inbound",namespace="{{namespace}}",deployment="{{workload}}"}[{{window}}]))"#,
    latency: r#"histogram_quantile({{quantile}}, sum by (le) (rate(response_latency_ms_bucket{direction="inbound",namespace="{{namespace}}",deployment="{{workload}}"}[{{window}}])))"#,
};

const NGINX: FlavourTemplates = FlavourTemplates {
    flavour: MetricsFlavour::Nginx,
    requests: r#"sum(increase(nginx_ingress_controller_requests{namespace="{{namespace}}",service="{{track_service}}",canary="{{nginx_canary}}"}[{{step_window}}]))"#,
    errors: r#"(sum(increase(nginx_ingress_controller_requests{namespace="{{namespace}}",service="{{track_service}}",canary="{{nginx_canary}}",status=~"5.."}[{{step_window}}])) or 0 * sum(increase(nginx_ingress_controller_requests{namespace="{{namespace}}",service="{{track_service}}",canary="{{nginx_canary}}"}[{{step_window}}])))"#,
    request_rate: r#"sum(rate(nginx_ingress_controller_requests{namespace="{{namespace}}",service="{{track_service}}",canary="{{nginx_canary}}"}[{{window}}]))"#,
    error_rate: r#"(sum(rate(nginx_ingress_controller_requests{namespace="{{namespace}}",service="{{track_service}}",canary="{{nginx_canary}}",status=~"5.."}[{{window}}])) or 0 * sum(rate(nginx_ingress_controller_requests{namespace="{{namespace}}",service="{{track_service}}",canary="{{nginx_canary}}"}[{{window}}]))) / sum(rate(nginx_ingress_controller_requests{namespace="{{namespace}}",service="{{track_service}}",canary="{{nginx_canary}}"}[{{window}}]))"#,
    latency: r#"1000 * histogram_quantile({{quantile}}, sum by (le) (rate(nginx_ingress_controller_request_duration_seconds_bucket{namespace="{{namespace}}",service="{{track_service}}",canary="{{nginx_canary}}"}[{{window}}])))"#,
};

const GENERIC: FlavourTemplates = FlavourTemplates {
    flavour: MetricsFlavour::Generic,
    requests: r#"sum(increase(http_requests_total{namespace="{{namespace}}",service="{{service}}",{{track_selector}}}[{{step_window}}]))"#,
    errors: r#"(sum(increase(http_requests_total{namespace="{{namespace}}",service="{{service}}",{{track_selector}},code=~"5.."}[{{step_window}}])) or 0 * sum(increase(http_requests_total{namespace="{{namespace}}",service="{{service}}",{{track_selector}}}[{{step_window}}])))"#,
    request_rate: r#"sum(rate(http_requests_total{namespace="{{namespace}}",service="{{service}}",{{track_selector}}}[{{window}}]))"#,
    error_rate: r#"(sum(rate(http_requests_total{namespace="{{namespace}}",service="{{service}}",{{track_selector}},code=~"5.."}[{{window}}])) or 0 * sum(rate(http_requests_total{namespace="{{namespace}}",service="{{service}}",{{track_selector}}}[{{window}}]))) / sum(rate(http_requests_total{namespace="{{namespace}}",service="{{service}}",{{track_selector}}}[{{window}}]))"#,
    latency: r#"1000 * histogram_quantile({{quantile}}, sum by (le) (rate(http_request_duration_seconds_bucket{namespace="{{namespace}}",service="{{service}}",{{track_selector}}}[{{window}}])))"#,
};

/// The built-in templates of `flavour`.
pub fn flavour(flavour: MetricsFlavour) -> &'static FlavourTemplates {
    match flavour {
        MetricsFlavour::Istio => &ISTIO,
        MetricsFlavour::Linkerd => &LINKERD,
        MetricsFlavour::Nginx => &NGINX,
        MetricsFlavour::Generic => &GENERIC,
    }
}

/// Placeholder values (name → text).
pub type Vars = BTreeMap<String, String>;

/// Formats a whole number of seconds as a PromQL duration (`"90s"`).
pub fn duration_secs(secs: u64) -> String {
    format!("{secs}s")
}

/// Placeholders shared by all templates of one evaluation.
pub fn common_vars(req: &super::MetricsRequest, window_secs: u64, step_secs: u64) -> Vars {
    let mut v = Vars::new();
    v.insert("namespace".into(), req.namespace.clone());
    v.insert("service".into(), req.service.clone());
    v.insert("stable_workload".into(), req.stable_workload.clone());
    v.insert("canary_workload".into(), req.canary_workload.clone());
    v.insert("canary_service".into(), canary_service(&req.service));
    v.insert("window".into(), duration_secs(window_secs));
    v.insert("step_window".into(), duration_secs(step_secs));
    v.insert("step_seconds".into(), step_secs.to_string());
    v
}

/// The canary Service's name for `service`.
pub fn canary_service(service: &str) -> String {
    format!("{service}-canary")
}

/// Adds the per-track placeholders for `track` to `common`.
pub fn track_vars(
    common: &Vars,
    req: &super::MetricsRequest,
    track: crate::core::facts::Track,
) -> Vars {
    use crate::core::facts::Track;
    let mut v = common.clone();
    let canary_svc = canary_service(&req.service);
    let (workload, track_service, nginx_canary) = match track {
        Track::Stable => (
            req.stable_workload.clone(),
            req.service.clone(),
            String::new(),
        ),
        Track::Canary => (req.canary_workload.clone(), canary_svc.clone(), canary_svc),
    };
    v.insert("workload".into(), workload);
    v.insert("track".into(), track.as_str().into());
    // Stable pods carry no label of ours: stable is every pod not labelled `track: canary`
    // (a missing label matches `!=`).
    v.insert(
        "track_selector".into(),
        match track {
            Track::Stable => r#"track!="canary""#.into(),
            Track::Canary => r#"track="canary""#.into(),
        },
    );
    v.insert("track_service".into(), track_service);
    v.insert("nginx_canary".into(), nginx_canary);
    v
}

/// Replaces every `{{ name }}` in `template` (spaces inside the braces allowed).
/// `name` identifies the template in errors (a query name or a built-in field).
pub fn render(name: &str, template: &str, vars: &Vars) -> Result<String, MetricsError> {
    let err = |message: String| MetricsError::Template {
        name: name.to_string(),
        message,
    };
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err(err(format!(
                "unclosed `{{{{` at byte {}",
                template.len() - rest.len() + open
            )));
        };
        let key = after[..close].trim();
        match vars.get(key) {
            Some(value) => out.push_str(value),
            None => {
                return Err(err(format!(
                    "unknown placeholder {{{{{key}}}}} (known: {})",
                    vars.keys()
                        .map(|k| format!("{{{{{k}}}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks named query templates without a backend: every placeholder must be one a named
/// query can use. For `policy check`-style validation.
pub fn check_named(queries: &BTreeMap<String, String>) -> Result<(), MetricsError> {
    let req = super::MetricsRequest {
        namespace: "ns".into(),
        service: "svc".into(),
        stable_workload: "svc".into(),
        canary_workload: "svc-canary".into(),
        flavour: MetricsFlavour::Generic,
        step_started: chrono::DateTime::UNIX_EPOCH,
        now: chrono::DateTime::UNIX_EPOCH,
        queries: BTreeMap::new(),
        latency_samples: true,
    };
    let vars = common_vars(&req, 60, 60);
    for (name, text) in queries {
        render(name, text, &vars)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::facts::Track;
    use crate::metrics::MetricsRequest;
    use chrono::{TimeZone, Utc};

    fn req() -> MetricsRequest {
        MetricsRequest {
            namespace: "shop".into(),
            service: "web".into(),
            stable_workload: "web".into(),
            canary_workload: "web-canary".into(),
            flavour: MetricsFlavour::Istio,
            step_started: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            now: Utc.with_ymd_and_hms(2026, 1, 1, 0, 5, 0).unwrap(),
            queries: BTreeMap::new(),
            latency_samples: true,
        }
    }

    #[test]
    fn renders_named_query() {
        let vars = common_vars(&req(), 60, 300);
        let q = render(
            "lag",
            r#"sum(kafka_consumergroup_lag{consumergroup="{{canary_workload}}", ns="{{ namespace }}"}) / {{step_seconds}} + rate(x[{{window}}]) + increase(y[{{step_window}}])"#,
            &vars,
        )
        .unwrap();
        assert_eq!(
            q,
            r#"sum(kafka_consumergroup_lag{consumergroup="web-canary", ns="shop"}) / 300 + rate(x[60s]) + increase(y[300s])"#
        );
    }

    #[test]
    fn text_without_placeholders_is_unchanged() {
        let vars = common_vars(&req(), 60, 300);
        let q = r#"sum(rate(x{a="{b}"}[1m])) > bool 1"#;
        assert_eq!(render("q", q, &vars).unwrap(), q);
    }

    #[test]
    fn unknown_placeholder_is_named() {
        let vars = common_vars(&req(), 60, 300);
        let e = render("lag", "sum(x{g=\"{{canary_wrkload}}\"})", &vars).unwrap_err();
        match &e {
            MetricsError::Template { name, message } => {
                assert_eq!(name, "lag");
                assert!(message.contains("{{canary_wrkload}}"), "{message}");
                assert!(message.contains("{{canary_workload}}"), "{message}");
            }
            other => panic!("expected Template error, got {other:?}"),
        }
        // Track-only placeholders are unknown to named queries.
        assert!(render("q", "{{workload}}", &vars).is_err());
        assert!(check_named(&BTreeMap::from([("q".into(), "{{track}}".into())])).is_err());
        assert!(check_named(&BTreeMap::from([("q".into(), "{{service}}".into())])).is_ok());
    }

    #[test]
    fn unclosed_placeholder_is_an_error() {
        let vars = common_vars(&req(), 60, 300);
        let e = render("q", "sum(x{a=\"{{service\"})", &vars).unwrap_err();
        assert!(e.to_string().contains("unclosed"), "{e}");
    }

    #[test]
    fn every_flavour_renders_for_both_tracks() {
        let r = req();
        let common = common_vars(&r, 60, 300);
        for f in MetricsFlavour::ALL {
            let t = flavour(f);
            assert_eq!(t.flavour, f);
            for track in [Track::Stable, Track::Canary] {
                let mut vars = track_vars(&common, &r, track);
                vars.insert("quantile".into(), "0.95".into());
                for (field, tpl) in [
                    ("requests", t.requests),
                    ("errors", t.errors),
                    ("request_rate", t.request_rate),
                    ("error_rate", t.error_rate),
                    ("latency", t.latency),
                ] {
                    let q =
                        render(field, tpl, &vars).unwrap_or_else(|e| panic!("{f}/{field}: {e}"));
                    assert!(!q.contains("{{"), "{f}/{field}: {q}");
                    assert!(
                        q.contains("\"shop\""),
                        "{f}/{field} selects the namespace: {q}"
                    );
                    assert_eq!(
                        q.matches('(').count(),
                        q.matches(')').count(),
                        "{f}/{field}: {q}"
                    );
                }
            }
        }
        assert!(
            MetricsFlavour::parse("envoy")
                .unwrap_err()
                .contains("istio, linkerd")
        );
    }

    #[test]
    fn tracks_are_told_apart() {
        let r = req();
        let common = common_vars(&r, 60, 300);
        let s = track_vars(&common, &r, Track::Stable);
        let c = track_vars(&common, &r, Track::Canary);
        let istio = |v: &Vars| render("rr", ISTIO.request_rate, v).unwrap();
        assert!(istio(&s).contains(r#"destination_workload="web""#));
        assert!(istio(&c).contains(r#"destination_workload="web-canary""#));
        let nginx = |v: &Vars| render("rr", NGINX.request_rate, v).unwrap();
        assert!(
            nginx(&s).contains(r#"service="web",canary="""#),
            "{}",
            nginx(&s)
        );
        assert!(nginx(&c).contains(r#"service="web-canary",canary="web-canary""#));
        let generic = |v: &Vars| render("rr", GENERIC.request_rate, v).unwrap();
        assert!(generic(&c).contains(r#"track="canary""#));
        assert_eq!(
            render("r", LINKERD.requests, &c).unwrap(),
            r#"sum(increase(response_total{direction="inbound",namespace="shop",deployment="web-canary"}[300s]))"#
        );
    }
}
