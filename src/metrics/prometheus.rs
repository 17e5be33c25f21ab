//! Prometheus as a [`MetricsSource`]: the built-in per-flavour queries of
//! [`super::templates`] plus the policy's named queries, all issued concurrently.
//!
//! # No data is never zero, never a pass
//!
//! Sample values arrive as strings (`"0.25"`, `"NaN"`, `"+Inf"`, `"-Inf"`). Non-finite
//! values, empty results, non-numeric result types, API errors and transport errors all
//! become `None`.
//!
//! # When Prometheus is unreachable
//!
//! [`MetricsSource::fetch`] returns `Ok` with every value `None`, the same facts the
//! simulator produces for its `metrics_down` fault (scenario `metrics-outage`): the policy
//! runs, sees no data and holds (it can also count consecutive no-data evaluations in its
//! history and give up); the core never promotes on missing data. The failure stays visible:
//! every failed query text is recorded in [`MetricsData::resolved`] with `None`, plus one
//! entry per distinct error whose key is a PromQL comment,
//! `# error: prometheus http://…: <message>`, so the history shows *why* there was no
//! data. Callers that want the errors as values use [`PrometheusClient::fetch_detailed`].
//!
//! `Err` is reserved for configuration problems found before any I/O (a named query with
//! an unknown placeholder, an unknown flavour): those cannot heal by waiting and must be
//! fixed by the operator.

use super::templates::{self, FlavourTemplates, Vars};
use super::{MetricsData, MetricsError, MetricsRequest, MetricsSource};
use crate::core::facts::{Track, TrackMetrics};
use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// How to authenticate against Prometheus (or the proxy in front of it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Auth {
    #[default]
    None,
    Bearer(String),
    Basic {
        username: String,
        password: Option<String>,
    },
}

/// Connection settings and query shape.
#[derive(Debug, Clone)]
pub struct PrometheusConfig {
    /// e.g. `http://prometheus.monitoring:9090` (a path prefix is kept).
    pub base_url: String,
    /// Per HTTP request; also sent as the query's `timeout` parameter.
    pub timeout: Duration,
    pub auth: Auth,
    /// Extra CA certificate(s) in a PEM file, trusted in addition to the system roots.
    pub ca_cert: Option<PathBuf>,
    /// Accept any server certificate (testing only).
    pub insecure_skip_verify: bool,
    /// The recent range for rates, error ratios and latency quantiles (`{{window}}`).
    pub window: Duration,
    /// Prometheus' scrape interval: lower bound for every range (see [`templates`]).
    pub scrape_interval: Duration,
    /// Interval of the per-interval p95 values in `latency_samples`.
    pub sample_interval: Duration,
    /// Retries after the first attempt, on transport errors, HTTP 5xx and 429.
    pub retries: usize,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            base_url: "http://localhost:9090".into(),
            timeout: Duration::from_secs(10),
            auth: Auth::None,
            ca_cert: None,
            insecure_skip_verify: false,
            window: Duration::from_secs(60),
            scrape_interval: Duration::from_secs(15),
            sample_interval: Duration::from_secs(30),
            retries: 2,
        }
    }
}

/// Most points requested from one range query; the interval grows to stay below it.
const MAX_SAMPLES: u64 = 1000;

/// A Prometheus HTTP API client implementing [`MetricsSource`].
#[derive(Debug, Clone)]
pub struct PrometheusClient {
    pub config: PrometheusConfig,
    http: reqwest::Client,
    /// Queries in flight at once, shared by the clones (a runner of many rollouts): beyond
    /// that, queries wait their turn instead of each opening a connection (seen: 577 open
    /// connections for 200 rollouts), and Prometheus answers no faster for being asked more
    /// at once.
    in_flight: std::sync::Arc<tokio::sync::Semaphore>,
}

/// See [`PrometheusClient::in_flight`].
const MAX_IN_FLIGHT: usize = 16;

/// One query that produced no value because of an error (not merely an empty result).
#[derive(Debug, Clone, PartialEq)]
pub struct QueryFailure {
    /// The resolved PromQL text.
    pub query: String,
    pub message: String,
}

/// [`PrometheusClient::fetch_detailed`]'s answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fetched {
    pub data: MetricsData,
    pub failures: Vec<QueryFailure>,
}

