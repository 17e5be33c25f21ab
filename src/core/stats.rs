//! Statistics for canary analysis: pure functions, no I/O (randomness only from seeds).
//!
//! Why this module exists: per-window threshold gates ("success ≥ 99% in the
//! last minute") misbehave at canary traffic levels. At 60 canary requests per
//! minute a single error is already 1.67%, so a perfectly healthy 0.5%-error
//! canary fails such a gate in roughly a quarter of all windows. The tests here
//! accumulate evidence over the whole analysis window instead and decide only
//! when the evidence is strong enough either way:
//!
//! * [`ErrorShareTest`] — Wald SPRT on *which version produced each error*,
//!   given the actual traffic split. It needs only four counters and works at
//!   any weight, because the stable fleet acts as a concurrent baseline.
//! * [`sprt_bernoulli`] — classic one-sample SPRT against a fixed error rate,
//!   for when no baseline is available.
//! * [`RankTest`] — Mann–Whitney U with a Hodges–Lehmann shift estimate for
//!   continuous metrics such as latency (the approach Kayenta popularised).
//! * [`wilson_upper`], [`normal_cdf`], [`normal_quantile`], [`quantile`] —
//!   building blocks, exposed because policies and reports want them too.
//!
//! Every test returns a [`TestOutcome`] whose verdict is three-valued: missing,
//! invalid or insufficient data is always [`Verdict::Inconclusive`], never a
//! silent pass.

use crate::core::decision::Observations;
use std::cmp::Ordering;
use std::f64::consts::PI;

/// Three-valued decision. `Inconclusive` is a first-class answer: "keep
/// watching" is the right response to too little evidence, and callers decide
/// what to do when a deadline runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

impl Verdict {
    /// Stable lowercase name, suitable for logs, JSON and policy scripts.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Result of one statistical test, carrying the numbers behind the verdict so
/// that operators can see *why* a rollout was stopped or promoted.
#[derive(Debug, Clone, PartialEq)]
pub struct TestOutcome {
    pub verdict: Verdict,
    /// Log-likelihood ratio for SPRT tests, z score for Mann–Whitney; NaN when
    /// the test could not be computed.
    pub statistic: f64,
    /// One-sided p-value where the test has one (Mann–Whitney); SPRT tests use
    /// likelihood-ratio boundaries instead and leave this `None`.
    pub p_value: Option<f64>,
    /// Effect estimate: canary/stable error-rate ratio, observed error rate,
    /// or Hodges–Lehmann shift, depending on the test. `None` when undefined.
    pub estimate: Option<f64>,
    /// Sample size used: canary requests (rounded down) or canary sample count.
    pub samples: u64,
    /// One human sentence explaining the verdict, with the numbers.
    pub reason: String,
}

impl TestOutcome {
    fn inconclusive(samples: u64, reason: impl Into<String>) -> Self {
        TestOutcome {
            verdict: Verdict::Inconclusive,
            statistic: f64::NAN,
            p_value: None,
            estimate: None,
            samples,
            reason: reason.into(),
        }
    }
}

/// Convert a possibly fractional counter (Prometheus `increase()` extrapolates)
/// to a sample count; negative/NaN become 0, huge values saturate.
fn count_u64(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        x.floor() as u64 // `as` saturates at u64::MAX
    } else {
        0
    }
}

/// Format a counter: integers without decimals, extrapolated counts with one.
fn fmt_count(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{:.0}", x)
    } else {
        format!("{:.1}", x)
    }
}

fn fmt_pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn fmt_p(p: f64) -> String {
    if p >= 0.001 {
        format!("{:.4}", p)
    } else {
        format!("{:.2e}", p)
    }
}

fn valid_prob(p: f64) -> bool {
    p.is_finite() && p > 0.0 && p < 1.0
}

/// Wald thresholds `(lower, upper)` = `(ln(β/(1−α)), ln((1−β)/α))`.
/// Why these: they bound the error rates by roughly α and β without knowing
/// the sample size in advance, so the test may be checked after every scrape.
fn wald_bounds(alpha: f64, beta: f64) -> (f64, f64) {
    ((beta / (1.0 - alpha)).ln(), ((1.0 - beta) / alpha).ln())
}

// ---------------------------------------------------------------------------
// Error-share SPRT (canary vs stable under a weighted split)
// ---------------------------------------------------------------------------

/// Sequential test "is the canary's error rate at least `max_ratio` × stable?"
/// based on the canary's share of all errors.
///
/// Why a share test: with canary traffic share `w`, if both versions are
/// equally good each error comes from the canary with probability `w`. That
/// turns a two-sample comparison into a one-sample binomial question which
/// needs only counts and the weight, and it automatically tracks incidents that
/// hit both versions (a shared dependency failing raises both counts and does
/// not blame the canary).
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorShareTest {
    /// H1: canary error rate ≥ `max_ratio` × stable error rate (must be > 1).
    pub max_ratio: f64,
    /// Tolerated probability of failing a canary that is as good as stable.
    pub alpha: f64,
    /// Tolerated probability of passing a canary that is `max_ratio` × worse.
    pub beta: f64,
    /// Canary requests required before a Pass is allowed (Fail may come
    /// earlier: a very bad canary should be stopped as soon as it is evident).
    pub min_canary_requests: u64,
    /// Absolute error-rate tolerance: the canary also passes when the upper
    /// (1−α) Wilson bound of its own error rate is at or below this. Why: with
    /// very few errors on either side the share test cannot conclude, yet a
    /// canary that demonstrably stays under 1% errors is fine to promote.
    /// Trade-off: this arm ignores the stable baseline, so a canary at 0.4%
    /// can pass while stable runs at 0.05% unless the share test fails it
    /// first. Set it from the SLO, or to 0 to disable the arm.
    pub max_error_rate: f64,
}

impl Default for ErrorShareTest {
    fn default() -> Self {
        ErrorShareTest {
            max_ratio: 2.0,
            alpha: 0.05,
            beta: 0.2,
            min_canary_requests: 500,
            max_error_rate: 0.01,
        }
    }
}

/// A canary must have produced at least this many errors before the share test
/// may fail it: one or two errors are too easy to get by bad luck, and the
/// Wald bounds assume a continuous stream of observations, not a lucky first one.
pub const MIN_CANARY_ERRORS_TO_FAIL: f64 = 3.0;

impl ErrorShareTest {
    fn config_error(&self) -> Option<String> {
        if !(self.max_ratio.is_finite() && self.max_ratio > 1.0) {
            return Some(format!("max_ratio must be > 1, got {}", self.max_ratio));
        }
        if !valid_prob(self.alpha) || !valid_prob(self.beta) || self.alpha + self.beta >= 1.0 {
            return Some(format!(
                "alpha and beta must be in (0,1) with alpha+beta < 1, got alpha={} beta={}",
                self.alpha, self.beta
            ));
        }
        if !(self.max_error_rate.is_finite() && (0.0..=1.0).contains(&self.max_error_rate)) {
            return Some(format!(
                "max_error_rate must be in [0,1], got {}",
                self.max_error_rate
            ));
        }
        None
    }

    /// Evaluate counters accumulated since the start of the analysis window
    /// (e.g. the current rollout step). Counters may be fractional.
    ///
    /// Invalid input (NaN, infinite, negative, errors > requests) or zero
    /// traffic on either side yields `Inconclusive`, never `Pass`.
    pub fn evaluate(
        &self,
        canary_requests: f64,
        canary_errors: f64,
        stable_requests: f64,
        stable_errors: f64,
    ) -> TestOutcome {
        let samples = count_u64(canary_requests);
        if let Some(e) = self.config_error() {
            return TestOutcome::inconclusive(samples, format!("invalid test configuration: {e}"));
        }
        let all = [
            canary_requests,
            canary_errors,
            stable_requests,
            stable_errors,
        ];
        if all.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return TestOutcome::inconclusive(
                samples,
                format!(
                    "invalid counters (canary {}/{} errors, stable {}/{} errors): must be finite and non-negative",
                    canary_errors, canary_requests, stable_errors, stable_requests
                ),
            );
        }
        if canary_errors > canary_requests || stable_errors > stable_requests {
            return TestOutcome::inconclusive(
                samples,
                format!(
                    "invalid counters: more errors than requests (canary {}/{}, stable {}/{})",
                    fmt_count(canary_errors),
                    fmt_count(canary_requests),
                    fmt_count(stable_errors),
                    fmt_count(stable_requests)
                ),
            );
        }
        if canary_requests <= 0.0 || stable_requests <= 0.0 {
            return TestOutcome::inconclusive(
                samples,
                format!(
                    "no data: {} canary and {} stable requests in the window",
                    fmt_count(canary_requests),
                    fmt_count(stable_requests)
                ),
            );
        }
        let w = canary_requests / (canary_requests + stable_requests);
        if !(w > 0.0 && w < 1.0) {
            return TestOutcome::inconclusive(
                samples,
                format!("no data: canary traffic share {w} leaves nothing to compare"),
            );
        }

        let k = self.max_ratio;
        let x = canary_errors;
        let n_err = canary_errors + stable_errors;
        let p1 = k * w / (k * w + 1.0 - w);
        let llr = x * (p1 / w).ln() + (n_err - x) * ((1.0 - p1) / (1.0 - w)).ln();
        let (lower, upper) = wald_bounds(self.alpha, self.beta);

        let canary_rate = x / canary_requests;
        let stable_rate = stable_errors / stable_requests;
        let ratio = if stable_errors > 0.0 {
            Some(canary_rate / stable_rate)
        } else {
            None
        };
        let ratio_txt = match ratio {
            Some(r) => format!("ratio {:.2}", r),
            None => "ratio undefined".to_string(),
        };
        let rates = format!(
            "canary {}/{} errors ({}) vs stable {}/{} ({}), {}, canary share {}",
            fmt_count(x),
            fmt_count(canary_requests),
            fmt_pct(canary_rate),
            fmt_count(stable_errors),
            fmt_count(stable_requests),
            fmt_pct(stable_rate),
            ratio_txt,
            fmt_pct(w)
        );
        let out = |verdict, reason: String| TestOutcome {
            verdict,
            statistic: llr,
            p_value: None,
            estimate: ratio,
            samples,
            reason,
        };

        // Fail first: evidence against the canary overrides any pass arm.
        if llr >= upper && x >= MIN_CANARY_ERRORS_TO_FAIL {
            return out(
                Verdict::Fail,
                format!(
                    "{rates}: LLR {:.2} ≥ {:.2}, canary error rate is likely ≥ {}× stable",
                    llr, upper, k
                ),
            );
        }

        let enough = canary_requests >= self.min_canary_requests as f64;
        let ub = wilson_upper(x, canary_requests, 1.0 - self.alpha);
        if enough && llr <= lower {
            return out(
                Verdict::Pass,
                format!(
                    "{rates}: LLR {:.2} ≤ {:.2}, canary error rate is likely below {}× stable",
                    llr, lower, k
                ),
            );
        }
        if let Some(ub) = ub.filter(|&u| enough && u <= self.max_error_rate) {
            return out(
                Verdict::Pass,
                format!(
                    "{rates}: {:.0}% upper bound of canary error rate {} ≤ tolerance {}",
                    (1.0 - self.alpha) * 100.0,
                    fmt_pct(ub),
                    fmt_pct(self.max_error_rate)
                ),
            );
        }

        let mut missing = Vec::new();
        if !enough {
            missing.push(format!(
                "{}/{} canary requests",
                fmt_count(canary_requests.floor()),
                self.min_canary_requests
            ));
        }
        if llr >= upper {
            missing.push(format!(
                "LLR {:.2} ≥ {:.2} but only {} canary errors (need {})",
                llr,
                upper,
                fmt_count(x),
                MIN_CANARY_ERRORS_TO_FAIL
            ));
        } else {
            missing.push(format!(
                "LLR {:.2} between {:.2} and {:.2}",
                llr, lower, upper
            ));
        }
        if let Some(ub) = ub.filter(|&u| u > self.max_error_rate) {
            missing.push(format!(
                "error-rate upper bound {} > tolerance {}",
                fmt_pct(ub),
                fmt_pct(self.max_error_rate)
            ));
        }
        out(
            Verdict::Inconclusive,
            format!("{rates}: not yet decided ({})", missing.join("; ")),
        )
    }
}

// ---------------------------------------------------------------------------
// One-sample Bernoulli SPRT
// ---------------------------------------------------------------------------

/// Classic Wald SPRT on Bernoulli outcomes: H0 error rate `p0` vs H1 `p1 > p0`.
///
/// Each error adds ln(p1/p0), each success ln((1−p1)/(1−p0)); the test accepts
/// H1 (→ `Fail`) at ln((1−β)/α) and H0 (→ `Pass`) at ln(β/(1−α)). Why: it
/// needs fewer samples on average than a fixed-size test and may be evaluated
/// after every scrape. Use it when there is no baseline to compare against;
/// `p0` then has to be a known-good absolute error rate.
///
/// `estimate` is the observed error rate, `samples` the (rounded down) trials.
pub fn sprt_bernoulli(
    errors: f64,
    trials: f64,
    p0: f64,
    p1: f64,
    alpha: f64,
    beta: f64,
) -> TestOutcome {
    let samples = count_u64(trials);
    if !valid_prob(p0) || !valid_prob(p1) || p1 <= p0 {
        return TestOutcome::inconclusive(
            samples,
            format!("invalid test configuration: need 0 < p0 < p1 < 1, got p0={p0} p1={p1}"),
        );
    }
    if !valid_prob(alpha) || !valid_prob(beta) || alpha + beta >= 1.0 {
        return TestOutcome::inconclusive(
            samples,
            format!("invalid test configuration: alpha={alpha} beta={beta}"),
        );
    }
    if !errors.is_finite() || !trials.is_finite() || errors < 0.0 || errors > trials {
        return TestOutcome::inconclusive(
            samples,
            format!("invalid counters: {errors} errors in {trials} trials"),
        );
    }
    if trials <= 0.0 {
        return TestOutcome::inconclusive(samples, "no data: 0 trials");
    }
    let llr = errors * (p1 / p0).ln() + (trials - errors) * ((1.0 - p1) / (1.0 - p0)).ln();
    let (lower, upper) = wald_bounds(alpha, beta);
    let rate = errors / trials;
    let head = format!(
        "{}/{} errors ({}), H0 {} vs H1 {}",
        fmt_count(errors),
        fmt_count(trials),
        fmt_pct(rate),
        fmt_pct(p0),
        fmt_pct(p1)
    );
    let (verdict, reason) = if llr >= upper {
        (
            Verdict::Fail,
            format!("{head}: LLR {:.2} ≥ {:.2}, accept H1", llr, upper),
        )
    } else if llr <= lower {
        (
            Verdict::Pass,
            format!("{head}: LLR {:.2} ≤ {:.2}, accept H0", llr, lower),
        )
    } else {
        (
            Verdict::Inconclusive,
            format!(
                "{head}: LLR {:.2} between {:.2} and {:.2}, keep sampling",
                llr, lower, upper
            ),
        )
    };
    TestOutcome {
        verdict,
        statistic: llr,
        p_value: None,
        estimate: Some(rate),
        samples,
        reason,
    }
}

