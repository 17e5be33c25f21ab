//! The report's Prometheus adapter: canary-vs-stable charts from range queries over the whole
//! rollout at full resolution (one point per scrape interval), and the moment the canary's
//! traffic reached 0 after a rollback. The queries are the built-in per-flavour templates of
//! [`crate::metrics::templates`], the same the evaluations read.

use super::{Chart, MetricsOrigin, Point, Report, RollbackTimings, Series, timings};
use crate::core::facts::Track;
use crate::metrics::prometheus::PrometheusClient;
use crate::metrics::templates::{self, FlavourTemplates, MetricsFlavour, Vars};
use crate::metrics::{MetricsError, MetricsRequest};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::time::Duration;

/// Prometheus refuses range queries of more than 11,000 points per series.
const MAX_POINTS: i64 = 10_000;
/// How long after the decision the canary's traffic is looked for.
const RECOVERY_HORIZON: chrono::Duration = chrono::Duration::minutes(10);

/// Whose metrics to query.
#[derive(Debug, Clone)]
pub struct Workloads {
    pub flavour: MetricsFlavour,
    pub namespace: String,
    pub service: String,
    pub stable: String,
    pub canary: String,
}

fn ceil_secs(d: Duration) -> i64 {
    (d.as_millis().div_ceil(1000) as i64).max(1)
}

impl Workloads {
    fn request(&self) -> MetricsRequest {
        MetricsRequest {
            namespace: self.namespace.clone(),
            service: self.service.clone(),
            stable_workload: self.stable.clone(),
            canary_workload: self.canary.clone(),
            flavour: self.flavour,
            step_started: DateTime::UNIX_EPOCH,
            now: DateTime::UNIX_EPOCH,
            queries: BTreeMap::new(),
            latency_samples: true,
        }
    }

    fn templates(&self) -> &'static FlavourTemplates {
        templates::flavour(self.flavour)
    }

    fn vars(&self, track: Track, window_secs: i64, step_window_secs: i64) -> Vars {
        let req = self.request();
        let common = templates::common_vars(&req, window_secs as u64, step_window_secs as u64);
        templates::track_vars(&common, &req, track)
    }

    /// The canary's requests over the last two scrapes: 0 once it serves nothing.
    pub fn canary_requests_query(&self, scrape: Duration) -> Result<String, MetricsError> {
        let two_scrapes = 2 * ceil_secs(scrape);
        let vars = self.vars(Track::Canary, two_scrapes, two_scrapes);
        templates::render_track("requests", self.templates().requests, &vars)
    }

    /// The range queries behind the canary-vs-stable charts (chart id, track, PromQL).
    pub fn chart_queries(
        &self,
        window: Duration,
    ) -> Result<Vec<(&'static str, Track, String)>, MetricsError> {
        let t = self.templates();
        let mut out = Vec::new();
        for track in [Track::Canary, Track::Stable] {
            let mut vars = self.vars(track, ceil_secs(window), ceil_secs(window));
            out.push((
                "chart-error-rate",
                track,
                templates::render_track("error_rate", t.error_rate, &vars)?,
            ));
            for (id, q) in [("chart-p95", "0.95"), ("chart-p99", "0.99")] {
                vars.insert("quantile".into(), q.into());
                out.push((
                    id,
                    track,
                    templates::render_track("latency", t.latency, &vars)?,
                ));
            }
            out.push((
                "chart-request-rate",
                track,
                templates::render_track("request_rate", t.request_rate, &vars)?,
            ));
        }
        Ok(out)
    }
}

/// Points of a range answer on a `step` grid, with a `None` wherever a grid point is
/// missing, so a chart shows the gap instead of a line across it.
fn with_gaps(points: Vec<(DateTime<Utc>, f64)>, step: chrono::Duration) -> Vec<Point> {
    let mut out: Vec<Point> = Vec::with_capacity(points.len());
    for (at, v) in points {
        if let Some(prev) = out.last()
            && at - prev.at > step + step / 2
        {
            out.push(Point {
                at: prev.at + step,
                value: None,
            });
        }
        out.push(Point { at, value: Some(v) });
    }
    out
}

