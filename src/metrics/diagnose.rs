//! Why a query has no data. "No values found" is what users of canary tools meet most, and
//! nobody tells them why. For a query without data we take its selectors apart (a PromQL
//! parser, not string matching), narrow each selector one matcher at a time against
//! Prometheus, and name the first matcher no series satisfies, the values that label does
//! have, and — when another label carries exactly the wanted value — the rename behind it
//! (a prometheus-operator ServiceMonitor without `honorLabels` turns a series' `namespace`
//! into `exported_namespace`).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr};
use promql_parser::util::{ExprVisitor, walk_expr};

use super::prometheus::{PrometheusClient, QueryError};

/// One vector selector of a query: a metric name and its label matchers, in query order.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub metric: String,
    pub matchers: Vec<Matcher>,
}

impl Selector {
    /// PromQL text of the selector with its first `n` matchers.
    pub fn text(&self, n: usize) -> String {
        let m: Vec<String> = self.matchers[..n].iter().map(|m| m.to_string()).collect();
        format!("{}{{{}}}", self.metric, m.join(","))
    }
}

/// The distinct selectors of `query` with a metric name, in the order they appear.
pub fn selectors(query: &str) -> Result<Vec<Selector>, String> {
    struct Collect(Vec<Selector>);
    impl ExprVisitor for Collect {
        type Error = String;
        fn pre_visit(&mut self, e: &Expr) -> Result<bool, String> {
            let vs = match e {
                Expr::VectorSelector(vs) => vs,
                Expr::MatrixSelector(ms) => &ms.vs,
                _ => return Ok(true),
            };
            let by_name = vs
                .matchers
                .matchers
                .iter()
                .find(|m| m.name == "__name__" && m.op == MatchOp::Equal)
                .map(|m| m.value.clone());
            if let Some(metric) = vs.name.clone().or(by_name) {
                let sel = Selector {
                    metric,
                    matchers: vs
                        .matchers
                        .matchers
                        .iter()
                        .filter(|m| m.name != "__name__")
                        .cloned()
                        .collect(),
                };
                if !self.0.contains(&sel) {
                    self.0.push(sel);
                }
            }
            Ok(true)
        }
    }
    let expr = parser::parse(query)?;
    let mut c = Collect(Vec::new());
    walk_expr(&mut c, &expr)?;
    Ok(c.0)
}

/// What Prometheus has for one selector.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// No series of this metric at all.
    NoMetric { metric: String },
    /// Series match the whole selector: the query is empty for another reason (no samples
    /// in its range, a counter that has not moved, a histogram without buckets).
    Matches { selector: String },
    /// `failed` is the first matcher no series satisfies once the ones before it hold.
    Mismatch {
        /// The selector up to (without) the failing matcher: series exist for it.
        held: String,
        failed: String,
        label: String,
        /// Values the label has among the series of `held` (`""`: the label is absent), at
        /// most [`MAX_VALUES`].
        values: Vec<String>,
        /// Another label that carries exactly the wanted value (e.g. `exported_namespace`).
        renamed: Option<String>,
    },
}

/// How many of a label's values a finding lists.
pub const MAX_VALUES: usize = 5;

/// The finding for `sel` when its first `held` matchers match `series` and matcher `held`
/// matches none of them.
pub fn mismatch(sel: &Selector, held: usize, series: &[BTreeMap<String, String>]) -> Finding {
    let m = &sel.matchers[held];
    let mut values = BTreeSet::new();
    for s in series {
        values.insert(s.get(&m.name).cloned().unwrap_or_default());
    }
    let renamed = (m.op == MatchOp::Equal && !m.value.is_empty())
        .then(|| {
            let mut names: Vec<&String> = series
                .iter()
                .flat_map(|s| s.iter())
                .filter(|(k, v)| **v == m.value && **k != m.name && *k != "__name__")
                .map(|(k, _)| k)
                .collect();
            names.sort();
            names.dedup();
            // Prefer Prometheus' own rename of this very label.
            let exported = format!("exported_{}", m.name);
            names
                .iter()
                .find(|n| ***n == exported)
                .or(names.first())
                .map(|n| n.to_string())
        })
        .flatten();
    Finding::Mismatch {
        held: sel.text(held),
        failed: m.to_string(),
        label: m.name.clone(),
        values: values.into_iter().take(MAX_VALUES).collect(),
        renamed,
    }
}

