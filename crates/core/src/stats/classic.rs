//! The classic per-step error-share SPRT: a reference, not used by any shipped policy.
//!
//! [`ErrorShareTest`] is a Wald SPRT that restarts with each analysis window and spends its
//! α every time; the shipped policies judge errors with time-uniform bounds
//! ([`super::error_bounds`]) or with [`super::AnytimeErrorTest`], which accumulates the same
//! likelihood ratio over the whole rollout. It stays as the textbook form of the share test
//! that those are measured against, with its tests (including the simulations that show
//! what per-window gates get wrong).

use super::distributions::wilson_upper;
use super::{
    MIN_CANARY_ERRORS_TO_FAIL, TestOutcome, Verdict, count_u64, fmt_count, fmt_pct,
    ratio_test_config_error,
};

/// Wald thresholds `(lower, upper)` = `(ln(β/(1−α)), ln((1−β)/α))`.
/// Why these: they bound the error rates by roughly α and β without knowing
/// the sample size in advance, so the test may be checked after every scrape.
fn wald_bounds(alpha: f64, beta: f64) -> (f64, f64) {
    ((beta / (1.0 - alpha)).ln(), ((1.0 - beta) / alpha).ln())
}

/// Sequential test "is the canary's error rate at least `max_ratio` × stable?"
/// based on the canary's share of all errors.
///
/// Why a share test: with canary traffic share `w`, if both versions are
/// equally good each error comes from the canary with probability `w`. That
/// turns a two-sample comparison into a one-sample binomial question which
/// needs only counts and the weight, and it automatically tracks incidents that
/// hit both versions (a shared dependency failing raises both counts and does
/// not blame the canary).
///
/// Classic reference test: no shipped policy calls it (see the module header).
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

impl ErrorShareTest {
    fn config_error(&self) -> Option<String> {
        ratio_test_config_error(self.max_ratio, self.alpha, self.beta, self.max_error_rate)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::testing::{SplitMix64, close};

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
}
