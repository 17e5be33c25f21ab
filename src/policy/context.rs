//! The `ctx` a policy's `decide(ctx)` receives, and the functions it may call.
//! Values are read from prefetched [`Facts`]; a missing value throws "no data: …", so a
//! policy that forgets to handle missing data holds instead of passing.

use crate::core::decision::Observations;
use crate::core::facts::{Facts, PodFacts, Track, TrackMetrics};
use crate::core::stats::{
    AnytimeErrorTest, EVIDENCE_KEYS, Evidence, RankTest, RateViews, StepCounts, TestOutcome,
    sequential_rank_test,
};
use rhai::{Dynamic, Engine, EvalAltResult, Map, Position};
use std::cell::{Cell, RefCell};
use std::sync::Arc;

/// Prefix of the error a missing value throws; the evaluator turns it into "inconclusive".
pub const NO_DATA: &str = "no data: ";

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

thread_local! {
    /// Observations recorded by `observe()` during the evaluation running on this thread.
    static OBSERVATIONS: RefCell<Observations> = const { RefCell::new(Observations::new()) };
    /// `print`/`debug` lines of the evaluation running on this thread.
    static LOG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// The evaluation on this thread read latency samples that were not fetched.
    static WANTED_SAMPLES: Cell<bool> = const { Cell::new(false) };
}

pub(crate) fn reset_sinks() {
    OBSERVATIONS.with(|o| o.borrow_mut().clear());
    LOG.with(|l| l.borrow_mut().clear());
    WANTED_SAMPLES.set(false);
}

/// Whether the evaluation that just ran wanted the latency samples it was not given.
pub(crate) fn take_wanted_samples() -> bool {
    WANTED_SAMPLES.replace(false)
}

/// Records an observation under the same cap as `observe()`.
fn record(name: &str, value: Option<f64>) {
    OBSERVATIONS.with(|o| {
        let mut o = o.borrow_mut();
        if o.len() < 64 || o.contains_key(name) {
            o.insert(name.to_string(), value.filter(|v| v.is_finite()));
        }
    });
}

pub(crate) fn take_sinks() -> (Observations, Vec<String>) {
    (
        OBSERVATIONS.with(|o| std::mem::take(&mut *o.borrow_mut())),
        LOG.with(|l| std::mem::take(&mut *l.borrow_mut())),
    )
}

/// Lines of `print`/`debug` an evaluation keeps, and characters per line: the log is stored
/// in the rollout state, so a chatty loop must not grow it (200 × 64 KiB once could).
pub const MAX_LOG_LINES: usize = 50;
pub const MAX_LOG_LINE_CHARS: usize = 500;

pub(crate) fn log_line(line: String) {
    LOG.with(|l| {
        let mut l = l.borrow_mut();
        match l.len() {
            n if n < MAX_LOG_LINES => {
                let mut line = line;
                if line.chars().count() > MAX_LOG_LINE_CHARS {
                    line = line.chars().take(MAX_LOG_LINE_CHARS).collect::<String>() + " […]";
                }
                l.push(line);
            }
            n if n == MAX_LOG_LINES => l.push(format!(
                "[… more than {MAX_LOG_LINES} lines; the rest is dropped]"
            )),
            _ => {}
        }
    });
}

fn no_data(what: impl std::fmt::Display) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(format!("{NO_DATA}{what}").into(), Position::NONE).into()
}

/// Everything a policy can read at one evaluation.
#[derive(Debug, Clone)]
pub struct ContextData {
    pub service: String,
    pub step: usize,
    pub weight: u32,
    pub steps: Vec<u32>,
    pub time_in_step_secs: f64,
    pub elapsed_secs: f64,
    pub min_requests: u64,
    pub params: Map,
    pub facts: Facts,
    /// Observations of earlier evaluations, oldest first.
    pub history: Vec<Observations>,
}

#[derive(Debug, Clone)]
pub struct PolicyContext(pub Arc<ContextData>);

#[derive(Debug, Clone)]
pub struct TrackView {
    data: Arc<ContextData>,
    track: Track,
}

impl TrackView {
    fn metrics(&self) -> &TrackMetrics {
        self.data.facts.track(self.track)
    }

    fn pods(&self) -> &PodFacts {
        self.data.facts.pods(self.track)
    }

