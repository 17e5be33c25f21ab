//! Statistics for canary analysis: pure functions, no I/O (randomness only from seeds).
//!
//! Why this module exists: per-window threshold gates ("success ≥ 99% in the
//! last minute") misbehave at canary traffic levels. At 60 canary requests per
//! minute a single error is already 1.67%, so a perfectly healthy 0.5%-error
//! canary fails such a gate in roughly a quarter of all windows. The tests here
//! accumulate evidence instead and decide only when the evidence is strong
//! enough either way.
//!
//! What the shipped policies (`policies/*.rhai`) use, through the `ctx` bindings of
//! `src/policy/context.rs`:
//!
//! * `ctx.error_bounds` (default, eighty-twenty, istio-runbook, progressive-review,
//!   relative-to-stable) → [`error_bounds`]: α split over three views of the canary (the
//!   rollout, the step, the last minute) and stable, each judged by the time-uniform
//!   [`rate_bounds`]; the rollout's counters are the [`Evidence`] carried from one
//!   evaluation to the next. In [`bounds`] and [`evidence`].
//! * `ctx.latency_test` (default, eighty-twenty, statistical) and `ctx.latency_check`
//!   below 100% (istio-runbook, progressive-review, relative-to-stable) →
//!   [`sequential_rank_test`]: [`RankTest`] (Mann–Whitney U with a Hodges–Lehmann shift,
//!   the approach Kayenta popularised) at the look's share of α ([`spent_alpha`]). In
//!   [`rank`].
//! * `ctx.error_test` (statistical only) → [`AnytimeErrorTest`]: the error-share
//!   likelihood ratio (which version produced each error, given the traffic split)
//!   accumulated over the whole rollout. In [`anytime`].
//!
//! No shipped policy uses [`ErrorShareTest`], the classic per-step Wald SPRT that
//! [`AnytimeErrorTest`] replaced; it is kept in [`classic`] as a reference. The building
//! blocks — [`normal_cdf`], [`normal_quantile`], [`wilson_upper`], [`quantile`] — are in
//! [`distributions`] (the simulator uses [`quantile`], the stats bench [`normal_cdf`]).
//!
//! Every test returns a [`TestOutcome`] whose verdict is three-valued: missing,
//! invalid or insufficient data is always [`Verdict::Inconclusive`], never a
//! silent pass.

pub mod anytime;
pub mod bounds;
pub mod classic;
pub mod distributions;
pub mod evidence;
pub mod rank;
#[cfg(test)]
mod testing;

pub use anytime::{AnytimeErrorTest, baseline_llr, share_llr};
pub use bounds::{
    AlphaSplit, ErrorBounds, RateViews, error_bounds, rate_below, rate_bounds, rate_exceeds,
    spent_alpha,
};
pub use classic::ErrorShareTest;
pub use distributions::{normal_cdf, normal_quantile, quantile, wilson_upper};
pub use evidence::{EVIDENCE_KEYS, Evidence, StepCounts};
pub use rank::{MannWhitney, RankTest, hodges_lehmann, mann_whitney_greater, sequential_rank_test};

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

/// Why a ratio test's configuration is unusable, if it is: the checks shared by
/// [`ErrorShareTest`] and [`AnytimeErrorTest`].
fn ratio_test_config_error(
    max_ratio: f64,
    alpha: f64,
    beta: f64,
    max_error_rate: f64,
) -> Option<String> {
    if !(max_ratio.is_finite() && max_ratio > 1.0) {
        return Some(format!("max_ratio must be > 1, got {max_ratio}"));
    }
    if !valid_prob(alpha) || !valid_prob(beta) || alpha + beta >= 1.0 {
        return Some(format!(
            "alpha and beta must be in (0,1) with alpha+beta < 1, got alpha={alpha} beta={beta}"
        ));
    }
    if !(max_error_rate.is_finite() && (0.0..=1.0).contains(&max_error_rate)) {
        return Some(format!(
            "max_error_rate must be in [0,1], got {max_error_rate}"
        ));
    }
    None
}

/// A canary must have produced at least this many errors before the share test
/// may fail it: one or two errors are too easy to get by bad luck, and the
/// Wald bounds assume a continuous stream of observations, not a lucky first one.
pub const MIN_CANARY_ERRORS_TO_FAIL: f64 = 3.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_strings() {
        assert_eq!(Verdict::Pass.as_str(), "pass");
        assert_eq!(Verdict::Fail.as_str(), "fail");
        assert_eq!(Verdict::Inconclusive.as_str(), "inconclusive");
        assert_eq!(Verdict::Fail.to_string(), "fail");
    }
}