/// Why a single HTTP query failed.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryError {
    pub message: String,
    /// Transport errors, HTTP 5xx and 429: worth another attempt.
    pub retryable: bool,
}

impl QueryError {
    fn fatal(message: impl Into<String>) -> Self {
        QueryError {
            message: message.into(),
            retryable: false,
        }
    }
}

/// A parsed, successful API answer.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryResult {
    /// `vector` or `scalar` (instant query).
    Instant(Vec<f64>),
    /// `matrix`: one `(unix seconds, value)` list per series.
    Matrix(Vec<Vec<(f64, f64)>>),
    /// `string` or an unknown result type: carries no number.
    Other(String),
    /// `/api/v1/series`: the label sets of the matching series (`__name__` included).
    Series(Vec<BTreeMap<String, String>>),
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    /// A query's `{resultType, result}`, or the series API's list of label sets.
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct VectorSample {
    value: (f64, String),
}

#[derive(Deserialize)]
struct MatrixSeries {
    #[serde(default)]
    values: Vec<(f64, String)>,
}

/// A sample value as Prometheus writes it; NaN and ±Inf are no data.
pub fn parse_value(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Parses the JSON envelope of `/api/v1/query` or `/api/v1/query_range`. Values are kept
/// raw (NaN/±Inf included, mapped to NaN); use [`instant_value`] / [`range_values`].
pub fn parse_envelope(body: &str) -> Result<QueryResult, QueryError> {
    let env: Envelope = serde_json::from_str(body).map_err(|e| {
        QueryError::fatal(format!(
            "not a Prometheus API response ({e}): {}",
            snippet(body)
        ))
    })?;
    if env.status != "success" {
        return Err(QueryError::fatal(format!(
            "{}: {}",
            env.error_type.as_deref().unwrap_or("error"),
            env.error.as_deref().unwrap_or("(no message)")
        )));
    }
    let data = env
        .data
        .ok_or_else(|| QueryError::fatal("status success without data"))?;
    let bad = |e: serde_json::Error| QueryError::fatal(format!("malformed result: {e}"));
    if data.is_array() {
        return Ok(QueryResult::Series(
            serde_json::from_value(data).map_err(bad)?,
        ));
    }
    let data: Data = serde_json::from_value(data).map_err(bad)?;
    let num = |s: &str| s.trim().parse::<f64>().unwrap_or(f64::NAN);
    match data.result_type.as_str() {
        "vector" => {
            let v: Vec<VectorSample> = serde_json::from_value(data.result).map_err(bad)?;
            Ok(QueryResult::Instant(
                v.iter().map(|s| num(&s.value.1)).collect(),
            ))
        }
        "scalar" => {
            let (_, s): (f64, String) = serde_json::from_value(data.result).map_err(bad)?;
            Ok(QueryResult::Instant(vec![num(&s)]))
        }
        "matrix" => {
            let m: Vec<MatrixSeries> = serde_json::from_value(data.result).map_err(bad)?;
            Ok(QueryResult::Matrix(
                m.iter()
                    .map(|s| s.values.iter().map(|(t, v)| (*t, num(v))).collect())
                    .collect(),
            ))
        }
        other => Ok(QueryResult::Other(other.to_string())),
    }
}

/// True when the outermost expression of `query` already aggregates (so several result
/// series mean a `by (...)` grouping, which must not be summed blindly).
pub fn aggregates(query: &str) -> bool {
    const AGG: [&str; 14] = [
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "count_values",
        "group",
        "stddev",
        "stdvar",
        "quantile",
        "topk",
        "bottomk",
        "limitk",
        "histogram_quantile",
    ];
    let q = query.trim_start();
    let word: String = q
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    AGG.contains(&word.as_str())
}

/// One number from an instant query answer: a single series as is, several series summed
/// when `query` does not aggregate itself (e.g. a gauge per partition). Empty, NaN, ±Inf
/// (in any summed series) → `Ok(None)`. Several series of an aggregating query → error.
pub fn instant_value(query: &str, result: &QueryResult) -> Result<Option<f64>, QueryError> {
    match result {
        QueryResult::Instant(v) if v.is_empty() => Ok(None),
        QueryResult::Instant(v) if v.len() == 1 => Ok(Some(v[0]).filter(|x| x.is_finite())),
        QueryResult::Instant(v) => {
            if aggregates(query) {
                Err(QueryError::fatal(format!(
                    "query returned {} series; aggregate it to one (e.g. sum without the by clause)",
                    v.len()
                )))
            } else {
                let sum: f64 = v.iter().sum();
                Ok(Some(sum).filter(|x| x.is_finite()))
            }
        }
        QueryResult::Matrix(_) => Err(QueryError::fatal(
            "instant query returned a range vector (matrix); drop the trailing [range]",
        )),
        QueryResult::Series(_) => Err(QueryError::fatal(
            "a series list where a query result was expected",
        )),
        QueryResult::Other(t) => Err(QueryError::fatal(format!(
            "result type {t:?} carries no number"
        ))),
    }
}

/// The finite values of a range query answer in time order (NaN/±Inf points dropped:
/// intervals without traffic have no latency). Several series → error.
pub fn range_values(result: &QueryResult) -> Result<Vec<f64>, QueryError> {
    Ok(range_points(result)?.into_iter().map(|(_, v)| v).collect())
}

/// [`range_values`] with each value's time (unix seconds).
pub fn range_points(result: &QueryResult) -> Result<Vec<(f64, f64)>, QueryError> {
    match result {
        QueryResult::Matrix(m) if m.len() > 1 => Err(QueryError::fatal(format!(
            "range query returned {} series, expected one",
            m.len()
        ))),
        QueryResult::Matrix(m) => Ok(m
            .first()
            .map(|s| s.iter().copied().filter(|(_, v)| v.is_finite()).collect())
            .unwrap_or_default()),
        QueryResult::Instant(_) | QueryResult::Other(_) | QueryResult::Series(_) => {
            Err(QueryError::fatal("range query did not return a matrix"))
        }
    }
}

fn snippet(body: &str) -> String {
    let s: String = body.chars().take(200).collect();
    s.replace('\n', " ")
}

fn unix(t: DateTime<Utc>) -> String {
    format!("{:.3}", t.timestamp_millis() as f64 / 1000.0)
}

/// Which value a query fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Requests,
    Errors,
    RequestRate,
    ErrorRate,
    Quantile(usize),
}