    fn value(&self, field: &str) -> Option<f64> {
        let m = self.metrics();
        match field {
            "requests" => m.requests,
            "errors" => m.errors,
            "request_rate" => m.request_rate,
            "error_rate" => m.error_rate,
            "success_rate" => m.error_rate.map(|e| 1.0 - e),
            "p50" => m.latency_p50,
            "p95" => m.latency_p95,
            "p99" => m.latency_p99,
            _ => None,
        }
    }

    fn get(&mut self, field: &str) -> RhaiResult<f64> {
        self.value(field)
            .filter(|v| v.is_finite())
            .ok_or_else(|| no_data(format!("{}.{field}", self.track.as_str())))
    }
}

fn map_to_outcome(o: TestOutcome) -> Map {
    let mut m = Map::new();
    m.insert("verdict".into(), o.verdict.as_str().into());
    m.insert(
        "pass".into(),
        (o.verdict == crate::core::stats::Verdict::Pass).into(),
    );
    m.insert(
        "fail".into(),
        (o.verdict == crate::core::stats::Verdict::Fail).into(),
    );
    m.insert("statistic".into(), o.statistic.into());
    m.insert(
        "p_value".into(),
        o.p_value.map(Dynamic::from_float).unwrap_or(Dynamic::UNIT),
    );
    m.insert(
        "estimate".into(),
        o.estimate.map(Dynamic::from_float).unwrap_or(Dynamic::UNIT),
    );
    m.insert("samples".into(), (o.samples as i64).into());
    m.insert("reason".into(), o.reason.into());
    m
}

fn opt_f64(opts: &Map, key: &str, default: f64) -> RhaiResult<f64> {
    match opts.get(key) {
        None => Ok(default),
        Some(v) => v
            .as_float()
            .or_else(|_| v.as_int().map(|i| i as f64))
            .map_err(|t| format!("option {key} must be a number, got {t}").into()),
    }
}