// ---------------------------------------------------------------------------
// Wilson bound, normal distribution
// ---------------------------------------------------------------------------

/// One-sided upper confidence bound (Wilson score) of a binomial proportion
/// `successes_or_errors / n` at the given `confidence` (e.g. 0.95).
///
/// Why Wilson: unlike the normal (Wald) interval it stays sensible at 0 events
/// and at small n, which is exactly the low-traffic canary case — 0 errors in
/// 300 requests gives ≈ 0.9%, not 0%.
///
/// Returns `None` for n ≤ 0, non-finite inputs, a count outside [0, n] or a
/// confidence outside (0, 1).
pub fn wilson_upper(successes_or_errors: f64, n: f64, confidence: f64) -> Option<f64> {
    let x = successes_or_errors;
    if !x.is_finite() || !n.is_finite() || !confidence.is_finite() {
        return None;
    }
    if n <= 0.0 || x < 0.0 || x > n || confidence <= 0.0 || confidence >= 1.0 {
        return None;
    }
    let z = normal_quantile(confidence);
    let p = x / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = p + z2 / (2.0 * n);
    let spread = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).max(0.0).sqrt();
    Some(((centre + spread) / denom).clamp(0.0, 1.0))
}

/// Standard normal CDF Φ(z): absolute error ~1e-16, relative error < 1e-12
/// in the lower tail (checked against scipy down to z = −37).
///
/// Why hand-rolled: std has no erf. Near the centre a positive-term series
/// avoids cancellation; in the tails a continued fraction for the Mills ratio
/// keeps *relative* accuracy, which matters for small p-values.
pub fn normal_cdf(z: f64) -> f64 {
    if z.is_nan() {
        return f64::NAN;
    }
    if z == f64::INFINITY {
        return 1.0;
    }
    if z == f64::NEG_INFINITY {
        return 0.0;
    }
    let a = z.abs();
    if a < 3.0 {
        // Φ(z) = 1/2 + φ(z) · Σ z^(2n+1) / (2n+1)!!
        let pdf = (-0.5 * z * z).exp() / (2.0 * PI).sqrt();
        let mut term = z;
        let mut sum = z;
        let z2 = z * z;
        let mut n = 1.0;
        while term.abs() > 1e-17 * sum.abs() {
            term *= z2 / (2.0 * n + 1.0);
            sum += term;
            n += 1.0;
            if n > 500.0 {
                break;
            }
        }
        (0.5 + pdf * sum).clamp(0.0, 1.0)
    } else {
        let tail = upper_tail(a);
        if z > 0.0 { 1.0 - tail } else { tail }
    }
}

/// Q(a) = 1 − Φ(a) for a ≥ 3 via the continued fraction
/// φ(a) / (a + 1/(a + 2/(a + 3/(a + …)))), evaluated bottom-up.
fn upper_tail(a: f64) -> f64 {
    if a > 40.0 {
        return 0.0;
    }
    let mut f = a;
    for k in (1..=120).rev() {
        f = a + k as f64 / f;
    }
    let pdf = (-0.5 * a * a).exp() / (2.0 * PI).sqrt();
    pdf / f
}

/// Standard normal quantile Φ⁻¹(p): Acklam's rational approximation refined
/// by Halley steps against [`normal_cdf`], so round trips hold to ~1e-12.
/// Returns ±∞ at 1/0 and NaN outside [0, 1].
pub fn normal_quantile(p: f64) -> f64 {
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    if p > 0.5 {
        // Work in the lower tail where p has full relative precision.
        return -normal_quantile(1.0 - p);
    }
    const A: [f64; 6] = [
        -3.969683028665376e+01,
        2.209460984245205e+02,
        -2.759285104469687e+02,
        1.38357751867269e+02,
        -3.066479806614716e+01,
        2.506628277459239e+00,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e+01,
        1.615858368580409e+02,
        -1.556989798598866e+02,
        6.680131188771972e+01,
        -1.328068155288572e+01,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-03,
        -3.223964580411365e-01,
        -2.400758277161838e+00,
        -2.549732539343734e+00,
        4.374664141464968e+00,
        2.938163982698783e+00,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-03,
        3.224671290700398e-01,
        2.445134137142996e+00,
        3.754408661907416e+00,
    ];
    const P_LOW: f64 = 0.02425;
    let mut x = if p < P_LOW {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    };
    // Halley refinement against the accurate CDF; skipped in the extreme tail
    // (p below ~1e-300) where exp(x²/2) would overflow.
    for _ in 0..2 {
        let e = normal_cdf(x) - p;
        let log_u = 0.5 * x * x + 0.5 * (2.0 * PI).ln();
        if log_u > 700.0 {
            break;
        }
        let u = e * log_u.exp();
        let step = u / (1.0 + x * u / 2.0);
        if !step.is_finite() {
            break;
        }
        x -= step;
    }
    x
}

// ---------------------------------------------------------------------------
// Quantiles
// ---------------------------------------------------------------------------

/// Sample quantile with linear interpolation between order statistics
/// (Hyndman–Fan type 7, the numpy/R default). Non-finite samples are ignored.
/// Returns `None` when no finite sample remains or `q` is outside [0, 1].
///
/// This is what naive per-window policies use ("p99 of this minute < 300ms");
/// it is kept for such policies and for comparison in tests and docs.
pub fn quantile(samples: &[f64], q: f64) -> Option<f64> {
    if !q.is_finite() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(quantile_sorted(&v, q))
}

fn quantile_sorted(v: &[f64], q: f64) -> f64 {
    let h = (v.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    v[lo] + (h - lo as f64) * (v[hi] - v[lo])
}

// ---------------------------------------------------------------------------
// Mann–Whitney U + Hodges–Lehmann
// ---------------------------------------------------------------------------

/// Rank test for continuous metrics (latency): is the canary stochastically
/// greater (slower) than stable, by a margin that matters?
///
/// Why rank-based: latency is skewed and heavy-tailed; ranks make the test
/// distribution-free and robust to outliers. Why the extra shift threshold:
/// with thousands of samples a 1% slowdown is "significant" but harmless, so a
/// Fail needs both significance and a practically relevant Hodges–Lehmann
/// shift.
#[derive(Debug, Clone, PartialEq)]
pub struct RankTest {
    /// One-sided significance level.
    pub alpha: f64,
    /// Finite samples required on *each* side before any verdict.
    pub min_samples: usize,
    /// Tolerated shift relative to |median(stable)|, e.g. 0.10 = +10%.
    pub max_shift: f64,
}

impl Default for RankTest {
    fn default() -> Self {
        RankTest {
            alpha: 0.05,
            min_samples: 20,
            max_shift: 0.10,
        }
    }
}

/// Mann–Whitney U statistic details (canary = first sample).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U of the first sample: number of pairs (x_i, y_j) with x_i > y_j,
    /// ties counting ½.
    pub u: f64,
    /// Continuity-corrected z for the alternative "first sample greater".
    pub z: f64,
    /// One-sided p-value (normal approximation, tie-corrected variance).
    pub p_value: f64,
}

/// One-sided Mann–Whitney U test "x stochastically greater than y", normal
/// approximation with tie correction and continuity correction (matches
/// `scipy.stats.mannwhitneyu(x, y, alternative="greater", method="asymptotic")`).
/// Inputs must be finite; returns `None` if either side is empty or any
/// value is non-finite.
pub fn mann_whitney_greater(x: &[f64], y: &[f64]) -> Option<MannWhitney> {
    if x.is_empty() || y.is_empty() || x.iter().chain(y).any(|v| !v.is_finite()) {
        return None;
    }
    let n1 = x.len() as f64;
    let n2 = y.len() as f64;
    let n = n1 + n2;
    let mut all: Vec<(f64, bool)> = x
        .iter()
        .map(|&v| (v, true))
        .chain(y.iter().map(|&v| (v, false)))
        .collect();
    // partial_cmp (not total_cmp) so that -0.0 and 0.0 tie; all values finite.
    all.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(Ordering::Equal));
    let mut rank_sum_x = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i + 1;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let t = (j - i) as f64;
        let avg_rank = (i + 1 + j) as f64 / 2.0; // ranks i+1..=j
        let in_x = all[i..j].iter().filter(|e| e.1).count() as f64;
        rank_sum_x += avg_rank * in_x;
        tie_term += t * t * t - t;
        i = j;
    }
    let u = rank_sum_x - n1 * (n1 + 1.0) / 2.0;
    let mu = n1 * n2 / 2.0;
    let var = if n > 1.0 {
        n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)))
    } else {
        0.0
    };
    let (z, p) = if var > 0.0 {
        let z = (u - mu - 0.5) / var.sqrt();
        (z, normal_cdf(-z))
    } else {
        // All values tied: no evidence of any difference.
        (0.0, 1.0)
    };
    Some(MannWhitney { u, z, p_value: p })
}

/// Hodges–Lehmann two-sample shift estimate: median of all pairwise
/// differences x_i − y_j. Returns `None` if either side is empty or contains
/// non-finite values.
///
/// Computed exactly without materialising the n·m differences: a binary search
/// over the ordered bit patterns of f64 with an O(n + m) two-pointer count per
/// step (≤ 64 steps), so 10k × 10k inputs cost ~1M operations after sorting.
pub fn hodges_lehmann(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.is_empty() || y.is_empty() || x.iter().chain(y).any(|v| !v.is_finite()) {
        return None;
    }
    let mut xs = x.to_vec();
    let mut ys = y.to_vec();
    xs.sort_by(f64::total_cmp);
    ys.sort_by(f64::total_cmp);
    let m = xs.len() as u128 * ys.len() as u128;
    let k_lo = m.div_ceil(2); // 1-based order statistic(s) forming the median
    let k_hi = m / 2 + 1;
    let a = kth_difference(&xs, &ys, k_lo);
    let b = if k_hi == k_lo {
        a
    } else {
        kth_difference(&xs, &ys, k_hi)
    };
    Some(0.5 * a + 0.5 * b + 0.0)
}

/// Monotone map f64 → u64 (for non-NaN values) so integer order = float order.
fn f64_key(v: f64) -> u64 {
    let b = v.to_bits();
    if b >> 63 == 1 { !b } else { b | (1 << 63) }
}

fn key_f64(k: u64) -> f64 {
    if k >> 63 == 1 {
        f64::from_bits(k & !(1 << 63))
    } else {
        f64::from_bits(!k)
    }
}

/// Number of pairs with xs[i] − ys[j] ≤ d (both sorted ascending).
fn count_le(xs: &[f64], ys: &[f64], d: f64) -> u128 {
    let mut j = 0usize;
    let mut count = 0u128;
    for &xi in xs {
        // For fixed i the qualifying j form a suffix whose start only moves right
        // as xi grows (floating subtraction is monotone in each argument).
        while j < ys.len() && xi - ys[j] > d {
            j += 1;
        }
        count += (ys.len() - j) as u128;
    }
    count
}