impl Finding {
    /// Matchers that held (more is a closer miss): ranks the findings of one query's selectors.
    fn closeness(&self) -> usize {
        match self {
            Finding::NoMetric { .. } => 0,
            Finding::Mismatch { held, .. } => 1 + held.matches(['=', '~']).count(),
            Finding::Matches { .. } => usize::MAX,
        }
    }

    /// One sentence: what exists and what does not, and the likely fix.
    pub fn explain(&self) -> String {
        match self {
            Finding::NoMetric { metric } => format!(
                "no series named {metric} in the last {LOOKBACK_MINUTES} minutes: Prometheus does not scrape whatever exports it (wrong metrics flavour, or a missing scrape config)"
            ),
            Finding::Matches { selector } => format!(
                "series {selector} exist, but the query found no samples in its range (no traffic in the window, or the counter has not moved)"
            ),
            Finding::Mismatch {
                held,
                failed,
                label,
                values,
                renamed,
            } => {
                let seen = if values.iter().all(String::is_empty) {
                    format!("none of them has a label {label}")
                } else {
                    let v: Vec<String> = values
                        .iter()
                        .map(|v| {
                            if v.is_empty() {
                                format!("no {label}")
                            } else {
                                format!("{label}=\"{v}\"")
                            }
                        })
                        .collect();
                    format!("they have {}", v.join(", "))
                };
                let mut out = format!("found {held} but none with {failed}: {seen}");
                if let Some(r) = renamed {
                    out.push_str(&format!("; the wanted value is in {r}"));
                    if *r == format!("exported_{label}") {
                        out.push_str(&format!(
                            " — your Prometheus renames colliding labels (a ServiceMonitor or PodMonitor without honorLabels: true); set honorLabels: true, or read {r} in a named query"
                        ));
                    }
                }
                out
            }
        }
    }
}

/// How far back series are looked for.
pub const LOOKBACK_MINUTES: i64 = 10;

/// Diagnoses one selector against Prometheus: narrows it one matcher at a time.
pub async fn diagnose_selector(
    c: &PrometheusClient,
    sel: &Selector,
    now: DateTime<Utc>,
) -> Result<Finding, QueryError> {
    let start = now - chrono::Duration::minutes(LOOKBACK_MINUTES);
    let mut series = c.series(&sel.text(0), start, now).await?;
    if series.is_empty() {
        return Ok(Finding::NoMetric {
            metric: sel.metric.clone(),
        });
    }
    for i in 0..sel.matchers.len() {
        let m = &sel.matchers[i];
        let next: Vec<_> = series
            .iter()
            .filter(|s| m.is_match(s.get(&m.name).map(String::as_str).unwrap_or("")))
            .cloned()
            .collect();
        if next.is_empty() {
            return Ok(mismatch(sel, i, &series));
        }
        series = next;
    }
    Ok(Finding::Matches {
        selector: sel.text(sel.matchers.len()),
    })
}

/// Diagnoses every selector of `query` and returns the closest miss (or a match).
pub async fn diagnose(
    c: &PrometheusClient,
    query: &str,
    now: DateTime<Utc>,
) -> Result<Finding, String> {
    let mut best: Option<Finding> = None;
    for sel in selectors(query)? {
        let f = diagnose_selector(c, &sel, now)
            .await
            .map_err(|e| e.message)?;
        if best.as_ref().is_none_or(|b| f.closeness() > b.closeness()) {
            best = Some(f);
        }
    }
    best.ok_or_else(|| format!("no metric selector in {query}"))
}

/// One query of [`check`]: its value, or why it has none.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Check {
    /// `stable`, `canary` or `query` (a named query of the policy or its hooks).
    pub track: String,
    /// `requests`, `error_rate`, `p95` or the named query's name.
    pub name: String,
    pub promql: String,
    pub value: Option<f64>,
    /// Why there is no value (absent with one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// Runs each track's request count, error rate and p95 (the built-in queries of the request's