impl PolicyContext {
    fn query(&mut self, name: &str) -> RhaiResult<f64> {
        match self.0.facts.queries.get(name) {
            Some(Some(v)) if v.is_finite() => Ok(*v),
            Some(_) => Err(no_data(match self.0.facts.failed.get(name) {
                Some(e) => format!("query {name} (it failed: {e})"),
                None => format!("query {name}"),
            })),
            None => Err(format!(
                "query {name:?} is not declared: add it to schedule().queries (declared: {})",
                self.0
                    .facts
                    .queries
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
            .into()),
        }
    }

    /// The evidence of this evaluation: what an earlier call in this evaluation recorded,
    /// else the most recent evaluation in history that recorded it, counted as one more
    /// look (one per evaluation, whatever the data, so α spent per look stays valid).
    fn evidence(&self) -> Evidence {
        OBSERVATIONS
            .with(|o| Evidence::from_observations(&o.borrow()))
            .unwrap_or_else(|| {
                let mut ev = Evidence::latest(&self.0.history).unwrap_or(Evidence {
                    step: self.0.step,
                    ..Evidence::default()
                });
                ev.looks += 1;
                ev
            })
    }

    fn record_evidence(ev: &Evidence) {
        let mut obs = Observations::new();
        ev.record(&mut obs);
        for k in EVIDENCE_KEYS {
            record(k, obs.get(k).copied().flatten());
        }
    }

    fn step_counts(&self) -> Option<StepCounts> {
        let (c, s) = (&self.0.facts.canary, &self.0.facts.stable);
        StepCounts::new(c.requests?, c.errors?, s.requests?, s.errors?)
    }

    /// Stable's most recent baseline error rate (as `baseline()` carries it).
    fn carried(&self, key: &str) -> Option<f64> {
        OBSERVATIONS
            .with(|o| o.borrow().get(key).copied())
            .or_else(|| {
                self.0
                    .history
                    .iter()
                    .rev()
                    .find_map(|o| o.get(key).copied())
            })
            .flatten()
    }

    fn error_test(&mut self, opts: Map) -> RhaiResult<Map> {
        let d = AnytimeErrorTest::default();
        let test = AnytimeErrorTest {
            max_ratio: opt_f64(&opts, "max_ratio", d.max_ratio)?,
            alpha: opt_f64(&opts, "alpha", d.alpha)?,
            beta: opt_f64(&opts, "beta", d.beta)?,
            min_canary_requests: opt_f64(&opts, "min_requests", self.0.min_requests as f64)? as u64,
            max_error_rate: opt_f64(&opts, "max_error_rate", d.max_error_rate)?,
        };
        let baseline = match opts.get("baseline") {
            Some(v) => to_f64(v),
            None => self.carried("baseline_error_rate"),
        };
        let (ev, outcome) = test.evaluate(
            Some(self.evidence()),
            self.0.step,
            self.step_counts(),
            baseline,
        );
        Self::record_evidence(&ev);
        let mut m = map_to_outcome(outcome);
        m.insert("llr".into(), ev.error_llr.into());
        m.insert("canary_requests".into(), ev.canary_requests.into());
        m.insert("canary_errors".into(), ev.canary_errors.into());
        Ok(m)
    }

    fn latency_test(&mut self, opts: Map) -> RhaiResult<Map> {
        let d = RankTest::default();
        let test = RankTest {
            alpha: opt_f64(&opts, "alpha", 0.01)?,
            min_samples: opt_f64(&opts, "min_samples", d.min_samples as f64)? as usize,
            max_shift: opt_f64(&opts, "max_shift", d.max_shift)?,
        };
        if self.0.facts.latency_samples_skipped {
            // Fetched without them (this policy was not known to read them): the caller
            // fetches them and evaluates again, and this outcome is discarded.
            WANTED_SAMPLES.set(true);
        }
        let (c, s) = (
            &self.0.facts.canary.latency_samples,
            &self.0.facts.stable.latency_samples,
        );
        let ev = self.evidence();
        Self::record_evidence(&ev);
        let look = ev.looks;
        let mut m = map_to_outcome(sequential_rank_test(&test, look, c, s));
        m.insert("look".into(), (look as i64).into());
        Ok(m)
    }

    /// Time-uniform bounds of the canary's error rate and of stable's, so that a rule
    /// combining one canary bound with one stable bound is wrong with probability at most
    /// `alpha` (default 0.01) over the whole rollout, however often it is checked.
    ///
    /// This reads the views and [`crate::core::stats::error_bounds`] splits α over them: the
    /// canary over the rollout so far, the current step and the last minute (tightest bound
    /// wins, so a canary that starts failing late is not hidden by its healthy past); stable
    /// over this step, or over the baseline that `baseline()` carried when stable serves
    /// nothing (100%).
    fn error_bounds(&mut self, opts: Map) -> RhaiResult<Map> {
        let alpha = opt_f64(&opts, "alpha", 0.01)?;
        let counts = self.step_counts();
        let ev = Evidence::continue_from(
            Some(self.evidence()),
            self.0.step,
            counts.map(|c| (c.canary_requests, c.canary_errors)),
        );
        Self::record_evidence(&ev);
        let c = &self.0.facts.canary;
        let window = match (c.request_rate, c.error_rate) {
            (Some(r), Some(e)) if r.is_finite() && e.is_finite() => Some((e * r * 60.0, r * 60.0)),
            _ => None,
        };
        // At 100% stable serves nothing: its baseline from the earlier steps stands in.
        let stable = match counts.filter(|c| c.stable_requests > 0.0) {
            Some(c) => Some((c.stable_errors, c.stable_requests)),
            None => match (
                self.carried("baseline_error_rate"),
                self.carried("baseline_requests"),
            ) {
                (Some(rate), Some(n)) => Some((rate * n, n)),
                _ => None,
            },
        };
        let views = RateViews {
            rollout: (ev.canary_errors, ev.canary_requests),
            step: counts.map(|c| (c.canary_errors, c.canary_requests)),
            last_minute: window,
            stable,
        };
        let b = crate::core::stats::error_bounds(alpha, self.0.steps.len(), ev.looks, &views);
        let unit_or = |v: Option<f64>| v.map(Dynamic::from_float).unwrap_or(Dynamic::UNIT);
        let mut m = Map::new();
        m.insert("canary_requests".into(), ev.canary_requests.into());
        m.insert("canary_errors".into(), ev.canary_errors.into());
        m.insert(
            "canary_rate".into(),
            unit_or((ev.canary_requests > 0.0).then(|| ev.canary_errors / ev.canary_requests)),
        );
        m.insert("canary_lower".into(), unit_or(b.canary_lower));
        m.insert(
            "canary_lower_over".into(),
            b.canary_lower_over
                .map(Dynamic::from)
                .unwrap_or(Dynamic::UNIT),
        );
        m.insert("canary_upper".into(), unit_or(b.canary_upper));
        m.insert(
            "stable_rate".into(),
            unit_or(
                counts
                    .filter(|c| c.stable_requests > 0.0)
                    .map(|c| c.stable_errors / c.stable_requests),
            ),
        );
        m.insert("stable_lower".into(), unit_or(b.stable_lower));
        m.insert("stable_upper".into(), unit_or(b.stable_upper));
        Ok(m)
    }

    /// Stable's baseline: its counters of this step when it has `min_requests` of them,
    /// otherwise the last baseline recorded (at 100% stable gets no traffic, and a metrics
    /// gap must not erase what was learned). Latency quantiles are smoothed over evaluations
    /// (0.8 old + 0.2 new) so one noisy minute of stable does not move them. Never throws;
    /// missing parts are (). Recorded as `baseline_*` observations, which carry it on.
    fn baseline(&mut self, min_requests: f64) -> Map {
        let s = &self.0.facts.stable;
        let fresh = |v: Option<f64>| v.filter(|x| x.is_finite());
        let mut error_rate = self.carried("baseline_error_rate");
        let mut requests = self.carried("baseline_requests");
        if let (Some(n), Some(e)) = (fresh(s.requests), fresh(s.errors)) {
            if n >= min_requests && n > 0.0 {
                error_rate = Some(e / n);
                requests = Some(n);
            }
        }
        let per_minute = fresh(s.request_rate).map(|r| r * 60.0);
        let mut m = Map::new();
        for (q, now) in [
            ("p50", s.latency_p50),
            ("p95", s.latency_p95),
            ("p99", s.latency_p99),
        ] {
            let key = format!("baseline_{q}_ms");
            let mut b = self.carried(&key);
            if let (Some(now), Some(pm)) = (fresh(now), per_minute) {
                if pm >= min_requests / 10.0 {
                    b = Some(b.map_or(now, |old| 0.8 * old + 0.2 * now));
                }
            }
            record(&key, b);
            m.insert(
                q.into(),
                b.map(Dynamic::from_float).unwrap_or(Dynamic::UNIT),
            );
        }
        record("baseline_error_rate", error_rate);
        record("baseline_requests", requests);
        m.insert(
            "error_rate".into(),
            error_rate.map(Dynamic::from_float).unwrap_or(Dynamic::UNIT),
        );
        m.insert(
            "requests".into(),
            requests.map(Dynamic::from_float).unwrap_or(Dynamic::UNIT),
        );
        m
    }

    /// How many of the most recent evaluations, this one included (`now`), had `key` = 1,
    /// counted back until the first that did not.
    fn streak(&mut self, key: &str, now: bool) -> i64 {
        if !now {
            return 0;
        }
        1 + self
            .0
            .history
            .iter()
            .rev()
            .take_while(|o| o.get(key).copied().flatten() == Some(1.0))
            .count() as i64
    }

    /// One latency quantile ("p50", "p95", "p99") of the canary over the last minute against
    /// the baseline: judged with at least `min_lat` canary requests in the window; `breach`
    /// when its increase is above `max_inc`. Below 100% the sequential rank test over the
    /// step's samples runs too (`rank`, max shift max_inc / 2): a breach counts as evidence
    /// only together with it, because a one-minute quantile is noisy. Records
    /// `<q>_increase`, `<q>_breach` and `latency_shift_ms`.
    fn latency_check(&mut self, base: Map, q: &str, max_inc: f64, min_lat: f64) -> RhaiResult<Map> {
        let c = &self.0.facts.canary;
        let window = c.request_rate.filter(|r| r.is_finite()).map(|r| r * 60.0);
        let judged = window.is_some_and(|n| n >= min_lat);
        let base_q = base.get(q).and_then(to_f64);
        let mut r = Map::new();
        let (mut breach, mut increase, mut value) = (false, None, None);
        if judged {
            let Some(b) = base_q.filter(|b| *b > 0.0) else {
                return Err(no_data(format!("no stable {q} baseline yet")));
            };
            let v = TrackView {
                data: self.0.clone(),
                track: Track::Canary,
            }
            .get(q)?;
            let inc = (v - b) / b;
            breach = inc > max_inc;
            increase = Some(inc);
            value = Some(v);
            record(&format!("{q}_increase"), Some(inc));
        }
        record(&format!("{q}_breach"), Some(if breach { 1.0 } else { 0.0 }));
        let streak = self.streak(&format!("{q}_breach"), breach);
        let last = self.0.step + 1 >= self.0.steps.len();
        let rank = if last {
            Dynamic::UNIT
        } else {
            let mut opts = Map::new();
            opts.insert("max_shift".into(), (max_inc / 2.0).into());
            opts.insert("min_samples".into(), 50_i64.into());
            let m = self.latency_test(opts)?;
            record("latency_shift_ms", m.get("estimate").and_then(to_f64));
            Dynamic::from_map(m)
        };
        let unit_or = |v: Option<f64>| v.map(Dynamic::from_float).unwrap_or(Dynamic::UNIT);
        r.insert("judged".into(), judged.into());
        r.insert("breach".into(), breach.into());
        r.insert("streak".into(), streak.into());
        r.insert("increase".into(), unit_or(increase));
        r.insert("value".into(), unit_or(value));
        r.insert("base".into(), unit_or(base_q));
        r.insert("rank".into(), rank);
        Ok(r)
    }

    fn history(&mut self) -> rhai::Array {
        self.0
            .history
            .iter()
            .map(|obs| {
                let m: Map = obs
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().into(),
                            v.map(Dynamic::from_float).unwrap_or(Dynamic::UNIT),
                        )
                    })
                    .collect();
                Dynamic::from_map(m)
            })
            .collect()
    }
}