/// k-th smallest (1-based) pairwise difference xs[i] − ys[j].
fn kth_difference(xs: &[f64], ys: &[f64], k: u128) -> f64 {
    let mut lo = f64_key(xs[0] - ys[ys.len() - 1]);
    let mut hi = f64_key(xs[xs.len() - 1] - ys[0]);
    // Invariant: count_le(key_f64(hi)) ≥ k; find the smallest such key.
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if count_le(xs, ys, key_f64(mid)) >= k {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    key_f64(hi)
}

impl RankTest {
    /// One-sided Mann–Whitney U test "canary latency stochastically greater
    /// than stable" (normal approximation, tie and continuity corrected) with
    /// the Hodges–Lehmann shift (canary − stable) as `estimate`.
    ///
    /// Non-finite samples are dropped and counted in the reason. Fewer than
    /// `min_samples` finite samples on either side → `Inconclusive`. `Fail`
    /// when p < alpha AND shift > max_shift × |median(stable)|; `Pass`
    /// otherwise (including a canary that is faster).
    pub fn evaluate(&self, canary: &[f64], stable: &[f64]) -> TestOutcome {
        let c: Vec<f64> = canary.iter().copied().filter(|v| v.is_finite()).collect();
        let s: Vec<f64> = stable.iter().copied().filter(|v| v.is_finite()).collect();
        let samples = c.len() as u64;
        let dropped = (canary.len() - c.len()) + (stable.len() - s.len());
        let dropped_txt = if dropped > 0 {
            format!(", {dropped} non-finite samples dropped")
        } else {
            String::new()
        };
        if !(valid_prob(self.alpha) && self.max_shift.is_finite() && self.max_shift >= 0.0) {
            return TestOutcome::inconclusive(
                samples,
                format!(
                    "invalid test configuration: alpha={} max_shift={}",
                    self.alpha, self.max_shift
                ),
            );
        }
        let need = self.min_samples.max(1);
        if c.len() < need || s.len() < need {
            let what = if c.is_empty() || s.is_empty() {
                "no data"
            } else {
                "too few samples"
            };
            return TestOutcome::inconclusive(
                samples,
                format!(
                    "{what}: {} canary and {} stable samples, need {} each{dropped_txt}",
                    c.len(),
                    s.len(),
                    need
                ),
            );
        }
        // Both sides non-empty and finite, so these cannot fail.
        let (Some(mw), Some(shift), Some(med)) = (
            mann_whitney_greater(&c, &s),
            hodges_lehmann(&c, &s),
            quantile(&s, 0.5),
        ) else {
            return TestOutcome::inconclusive(samples, "internal error computing rank test");
        };
        let limit = self.max_shift * med.abs();
        let rel = if med != 0.0 {
            format!(" ({:+.1}%)", shift / med.abs() * 100.0)
        } else {
            String::new()
        };
        let head = format!(
            "{} canary vs {} stable samples{dropped_txt}: shift {:.4}{rel} vs stable median {:.4}, z {:.2}, p {}",
            c.len(),
            s.len(),
            shift,
            med,
            mw.z,
            fmt_p(mw.p_value)
        );
        let significant = mw.p_value < self.alpha;
        let relevant = shift > limit;
        let (verdict, why) = match (significant, relevant) {
            (true, true) => (
                Verdict::Fail,
                format!(
                    "canary is significantly slower by more than the {:.4} tolerance",
                    limit
                ),
            ),
            (true, false) => (
                Verdict::Pass,
                format!(
                    "difference is significant but within the {:.4} tolerance",
                    limit
                ),
            ),
            (false, _) => (
                Verdict::Pass,
                format!("no significant increase at alpha {}", self.alpha),
            ),
        };
        TestOutcome {
            verdict,
            statistic: mw.z,
            p_value: Some(mw.p_value),
            estimate: Some(shift),
            samples,
            reason: format!("{head}; {why}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Anytime-valid evidence over a whole rollout
// ---------------------------------------------------------------------------
//
// Why: a test that restarts at every step and is checked at every evaluation spends its α
// once per step, and a confidence bound checked every 30 s is exceeded by luck sooner or
// later. The tests below are built on nonnegative supermartingales (likelihood ratios and
// mixtures of them) under the null hypothesis, so by Ville's inequality the chance that
// they *ever* cross 1/α — at any evaluation, over all steps — is at most α. Evidence is
// carried from one evaluation to the next in [`Evidence`], a handful of numbers that the
// policy layer records with each evaluation's observations.

/// Counters of the current step, as the facts give them (since the step started).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepCounts {
    pub canary_requests: f64,
    pub canary_errors: f64,
    pub stable_requests: f64,
    pub stable_errors: f64,
}

impl StepCounts {
    pub const ZERO: StepCounts = StepCounts {
        canary_requests: 0.0,
        canary_errors: 0.0,
        stable_requests: 0.0,
        stable_errors: 0.0,
    };

    /// `None` unless every counter is finite, non-negative and errors ≤ requests: bad data
    /// adds no evidence either way.
    pub fn new(
        canary_requests: f64,
        canary_errors: f64,
        stable_requests: f64,
        stable_errors: f64,
    ) -> Option<StepCounts> {
        let ok = |n: f64, e: f64| n.is_finite() && e.is_finite() && e >= 0.0 && e <= n;
        (ok(canary_requests, canary_errors) && ok(stable_requests, stable_errors)).then_some(
            StepCounts {
                canary_requests,
                canary_errors,
                stable_requests,
                stable_errors,
            },
        )
    }
}

/// What one evaluation hands to the next so that evidence accumulates over the whole rollout
/// instead of restarting at each step.
///
/// It is recorded as a few observations of the evaluation ([`Evidence::record`]), so it lives
/// in the rollout state in the cluster and survives a restart of the plugin, and the state
/// grows by these numbers per evaluation, never by the rollout's length: only the most
/// recent evaluation that carries them is read back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evidence {
    /// Step index of the evaluation that recorded it.
    pub step: usize,
    /// Log-likelihood ratio of the error-share test over the rollout so far, and the part of
    /// it that comes from the steps before `step`.
    pub error_llr: f64,
    pub error_llr_done: f64,
    /// Canary requests and errors over the rollout so far, and before `step`.
    pub canary_requests: f64,
    pub canary_requests_done: f64,
    pub canary_errors: f64,
    pub canary_errors_done: f64,
    /// Evaluations that used the evidence so far, this one included: tests checked on
    /// sliding windows spend their α per look ([`spent_alpha`]).
    pub looks: u64,
    /// The step's counters up to which the error test has bet (errors as whole numbers:
    /// a fraction waits for the next look). `None` when the evidence was recorded by a
    /// version that recomputed the step's ratio from its counters instead of betting look by
    /// look; the next error test continues from that ratio.
    pub tested: Option<StepCounts>,
}

impl Default for Evidence {
    fn default() -> Self {
        Evidence {
            step: 0,
            error_llr: 0.0,
            error_llr_done: 0.0,
            canary_requests: 0.0,
            canary_requests_done: 0.0,
            canary_errors: 0.0,
            canary_errors_done: 0.0,
            looks: 0,
            tested: Some(StepCounts::ZERO),
        }
    }
}

/// Observation names of [`Evidence`], in field order (`tested` as its four counters).
pub const EVIDENCE_KEYS: [&str; 12] = [
    "evidence_step",
    "evidence_error_llr",
    "evidence_error_llr_done",
    "evidence_canary_requests",
    "evidence_canary_requests_done",
    "evidence_canary_errors",
    "evidence_canary_errors_done",
    "evidence_looks",
    "evidence_tested_canary_requests",
    "evidence_tested_canary_errors",
    "evidence_tested_stable_requests",
    "evidence_tested_stable_errors",
];

impl Evidence {
    /// Reads the evidence back from an evaluation's observations; `None` when that evaluation
    /// did not record it (or recorded nonsense).
    pub fn from_observations(obs: &Observations) -> Option<Evidence> {
        let get = |k: &str| obs.get(k).copied().flatten().filter(|v| v.is_finite());
        let step = get(EVIDENCE_KEYS[0]).filter(|s| *s >= 0.0)?;
        Some(Evidence {
            step: step as usize,
            error_llr: get(EVIDENCE_KEYS[1])?,
            error_llr_done: get(EVIDENCE_KEYS[2])?,
            canary_requests: get(EVIDENCE_KEYS[3])?,
            canary_requests_done: get(EVIDENCE_KEYS[4])?,
            canary_errors: get(EVIDENCE_KEYS[5])?,
            canary_errors_done: get(EVIDENCE_KEYS[6])?,
            looks: get(EVIDENCE_KEYS[7]).unwrap_or(0.0).max(0.0) as u64,
            tested: (|| {
                StepCounts::new(
                    get(EVIDENCE_KEYS[8])?,
                    get(EVIDENCE_KEYS[9])?,
                    get(EVIDENCE_KEYS[10])?,
                    get(EVIDENCE_KEYS[11])?,
                )
            })(),
        })
    }

    /// The most recent evidence in `history` (oldest first). An evaluation whose policy threw
    /// before it ran a test records none; the one before it still counts.
    pub fn latest(history: &[Observations]) -> Option<Evidence> {
        history.iter().rev().find_map(Evidence::from_observations)
    }

    pub fn record(&self, obs: &mut Observations) {
        let t = self.tested;
        let values = [
            Some(self.step as f64),
            Some(self.error_llr),
            Some(self.error_llr_done),
            Some(self.canary_requests),
            Some(self.canary_requests_done),
            Some(self.canary_errors),
            Some(self.canary_errors_done),
            Some(self.looks as f64),
            t.map(|t| t.canary_requests),
            t.map(|t| t.canary_errors),
            t.map(|t| t.stable_requests),
            t.map(|t| t.stable_errors),
        ];
        for (k, v) in EVIDENCE_KEYS.iter().zip(values) {
            obs.insert(k.to_string(), v);
        }
    }

    /// Continues `previous` (`None` at the first evaluation) with this evaluation's step and
    /// the canary's step counters. A new step — or counters that went backwards, as after a
    /// reset — closes the previous segment: what it held becomes "done". Missing counters
    /// keep the evidence as it was.
    pub fn continue_from(
        previous: Option<Evidence>,
        step: usize,
        canary: Option<(f64, f64)>,
    ) -> Evidence {
        let mut e = previous.unwrap_or(Evidence {
            step,
            ..Evidence::default()
        });
        let seen_in_segment = e.canary_requests - e.canary_requests_done;
        let new_segment = e.step != step || canary.is_some_and(|(n, _)| n + 0.5 < seen_in_segment);
        if new_segment {
            e.step = step;
            e.error_llr_done = e.error_llr;
            e.canary_requests_done = e.canary_requests;
            e.canary_errors_done = e.canary_errors;
            e.tested = Some(StepCounts::ZERO);
        }
        if let Some((n, x)) = canary {
            e.canary_requests = e.canary_requests_done + n;
            e.canary_errors = e.canary_errors_done + x;
        }
        e
    }
}

/// Log-likelihood ratio of the error-share test for one step (constant weight): H1 "canary
/// error rate = `ratio` × stable" against H0 "equal rates", given which version produced
/// each error. `None` without traffic on both sides.
pub fn share_llr(c: &StepCounts, ratio: f64) -> Option<f64> {
    if c.canary_requests <= 0.0 || c.stable_requests <= 0.0 {
        return None;
    }
    let w = c.canary_requests / (c.canary_requests + c.stable_requests);
    if !(w > 0.0 && w < 1.0) {
        return None;
    }
    let p1 = ratio * w / (ratio * w + 1.0 - w);
    Some(c.canary_errors * (p1 / w).ln() + c.stable_errors * ((1.0 - p1) / (1.0 - w)).ln())
}

/// The same likelihood ratio when stable serves nothing (the 100% step): the canary's
/// errors against a known baseline rate `p0`, H1 = `ratio` × p0. Why this is the same test:
/// it is the limit of [`share_llr`] as the canary's share goes to 1 with p0 known.
/// `None` when ratio × p0 ≥ 1 or p0 is not a rate.
pub fn baseline_llr(canary_errors: f64, canary_requests: f64, p0: f64, ratio: f64) -> Option<f64> {
    let p1 = ratio * p0;
    if !(valid_prob(p0) && p1 < 1.0) || canary_requests <= 0.0 {
        return None;
    }
    Some(
        canary_errors * ratio.ln()
            + (canary_requests - canary_errors) * ((1.0 - p1) / (1.0 - p0)).ln(),
    )
}

/// Alternatives of the mixture behind [`rate_exceeds`] and [`rate_bounds`], as multiples of
/// the tested limit. Why a grid: it covers small and large effects with one closed form per
/// point and no special functions; it costs ln 7 ≈ 1.9 nats against knowing the effect.
const MIXTURE_RATIOS: [f64; 7] = [1.1, 1.2, 1.4, 1.8, 2.6, 4.2, 7.4];

/// ln of the mixture e-value against H0 "rate ≤ limit" (`above`) or "rate ≥ limit".
fn rate_log_evalue(x: f64, n: f64, limit: f64, above: bool) -> f64 {
    let terms = MIXTURE_RATIOS.map(|r| {
        let p = if above {
            if limit * r < 1.0 {
                limit * r
            } else {
                1.0 - (1.0 - limit) / r
            }
        } else {
            limit / r
        };
        x * (p / limit).ln() + (n - x) * ((1.0 - p) / (1.0 - limit)).ln()
    });
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max + (terms.iter().map(|t| (t - max).exp()).sum::<f64>() / terms.len() as f64).ln()
}

/// Counts a rate can be judged on, and a usable α.
fn valid_counts(errors: f64, requests: f64, alpha: f64) -> bool {
    errors.is_finite()
        && requests.is_finite()
        && errors >= 0.0
        && errors <= requests
        && requests > 0.0
        && valid_prob(alpha)
}

/// True when `errors` of `requests` show, with error probability at most `alpha` *however
/// often it is checked* as the counts grow, that the rate is above `limit`. A time-uniform
/// replacement for "lower confidence bound > limit". A limit of 0 is exceeded by any error.
pub fn rate_exceeds(errors: f64, requests: f64, limit: f64, alpha: f64) -> bool {
    if !valid_counts(errors, requests, alpha) {
        return false;
    }
    if limit <= 0.0 {
        return errors > 0.0;
    }
    limit < 1.0 && rate_log_evalue(errors, requests, limit, true) >= (1.0 / alpha).ln()
}

/// The same for "rate below `limit`" (a time-uniform "upper confidence bound < limit").
pub fn rate_below(errors: f64, requests: f64, limit: f64, alpha: f64) -> bool {
    if !valid_counts(errors, requests, alpha) {
        return false;
    }
    if limit >= 1.0 {
        return errors < requests;
    }
    limit > 0.0 && rate_log_evalue(errors, requests, limit, false) >= (1.0 / alpha).ln()
}

/// Time-uniform confidence bounds `(lower, upper)` of a rate: every limit below `lower` is
/// [`rate_exceeds`], every limit above `upper` is [`rate_below`]. `None` without data.
pub fn rate_bounds(errors: f64, requests: f64, alpha: f64) -> Option<(f64, f64)> {
    if !valid_counts(errors, requests, alpha) {
        return None;
    }
    let p = errors / requests;
    let bisect = |mut inside: f64, mut outside: f64, out: &dyn Fn(f64) -> bool| {
        // 40 halvings: 1e-12 absolute, far below what a reason shows.
        for _ in 0..40 {
            let mid = 0.5 * (inside + outside);
            if out(mid) {
                outside = mid;
            } else {
                inside = mid;
            }
        }
        inside
    };
    let lower = if errors > 0.0 {
        bisect(p, 0.0, &|l| rate_exceeds(errors, requests, l, alpha))
    } else {
        0.0
    };
    let upper = if errors < requests {
        bisect(p, 1.0, &|l| rate_below(errors, requests, l, alpha))
    } else {
        1.0
    };
    Some((lower, upper))
}

/// α of the `look`-th look (1-based) of a test checked repeatedly: α / (look · (look + 1)).
/// The shares sum to α over any number of looks, so the chance of any false alarm over the
/// whole rollout is at most α whatever the dependence between looks (a union bound).
pub fn spent_alpha(alpha: f64, look: u64) -> f64 {
    let t = look.max(1) as f64;
    alpha / (t * (t + 1.0))
}

/// Anytime-valid error test over the whole rollout: the error-share likelihood ratio of each
/// step, added up across steps without restarting (at 100%, where stable has no traffic,
/// against the stable baseline rate carried from the earlier steps).
///
/// It is computed as a bet, look by look: each look's new errors are taken one at a time in
/// a seeded random order, and the stake on each is the likelihood ratio's, capped so that the
/// wealth lands on 1/α instead of past it ([`bet_in_order`]). Any stake keeps the wealth a
/// supermartingale under H0, so the guarantee below is unchanged; the cap only removes the
/// overshoot that cost a regressed canary about 6% more requests at 5% weight.
///
/// `Fail` when the accumulated ratio reaches 1/α — the chance of that for a canary as good as
/// stable is at most α for the whole rollout, however often it is evaluated. `Pass` (advance)
/// when it falls to β, or when the canary's own error rate over the rollout is below
/// `max_error_rate` by a time-uniform bound; a pass does not end the test: evidence keeps
/// accumulating at the next step.
#[derive(Debug, Clone, PartialEq)]
pub struct AnytimeErrorTest {
    /// H1: canary error rate = `max_ratio` × stable's (must be > 1). Larger ratios are found
    /// faster; it is a parameter of the rollout and must not change during it.
    pub max_ratio: f64,
    pub alpha: f64,
    /// Pass (advance) when the ratio falls to β. Why lenient by default (0.2): a pass does
    /// not end the test, so a bad canary that advances by luck is still caught at the next
    /// step, while a strict β keeps healthy low-traffic canaries at the first step for hours.
    pub beta: f64,
    /// Canary requests of the current step before a Pass.
    pub min_canary_requests: u64,
    /// Absolute tolerance of the pass arm (0 disables it).
    pub max_error_rate: f64,
}

impl Default for AnytimeErrorTest {
    fn default() -> Self {
        AnytimeErrorTest {
            max_ratio: 2.0,
            alpha: 0.01,
            beta: 0.2,
            min_canary_requests: 500,
            max_error_rate: 0.01,
        }
    }
}

impl AnytimeErrorTest {
    /// Continues `previous` evidence with this evaluation's `step` and `counts` and judges it.
    /// `baseline_rate` is stable's error rate from earlier steps, used when stable has no
    /// traffic. Returns the evidence to record and the outcome.
    pub fn evaluate(
        &self,
        previous: Option<Evidence>,
        step: usize,
        counts: Option<StepCounts>,
        baseline_rate: Option<f64>,
    ) -> (Evidence, TestOutcome) {
        let mut ev = Evidence::continue_from(
            previous,
            step,
            counts.map(|c| (c.canary_requests, c.canary_errors)),
        );
        let samples = count_u64(ev.canary_requests);
        let config = ErrorShareTest {
            max_ratio: self.max_ratio,
            alpha: self.alpha,
            beta: self.beta,
            min_canary_requests: self.min_canary_requests,
            max_error_rate: self.max_error_rate,
        }
        .config_error();
        if let Some(e) = config {
            return (
                ev,
                TestOutcome::inconclusive(samples, format!("invalid test configuration: {e}")),
            );
        }
        let Some(c) = counts else {
            return (
                ev,
                TestOutcome::inconclusive(
                    samples,
                    "no data: step counters missing or invalid; evidence so far kept",
                ),
            );
        };
        let k = self.max_ratio;
        let upper = (1.0 / self.alpha).ln();
        let (bet, against) = if c.stable_requests > 0.0 {
            (bet_on_share(&mut ev, &c, k, upper), "stable".to_string())
        } else {
            let p0 = baseline_rate.filter(|p| p.is_finite());
            (
                p0.and_then(|p0| bet_on_baseline(&mut ev, &c, p0, k, upper)),
                match p0 {
                    Some(p0) => format!("the stable baseline {}", fmt_pct(p0)),
                    None => "no baseline".to_string(),
                },
            )
        };
        let Some(()) = bet else {
            return (
                ev,
                TestOutcome::inconclusive(
                    samples,
                    format!(
                        "no data: {} canary and {} stable requests in this step, {against}; evidence so far kept",
                        fmt_count(c.canary_requests),
                        fmt_count(c.stable_requests)
                    ),
                ),
            );
        };
        let lower = self.beta.ln();
        let llr = ev.error_llr;
        let (x, n) = (ev.canary_errors, ev.canary_requests);
        let step_ratio = (c.stable_errors > 0.0
            && c.canary_requests > 0.0
            && c.stable_requests > 0.0)
            .then(|| (c.canary_errors / c.canary_requests) / (c.stable_errors / c.stable_requests));
        let head = format!(
            "canary {}/{} errors ({}) over the rollout vs {against}{}, LLR {:.2} (fail ≥ {:.2}, pass ≤ {:.2})",
            fmt_count(x),
            fmt_count(n),
            fmt_pct(if n > 0.0 { x / n } else { 0.0 }),
            if c.stable_requests > 0.0 {
                format!(
                    " {}/{} ({}) this step",
                    fmt_count(c.stable_errors),
                    fmt_count(c.stable_requests),
                    fmt_pct(c.stable_errors / c.stable_requests)
                )
            } else {
                String::new()
            },
            llr,
            upper,
            lower
        );
        let out = |verdict, why: String| TestOutcome {
            verdict,
            statistic: llr,
            p_value: None,
            estimate: step_ratio,
            samples,
            reason: format!("{head}: {why}"),
        };
        // A capped bet lands on the bound itself (`bet_on_share` snaps it there).
        if llr >= upper && x >= MIN_CANARY_ERRORS_TO_FAIL {
            let why = format!(
                "canary error rate is likely ≥ {k}× stable (α {})",
                self.alpha
            );
            return (ev, out(Verdict::Fail, why));
        }
        let enough = c.canary_requests >= self.min_canary_requests as f64;
        if enough && llr <= lower {
            let why = format!("canary error rate is likely below {k}× stable");
            return (ev, out(Verdict::Pass, why));
        }
        if enough && self.max_error_rate > 0.0 && rate_below(x, n, self.max_error_rate, self.alpha)
        {
            let why = format!(
                "canary error rate is below the tolerance {} (time-uniform bound)",
                fmt_pct(self.max_error_rate)
            );
            return (ev, out(Verdict::Pass, why));
        }
        let why = if enough {
            "not yet decided".to_string()
        } else {
            format!(
                "not yet decided ({}/{} canary requests in this step)",
                fmt_count(c.canary_requests.floor()),
                self.min_canary_requests
            )
        };
        (ev, out(Verdict::Inconclusive, why))
    }
}

/// Above this many items in one look, the bet is one constant stake for the whole look (valid
/// and order-free, but it may overshoot the bound): walking them one by one would cost more
/// than it gains.
const MAX_ITEMS_BET_ONE_BY_ONE: f64 = 1_000_000.0;

/// The order in which one look's errors (or requests) are bet on. The counters only say how
/// many came from each version, so the order is drawn at random, from a seed that depends on
/// the evidence before the look and the number of items but not on which version produced
/// them: under H0 a random order of the look's items is distributed as the order they came
/// in, so betting on them one by one keeps the wealth a supermartingale. A seed instead of
/// real randomness makes a decision reproducible (`simulate`, a retried evaluation).
fn random_marks(ev: &Evidence, items: u64, marked: u64) -> Vec<bool> {
    use rand::SeedableRng;
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let tested = ev.tested.unwrap_or(StepCounts::ZERO);
    for v in [
        ev.step as u64,
        ev.looks,
        items,
        ev.error_llr.to_bits(),
        tested.canary_requests.to_bits(),
        tested.stable_requests.to_bits(),
    ] {
        seed = (seed ^ v)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9)
            .rotate_left(31);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut marks = vec![false; items as usize];
    for i in rand::seq::index::sample(&mut rng, items as usize, marked as usize) {
        marks[i] = true;
    }
    marks
}

/// Bets the log-wealth `log_wealth` on `marks` in their order (a mark is a canary error) and
/// returns it. `odds(j, marked_so_far)` gives the item's probability `p` of being marked under
/// H0 and `p1` under H1; no bet when `p` is 0 or 1. The stake is the likelihood ratio's,
/// capped so that a marked item lifts the wealth exactly onto `upper` and not past it. Why the
/// cap: wealth past 1/α buys no earlier decision, and the smaller stake loses less when the
/// item is unmarked — the overshoot of the last error was about 0.3 nats (6% more canary
/// requests) at 5% weight. A won capped bet is set onto `upper` itself, not a rounding error
/// below it, where the next stake would be ~0 and the test could never fail.
fn bet_in_order(
    mut log_wealth: f64,
    upper: f64,
    marks: Vec<bool>,
    odds: impl Fn(usize, f64) -> (f64, f64),
) -> f64 {
    let mut marked_so_far = 0.0;
    for (j, marked) in marks.into_iter().enumerate() {
        if log_wealth >= upper {
            break;
        }
        let (p, p1) = odds(j, marked_so_far);
        if p > 0.0 && p < 1.0 {
            let full = (p1 - p) / (p * (1.0 - p));
            let to_bound = ((upper - log_wealth).exp() - 1.0) / (1.0 - p);
            let capped = to_bound < full;
            let stake = if capped { to_bound.max(0.0) } else { full };
            log_wealth = match (marked, capped) {
                (true, true) => upper,
                (true, false) => log_wealth + (stake * (1.0 - p)).ln_1p(),
                (false, _) => log_wealth + (-stake * p).ln_1p(),
            };
        }
        if marked {
            marked_so_far += 1.0;
        }
    }
    log_wealth
}

/// Multiplies the error-share test's wealth by this look's errors (since `ev.tested`), one
/// error at a time in a random order: under H0 (equal error rates) the look's errors are a
/// random subset of its requests, so the next error is the canary's with the probability of
/// an urn of the look's requests without the errors already drawn; the bet is the likelihood
/// ratio of H1 (the canary's odds of each error × `ratio`), capped at the bound. `None`
/// without canary and stable traffic in the step.
fn bet_on_share(ev: &mut Evidence, c: &StepCounts, ratio: f64, upper: f64) -> Option<()> {
    if c.canary_requests <= 0.0 || c.stable_requests <= 0.0 {
        return None;
    }
    let Some(t) = ev.tested else {
        // Evidence of an older version: the step so far as one bet, as it computed it.
        ev.error_llr = ev.error_llr_done + share_llr(c, ratio)?;
        ev.tested = Some(*c);
        return Some(());
    };
    let (dc, ds) = (
        c.canary_requests - t.canary_requests,
        c.stable_requests - t.stable_requests,
    );
    let (k, m) = (
        (c.canary_errors - t.canary_errors).floor(),
        (c.stable_errors - t.stable_errors).floor(),
    );
    if !(dc >= 0.0 && ds >= 0.0 && k >= 0.0 && m >= 0.0 && k <= dc && m <= ds) {
        // Counters that went backwards or disagree: no bet on this look (a stake of 0 is
        // always valid), and the next look starts from here.
        ev.tested = Some(*c);
        return Some(());
    }
    let n = k + m;
    // Drawn before `tested` moves on: the seed must not know this look's errors.
    let marks =
        (n > 0.0 && n <= MAX_ITEMS_BET_ONE_BY_ONE).then(|| random_marks(ev, n as u64, k as u64));
    ev.tested = Some(StepCounts {
        canary_requests: c.canary_requests,
        canary_errors: t.canary_errors + k,
        stable_requests: c.stable_requests,
        stable_errors: t.stable_errors + m,
    });
    let Some(marks) = marks else {
        if n > 0.0 {
            ev.error_llr += share_llr(&StepCounts::new(dc, k, ds, m)?, ratio)?;
        }
        return Some(());
    };
    let total = dc + ds;
    ev.error_llr = bet_in_order(ev.error_llr, upper, marks, |j, drawn_canary| {
        let p = (dc - drawn_canary) / (total - j as f64);
        (p, ratio * p / (ratio * p + 1.0 - p))
    });
    Some(())
}

/// The same at 100%, where stable serves nothing: this look's canary requests against the
/// baseline rate `p0` (H1: `ratio` × p0), one request at a time in a random order when the
/// look could reach the bound, in one closed form otherwise (far from the bound the cap never
/// binds and the order does not matter). `None` when `p0` is not a rate or ratio × p0 ≥ 1.
fn bet_on_baseline(
    ev: &mut Evidence,
    c: &StepCounts,
    p0: f64,
    ratio: f64,
    upper: f64,
) -> Option<()> {
    let p1 = ratio * p0;
    if !(valid_prob(p0) && p1 < 1.0) || c.canary_requests <= 0.0 {
        return None;
    }
    let Some(t) = ev.tested else {
        ev.error_llr =
            ev.error_llr_done + baseline_llr(c.canary_errors, c.canary_requests, p0, ratio)?;
        ev.tested = Some(*c);
        return Some(());
    };
    let dn = c.canary_requests - t.canary_requests;
    let k = (c.canary_errors - t.canary_errors).floor();
    if !(dn >= 0.0 && k >= 0.0 && k <= dn) {
        ev.tested = Some(*c);
        return Some(());
    }
    let tested = |requests: f64| StepCounts {
        canary_requests: requests,
        canary_errors: t.canary_errors + k,
        ..*c
    };
    let success = ((1.0 - p1) / (1.0 - p0)).ln();
    let items = dn.floor();
    if ev.error_llr + k * ratio.ln() < upper || items > MAX_ITEMS_BET_ONE_BY_ONE || items < k {
        ev.error_llr += k * ratio.ln() + (dn - k) * success;
        ev.tested = Some(tested(c.canary_requests));
        return Some(());
    }
    let marks = random_marks(ev, items as u64, k as u64);
    ev.error_llr = bet_in_order(ev.error_llr, upper, marks, |_, _| (p0, p1));
    ev.tested = Some(tested(t.canary_requests + items));
    Some(())
}

/// Sequential rank test: [`RankTest`] at the `look`-th look with α spent as [`spent_alpha`],
/// so a canary as slow as stable fails with probability at most `test.alpha` over all looks.
pub fn sequential_rank_test(
    test: &RankTest,
    look: u64,
    canary: &[f64],
    stable: &[f64],
) -> TestOutcome {
    let spent = RankTest {
        alpha: spent_alpha(test.alpha, look),
        ..test.clone()
    };
    let mut o = spent.evaluate(canary, stable);
    o.reason = format!(
        "{} (look {look}, α {} of {})",
        o.reason,
        fmt_p(spent.alpha),
        test.alpha
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- deterministic RNG (splitmix64) -------------------------------------

    struct SplitMix64(u64);

    impl SplitMix64 {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        /// Uniform in [0, 1).
        fn uniform(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }
        fn binomial(&mut self, n: u64, p: f64) -> u64 {
            (0..n).filter(|_| self.uniform() < p).count() as u64
        }
        /// Log-normal-ish latency sample around `median`.
        fn latency(&mut self, median: f64) -> f64 {
            // Box–Muller
            let u1 = self.uniform().max(1e-300);
            let u2 = self.uniform();
            let n = (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos();
            median * (0.4 * n).exp()
        }
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    // ---- Verdict --------------------------------------------------------------

    #[test]
    fn verdict_strings() {
        assert_eq!(Verdict::Pass.as_str(), "pass");
        assert_eq!(Verdict::Fail.as_str(), "fail");
        assert_eq!(Verdict::Inconclusive.as_str(), "inconclusive");
        assert_eq!(Verdict::Fail.to_string(), "fail");
    }

    // ---- normal distribution --------------------------------------------------

    #[test]
    fn normal_cdf_known_values() {
        // Reference values from Python's math.erfc: 0.5*erfc(-z/sqrt(2)).
        let cases = [
            (0.0, 0.5),
            (1.0, 0.8413447460685429),
            (-1.0, 0.15865525393145707),
            (1.6448536269514722, 0.95),
            (1.959963984540054, 0.975),
            (2.5, 0.9937903346742238),
            (-3.0, 0.0013498980316300957),
            (-5.0, 2.866515718791946e-07),
            (-8.0, 6.220960574271819e-16),
            (-20.0, 2.7536241186063314e-89),
        ];
        for (z, want) in cases {
            let got = normal_cdf(z);
            let rel = ((got - want) / want).abs();
            assert!(rel < 1e-9, "Φ({z}) = {got}, want {want}, rel err {rel}");
        }
        assert_eq!(normal_cdf(f64::INFINITY), 1.0);
        assert_eq!(normal_cdf(f64::NEG_INFINITY), 0.0);
        assert!(normal_cdf(f64::NAN).is_nan());
        assert_eq!(normal_cdf(50.0), 1.0);
        assert_eq!(normal_cdf(-50.0), 0.0);
    }

    #[test]
    fn normal_cdf_monotone_and_symmetric() {
        let mut prev = 0.0;
        let mut z = -10.0;
        while z <= 10.0 {
            let p = normal_cdf(z);
            assert!(p >= prev, "not monotone at {z}");
            assert!(close(p + normal_cdf(-z), 1.0, 1e-14), "asymmetric at {z}");
            prev = p;
            z += 0.01;
        }
        // Continuity across the series / continued-fraction switch at |z| = 3.
        let eps = 1e-9;
        assert!(close(normal_cdf(3.0 - eps), normal_cdf(3.0 + eps), 1e-11));
        assert!(close(normal_cdf(-3.0 - eps), normal_cdf(-3.0 + eps), 1e-11));
    }

    #[test]
    fn normal_quantile_known_values() {
        // Reference values from Python's statistics.NormalDist().inv_cdf.
        let cases = [
            (0.5, 0.0),
            (0.95, 1.6448536269514722),
            (0.975, 1.959963984540054),
            (0.8, 0.8416212335729143),
            (0.01, -2.3263478740408408),
            (1e-6, -4.753424308822899),
            (1e-12, -7.034483825301131),
        ];
        for (p, want) in cases {
            let got = normal_quantile(p);
            assert!(close(got, want, 1e-9), "Φ⁻¹({p}) = {got}, want {want}");
        }
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
        assert_eq!(normal_quantile(1.0), f64::INFINITY);
        assert!(normal_quantile(-0.1).is_nan());
        assert!(normal_quantile(1.1).is_nan());
        assert!(normal_quantile(f64::NAN).is_nan());
    }

    #[test]
    fn normal_round_trip() {
        let mut p = 1e-10;
        while p < 1.0 {
            let z = normal_quantile(p);
            let back = normal_cdf(z);
            assert!(
                ((back - p) / p.min(1.0 - p)).abs() < 1e-7,
                "p={p} z={z} back={back}"
            );
            p *= 1.37;
        }
        for i in 1..1000 {
            let p = i as f64 / 1000.0;
            assert!(close(normal_cdf(normal_quantile(p)), p, 1e-12), "p={p}");
        }
        // Above z ≈ 6, 1 − Φ(z) < 1e-9 is not representable precisely as Φ(z)
        // itself, so round trips through Φ are limited by f64, not by us.
        let mut z = -8.0;
        while z < 6.0 {
            assert!(close(normal_quantile(normal_cdf(z)), z, 1e-7), "z={z}");
            z += 0.05;
        }
        // Deep tail must not overflow.
        let z = normal_quantile(1e-300);
        assert!(z.is_finite() && z < -37.0 && z > -37.5, "{z}");
    }

    // ---- Wilson ---------------------------------------------------------------

    #[test]
    fn wilson_upper_known_values() {
        // Wilson formula with z = Φ⁻¹(0.95), evaluated in Python/scipy.
        let u = wilson_upper(0.0, 300.0, 0.95).unwrap();
        assert!(close(u, 0.008937872175128179, 1e-12), "{u}");
        let u = wilson_upper(5.0, 1000.0, 0.95).unwrap();
        assert!(close(u, 0.01023533150672088, 1e-12), "{u}");
        let u = wilson_upper(10.0, 10.0, 0.95).unwrap();
        assert!(close(u, 1.0, 1e-12), "{u}");
        // Monotone in confidence and count.
        assert!(
            wilson_upper(5.0, 1000.0, 0.99).unwrap() > wilson_upper(5.0, 1000.0, 0.95).unwrap()
        );
        assert!(
            wilson_upper(6.0, 1000.0, 0.95).unwrap() > wilson_upper(5.0, 1000.0, 0.95).unwrap()
        );
        // Always above the point estimate.
        assert!(wilson_upper(50.0, 1000.0, 0.95).unwrap() > 0.05);
    }

    #[test]
    fn wilson_upper_rejects_bad_input() {
        assert_eq!(wilson_upper(0.0, 0.0, 0.95), None);
        assert_eq!(wilson_upper(0.0, -5.0, 0.95), None);
        assert_eq!(wilson_upper(f64::NAN, 10.0, 0.95), None);
        assert_eq!(wilson_upper(1.0, f64::INFINITY, 0.95), None);
        assert_eq!(wilson_upper(11.0, 10.0, 0.95), None);
        assert_eq!(wilson_upper(-1.0, 10.0, 0.95), None);
        assert_eq!(wilson_upper(1.0, 10.0, 1.0), None);
        assert_eq!(wilson_upper(1.0, 10.0, 0.0), None);
    }

    // ---- quantile -------------------------------------------------------------

    #[test]
    fn quantile_linear_interpolation() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&v, 1.0), Some(4.0));
        assert_eq!(quantile(&v, 0.5), Some(2.5));
        // numpy.quantile([1,2,3,4], 0.9) == 3.7
        assert!(close(quantile(&v, 0.9).unwrap(), 3.7, 1e-12));
        assert_eq!(quantile(&[7.0], 0.99), Some(7.0));
    }

    #[test]
    fn quantile_ignores_non_finite_and_rejects_bad_q() {
        let v = [f64::NAN, 1.0, f64::INFINITY, 3.0, f64::NEG_INFINITY];
        assert_eq!(quantile(&v, 0.5), Some(2.0));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[f64::NAN], 0.5), None);
        assert_eq!(quantile(&[1.0], 1.5), None);
        assert_eq!(quantile(&[1.0], -0.1), None);
        assert_eq!(quantile(&[1.0], f64::NAN), None);
    }

    // ---- sprt_bernoulli -------------------------------------------------------

    #[test]
    fn sprt_bernoulli_decisions() {
        // ln((1-β)/α) = ln(16) = 2.7726, ln(β/(1-α)) = -1.5581 for α=.05, β=.2.
        // 0 errors in 300 at H0 1% vs H1 2%: LLR = 300·ln(0.98/0.99) = -3.046 → Pass.
        let o = sprt_bernoulli(0.0, 300.0, 0.01, 0.02, 0.05, 0.2);
        assert_eq!(o.verdict, Verdict::Pass, "{}", o.reason);
        assert!(close(o.statistic, 300.0 * (0.98f64 / 0.99).ln(), 1e-9));
        assert_eq!(o.samples, 300);
        assert_eq!(o.estimate, Some(0.0));
        // 10 errors in 300: LLR = 10·ln2 + 290·ln(0.98/0.99) = 3.987 → Fail.
        let o = sprt_bernoulli(10.0, 300.0, 0.01, 0.02, 0.05, 0.2);
        assert_eq!(o.verdict, Verdict::Fail, "{}", o.reason);
        // 3 errors in 100: LLR = 3·ln2 + 97·ln(0.98/0.99) = 1.094 → Inconclusive.
        let o = sprt_bernoulli(3.0, 100.0, 0.01, 0.02, 0.05, 0.2);
        assert_eq!(o.verdict, Verdict::Inconclusive, "{}", o.reason);
    }

    #[test]
    fn sprt_bernoulli_invalid_is_inconclusive() {
        let bad = [
            sprt_bernoulli(f64::NAN, 100.0, 0.01, 0.02, 0.05, 0.2),
            sprt_bernoulli(0.0, f64::NAN, 0.01, 0.02, 0.05, 0.2),
            sprt_bernoulli(0.0, 0.0, 0.01, 0.02, 0.05, 0.2),
            sprt_bernoulli(5.0, 3.0, 0.01, 0.02, 0.05, 0.2),
            sprt_bernoulli(-1.0, 3.0, 0.01, 0.02, 0.05, 0.2),
            sprt_bernoulli(0.0, 1e6, 0.02, 0.01, 0.05, 0.2), // p1 < p0
            sprt_bernoulli(0.0, 1e6, 0.0, 0.01, 0.05, 0.2),
            sprt_bernoulli(0.0, 1e6, 0.01, 0.02, 0.0, 0.2),
            sprt_bernoulli(0.0, 1e6, 0.01, 0.02, 0.6, 0.6),
        ];
        for o in bad {
            assert_eq!(o.verdict, Verdict::Inconclusive, "{}", o.reason);
            assert!(o.statistic.is_nan());
        }
    }

    // ---- ErrorShareTest -------------------------------------------------------

    #[test]
    fn error_share_defaults() {
        let t = ErrorShareTest::default();
        assert_eq!(t.max_ratio, 2.0);
        assert_eq!(t.alpha, 0.05);
        assert_eq!(t.beta, 0.2);
        assert_eq!(t.min_canary_requests, 500);
        assert_eq!(t.max_error_rate, 0.01);
    }

    #[test]
    fn error_share_never_passes_bad_input() {
        let t = ErrorShareTest::default();
        let n = f64::NAN;
        let inf = f64::INFINITY;
        let cases = [
            (0.0, 0.0, 0.0, 0.0),
            (0.0, 0.0, 1e6, 10.0),
            (1e6, 0.0, 0.0, 0.0),
            (n, 0.0, 1e6, 0.0),
            (1e6, n, 1e6, 0.0),
            (1e6, 0.0, n, 0.0),
            (1e6, 0.0, 1e6, n),
            (inf, 0.0, 1e6, 0.0),
            (-5.0, 0.0, 1e6, 0.0),
            (1e6, -1.0, 1e6, 0.0),
            (100.0, 200.0, 1e6, 0.0), // more errors than requests
            (1e6, 0.0, 100.0, 200.0),
        ];
        for (cr, ce, sr, se) in cases {
            let o = t.evaluate(cr, ce, sr, se);
            assert_eq!(
                o.verdict,
                Verdict::Inconclusive,
                "({cr},{ce},{sr},{se}): {}",
                o.reason
            );
            assert!(o.statistic.is_nan());
            assert!(
                o.reason.contains("no data") || o.reason.contains("invalid"),
                "reason should say no data/invalid: {}",
                o.reason
            );
        }
        assert!(t.evaluate(0.0, 0.0, 0.0, 0.0).reason.contains("no data"));
        assert!(t.evaluate(n, 0.0, 1.0, 0.0).reason.contains("invalid"));
    }

    #[test]
    fn error_share_invalid_config_is_inconclusive() {
        let configs = [
            ErrorShareTest {
                max_ratio: 1.0,
                ..Default::default()
            },
            ErrorShareTest {
                max_ratio: f64::NAN,
                ..Default::default()
            },
            ErrorShareTest {
                alpha: 0.0,
                ..Default::default()
            },
            ErrorShareTest {
                beta: 1.0,
                ..Default::default()
            },
            ErrorShareTest {
                max_error_rate: -0.1,
                ..Default::default()
            },
        ];
        for t in configs {
            let o = t.evaluate(1e5, 0.0, 1e6, 100.0);
            assert_eq!(o.verdict, Verdict::Inconclusive, "{:?}: {}", t, o.reason);
            assert!(o.reason.contains("invalid"));
        }
    }

    #[test]
    fn error_share_llr_matches_formula() {
        let t = ErrorShareTest::default();
        let (cr, ce, sr, se) = (2000.0, 30.0, 18000.0, 150.0);
        let w: f64 = 0.1;
        let p1 = 2.0 * w / (2.0 * w + 1.0 - w);
        let want = 30.0 * (p1 / w).ln() + 150.0 * ((1.0 - p1) / (1.0 - w)).ln();
        let o = t.evaluate(cr, ce, sr, se);
        assert!(
            close(o.statistic, want, 1e-9),
            "{} vs {}",
            o.statistic,
            want
        );
        // ratio (30/2000)/(150/18000) = 1.8
        assert!(close(o.estimate.unwrap(), 1.8, 1e-12));
        assert_eq!(o.samples, 2000);
    }

    #[test]
    fn error_share_a_a_large_counts_not_fail() {
        // 0.5% errors on both sides, canary share 5%.
        let t = ErrorShareTest::default();
        let o = t.evaluate(10_000.0, 50.0, 190_000.0, 950.0);
        assert_ne!(o.verdict, Verdict::Fail, "{}", o.reason);
        assert_eq!(o.verdict, Verdict::Pass, "{}", o.reason);
        assert!(close(o.estimate.unwrap(), 1.0, 1e-12));
        // And a slightly unlucky canary (20% more errors than expected) still not Fail.
        let o = t.evaluate(10_000.0, 60.0, 190_000.0, 950.0);
        assert_ne!(o.verdict, Verdict::Fail, "{}", o.reason);
    }

    #[test]
    fn error_share_detects_4x_canary() {
        // Stable 1%, canary 4%, canary share 5%.
        let t = ErrorShareTest::default();
        let o = t.evaluate(2_000.0, 80.0, 38_000.0, 380.0);
        assert_eq!(o.verdict, Verdict::Fail, "{}", o.reason);
        assert!(o.statistic > (0.8f64 / 0.05).ln());
        assert!(close(o.estimate.unwrap(), 4.0, 1e-12));
        assert!(o.reason.contains("LLR"), "{}", o.reason);
    }

    #[test]
    fn error_share_fails_early_before_min_requests() {
        // A terrible canary (20% errors) is caught after 100 requests.
        let t = ErrorShareTest::default();
        let o = t.evaluate(100.0, 20.0, 1900.0, 19.0);
        assert_eq!(o.verdict, Verdict::Fail, "{}", o.reason);
        assert_eq!(o.samples, 100);
    }

    #[test]
    fn error_share_needs_three_canary_errors_to_fail() {
        // With max_ratio 5 and a 1% share each canary error adds ≈ ln(4.8);
        // stable has no errors, so 2 canary errors alone cross ln(16).
        let t = ErrorShareTest {
            max_ratio: 5.0,
            ..Default::default()
        };
        let w_share = (100.0, 2.0, 9_900.0, 0.0);
        let o = t.evaluate(w_share.0, w_share.1, w_share.2, w_share.3);
        assert!(
            o.statistic >= (0.8f64 / 0.05).ln(),
            "precondition: LLR {}",
            o.statistic
        );
        assert_eq!(o.verdict, Verdict::Inconclusive, "{}", o.reason);
        assert!(o.reason.contains("need 3"), "{}", o.reason);
        let o = t.evaluate(100.0, 3.0, 9_900.0, 0.0);
        assert_eq!(o.verdict, Verdict::Fail, "{}", o.reason);
        assert_eq!(
            o.estimate, None,
            "ratio undefined when stable has no errors"
        );
    }

    #[test]
    fn error_share_pass_needs_min_requests() {
        let t = ErrorShareTest::default();
        // Clean canary but only 312 requests: not yet Pass, reason says what's missing.
        let o = t.evaluate(312.0, 0.0, 6_000.0, 30.0);
        assert_eq!(o.verdict, Verdict::Inconclusive, "{}", o.reason);
        assert!(o.reason.contains("312/500 canary requests"), "{}", o.reason);
        // Even when the share test already accepts H0 (many stable errors, none
        // on the canary), Pass waits for min_canary_requests.
        let o = t.evaluate(312.0, 0.0, 6_000.0, 100.0);
        assert!(
            o.statistic <= (0.2f64 / 0.95).ln(),
            "precondition: LLR {}",
            o.statistic
        );
        assert_eq!(o.verdict, Verdict::Inconclusive, "{}", o.reason);
        // 600 clean requests but only 10 stable errors: the share test is still
        // undecided (LLR ≈ −0.49), the absolute Wilson arm passes it.
        let o = t.evaluate(600.0, 0.0, 11_400.0, 10.0);
        assert!(
            o.statistic > (0.2f64 / 0.95).ln(),
            "precondition: LLR {}",
            o.statistic
        );
        assert_eq!(o.verdict, Verdict::Pass, "{}", o.reason);
        assert!(o.reason.contains("upper bound"), "{}", o.reason);
    }

    #[test]
    fn error_share_pass_via_absolute_tolerance_without_stable_errors() {
        // Neither side has errors: the share test cannot decide, the absolute
        // tolerance can.
        let t = ErrorShareTest::default();
        let o = t.evaluate(1_000.0, 0.0, 20_000.0, 0.0);
        assert_eq!(o.verdict, Verdict::Pass, "{}", o.reason);
        assert_eq!(o.statistic, 0.0);
        // With zero tolerance it must stay inconclusive.
        let strict = ErrorShareTest {
            max_error_rate: 0.0,
            ..Default::default()
        };
        let o = strict.evaluate(1_000.0, 0.0, 20_000.0, 0.0);
        assert_eq!(o.verdict, Verdict::Inconclusive, "{}", o.reason);
    }

    #[test]
    fn error_share_absolute_arm_ignores_baseline() {
        // Documented trade-off: canary 0.2% vs stable 0.011% (18×) is below the
        // 1% tolerance and too few errors for the share test → Pass.
        let t = ErrorShareTest::default();
        let o = t.evaluate(1_000.0, 2.0, 9_000.0, 1.0);
        assert_eq!(o.verdict, Verdict::Pass, "{}", o.reason);
        assert!(o.estimate.unwrap() > 10.0);
        let no_abs = ErrorShareTest {
            max_error_rate: 0.0,
            ..Default::default()
        };
        assert_eq!(
            no_abs.evaluate(1_000.0, 2.0, 9_000.0, 1.0).verdict,
            Verdict::Inconclusive
        );
    }

    #[test]
    fn error_share_healthy_low_traffic_canary_not_fail() {
        // 60 canary req/min at 0.5% errors for 10 minutes, 5% share; try the
        // plausible error counts (Poisson mean 3) including unlucky ones.
        let t = ErrorShareTest::default();
        for ce in 0..=7 {
            let o = t.evaluate(600.0, ce as f64, 11_400.0, 57.0);
            assert_ne!(o.verdict, Verdict::Fail, "ce={ce}: {}", o.reason);
        }
    }

    #[test]
    fn error_share_fractional_counts_ok() {
        // Prometheus increase() yields fractional counts.
        let t = ErrorShareTest::default();
        let o = t.evaluate(2_000.4, 80.2, 38_000.7, 380.1);
        assert_eq!(o.verdict, Verdict::Fail, "{}", o.reason);
        assert_eq!(o.samples, 2000);
    }

    /// Simulate a rollout step: every minute add binomial errors, evaluate on
    /// the cumulative counts, stop at the first Pass/Fail. Returns the verdict.
    fn simulate_step(
        rng: &mut SplitMix64,
        t: &ErrorShareTest,
        canary_per_min: u64,
        stable_per_min: u64,
        canary_rate: f64,
        stable_rate: f64,
        minutes: u32,
    ) -> Verdict {
        let (mut cr, mut ce, mut sr, mut se) = (0.0, 0.0, 0.0, 0.0);
        for _ in 0..minutes {
            cr += canary_per_min as f64;
            sr += stable_per_min as f64;
            ce += rng.binomial(canary_per_min, canary_rate) as f64;
            se += rng.binomial(stable_per_min, stable_rate) as f64;
            let o = t.evaluate(cr, ce, sr, se);
            if o.verdict != Verdict::Inconclusive {
                return o.verdict;
            }
        }
        Verdict::Inconclusive
    }

    #[test]
    fn simulation_a_a_false_fail_rate_bounded() {
        // w = 0.1, 1% errors on both sides, peeking every minute for 60 minutes.
        let t = ErrorShareTest::default();
        let mut rng = SplitMix64(0x5EED_0001);
        let runs = 200;
        let mut fails = 0;
        let mut passes = 0;
        for _ in 0..runs {
            match simulate_step(&mut rng, &t, 100, 900, 0.01, 0.01, 60) {
                Verdict::Fail => fails += 1,
                Verdict::Pass => passes += 1,
                Verdict::Inconclusive => {}
            }
        }
        let rate = fails as f64 / runs as f64;
        assert!(
            rate <= t.alpha + 0.03,
            "false-fail rate {rate} ({fails}/{runs})"
        );
        // The test must also be useful: most healthy canaries get promoted.
        assert!(
            passes as f64 / runs as f64 >= 0.8,
            "only {passes}/{runs} passed"
        );
    }

    #[test]
    fn simulation_a_a_low_error_rate() {
        // 0.5% errors, canary 60 req/min (w≈0.05): the naive per-window gate
        // "canary success ≥ 99% this minute" fails ~26% of windows; the share
        // test must not fail more than alpha + slack of whole runs.
        let t = ErrorShareTest::default();
        let mut rng = SplitMix64(0x5EED_0002);
        let runs = 200;
        let mut fails = 0;
        let mut naive_window_fails = 0;
        let mut windows = 0;
        for _ in 0..runs {
            let (mut cr, mut ce, mut sr, mut se) = (0.0, 0.0, 0.0, 0.0);
            let mut decided = false;
            for _ in 0..30 {
                let e = rng.binomial(60, 0.005);
                windows += 1;
                if (60 - e) as f64 / 60.0 < 0.99 {
                    naive_window_fails += 1;
                }
                cr += 60.0;
                ce += e as f64;
                sr += 1140.0;
                se += rng.binomial(1140, 0.005) as f64;
                if !decided {
                    let o = t.evaluate(cr, ce, sr, se);
                    if o.verdict == Verdict::Fail {
                        fails += 1;
                    }
                    decided = o.verdict != Verdict::Inconclusive;
                }
            }
        }
        let naive = naive_window_fails as f64 / windows as f64;
        assert!(
            naive > 0.2 && naive < 0.33,
            "naive per-window fail rate {naive}"
        );
        let rate = fails as f64 / runs as f64;
        assert!(rate <= t.alpha + 0.03, "false-fail rate {rate}");
    }

    #[test]
    fn simulation_3x_canary_detected() {
        // Stable 1%, canary 3%, w = 0.1.
        let t = ErrorShareTest::default();
        let mut rng = SplitMix64(0x5EED_0003);
        let runs = 200;
        let mut fails = 0;
        let mut passes = 0;
        for _ in 0..runs {
            match simulate_step(&mut rng, &t, 100, 900, 0.03, 0.01, 60) {
                Verdict::Fail => fails += 1,
                Verdict::Pass => passes += 1,
                Verdict::Inconclusive => {}
            }
        }
        assert!(
            fails as f64 / runs as f64 >= 0.8,
            "detected only {fails}/{runs}"
        );
        assert!(
            passes as f64 / runs as f64 <= 0.05,
            "bad canary passed {passes}/{runs}"
        );
    }

    // ---- Mann–Whitney / Hodges–Lehmann ----------------------------------------

    #[test]
    fn mann_whitney_hand_example() {
        // x = [3,4,5], y = [1,2]: every x beats every y → U = 6.
        // var = 3·2/12·6 = 3, z = (6 − 3 − 0.5)/√3 = 1.443376, p = 0.074457.
        let mw = mann_whitney_greater(&[3.0, 4.0, 5.0], &[1.0, 2.0]).unwrap();
        assert_eq!(mw.u, 6.0);
        assert!(close(mw.z, 2.5 / 3f64.sqrt(), 1e-12));
        assert!(
            close(mw.p_value, 0.07445733658938286, 1e-12),
            "{}",
            mw.p_value
        );
        // Reverse direction: U = 0, p close to 1.
        let mw = mann_whitney_greater(&[1.0, 2.0], &[3.0, 4.0, 5.0]).unwrap();
        assert_eq!(mw.u, 0.0);
        assert!(mw.p_value > 0.95);
    }

    #[test]
    fn mann_whitney_matches_scipy_with_ties() {
        // scipy.stats.mannwhitneyu(x, y, alternative="greater",
        //     use_continuity=True, method="asymptotic") with the data below.
        let x = [1.0, 2.0, 2.0, 3.0, 5.0, 5.0];
        let y = [1.0, 1.0, 2.0, 3.0, 4.0];
        let mw = mann_whitney_greater(&x, &y).unwrap();
        assert_eq!(mw.u, SCIPY_TIES_U);
        assert!(
            close(mw.p_value, SCIPY_TIES_P, 1e-9),
            "{} vs {}",
            mw.p_value,
            SCIPY_TIES_P
        );
    }

    #[test]
    fn mann_whitney_matches_scipy_larger() {
        // Deterministic data: x_i = (i*7 % 23) + 0.5*(i%3), y_j = (j*5 % 19).
        let x: Vec<f64> = (0..30)
            .map(|i| ((i * 7) % 23) as f64 + 0.5 * (i % 3) as f64)
            .collect();
        let y: Vec<f64> = (0..25).map(|j| ((j * 5) % 19) as f64).collect();
        let mw = mann_whitney_greater(&x, &y).unwrap();
        assert_eq!(mw.u, SCIPY_LARGE_U);
        assert!(
            close(mw.p_value, SCIPY_LARGE_P, 1e-9),
            "{} vs {}",
            mw.p_value,
            SCIPY_LARGE_P
        );
        let hl = hodges_lehmann(&x, &y).unwrap();
        assert!(
            close(hl, SCIPY_LARGE_HL, 1e-12),
            "HL {hl} vs {SCIPY_LARGE_HL}"
        );
    }

    // Reference values computed offline with scipy 1.17.1 (mannwhitneyu,
    // method="asymptotic", use_continuity=True) and numpy
    // (median of np.subtract.outer(x, y)); python is not needed at test time.
    const SCIPY_TIES_U: f64 = 19.5;
    const SCIPY_TIES_P: f64 = 0.22738616690408892;
    const SCIPY_LARGE_U: f64 = 478.0;
    const SCIPY_LARGE_P: f64 = 0.04145298881693869;
    const SCIPY_LARGE_HL: f64 = 3.0;

    #[test]
    fn mann_whitney_all_tied() {
        let mw = mann_whitney_greater(&[2.0; 5], &[2.0; 7]).unwrap();
        assert_eq!(mw.u, 17.5);
        assert_eq!(mw.p_value, 1.0);
        assert!(mann_whitney_greater(&[], &[1.0]).is_none());
        assert!(mann_whitney_greater(&[f64::NAN], &[1.0]).is_none());
    }

    #[test]
    fn hodges_lehmann_small_examples() {
        // Differences of [3,4,5] − [1,2]: {2,1,3,2,4,3} → median (2+3)/2 = 2.5.
        assert_eq!(hodges_lehmann(&[3.0, 4.0, 5.0], &[1.0, 2.0]), Some(2.5));
        // Odd count: [10] − [1,2,4] = {9,8,6} → 8.
        assert_eq!(hodges_lehmann(&[10.0], &[1.0, 2.0, 4.0]), Some(8.0));
        // Pure shift is recovered exactly, including negative shifts.
        let y: Vec<f64> = (0..50).map(|i| (i * 13 % 37) as f64 * 0.25).collect();
        let x: Vec<f64> = y.iter().map(|v| v - 1.5).collect();
        assert_eq!(hodges_lehmann(&x, &y), Some(-1.5));
        assert_eq!(hodges_lehmann(&[], &[1.0]), None);
        assert_eq!(hodges_lehmann(&[f64::NAN], &[1.0]), None);
    }

    #[test]
    fn hodges_lehmann_matches_brute_force() {
        let mut rng = SplitMix64(42);
        for n in [1usize, 2, 3, 7, 20, 61] {
            for m in [1usize, 4, 9, 33] {
                let x: Vec<f64> = (0..n)
                    .map(|_| (rng.uniform() * 20.0).round() / 4.0)
                    .collect();
                let y: Vec<f64> = (0..m).map(|_| rng.latency(3.0)).collect();
                let mut d: Vec<f64> = x
                    .iter()
                    .flat_map(|a| y.iter().map(move |b| a - b))
                    .collect();
                d.sort_by(f64::total_cmp);
                let k = d.len();
                let want = if k % 2 == 1 {
                    d[k / 2]
                } else {
                    0.5 * d[k / 2 - 1] + 0.5 * d[k / 2]
                };
                assert_eq!(hodges_lehmann(&x, &y), Some(want), "n={n} m={m}");
            }
        }
    }

    #[test]
    fn rank_test_defaults() {
        let t = RankTest::default();
        assert_eq!(t.alpha, 0.05);
        assert_eq!(t.min_samples, 20);
        assert_eq!(t.max_shift, 0.10);
    }

    #[test]
    fn rank_test_identical_distributions_not_fail() {
        let t = RankTest::default();
        let mut fails = 0;
        for seed in 0..50u64 {
            let mut rng = SplitMix64(1000 + seed);
            let c: Vec<f64> = (0..200).map(|_| rng.latency(100.0)).collect();
            let s: Vec<f64> = (0..2000).map(|_| rng.latency(100.0)).collect();
            let o = t.evaluate(&c, &s);
            assert_ne!(o.verdict, Verdict::Inconclusive, "{}", o.reason);
            if o.verdict == Verdict::Fail {
                fails += 1;
            }
        }
        // Needs both p < 0.05 and a > 10% shift: essentially never under A/A.
        assert_eq!(fails, 0);
        // And the literal same sample is a Pass with p ≈ 0.5.
        let mut rng = SplitMix64(7);
        let s: Vec<f64> = (0..500).map(|_| rng.latency(100.0)).collect();
        let o = t.evaluate(&s, &s);
        assert_eq!(o.verdict, Verdict::Pass, "{}", o.reason);
        assert_eq!(o.estimate, Some(0.0));
        assert!(o.p_value.unwrap() > 0.4);
    }

    #[test]
    fn rank_test_detects_30_percent_shift() {
        let t = RankTest::default();
        for seed in 0..20u64 {
            let mut rng = SplitMix64(2000 + seed);
            let c: Vec<f64> = (0..200).map(|_| rng.latency(130.0)).collect();
            let s: Vec<f64> = (0..2000).map(|_| rng.latency(100.0)).collect();
            let o = t.evaluate(&c, &s);
            assert_eq!(o.verdict, Verdict::Fail, "seed {seed}: {}", o.reason);
            assert!(o.p_value.unwrap() < 0.05);
            let shift = o.estimate.unwrap();
            assert!(shift > 12.0 && shift < 45.0, "shift {shift}");
            assert_eq!(o.samples, 200);
        }
    }

    #[test]
    fn rank_test_small_significant_shift_passes() {
        // +3% with lots of data: significant, but below the 10% tolerance.
        let t = RankTest::default();
        let mut rng = SplitMix64(3);
        let c: Vec<f64> = (0..10_000).map(|_| rng.latency(103.0)).collect();
        let s: Vec<f64> = (0..10_000).map(|_| rng.latency(100.0)).collect();
        let o = t.evaluate(&c, &s);
        assert!(o.p_value.unwrap() < 0.05, "{}", o.reason);
        assert_eq!(o.verdict, Verdict::Pass, "{}", o.reason);
        assert!(o.reason.contains("within"), "{}", o.reason);
        // Tightening the tolerance turns it into a Fail.
        let strict = RankTest {
            max_shift: 0.01,
            ..Default::default()
        };
        assert_eq!(strict.evaluate(&c, &s).verdict, Verdict::Fail);
    }

    #[test]
    fn rank_test_faster_canary_passes() {
        let t = RankTest::default();
        let mut rng = SplitMix64(4);
        let c: Vec<f64> = (0..300).map(|_| rng.latency(70.0)).collect();
        let s: Vec<f64> = (0..300).map(|_| rng.latency(100.0)).collect();
        let o = t.evaluate(&c, &s);
        assert_eq!(o.verdict, Verdict::Pass, "{}", o.reason);
        assert!(o.estimate.unwrap() < 0.0);
        assert!(o.p_value.unwrap() > 0.95);
    }

    #[test]
    fn rank_test_ties_handled() {
        // Latency quantised to 10ms buckets → heavy ties.
        let t = RankTest::default();
        let mut rng = SplitMix64(5);
        let q = |v: f64| (v / 10.0).round() * 10.0;
        let s: Vec<f64> = (0..500).map(|_| q(rng.latency(100.0))).collect();
        let same: Vec<f64> = (0..500).map(|_| q(rng.latency(100.0))).collect();
        let slow: Vec<f64> = (0..500).map(|_| q(rng.latency(140.0))).collect();
        let o = t.evaluate(&same, &s);
        assert_ne!(o.verdict, Verdict::Fail, "{}", o.reason);
        let o = t.evaluate(&slow, &s);
        assert_eq!(o.verdict, Verdict::Fail, "{}", o.reason);
        // All values identical: Pass with p = 1.
        let o = t.evaluate(&[5.0; 30], &[5.0; 30]);
        assert_eq!(o.verdict, Verdict::Pass, "{}", o.reason);
        assert_eq!(o.p_value, Some(1.0));
    }

    #[test]
    fn rank_test_insufficient_or_bad_data_inconclusive() {
        let t = RankTest::default();
        let many: Vec<f64> = (0..100).map(|i| i as f64).collect();
        let o = t.evaluate(&[], &many);
        assert_eq!(o.verdict, Verdict::Inconclusive);
        assert!(o.reason.contains("no data"), "{}", o.reason);
        let o = t.evaluate(&many, &[]);
        assert_eq!(o.verdict, Verdict::Inconclusive);
        let o = t.evaluate(&many[..19], &many);
        assert_eq!(o.verdict, Verdict::Inconclusive);
        assert!(o.reason.contains("19 canary"), "{}", o.reason);
        // NaNs are dropped and counted; dropping below the minimum → Inconclusive.
        let mut c: Vec<f64> = many[..20].iter().map(|v| v + 1000.0).collect();
        c[0] = f64::NAN;
        c[1] = f64::INFINITY;
        let o = t.evaluate(&c, &many);
        assert_eq!(o.verdict, Verdict::Inconclusive, "{}", o.reason);
        assert!(o.reason.contains("2 non-finite"), "{}", o.reason);
        assert!(o.statistic.is_nan());
        // All-NaN input never passes.
        let o = t.evaluate(&[f64::NAN; 50], &[f64::NAN; 50]);
        assert_eq!(o.verdict, Verdict::Inconclusive);
        // Invalid configuration.
        let bad = RankTest {
            alpha: 1.5,
            ..Default::default()
        };
        assert_eq!(bad.evaluate(&many, &many).verdict, Verdict::Inconclusive);
    }

    #[test]
    fn rank_test_nan_dropped_but_still_decides() {
        let t = RankTest::default();
        let mut rng = SplitMix64(6);
        let mut c: Vec<f64> = (0..100).map(|_| rng.latency(150.0)).collect();
        let s: Vec<f64> = (0..100).map(|_| rng.latency(100.0)).collect();
        c.push(f64::NAN);
        let o = t.evaluate(&c, &s);
        assert_eq!(o.verdict, Verdict::Fail, "{}", o.reason);
        assert_eq!(o.samples, 100);
        assert!(o.reason.contains("1 non-finite"), "{}", o.reason);
    }

    #[test]
    fn rank_test_large_inputs_are_fast_enough() {
        // 10k × 10k must not materialise 1e8 differences.
        let t = RankTest::default();
        let mut rng = SplitMix64(8);
        let c: Vec<f64> = (0..10_000).map(|_| rng.latency(100.0)).collect();
        let s: Vec<f64> = (0..10_000).map(|_| rng.latency(100.0)).collect();
        let start = std::time::Instant::now();
        let o = t.evaluate(&c, &s);
        assert!(
            start.elapsed().as_secs_f64() < 5.0,
            "took {:?}",
            start.elapsed()
        );
        assert_ne!(o.verdict, Verdict::Fail, "{}", o.reason);
        assert!(o.estimate.unwrap().abs() < 3.0);
    }

    // ---- anytime-valid evidence ---------------------------------------------------

    fn poisson_ish(rng: &mut SplitMix64, n: u64, p: f64) -> f64 {
        rng.binomial(n, p) as f64
    }

    /// One simulated rollout through `weights` (interval by interval, `per_interval`
    /// requests in total), checking the anytime test at every interval and never stopping
    /// for a pass. Returns (failed, canary requests at the fail).
    fn rollout_fails(
        rng: &mut SplitMix64,
        test: &AnytimeErrorTest,
        weights: &[f64],
        intervals_per_step: u32,
        per_interval: u64,
        stable_rate: f64,
        canary_rate: f64,
    ) -> Option<f64> {
        let mut ev = None;
        for (step, w) in weights.iter().enumerate() {
            let (mut cr, mut ce, mut sr, mut se) = (0.0, 0.0, 0.0, 0.0);
            let cn = (per_interval as f64 * w).round() as u64;
            let sn = per_interval - cn;
            for _ in 0..intervals_per_step {
                cr += cn as f64;
                sr += sn as f64;
                ce += poisson_ish(rng, cn, canary_rate);
                se += poisson_ish(rng, sn, stable_rate);
                let counts = StepCounts::new(cr, ce, sr, se);
                let (next, o) = test.evaluate(ev, step, counts, Some(stable_rate));
                ev = Some(next);
                if o.verdict == Verdict::Fail {
                    return Some(next.canary_requests);
                }
            }
        }
        None
    }

    #[test]
    fn anytime_error_test_type_one_error_under_continuous_monitoring() {
        // A/A at 1% errors through 5/25/50% and 100% (against the known baseline), checked
        // every interval, never stopping early: the share of runs that *ever* fail must stay
        // within α (+ simulation tolerance). A per-step SPRT restarted at the same α fails
        // more often, which is what the accumulated test is for.
        let test = AnytimeErrorTest::default();
        let mut rng = SplitMix64(0x5EED_0100);
        let runs = 400;
        let fails = (0..runs)
            .filter(|_| {
                rollout_fails(
                    &mut rng,
                    &test,
                    &[0.05, 0.25, 0.5, 1.0],
                    40,
                    400,
                    0.01,
                    0.01,
                )
                .is_some()
            })
            .count();
        let rate = fails as f64 / runs as f64;
        assert!(
            rate <= test.alpha + 0.01,
            "false-fail rate {rate} ({fails}/{runs})"
        );
    }

    #[test]
    fn anytime_error_test_detects_doubling_near_the_sprt_bound() {
        // 1% → 2% at 5% weight, 40 canary requests per interval: the mean canary requests
        // to fail is within 1.14× of Wald's expected sample number (≈1155 at α 0.01, power
        // 0.95; measured 1280, 1.11×). The gap is the Ville boundary ln(1/α) instead of
        // ln((1−β)/α) and the interval granularity. Without the capped stake the overshoot of
        // the last error (up to ln 1.9) made it 1339 (1.16×).
        let test = AnytimeErrorTest::default();
        let mut rng = SplitMix64(0x5EED_0101);
        let runs = 200;
        let found: Vec<f64> = (0..runs)
            .filter_map(|_| rollout_fails(&mut rng, &test, &[0.05], 400, 800, 0.01, 0.02))
            .collect();
        assert!(
            found.len() as f64 >= 0.95 * runs as f64,
            "detected {}/{runs}",
            found.len()
        );
        let mean = found.iter().sum::<f64>() / found.len() as f64;
        let w: f64 = 0.05;
        let p1 = 2.0 * w / (2.0 * w + 1.0 - w);
        let kl = (p1 * (p1 / w).ln() + (1.0 - p1) * ((1.0 - p1) / (1.0 - w)).ln())
            * (0.02 + 0.01 * (1.0 - w) / w);
        let wald = (0.95 * (0.95f64 / 0.01).ln() + 0.05 * (0.05f64 / 0.99).ln()) / kl;
        assert!(close(wald, 1155.0, 5.0), "Wald ESN {wald}");
        assert!(
            mean > wald && mean < 1.14 * wald,
            "mean {mean} vs Wald {wald}"
        );
    }

    #[test]
    fn anytime_error_test_accumulates_across_steps() {
        // Far from the bound, a look's bet is close to the step's likelihood ratio (the urn of
        // the look's requests instead of a binomial share), and steps add up.
        let test = AnytimeErrorTest::default();
        let a = StepCounts::new(1000.0, 20.0, 19_000.0, 190.0).unwrap();
        let b = StepCounts::new(5000.0, 50.0, 15_000.0, 150.0).unwrap();
        let (ev, o) = test.evaluate(None, 0, Some(a), None);
        let la = share_llr(&a, 2.0).unwrap();
        // (210 errors in one look: the urn's odds drift as errors are drawn.)
        assert!(close(o.statistic, la, 0.25), "{} vs {la}", o.statistic);
        let (ev, o) = test.evaluate(Some(ev), 1, Some(b), None);
        let want = la + share_llr(&b, 2.0).unwrap();
        assert!(close(o.statistic, want, 0.5), "{} vs {want}", o.statistic);
        assert_eq!(ev.canary_requests, 6000.0);
        assert_eq!(ev.canary_errors, 70.0);
        assert_eq!((ev.canary_requests_done, ev.step), (1000.0, 1));
        assert_eq!(ev.tested, Some(b));
        // A later look of the same step bets on what is new since the last one only.
        let b2 = StepCounts::new(6000.0, 60.0, 18_000.0, 180.0).unwrap();
        let (ev2, o2) = test.evaluate(Some(ev), 1, Some(b2), None);
        let look = StepCounts::new(1000.0, 10.0, 3000.0, 30.0).unwrap();
        let want = o.statistic + share_llr(&look, 2.0).unwrap();
        assert!(close(o2.statistic, want, 0.1), "{} vs {want}", o2.statistic);
        assert_eq!(ev2.canary_requests, 7000.0);
        // Missing counters keep the evidence and are inconclusive, never a pass.
        let (ev3, o3) = test.evaluate(Some(ev2), 1, None, None);
        assert_eq!(o3.verdict, Verdict::Inconclusive);
        assert!(o3.reason.contains("no data"), "{}", o3.reason);
        assert_eq!(ev3, ev2);
        // Counters that go backwards within a step (a reset) start a new segment, whose
        // counters are all new.
        let c = StepCounts::new(100.0, 1.0, 300.0, 3.0).unwrap();
        let (ev4, _) = test.evaluate(Some(ev2), 1, Some(c), None);
        assert_eq!(ev4.canary_requests_done, 7000.0);
        assert_eq!(ev4.canary_requests, 7100.0);
        assert_eq!(ev4.tested, Some(c));
        // Stable's counters going backwards alone: no bet on that look.
        let d = StepCounts::new(6500.0, 65.0, 100.0, 1.0).unwrap();
        let (ev5, o5) = test.evaluate(Some(ev2), 1, Some(d), None);
        assert_eq!(o5.statistic, ev2.error_llr);
        assert_eq!(ev5.tested, Some(d));
        // Fractions of an error wait for the next look.
        let f = StepCounts::new(6100.0, 61.5, 18_300.0, 182.7).unwrap();
        let (ev6, _) = test.evaluate(Some(ev2), 1, Some(f), None);
        let t = ev6.tested.unwrap();
        assert_eq!((t.canary_errors, t.stable_errors), (61.0, 182.0));
    }

    #[test]
    fn anytime_error_test_continues_evidence_of_an_older_version() {
        // Evidence recorded before looks were bet on one by one carries no `tested`: the step
        // so far is one bet, as that version computed it, and looks go on from there.
        let test = AnytimeErrorTest::default();
        let old = Evidence {
            step: 0,
            error_llr: 0.7,
            error_llr_done: 0.5,
            canary_requests: 900.0,
            canary_requests_done: 0.0,
            canary_errors: 9.0,
            canary_errors_done: 0.0,
            looks: 7,
            tested: None,
        };
        let c = StepCounts::new(1000.0, 10.0, 19_000.0, 190.0).unwrap();
        let (ev, o) = test.evaluate(Some(old), 0, Some(c), None);
        let want = 0.5 + share_llr(&c, 2.0).unwrap();
        assert!(close(o.statistic, want, 1e-12), "{} vs {want}", o.statistic);
        assert_eq!(ev.tested, Some(c));
    }

    #[test]
    fn anytime_error_test_bets_land_on_the_bound() {
        // A canary with every error: the wealth reaches 1/α exactly, never past it (the capped
        // stake), and the same counters always give the same decision (a seeded order).
        let test = AnytimeErrorTest::default();
        let upper = (1.0 / test.alpha).ln();
        let mut ev = None;
        let mut failed = None;
        for look in 1..=40 {
            let n = f64::from(look);
            let c = StepCounts::new(25.0 * n, 2.0 * n, 475.0 * n, 5.0 * n).unwrap();
            let (next, o) = test.evaluate(ev, 0, Some(c), None);
            let (again, o2) = test.evaluate(ev, 0, Some(c), None);
            assert_eq!((next, o.statistic), (again, o2.statistic));
            assert!(o.statistic <= upper + 1e-9, "{} > {upper}", o.statistic);
            ev = Some(next);
            if o.verdict == Verdict::Fail {
                failed = Some(o.statistic);
                break;
            }
        }
        let at = failed.expect("a canary with every error fails");
        assert_eq!(at, upper, "a won capped bet lands on the bound");
        // At 100% against the baseline as well.
        let mut ev = None;
        for look in 1..=40 {
            let n = f64::from(look);
            let c = StepCounts::new(500.0 * n, 20.0 * n, 0.0, 0.0).unwrap();
            let (next, o) = test.evaluate(ev, 3, Some(c), Some(0.01));
            assert!(o.statistic <= upper + 1e-9, "{} > {upper}", o.statistic);
            ev = Some(next);
            if o.verdict == Verdict::Fail {
                assert_eq!(o.statistic, upper);
                return;
            }
        }
        panic!("a canary with 4% errors against a 1% baseline did not fail");
    }

    #[test]
    fn anytime_error_test_one_look_is_a_fair_bet_under_h0() {
        // The heart of the validity: whatever the wealth before a look, its expected factor
        // under H0 is at most 1 — averaged here over the look's possible errors (which
        // requests failed is a random subset) and over the seeded orders. Near the bound the
        // stake is capped, far from it it is the likelihood ratio's.
        let test = AnytimeErrorTest::default();
        let upper = (1.0 / test.alpha).ln();
        let mut rng = SplitMix64(0x5EED_0102);
        for start in [0.0, upper - 0.3, upper - 1.0, -2.0] {
            let runs = 20_000;
            let mut sum = 0.0;
            for look in 0..runs {
                let prev = Evidence {
                    error_llr: start,
                    looks: look,
                    ..Evidence::default()
                };
                // 25 canary and 475 stable requests, each failing with 1%.
                let k = rng.binomial(25, 0.01) as f64;
                let m = rng.binomial(475, 0.01) as f64;
                let c = StepCounts::new(25.0, k, 475.0, m).unwrap();
                let (ev, _) = test.evaluate(Some(prev), 0, Some(c), None);
                sum += (ev.error_llr - start).exp();
            }
            let mean = sum / runs as f64;
            assert!(mean < 1.01, "start {start}: mean factor {mean}");
        }
    }

    #[test]
    fn anytime_error_test_at_full_weight_uses_the_baseline() {
        // At 100% stable has no traffic: each canary error adds ln(k), each success
        // ln((1 − k·p0)/(1 − p0)).
        let test = AnytimeErrorTest::default();
        let c = StepCounts::new(2000.0, 20.0, 0.0, 0.0).unwrap();
        let (_, o) = test.evaluate(None, 3, Some(c), Some(0.01));
        let want = 20.0 * 2f64.ln() + 1980.0 * (0.98f64 / 0.99).ln();
        assert!(close(o.statistic, want, 1e-9), "{}", o.statistic);
        assert_eq!(baseline_llr(20.0, 2000.0, 0.01, 2.0), Some(want));
        // Without a baseline there is nothing to compare with.
        let (_, o) = test.evaluate(None, 3, Some(c), None);
        assert_eq!(o.verdict, Verdict::Inconclusive, "{}", o.reason);
        assert_eq!(baseline_llr(1.0, 10.0, 0.6, 2.0), None);
    }

    #[test]
    fn anytime_error_test_verdicts() {
        let test = AnytimeErrorTest::default();
        // A clearly worse canary fails; a clean one passes after min requests.
        let bad = StepCounts::new(2000.0, 80.0, 38_000.0, 380.0).unwrap();
        assert_eq!(
            test.evaluate(None, 0, Some(bad), None).1.verdict,
            Verdict::Fail
        );
        let good = StepCounts::new(20_000.0, 100.0, 380_000.0, 1900.0).unwrap();
        let (_, o) = test.evaluate(None, 0, Some(good), None);
        assert_eq!(o.verdict, Verdict::Pass, "{}", o.reason);
        let few = StepCounts::new(100.0, 0.0, 1900.0, 10.0).unwrap();
        let (_, o) = test.evaluate(None, 0, Some(few), None);
        assert_eq!(o.verdict, Verdict::Inconclusive, "{}", o.reason);
        assert!(o.reason.contains("100/500"), "{}", o.reason);
        let invalid = AnytimeErrorTest {
            max_ratio: 0.5,
            ..Default::default()
        };
        assert_eq!(
            invalid.evaluate(None, 0, Some(bad), None).1.verdict,
            Verdict::Inconclusive
        );
        assert!(StepCounts::new(10.0, 11.0, 10.0, 0.0).is_none());
        assert!(StepCounts::new(f64::NAN, 0.0, 10.0, 0.0).is_none());
    }

    #[test]
    fn evidence_round_trips_through_observations() {
        let ev = Evidence {
            step: 2,
            error_llr: -3.5,
            error_llr_done: -1.25,
            canary_requests: 1234.0,
            canary_requests_done: 1000.0,
            canary_errors: 7.0,
            canary_errors_done: 5.0,
            looks: 42,
            tested: StepCounts::new(234.0, 2.0, 4000.0, 41.0),
        };
        let mut obs = Observations::new();
        obs.insert("canary_requests".into(), Some(1.0));
        ev.record(&mut obs);
        assert_eq!(Evidence::from_observations(&obs), Some(ev));
        // The latest evaluation that carries it wins; ones without it are skipped.
        let older = Observations::new();
        let mut newer = Observations::new();
        Evidence { step: 3, ..ev }.record(&mut newer);
        let history = vec![obs.clone(), newer, older];
        assert_eq!(Evidence::latest(&history).map(|e| e.step), Some(3));
        assert_eq!(Evidence::latest(&[]), None);
        obs.insert(EVIDENCE_KEYS[1].into(), None);
        assert_eq!(Evidence::from_observations(&obs), None);
    }

    #[test]
    fn rate_bounds_bracket_the_estimate_and_shrink() {
        let (lo, up) = rate_bounds(10.0, 1000.0, 0.01).unwrap();
        assert!(lo < 0.01 && up > 0.01, "({lo}, {up})");
        assert!(rate_exceeds(10.0, 1000.0, lo * 0.99, 0.01));
        assert!(!rate_exceeds(10.0, 1000.0, lo * 1.01, 0.01));
        assert!(rate_below(10.0, 1000.0, up * 1.01, 0.01));
        assert!(!rate_below(10.0, 1000.0, up * 0.99, 0.01));
        let (lo2, up2) = rate_bounds(100.0, 10_000.0, 0.01).unwrap();
        assert!(lo2 > lo && up2 < up, "({lo2}, {up2}) vs ({lo}, {up})");
        // Time-uniform bounds are wider than a fixed-n Wilson bound at the same level.
        let wilson = wilson_upper(100.0, 10_000.0, 0.99).unwrap();
        assert!(up2 > wilson, "{up2} vs Wilson {wilson}");
        assert_eq!(rate_bounds(0.0, 1000.0, 0.01).unwrap().0, 0.0);
        assert_eq!(rate_bounds(1000.0, 1000.0, 0.01).unwrap().1, 1.0);
        assert_eq!(rate_bounds(1.0, 0.0, 0.01), None);
        assert_eq!(rate_bounds(f64::NAN, 10.0, 0.01), None);
        assert!(!rate_exceeds(5.0, 4.0, 0.01, 0.01));
        assert!(rate_exceeds(1.0, 10.0, 0.0, 0.01));
    }

    #[test]
    fn rate_exceeds_type_one_error_under_continuous_monitoring() {
        // A rate exactly on the limit, checked after every 50 requests for 20,000 requests:
        // the share of runs that ever "exceed" stays within α. A fixed-n Wilson bound
        // checked the same way exceeds far more often.
        let mut rng = SplitMix64(0x5EED_0102);
        let runs = 300;
        let (mut anytime, mut wilson) = (0, 0);
        for _ in 0..runs {
            let (mut x, mut n) = (0.0, 0.0);
            let (mut a, mut w) = (false, false);
            for _ in 0..400 {
                n += 50.0;
                x += rng.binomial(50, 0.01) as f64;
                a |= rate_exceeds(x, n, 0.01, 0.01);
                w |= x >= 3.0 && wilson_lower(x, n, 0.99) > 0.01;
            }
            anytime += a as u32;
            wilson += w as u32;
        }
        let rate = anytime as f64 / runs as f64;
        assert!(rate <= 0.02, "anytime false-exceed rate {rate}");
        assert!(
            wilson > 2 * anytime.max(3),
            "Wilson {wilson} vs anytime {anytime}"
        );
    }

    /// Lower Wilson bound, for the comparison above.
    fn wilson_lower(x: f64, n: f64, confidence: f64) -> f64 {
        1.0 - wilson_upper(n - x, n, confidence).unwrap()
    }

    #[test]
    fn spent_alpha_sums_to_alpha() {
        let total: f64 = (1..=10_000).map(|t| spent_alpha(0.01, t)).sum();
        assert!(
            close(total, 0.01 * (1.0 - 1.0 / 10_001.0), 1e-12),
            "{total}"
        );
        assert_eq!(spent_alpha(0.01, 1), 0.005);
        assert_eq!(spent_alpha(0.01, 0), 0.005);
    }

    #[test]
    fn sequential_rank_test_rarely_fails_identical_builds() {
        // A/A latency checked at 25 looks on growing samples: no run may fail (α 0.01 over
        // all looks, and max_shift 0 so only significance counts).
        let test = RankTest {
            alpha: 0.01,
            min_samples: 20,
            max_shift: 0.0,
        };
        let mut fails = 0;
        for seed in 0..40u64 {
            let mut rng = SplitMix64(5000 + seed);
            let mut c = Vec::new();
            let mut s = Vec::new();
            for look in 1..=25u64 {
                c.extend((0..10).map(|_| rng.latency(100.0)));
                s.extend((0..40).map(|_| rng.latency(100.0)));
                if sequential_rank_test(&test, look, &c, &s).verdict == Verdict::Fail {
                    fails += 1;
                    break;
                }
            }
        }
        assert_eq!(fails, 0);
        // A 30% slower canary is still found at a late look.
        let mut rng = SplitMix64(6000);
        let c: Vec<f64> = (0..200).map(|_| rng.latency(130.0)).collect();
        let s: Vec<f64> = (0..1000).map(|_| rng.latency(100.0)).collect();
        let o = sequential_rank_test(&test, 100, &c, &s);
        assert_eq!(o.verdict, Verdict::Fail, "{}", o.reason);
        assert!(o.reason.contains("look 100"), "{}", o.reason);
    }
}