impl Report {
    /// Replaces the canary-vs-stable charts with range queries, and measures when the canary's
    /// traffic reached 0 after a rollback. A failing query leaves a note; when every chart
    /// query fails the recorded values stay.
    pub async fn with_prometheus(
        mut self,
        client: &PrometheusClient,
        who: &Workloads,
        now: DateTime<Utc>,
    ) -> Result<Self, MetricsError> {
        let url = client.config.base_url.clone();
        let scrape = client.config.scrape_interval;
        let window = client.config.window.max(2 * scrape);
        let start = self.started_at;
        let end = now.min(self.ended_at + chrono::Duration::minutes(1));
        let span = (end - start).num_seconds().max(1);
        let step_secs = ceil_secs(scrape).max((span + MAX_POINTS - 1) / MAX_POINTS);
        let step = chrono::Duration::seconds(step_secs);

        let queries = who.chart_queries(window)?;
        let answers = futures::future::join_all(
            queries
                .iter()
                .map(|(_, _, q)| client.query_range_points(q, start, end, step_secs as u64)),
        )
        .await;
        let mut charts: Vec<Chart> = self
            .metrics
            .iter()
            .map(|c| Chart {
                series: Vec::new(),
                ..c.clone()
            })
            .collect();
        let mut failed = 0;
        for ((id, track, query), answer) in queries.iter().zip(answers) {
            match answer {
                Ok(points) => {
                    if let Some(chart) = charts.iter_mut().find(|c| c.id == *id) {
                        chart.series.push(Series {
                            label: track.as_str().to_string(),
                            track: Some(*track),
                            points: with_gaps(points, step),
                        });
                    }
                }
                Err(e) => {
                    failed += 1;
                    self.notes
                        .push(format!("Prometheus {url}: {} ({query})", e.message));
                }
            }
        }
        if failed < queries.len() {
            self.metrics = charts;
            self.metrics_origin = MetricsOrigin::Prometheus {
                url: url.clone(),
                step_secs: step_secs as u64,
                window_secs: ceil_secs(window) as u64,
            };
        } else {
            self.notes.push(
                "Every Prometheus query failed: the charts show the values recorded at each evaluation.".into(),
            );
        }

        if let Some(rb) = self.rollback.take() {
            let (rb, note) = with_recovery(client, who, rb, now).await?;
            self.notes.extend(note);
            self.rollback = Some(rb);
        }
        Ok(self)
    }
}

/// Adds to `rb` when Prometheus saw the canary's traffic reach 0 after the weight-0 write;
/// the note says why it could not (query failed, traffic never seen to end).
pub async fn with_recovery(
    client: &PrometheusClient,
    who: &Workloads,
    rb: RollbackTimings,
    now: DateTime<Utc>,
) -> Result<(RollbackTimings, Option<String>), MetricsError> {
    let url = &client.config.base_url;
    let scrape = client.config.scrape_interval;
    let scrape_secs = ceil_secs(scrape) as u64;
    let window = chrono::Duration::from_std(client.config.window).unwrap_or_default();
    let from = rb.decision_at - window;
    let until = now.min(rb.decision_at + RECOVERY_HORIZON);
    let query = who.canary_requests_query(scrape)?;
    let points = match client
        .query_range_points(&query, from, until, scrape_secs)
        .await
    {
        Ok(points) => points,
        Err(e) => {
            return Ok((
                rb,
                Some(format!("Prometheus {url}: {} ({query})", e.message)),
            ));
        }
    };
    let points: Vec<Point> = points
        .into_iter()
        .map(|(at, v)| Point { at, value: Some(v) })
        .collect();
    let stopped = timings::traffic_stopped_at(
        &points,
        rb.weight_zero_at,
        until,
        Duration::from_secs(scrape_secs),
    );
    Ok(match stopped {
        Some(at) => (rb.with_canary_traffic_zero(at), None),
        None => (
            rb,
            Some(format!(
                "Prometheus {url} shows no end of the canary's traffic between {} and {} ({query}).",
                from.format("%H:%M:%S"),
                until.format("%H:%M:%S")
            )),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_grid_points_become_gaps() {
        let t = |s: i64| DateTime::from_timestamp(1_767_225_600 + s, 0).unwrap();
        let got = with_gaps(
            vec![(t(0), 1.0), (t(1), 2.0), (t(4), 3.0)],
            chrono::Duration::seconds(1),
        );
        let values: Vec<_> = got.iter().map(|p| (p.at, p.value)).collect();
        assert_eq!(
            values,
            [
                (t(0), Some(1.0)),
                (t(1), Some(2.0)),
                (t(2), None),
                (t(4), Some(3.0))
            ]
        );
    }

    #[test]
    fn queries_are_the_flavour_templates() {
        let who = Workloads {
            flavour: MetricsFlavour::Istio,
            namespace: "shop".into(),
            service: "web".into(),
            stable: "web".into(),
            canary: "web-canary".into(),
        };
        let q = who.chart_queries(Duration::from_secs(10)).unwrap();
        assert_eq!(q.len(), 8);
        assert!(q.iter().all(|(_, _, text)| text.contains("[10s]")));
        let canary_p99 = &q
            .iter()
            .find(|(id, t, _)| *id == "chart-p99" && *t == Track::Canary)
            .unwrap()
            .2;
        assert!(canary_p99.starts_with("histogram_quantile(0.99"));
        assert!(canary_p99.contains(r#"destination_workload="web-canary""#));
        let zero = who.canary_requests_query(Duration::from_secs(1)).unwrap();
        assert!(zero.contains("increase(") && zero.contains("[2s]") && zero.contains("web-canary"));
    }
}