/// flavour over `window`) and the named queries, at `req.now`, and explains every one without
/// data.
pub async fn check(
    c: &PrometheusClient,
    req: &super::MetricsRequest,
    window_secs: u64,
) -> Result<Vec<Check>, super::MetricsError> {
    use super::templates;
    use crate::core::facts::Track;
    let t = templates::flavour(req.flavour);
    let common = templates::common_vars(req, window_secs, window_secs);
    let mut planned = Vec::new();
    for track in [Track::Stable, Track::Canary] {
        let mut vars = templates::track_vars(&common, req, track);
        vars.insert("quantile".into(), "0.95".into());
        for (name, tpl) in [
            ("requests", t.requests),
            ("error_rate", t.error_rate),
            ("p95", t.latency),
        ] {
            planned.push((
                track.as_str().to_string(),
                name.to_string(),
                templates::render_track(name, tpl, &vars)?,
            ));
        }
    }
    for (name, tpl) in &req.queries {
        planned.push((
            "query".into(),
            name.clone(),
            templates::render(name, tpl, &common)?,
        ));
    }
    let checks = planned.into_iter().map(|(track, name, promql)| async move {
        let (value, why) = match c.query(&promql, req.now).await {
            Ok(Some(v)) => (Some(v), None),
            Ok(None) => match diagnose(c, &promql, req.now).await {
                Ok(f) => (None, Some(f.explain())),
                Err(e) => (None, Some(format!("no data (diagnosis failed: {e})"))),
            },
            Err(e) => (None, Some(format!("query failed: {}", e.message))),
        };
        Check {
            track,
            name,
            promql,
            value,
            why,
        }
    });
    Ok(futures::future::join_all(checks).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(labels: &[&[(&str, &str)]]) -> Vec<BTreeMap<String, String>> {
        labels
            .iter()
            .map(|l| {
                l.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn selectors_are_taken_from_the_parsed_query() {
        let q = r#"(sum(rate(a_total{namespace="shop",code=~"5.."}[1m])) or 0 * sum(rate(a_total{namespace="shop"}[1m]))) / sum(rate(a_total{namespace="shop"}[1m])) or histogram_quantile(0.9, sum by (le) (rate({__name__="b_bucket",x!="y"}[5m])))"#;
        let s = selectors(q).unwrap();
        let texts: Vec<String> = s.iter().map(|s| s.text(s.matchers.len())).collect();
        assert_eq!(
            texts,
            [
                r#"a_total{namespace="shop",code=~"5.."}"#,
                r#"a_total{namespace="shop"}"#,
                r#"b_bucket{x!="y"}"#
            ]
        );
        assert!(selectors("sum(rate(x[1m]").is_err());
    }

    #[test]
    fn a_renamed_label_is_named_with_its_fix() {
        let sel = &selectors(r#"nginx_ingress_controller_requests{namespace="shop",canary=""}"#)
            .unwrap()[0];
        // As a ServiceMonitor scrape stores them: the controller's namespace as `namespace`.
        let s = series(&[
            &[
                ("namespace", "ingress-nginx"),
                ("exported_namespace", "shop"),
                ("canary", ""),
            ],
            &[
                ("namespace", "ingress-nginx"),
                ("exported_namespace", "blog"),
                ("canary", ""),
            ],
        ]);
        let f = mismatch(sel, 0, &s);
        assert_eq!(
            f,
            Finding::Mismatch {
                held: "nginx_ingress_controller_requests{}".into(),
                failed: r#"namespace="shop""#.into(),
                label: "namespace".into(),
                values: vec!["ingress-nginx".into()],
                renamed: Some("exported_namespace".into()),
            }
        );
        let text = f.explain();
        assert!(text.contains(r#"none with namespace="shop""#), "{text}");
        assert!(text.contains("honorLabels"), "{text}");
    }

    #[test]
    fn a_wrong_value_lists_the_values_that_exist() {
        let sel =
            &selectors(r#"http_requests_total{namespace="shop",service="checkout"}"#).unwrap()[0];
        let s = series(&[
            &[("namespace", "shop"), ("service", "checkout-api")],
            &[("namespace", "shop")],
        ]);
        let f = mismatch(sel, 1, &s);
        let text = f.explain();
        assert!(
            text.starts_with(
                r#"found http_requests_total{namespace="shop"} but none with service="checkout""#
            ),
            "{text}"
        );
        assert!(text.contains(r#"service="checkout-api""#), "{text}");
        assert!(text.contains("no service"), "{text}");
        assert!(!text.contains("honorLabels"), "{text}");
    }

    #[test]
    fn closer_misses_rank_higher() {
        let near = Finding::Mismatch {
            held: r#"m{a="1",b=~"2"}"#.into(),
            failed: String::new(),
            label: String::new(),
            values: vec![],
            renamed: None,
        };
        let far = Finding::Mismatch {
            held: "m{}".into(),
            failed: String::new(),
            label: String::new(),
            values: vec![],
            renamed: None,
        };
        assert!(near.closeness() > far.closeness());
        assert!(far.closeness() > Finding::NoMetric { metric: "m".into() }.closeness());
    }
}