fn decision(action: &str, reason: impl Into<String>) -> Map {
    let mut m = Map::new();
    m.insert("action".into(), action.into());
    m.insert("reason".into(), reason.into().into());
    m
}

fn to_f64(v: &Dynamic) -> Option<f64> {
    if v.is_unit() {
        None
    } else if let Ok(f) = v.as_float() {
        Some(f)
    } else if let Ok(i) = v.as_int() {
        Some(i as f64)
    } else {
        v.as_bool().ok().map(|b| if b { 1.0 } else { 0.0 })
    }
}

/// Registers the context types and the policy helper functions on `engine`.
pub fn register(engine: &mut Engine) {
    engine
        .register_type_with_name::<PolicyContext>("Context")
        .register_get("step", |c: &mut PolicyContext| c.0.step as i64)
        .register_get("weight", |c: &mut PolicyContext| c.0.weight as i64)
        .register_get("steps", |c: &mut PolicyContext| {
            c.0.steps.iter().map(|w| Dynamic::from_int(*w as i64)).collect::<rhai::Array>()
        })
        .register_get("is_last_step", |c: &mut PolicyContext| c.0.step + 1 >= c.0.steps.len())
        .register_get("time_in_step", |c: &mut PolicyContext| c.0.time_in_step_secs)
        .register_get("elapsed", |c: &mut PolicyContext| c.0.elapsed_secs)
        .register_get("service", |c: &mut PolicyContext| c.0.service.clone())
        .register_get("params", |c: &mut PolicyContext| c.0.params.clone())
        .register_get("history", PolicyContext::history)
        .register_get("canary", |c: &mut PolicyContext| TrackView {
            data: c.0.clone(),
            track: Track::Canary,
        })
        .register_get("stable", |c: &mut PolicyContext| TrackView {
            data: c.0.clone(),
            track: Track::Stable,
        })
        .register_fn("param", |c: &mut PolicyContext, name: &str, default: Dynamic| {
            c.0.params.get(name).cloned().unwrap_or(default)
        })
        .register_fn("query", PolicyContext::query)
        .register_fn("has_query", |c: &mut PolicyContext, name: &str| {
            matches!(c.0.facts.queries.get(name), Some(Some(v)) if v.is_finite())
        })
        // Why a value is missing: the error of a query that failed, `()` when it answered
        // (with or without data). Names: a named query's, or `canary.p95`-style built-ins.
        .register_fn("query_error", |c: &mut PolicyContext, name: &str| {
            c.0.facts
                .failed
                .get(name)
                .map_or(Dynamic::UNIT, |e| e.clone().into())
        })
        .register_fn("error_test", PolicyContext::error_test)
        .register_fn("error_test", |c: &mut PolicyContext| c.error_test(Map::new()))
        .register_fn("latency_test", PolicyContext::latency_test)
        .register_fn("latency_test", |c: &mut PolicyContext| c.latency_test(Map::new()))
        .register_fn("error_bounds", PolicyContext::error_bounds)
        .register_fn("error_bounds", |c: &mut PolicyContext| c.error_bounds(Map::new()))
        .register_fn("baseline", |c: &mut PolicyContext, min: f64| c.baseline(min))
        .register_fn("baseline", |c: &mut PolicyContext, min: i64| c.baseline(min as f64))
        .register_fn("streak", PolicyContext::streak)
        .register_fn("latency_check", PolicyContext::latency_check)
        .register_fn(
            "latency_check",
            |c: &mut PolicyContext, b: Map, q: &str, inc: f64, min: i64| {
                c.latency_check(b, q, inc, min as f64)
            },
        );

    engine.register_type_with_name::<TrackView>("Track");
    for field in [
        "requests",
        "errors",
        "request_rate",
        "error_rate",
        "success_rate",
        "p50",
        "p95",
        "p99",
    ] {
        engine.register_get(field, move |t: &mut TrackView| t.get(field));
    }
    engine
        .register_fn("has", |t: &mut TrackView, field: &str| {
            t.value(field).is_some_and(f64::is_finite)
        })
        .register_get("name", |t: &mut TrackView| t.track.as_str().to_string())
        .register_get("ready_pods", |t: &mut TrackView| t.pods().ready as i64)
        .register_get("desired_pods", |t: &mut TrackView| t.pods().desired as i64)
        .register_get("restarts", |t: &mut TrackView| t.pods().restarts as i64)
        .register_get("crash_looping", |t: &mut TrackView| t.pods().crash_looping);

    // Decisions.
    engine
        .register_fn("advance", || decision("advance", "policy checks passed"))
        .register_fn("advance", |r: &str| decision("advance", r))
        .register_fn("advance_to", |w: i64| {
            let mut m = decision("advance", format!("advance to {w}%"));
            m.insert("to_weight".into(), w.into());
            m
        })
        .register_fn("advance_to", |w: i64, r: &str| {
            let mut m = decision("advance", r);
            m.insert("to_weight".into(), w.into());
            m
        })
        .register_fn("hold", |r: &str| decision("hold", r))
        .register_fn("pause", |r: &str| decision("pause", r))
        .register_fn("rollback", |r: &str| decision("rollback", r))
        .register_fn("promote", || decision("promote", "policy promoted"))
        .register_fn("promote", |r: &str| decision("promote", r));

    // Observations recorded in history and shown by `status`.
    engine.register_fn("observe", |name: &str, value: Dynamic| {
        record(name, to_f64(&value))
    });

    // Formatting helpers for reasons.
    engine
        .register_fn("pct", |x: f64| {
            format!("{}%", (x * 10000.0).round() / 100.0)
        })
        .register_fn("mins", |secs: f64| format!("{}m", (secs / 60.0).floor()))
        .register_fn("mins", |secs: i64| format!("{}m", secs / 60));

    // Comparison helpers: canary vs stable.
    engine
        .register_fn("ratio", |a: f64, b: f64| -> RhaiResult<f64> {
            if b.abs() < f64::EPSILON || !a.is_finite() || !b.is_finite() {
                Err(no_data(format!("ratio({a}, {b}) has no finite value")))
            } else {
                Ok(a / b)
            }
        })
        .register_fn("delta", |a: f64, b: f64| a - b)
        .register_fn("relative_increase", |a: f64, b: f64| -> RhaiResult<f64> {
            if b.abs() < f64::EPSILON || !a.is_finite() || !b.is_finite() {
                Err(no_data(format!(
                    "relative_increase({a}, {b}) has no finite value"
                )))
            } else {
                Ok((a - b) / b)
            }
        });
}
