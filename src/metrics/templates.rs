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
//! `{{track_service}}` (`<service>` / `<service>-canary`), `{{nginx_track}}` (ingress-nginx's
//! selector of the track, see `NGINX` below) and `{{quantile}}` (0.5, 0.95, 0.99).
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
//   istio:   reporter=~"destination|waypoint" (a meshed client reports the same request again as
//            reporter="source"; counting both would double everything)
//   linkerd: inbound side of the track's Deployment
//   nginx:   the canary Ingress labels its requests canary="<canary Service>"; the primary
//            Ingress leaves canary="" (the service label keeps other apps of the namespace out)
//   generic: the canary's `track: canary` label (stable = every other pod of the service)
const ISTIO: FlavourTemplates = FlavourTemplates {
    flavour: MetricsFlavour::Istio,
    requests: r#"sum(increase(istio_requests_total{reporter=~"destination|waypoint",destination_workload_namespace="{{namespace}}",destination_workload="{{workload}}"}[{{step_window}}]))"#,
    errors: r#"(sum(increase(istio_requests_total{reporter=~"destination|waypoint",destination_workload_namespace="{{namespace}}",destination_workload="{{workload}}",response_code=~"5.."}[{{step_window}}])) or 0 * sum(increase(istio_requests_total{reporter=~"destination|waypoint",destination_workload_namespace="{{namespace}}",destination_workload="{{workload}}"}[{{step_window}}])))"#,
    request_rate: r#"sum(rate(istio_requests_total{reporter=~"destination|waypoint",destination_workload_namespace="{{namespace}}",destination_workload="{{workload}}"}[{{window}}]))"#,
    error_rate: r#"(sum(rate(istio_requests_total{reporter=~"destination|waypoint",destination_workload_namespace="{{namespace}}",destination_workload="{{workload}}",response_code=~"5.."}[{{window}}])) or 0 * sum(rate(istio_requests_total{reporter=~"destination|waypoint",destination_workload_namespace="{{namespace}}",destination_workload="{{workload}}"}[{{window}}]))) / sum(rate(istio_requests_total{reporter=~"destination|waypoint",destination_workload_namespace="{{namespace}}",destination_workload="{{workload}}"}[{{window}}]))"#,
    latency: r#"histogram_quantile({{quantile}}, sum by (le) (rate(istio_request_duration_milliseconds_bucket{reporter=~"destination|waypoint",destination_workload_namespace="{{namespace}}",destination_workload="{{workload}}"}[{{window}}])))"#,
};

const LINKERD: FlavourTemplates = FlavourTemplates {
    flavour: MetricsFlavour::Linkerd,
    requests: r#"sum(increase(response_total{direction="inbound",namespace="{{namespace}}",deployment="{{workload}}"}[{{step_window}}]))"#,
    errors: r#"(sum(increase(response_total{direction="inbound",namespace="{{namespace}}",deployment="{{workload}}",classification="failure"}[{{step_window}}])) or 0 * sum(increase(response_total{direction="inbound",namespace="{{namespace}}",deployment="{{workload}}"}[{{step_window}}])))"#,
    request_rate: r#"sum(rate(response_total{direction="inbound",namespace="{{namespace}}",deployment="{{workload}}"}[{{window}}]))"#,
    error_rate: r#"(sum(rate(response_total{direction="inbound",namespace="{{namespace}}",deployment="{{workload}}",classification="failure"}[{{window}}])) or 0 * sum(rate(response_total{direction="inbound",namespace="{{namespace}}",deployment="{{workload}}"}[{{window}}]))) / sum(rate(response_total{direction="inbound",namespace="{{namespace}}",deployment="{{workload}}"}[{{window}}]))"#,
    latency: r#"histogram_quantile({{quantile}}, sum by (le) (rate(response_latency_ms_bucket{direction="inbound",namespace="{{namespace}}",deployment="{{workload}}"}[{{window}}])))"#,
};