#[derive(Debug, Clone, PartialEq)]
enum Target {
    Track(Track, Field),
    Samples(Track),
    Named(String),
}

impl Target {
    /// How a policy names this value: `canary.p95`, `stable.requests`, a named query's name.
    fn name(&self) -> String {
        let track = |t: &Track| t.as_str();
        match self {
            Target::Track(t, field) => {
                let field = match field {
                    Field::Requests => "requests",
                    Field::Errors => "errors",
                    Field::RequestRate => "request_rate",
                    Field::ErrorRate => "error_rate",
                    Field::Quantile(0) => "p50",
                    Field::Quantile(1) => "p95",
                    Field::Quantile(_) => "p99",
                };
                format!("{}.{field}", track(t))
            }
            Target::Samples(t) => format!("{}.latency_samples", track(t)),
            Target::Named(name) => name.clone(),
        }
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Instant,
    Range {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        step_secs: u64,
    },
}

#[derive(Debug, Clone)]
struct Job {
    target: Target,
    query: String,
    kind: Kind,
}

enum Answer {
    Value(Option<f64>),
    Samples(Vec<f64>),
}

fn ceil_secs(d: Duration) -> u64 {
    let s = d.as_secs();
    if d.subsec_nanos() > 0 { s + 1 } else { s }.max(1)
}

impl PrometheusClient {
    pub fn new(config: PrometheusConfig) -> Result<Self, MetricsError> {
        let backend = |message: String| MetricsError::Backend {
            url: config.base_url.clone(),
            message,
        };
        let mut b = reqwest::Client::builder()
            .pool_max_idle_per_host(MAX_IN_FLIGHT)
            .pool_idle_timeout(Duration::from_secs(30))
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)));
        if let Some(path) = &config.ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| backend(format!("reading CA certificate {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| backend(format!("CA certificate {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(backend(format!(
                    "CA certificate {}: no PEM certificate found",
                    path.display()
                )));
            }
            b = b.tls_certs_merge(certs);
        }
        if config.insecure_skip_verify {
            b = b.tls_danger_accept_invalid_certs(true);
        }
        reqwest::Url::parse(&config.base_url).map_err(|e| backend(format!("invalid URL: {e}")))?;
        let http = b
            .build()
            .map_err(|e| backend(format!("HTTP client: {e}")))?;
        Ok(PrometheusClient {
            config,
            http,
            in_flight: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
        })
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}/{path}", self.config.base_url.trim_end_matches('/'))
    }

    fn url(&self) -> &str {
        &self.config.base_url
    }

    /// One HTTP query (no retry). `params` are sent URL-encoded.
    async fn get(&self, path: &str, params: &[(&str, String)]) -> Result<QueryResult, QueryError> {
        let url = reqwest::Url::parse_with_params(&self.endpoint(path), params)
            .map_err(|e| QueryError::fatal(format!("invalid URL: {e}")))?;
        // Waiting for a turn counts against the query's timeout like waiting for an answer:
        // a hung Prometheus fails the queries in time instead of queueing them up.
        let started = tokio::time::Instant::now();
        let _turn = tokio::time::timeout(self.config.timeout, self.in_flight.acquire())
            .await
            .map_err(|_| QueryError {
                message: format!(
                    "no answer within {} ({MAX_IN_FLIGHT} queries in flight)",
                    humantime::format_duration(self.config.timeout)
                ),
                retryable: true,
            })?
            .map_err(|_| QueryError::fatal("metrics client closed"))?;
        let left = self.config.timeout.saturating_sub(started.elapsed());
        let mut rb = self
            .http
            .get(url)
            .timeout(left.max(Duration::from_millis(100)));
        rb = match &self.config.auth {
            Auth::None => rb,
            Auth::Bearer(t) => rb.bearer_auth(t),
            Auth::Basic { username, password } => rb.basic_auth(username, password.as_ref()),
        };
        let resp = rb.send().await.map_err(|e| QueryError {
            message: transport_message(&e),
            retryable: true,
        })?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| QueryError {
            message: format!("reading response: {}", transport_message(&e)),
            retryable: true,
        })?;
        match parse_envelope(&body) {
            Ok(r) if status.is_success() => Ok(r),
            Ok(_) => Err(QueryError {
                message: format!("HTTP {status}"),
                retryable: worth_retrying(status),
            }),
            Err(e) => Err(QueryError {
                message: if status.is_success() {
                    e.message
                } else if body.trim_start().starts_with('{') {
                    format!("HTTP {status}: {}", e.message)
                } else {
                    format!("HTTP {status}: {}", snippet(&body))
                },
                // Prometheus answers bad queries with 400/422 (no retry) and overload or
                // query timeouts with 503: those may pass on another attempt.
                retryable: worth_retrying(status),
            }),
        }
    }

    /// `get` with a short exponential backoff on retryable errors.
    async fn get_retrying(
        &self,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<QueryResult, QueryError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(self.config.retries)
            .with_jitter();
        (|| self.get(path, params))
            .retry(backoff)
            .when(|e: &QueryError| e.retryable)
            .await
    }

    /// Instant query at `at`; `Ok(None)` = no data.
    pub async fn query(&self, query: &str, at: DateTime<Utc>) -> Result<Option<f64>, QueryError> {
        let params = [
            ("query", query.to_string()),
            ("time", unix(at)),
            ("timeout", format!("{}ms", self.config.timeout.as_millis())),
        ];
        let r = self.get_retrying("api/v1/query", &params).await?;
        instant_value(query, &r)
    }

    /// `/api/v1/series`: the label sets of the series `selector` matches in [start, end].
    pub async fn series(
        &self,
        selector: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<BTreeMap<String, String>>, QueryError> {
        let params = [
            ("match[]", selector.to_string()),
            ("start", unix(start)),
            ("end", unix(end)),
        ];
        match self.get_retrying("api/v1/series", &params).await? {
            QueryResult::Series(s) => Ok(s),
            _ => Err(QueryError::fatal("the series API answered without a list")),
        }
    }

    /// Range query; the finite values in time order.
    pub async fn query_range(
        &self,
        query: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        step_secs: u64,
    ) -> Result<Vec<f64>, QueryError> {
        let points = self
            .query_range_points(query, start, end, step_secs)
            .await?;
        Ok(points.into_iter().map(|(_, v)| v).collect())
    }

    /// [`Self::query_range`] with each value's time.
    pub async fn query_range_points(
        &self,
        query: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        step_secs: u64,
    ) -> Result<Vec<(DateTime<Utc>, f64)>, QueryError> {
        let params = [
            ("query", query.to_string()),
            ("start", unix(start)),
            ("end", unix(end)),
            ("step", format!("{step_secs}s")),
            ("timeout", format!("{}ms", self.config.timeout.as_millis())),
        ];
        let r = self.get_retrying("api/v1/query_range", &params).await?;
        Ok(range_points(&r)?
            .into_iter()
            .filter_map(|(t, v)| {
                DateTime::from_timestamp_millis((t * 1000.0).round() as i64).map(|t| (t, v))
            })
            .collect())
    }

    /// Renders every query of one evaluation (built-ins for both tracks, then named ones).
    fn plan(&self, req: &MetricsRequest) -> Result<Vec<Job>, MetricsError> {
        let t: &FlavourTemplates = templates::flavour(req.flavour);
        let scrape = ceil_secs(self.config.scrape_interval);
        let min_range = 2 * scrape;
        let window = ceil_secs(self.config.window).max(min_range);
        let in_step = (req.now - req.step_started).to_std().unwrap_or_default();
        let step_secs = ceil_secs(in_step).max(min_range);
        let common = templates::common_vars(req, window, step_secs);

        let mut jobs = Vec::new();
        for track in [Track::Stable, Track::Canary] {
            let mut vars = templates::track_vars(&common, req, track);
            let mut push = |field: Field, tpl: &str, vars: &Vars, name: &str| {
                let query = templates::render_track(name, tpl, vars)?;
                jobs.push(Job {
                    target: Target::Track(track, field),
                    query,
                    kind: Kind::Instant,
                });
                Ok::<_, MetricsError>(())
            };
            push(Field::Requests, t.requests, &vars, "requests")?;
            push(Field::Errors, t.errors, &vars, "errors")?;
            push(Field::RequestRate, t.request_rate, &vars, "request_rate")?;
            push(Field::ErrorRate, t.error_rate, &vars, "error_rate")?;
            for (i, q) in templates::QUANTILES.iter().enumerate() {
                vars.insert("quantile".into(), q.to_string());
                push(Field::Quantile(i), t.latency, &vars, "latency")?;
            }
            // Per-interval p95 over the step: non-overlapping intervals (rate range = step).
            let mut interval = ceil_secs(self.config.sample_interval).max(min_range);
            let span = in_step.as_secs();
            if span / interval > MAX_SAMPLES {
                interval = span.div_ceil(MAX_SAMPLES);
            }
            let start = req.step_started + chrono::Duration::seconds(interval as i64);
            if req.latency_samples && start <= req.now {
                vars.insert("quantile".into(), "0.95".into());
                vars.insert("window".into(), templates::duration_secs(interval));
                let query = templates::render_track("latency_samples", t.latency, &vars)?;
                jobs.push(Job {
                    target: Target::Samples(track),
                    query,
                    kind: Kind::Range {
                        start,
                        end: req.now,
                        step_secs: interval,
                    },
                });
            }
        }
        for (name, tpl) in &req.queries {
            jobs.push(Job {
                target: Target::Named(name.clone()),
                query: templates::render(name, tpl, &common)?,
                kind: Kind::Instant,
            });
        }
        Ok(jobs)
    }

    async fn run(&self, job: &Job, now: DateTime<Utc>) -> Result<Answer, QueryError> {
        match &job.kind {
            Kind::Instant => self.query(&job.query, now).await.map(Answer::Value),
            Kind::Range {
                start,
                end,
                step_secs,
            } => self
                .query_range(&job.query, *start, *end, *step_secs)
                .await
                .map(Answer::Samples),
        }
    }

    /// Like [`MetricsSource::fetch`], with the failed queries and their errors as values.
    pub async fn fetch_detailed(&self, req: &MetricsRequest) -> Result<Fetched, MetricsError> {
        let jobs = self.plan(req)?;
        let answers = futures::future::join_all(jobs.iter().map(|j| self.run(j, req.now))).await;

        let mut out = Fetched::default();
        for (job, answer) in jobs.iter().zip(answers) {
            let recorded = match answer {
                Err(e) => {
                    out.data.failed.insert(job.target.name(), e.message.clone());
                    out.failures.push(QueryFailure {
                        query: job.query.clone(),
                        message: e.message,
                    });
                    None
                }
                Ok(Answer::Value(v)) => {
                    let d = &mut out.data;
                    match &job.target {
                        Target::Track(track, field) => {
                            let m = match track {
                                Track::Stable => &mut d.stable,
                                Track::Canary => &mut d.canary,
                            };
                            let slot = match field {
                                Field::Requests => &mut m.requests,
                                Field::Errors => &mut m.errors,
                                Field::RequestRate => &mut m.request_rate,
                                Field::ErrorRate => &mut m.error_rate,
                                Field::Quantile(0) => &mut m.latency_p50,
                                Field::Quantile(1) => &mut m.latency_p95,
                                Field::Quantile(_) => &mut m.latency_p99,
                            };
                            *slot = v;
                        }
                        Target::Named(name) => {
                            d.queries.insert(name.clone(), v);
                        }
                        Target::Samples(_) => {}
                    }
                    v
                }
                Ok(Answer::Samples(s)) => {
                    let n = s.len();
                    if let Target::Samples(track) = &job.target {
                        match track {
                            Track::Stable => out.data.stable.latency_samples = s,
                            Track::Canary => out.data.canary.latency_samples = s,
                        }
                    }
                    Some(n as f64)
                }
            };
            let key = match &job.kind {
                Kind::Instant => job.query.clone(),
                Kind::Range {
                    start, step_secs, ..
                } => format!(
                    "{} # range query from {} every {step_secs}s; value = number of samples",
                    job.query,
                    start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            };
            out.data.resolved.insert(key, recorded);
        }
        // Named queries that failed still appear (as no data).
        for name in req.queries.keys() {
            out.data.queries.entry(name.clone()).or_insert(None);
        }
        tidy(&mut out.data.stable);
        tidy(&mut out.data.canary);
        Ok(out)
    }
}

/// Counts are whole, non-negative requests, errors ≤ requests; a ratio stays in 0..=1.
fn tidy(m: &mut TrackMetrics) {
    let count = |v: Option<f64>| v.map(|x| x.round().max(0.0));
    m.requests = count(m.requests);
    m.errors = count(m.errors);
    if let (Some(r), Some(e)) = (m.requests, m.errors) {
        m.errors = Some(e.min(r));
    }
    m.error_rate = m.error_rate.map(|x| x.clamp(0.0, 1.0));
    m.request_rate = m.request_rate.map(|x| x.max(0.0));
}

fn transport_message(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut msg = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        e.to_string()
    };
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

impl MetricsSource for PrometheusClient {
    /// See the module docs: an unreachable Prometheus gives `Ok` with no data and the
    /// errors recorded in `resolved` (keys starting with `# error:`).
    async fn fetch(&self, req: &MetricsRequest) -> Result<MetricsData, MetricsError> {
        let Fetched { mut data, failures } = self.fetch_detailed(req).await?;
        let mut seen = std::collections::BTreeSet::new();
        for f in &failures {
            if seen.insert(f.message.clone()) {
                let n = failures.iter().filter(|x| x.message == f.message).count();
                data.resolved.insert(
                    format!(
                        "# error: prometheus {}: {} ({n} of the queries)",
                        self.url(),
                        f.message
                    ),
                    None,
                );
            }
        }
        Ok(data)
    }
}

/// Error entries [`MetricsSource::fetch`] records in `resolved`.
pub fn recorded_errors(resolved: &BTreeMap<String, Option<f64>>) -> Vec<&str> {
    resolved
        .keys()
        .filter(|k| k.starts_with("# error:"))
        .map(String::as_str)
        .collect()
}

/// 5xx, and 429 Too Many Requests (a rate-limiting proxy in front of Prometheus, or
/// Thanos/Cortex query limits): another attempt after a backoff may pass.
fn worth_retrying(status: reqwest::StatusCode) -> bool {
    status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(query: &str, body: &str) -> Result<Option<f64>, QueryError> {
        instant_value(query, &parse_envelope(body)?)
    }

    const Q: &str = "sum(rate(x[1m]))";

    #[test]
    fn vector_single_series() {
        let b = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{},"value":[1700000000.123,"0.25"]}]}}"#;
        assert_eq!(value(Q, b).unwrap(), Some(0.25));
    }

    #[test]
    fn nan_and_infinities_are_no_data() {
        for v in ["NaN", "+Inf", "-Inf", "Inf", "garbage"] {
            let b = format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1,"{v}"]}}]}}}}"#
            );
            assert_eq!(value(Q, &b).unwrap(), None, "{v}");
        }
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}"#;
        assert_eq!(value("1/0", scalar).unwrap(), None);
        assert_eq!(parse_value("+Inf"), None);
        assert_eq!(parse_value(" 3 "), Some(3.0));
    }

    #[test]
    fn empty_result_is_no_data_not_zero() {
        let b = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(value(Q, b).unwrap(), None);
    }

    #[test]
    fn scalar() {
        let b = r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"42"]}}"#;
        assert_eq!(value("scalar(x)", b).unwrap(), Some(42.0));
    }

    #[test]
    fn rate_limited_and_server_errors_are_retried_bad_queries_not() {
        use reqwest::StatusCode;
        assert!(worth_retrying(StatusCode::TOO_MANY_REQUESTS));
        assert!(worth_retrying(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!worth_retrying(StatusCode::BAD_REQUEST));
        assert!(!worth_retrying(StatusCode::UNPROCESSABLE_ENTITY));
    }

    #[test]
    fn error_envelope() {
        let b = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 5: unexpected \"}\""}"#;
        let e = value(Q, b).unwrap_err();
        assert!(e.message.contains("bad_data"), "{}", e.message);
        assert!(e.message.contains("parse error"), "{}", e.message);
        assert!(!e.retryable);
        assert!(parse_envelope("<html>502 Bad Gateway</html>").is_err());
        assert!(parse_envelope(r#"{"status":"success"}"#).is_err());
    }

    #[test]
    fn warnings_do_not_hide_the_value() {
        let b = r#"{"status":"success","warnings":["PromQL info: metric might not be a counter"],
            "data":{"resultType":"vector","result":[{"metric":{"a":"b"},"value":[1,"7"]}]}}"#;
        assert_eq!(value(Q, b).unwrap(), Some(7.0));
    }

    #[test]
    fn several_series_are_summed_only_without_aggregation() {
        let b = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"partition":"0"},"value":[1,"100"]},
            {"metric":{"partition":"1"},"value":[1,"23.5"]}]}}"#;
        assert_eq!(
            value(r#"kafka_consumergroup_lag{consumergroup="a"}"#, b).unwrap(),
            Some(123.5)
        );
        assert!(value("sum by (partition) (kafka_consumergroup_lag)", b).is_err());
        assert!(value("  max by (x) (y)", b).is_err());
        // One NaN series poisons the sum: incomplete data is no data.
        let nan = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"partition":"0"},"value":[1,"100"]},
            {"metric":{"partition":"1"},"value":[1,"NaN"]}]}}"#;
        assert_eq!(value("lag", nan).unwrap(), None);
        assert!(aggregates("histogram_quantile(0.9, x)"));
        assert!(!aggregates("summary_metric"));
        assert!(!aggregates("rate(x[1m])"));
    }

    #[test]
    fn matrix_for_range_queries() {
        let b = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{},"values":[[1,"10"],[2,"NaN"],[3,"12.5"],[4,"+Inf"],[5,"11"]]}]}}"#;
        let r = parse_envelope(b).unwrap();
        assert_eq!(range_values(&r).unwrap(), vec![10.0, 12.5, 11.0]);
        // A matrix is not an instant value.
        assert!(instant_value("x[5m]", &r).is_err());
        let empty = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert_eq!(
            range_values(&parse_envelope(empty).unwrap()).unwrap(),
            Vec::<f64>::new()
        );
        let two = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"a":"1"},"values":[[1,"1"]]},{"metric":{"a":"2"},"values":[[1,"2"]]}]}}"#;
        assert!(range_values(&parse_envelope(two).unwrap()).is_err());
    }

    #[test]
    fn string_result_has_no_number() {
        let b = r#"{"status":"success","data":{"resultType":"string","result":[1,"hello"]}}"#;
        assert!(value("\"hello\"", b).is_err());
    }

    #[test]
    fn tidy_counts() {
        let mut m = TrackMetrics {
            requests: Some(99.6),
            errors: Some(101.2),
            error_rate: Some(1.0000001),
            ..TrackMetrics::default()
        };
        tidy(&mut m);
        assert_eq!(m.requests, Some(100.0));
        assert_eq!(m.errors, Some(100.0));
        assert_eq!(m.error_rate, Some(1.0));
        let mut neg = TrackMetrics {
            requests: Some(-0.4),
            ..TrackMetrics::default()
        };
        tidy(&mut neg);
        assert_eq!(neg.requests, Some(0.0));
    }

    fn req(flavour: &str) -> MetricsRequest {
        let flavour = templates::MetricsFlavour::parse(flavour).unwrap();
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:05:00Z")
            .unwrap()
            .with_timezone(&Utc);
        MetricsRequest {
            namespace: "shop".into(),
            service: "web".into(),
            stable_workload: "web".into(),
            canary_workload: "web-canary".into(),
            flavour,
            step_started: now - chrono::Duration::seconds(300),
            now,
            queries: BTreeMap::from([(
                "lag".to_string(),
                r#"sum(kafka_consumergroup_lag{consumergroup="{{canary_workload}}"})"#.to_string(),
            )]),
            latency_samples: true,
        }
    }

    #[test]
    fn plan_covers_every_field_and_query() {
        let c = PrometheusClient::new(PrometheusConfig::default()).unwrap();
        let jobs = c.plan(&req("istio")).unwrap();
        // 7 instant + 1 range per track, plus the named query.
        assert_eq!(jobs.len(), 2 * 8 + 1);
        let named = jobs.last().unwrap();
        assert_eq!(
            named.query,
            r#"sum(kafka_consumergroup_lag{consumergroup="web-canary"})"#
        );
        assert!(jobs.iter().any(|j| j.query.contains("[300s]")));
        let samples = jobs
            .iter()
            .find(|j| j.target == Target::Samples(Track::Canary))
            .unwrap();
        assert!(samples.query.contains("[30s]"), "{}", samples.query);
        assert!(matches!(samples.kind, Kind::Range { step_secs: 30, .. }));
    }

    #[test]
    fn latency_samples_are_fetched_only_when_asked() {
        let c = PrometheusClient::new(PrometheusConfig::default()).unwrap();
        let mut r = req("istio");
        r.latency_samples = false;
        let jobs = c.plan(&r).unwrap();
        assert_eq!(jobs.len(), 2 * 7 + 1);
        assert!(jobs.iter().all(|j| matches!(j.kind, Kind::Instant)));
    }

    #[test]
    fn plan_rejects_bad_templates() {
        let c = PrometheusClient::new(PrometheusConfig::default()).unwrap();
        let mut r = req("istio");
        r.queries.insert("bad".into(), "x{a=\"{{nope}}\"}".into());
        let e = c.plan(&r).unwrap_err();
        assert!(
            matches!(e, MetricsError::Template { ref name, .. } if name == "bad"),
            "{e}"
        );
    }

    #[test]
    fn step_window_is_clamped_to_two_scrapes() {
        let c = PrometheusClient::new(PrometheusConfig::default()).unwrap();
        let mut r = req("generic");
        r.step_started = r.now - chrono::Duration::seconds(3);
        let jobs = c.plan(&r).unwrap();
        let requests = &jobs[0];
        assert!(requests.query.contains("[30s]"), "{}", requests.query);
        // No full sample interval yet: no range query.
        assert!(!jobs.iter().any(|j| matches!(j.target, Target::Samples(_))));
    }

    #[test]
    fn bad_ca_file_is_an_error() {
        let cfg = PrometheusConfig {
            ca_cert: Some("/nonexistent/ca.pem".into()),
            ..PrometheusConfig::default()
        };
        assert!(PrometheusClient::new(cfg).is_err());
    }
}