// ingress-nginx, as the controller exports it (kubernetes/ingress-nginx v1.15.1):
// `rootfs/etc/nginx/lua/monitor.lua` labels each request with the *location's* namespace,
// Ingress and Service, and `canary` = `proxy_alternative_upstream_name`, which
// `rootfs/etc/nginx/lua/balancer.lua` sets to the canary's upstream name only when the request
// went to the canary. A canary Ingress owns no location (`internal/ingress/controller/
// controller.go`), so both tracks carry the primary's `service`; the canary is told apart by
// `canary` = `<namespace>-<canary Service>-<port>` (`util.go` `upstreamName`), stable by
// `canary=""`. `{{nginx_track}}` is the track's selector; for stable it has a second form
// for Prometheus setups that rename colliding labels (see [`render_track`]).
// `status` is the code or, with `--report-status-classes`, "5xx": `5..` matches both.
const NGINX: FlavourTemplates = FlavourTemplates {
    flavour: MetricsFlavour::Nginx,
    requests: r#"sum(increase(nginx_ingress_controller_requests{{{nginx_track}}}[{{step_window}}]))"#,
    errors: r#"(sum(increase(nginx_ingress_controller_requests{{{nginx_track}},status=~"5.."}[{{step_window}}])) or 0 * sum(increase(nginx_ingress_controller_requests{{{nginx_track}}}[{{step_window}}])))"#,
    request_rate: r#"sum(rate(nginx_ingress_controller_requests{{{nginx_track}}}[{{window}}]))"#,
    error_rate: r#"(sum(rate(nginx_ingress_controller_requests{{{nginx_track}},status=~"5.."}[{{window}}])) or 0 * sum(rate(nginx_ingress_controller_requests{{{nginx_track}}}[{{window}}]))) / sum(rate(nginx_ingress_controller_requests{{{nginx_track}}}[{{window}}]))"#,
    latency: r#"1000 * histogram_quantile({{quantile}}, sum by (le) (rate(nginx_ingress_controller_request_duration_seconds_bucket{{{nginx_track}}}[{{window}}])))"#,
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
    let (workload, track_service) = match track {
        Track::Stable => (req.stable_workload.clone(), req.service.clone()),
        Track::Canary => (req.canary_workload.clone(), canary_svc.clone()),
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
    // ingress-nginx (see NGINX above). The primary Ingress's backend is the user's Service or
    // `<service>-stable`; the canary's upstream is `<namespace>-<service>-canary-<port>`,
    // matched for any port (number or name) so that no Ingress read is needed per evaluation.
    let (ns, svc) = (&req.namespace, &req.service);
    let nginx_stable = |ns_label: &str, svc_label: &str| {
        format!(r#"{ns_label}="{ns}",{svc_label}=~"{svc}|{svc}-stable",canary="""#)
    };
    match track {
        Track::Stable => {
            v.insert("nginx_track".into(), nginx_stable("namespace", "service"));
            v.insert(
                NGINX_TRACK_EXPORTED.into(),
                nginx_stable("exported_namespace", "exported_service"),
            );
        }
        Track::Canary => {
            v.insert(
                "nginx_track".into(),
                format!(r#"canary=~"{ns}-{canary_svc}-.+""#),
            );
        }
    }
    v
}

/// The second form of `{{nginx_track}}`: with a prometheus-operator ServiceMonitor (the
/// ingress-nginx chart's default leaves `honorLabels` unset, `charts/ingress-nginx/values.yaml`)
/// the series' own `namespace` and `service` collide with the scrape target's and arrive as
/// `exported_namespace` and `exported_service` (upstream's `deploy/grafana/dashboards/nginx.json`
/// queries `exported_namespace`); an annotation scrape or `honor_labels` keeps them.
const NGINX_TRACK_EXPORTED: &str = "nginx_track_exported";

/// Renders a built-in per-track template. When the track's selector has a second scrape
/// style (ingress-nginx's stable track), the query is `(plain) or (exported)`: whichever
/// style the user's Prometheus has answers, with no configuration. Only one style exists in
/// one Prometheus, so `or` never adds the two.
pub fn render_track(name: &str, template: &str, vars: &Vars) -> Result<String, MetricsError> {
    let plain = render(name, template, vars)?;
    match vars.get(NGINX_TRACK_EXPORTED) {
        Some(exported) if template.contains("{{nginx_track}}") => {
            let mut v = vars.clone();
            v.insert("nginx_track".into(), exported.clone());
            Ok(format!("({plain}) or ({})", render(name, template, &v)?))
        }
        _ => Ok(plain),
    }
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
    while let Some(mut open) = rest.find("{{") {
        // `{{{x}}}`: a selector's literal brace around a placeholder.
        if rest[open..].starts_with("{{{") {
            open += 1;
        }
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
    fn a_brace_around_a_placeholder_stays() {
        let vars = common_vars(&req(), 60, 300);
        assert_eq!(
            render("q", "x{{{service}}}[{{window}}]", &vars).unwrap(),
            "x{web}[60s]"
        );
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
                    let q = render_track(field, tpl, &vars)
                        .unwrap_or_else(|e| panic!("{f}/{field}: {e}"));
                    assert!(!q.contains("{{"), "{f}/{field}: {q}");
                    // (ingress-nginx's canary upstream name begins with the namespace)
                    assert!(
                        q.contains("\"shop\"") || q.contains("\"shop-web-canary-"),
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
        // ingress-nginx: stable is the primary location's Service with an empty `canary`, in
        // both scrape styles; the canary is its upstream name, whatever the port.
        let nginx = |v: &Vars| render_track("rr", NGINX.request_rate, v).unwrap();
        assert_eq!(
            nginx(&s),
            r#"(sum(rate(nginx_ingress_controller_requests{namespace="shop",service=~"web|web-stable",canary=""}[60s]))) or (sum(rate(nginx_ingress_controller_requests{exported_namespace="shop",exported_service=~"web|web-stable",canary=""}[60s])))"#
        );
        assert_eq!(
            nginx(&c),
            r#"sum(rate(nginx_ingress_controller_requests{canary=~"shop-web-canary-.+"}[60s]))"#
        );
        // Other flavours have one form.
        assert_eq!(
            render_track("rr", ISTIO.request_rate, &s).unwrap(),
            render("rr", ISTIO.request_rate, &s).unwrap()
        );
        let generic = |v: &Vars| render("rr", GENERIC.request_rate, v).unwrap();
        assert!(generic(&c).contains(r#"track="canary""#));
        assert_eq!(
            render("r", LINKERD.requests, &c).unwrap(),
            r#"sum(increase(response_total{direction="inbound",namespace="shop",deployment="web-canary"}[300s]))"#
        );
    }
}
