//! Time-uniform bounds of an error rate, and how `ctx.error_bounds` splits α over them.
//!
//! [`rate_exceeds`], [`rate_below`] and [`rate_bounds`] are mixtures of likelihood ratios, so
//! by Ville's inequality they hold with probability 1 − α *however often they are checked* as
//! the counts grow. [`spent_alpha`] shares α over repeated looks of a test that is not (a
//! sliding window, the rank test). [`error_bounds`] is the arithmetic behind the Rhai binding
//! `ctx.error_bounds`, which every shipped policy but `statistical` judges errors with.

use super::valid_prob;

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

/// The shares of α behind [`error_bounds`]. Half of α goes to the canary, half to stable, so
/// that a rule combining one canary bound with one stable bound is wrong with probability at
/// most α. The canary's half is split over three views: the rollout so far (half of it), the
/// current step (a quarter, split over the schedule's steps) and the last minute (a quarter,
/// spent over the looks with [`spent_alpha`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlphaSplit {
    pub rollout: f64,
    pub step: f64,
    pub last_minute: f64,
    pub stable: f64,
}

impl AlphaSplit {
    /// The shares for `alpha` with a schedule of `steps` steps (at least 1 is assumed) at the
    /// `look`-th look (1-based).
    pub fn new(alpha: f64, steps: usize, look: u64) -> AlphaSplit {
        let half = alpha / 2.0;
        let steps = steps.max(1) as f64;
        AlphaSplit {
            rollout: half * 0.5,
            step: half * 0.25 / steps,
            last_minute: spent_alpha(half * 0.25, look),
            stable: half,
        }
    }
}

/// The counts `ctx.error_bounds` judges, each as (errors, requests); `None` when missing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateViews {
    /// The canary over the rollout so far (the [`Evidence`](super::Evidence)'s counters).
    pub rollout: (f64, f64),
    /// The canary over the current step.
    pub step: Option<(f64, f64)>,
    /// The canary over the last minute (from its request and error rates).
    pub last_minute: Option<(f64, f64)>,
    /// Stable over the current step, or the baseline carried from earlier steps when stable
    /// serves nothing (100%).
    pub stable: Option<(f64, f64)>,
}

/// What [`error_bounds`] finds; `None` where no view had usable counts.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorBounds {
    /// The highest lower bound of the canary's views.
    pub canary_lower: Option<f64>,
    /// The view that set `canary_lower`, e.g. "this step (12 of 800 requests)".
    pub canary_lower_over: Option<String>,
    /// The lowest upper bound of the canary's views.
    pub canary_upper: Option<f64>,
    pub stable_lower: Option<f64>,
    pub stable_upper: Option<f64>,
}

/// Time-uniform bounds of the canary's error rate and of stable's at the shares of α of
/// [`AlphaSplit`]: the canary's are the tightest of its three views — so a canary that starts
/// failing late is not hidden by its healthy past — and stable's are over its own view.
pub fn error_bounds(alpha: f64, steps: usize, look: u64, views: &RateViews) -> ErrorBounds {
    let split = AlphaSplit::new(alpha, steps, look);
    let canary = [
        ("the rollout", Some(views.rollout), split.rollout),
        ("this step", views.step, split.step),
        ("the last minute", views.last_minute, split.last_minute),
    ];
    let mut lower: Option<(f64, String)> = None;
    let mut upper: Option<f64> = None;
    for (name, counts, a) in canary {
        let Some((x, n)) = counts else { continue };
        let Some((lo, up)) = rate_bounds(x, n, a) else {
            continue;
        };
        if lower.as_ref().is_none_or(|(l, _)| lo > *l) {
            let over = format!("{name} ({} of {} requests)", x.round(), n.round());
            lower = Some((lo, over));
        }
        upper = Some(upper.map_or(up, |u: f64| u.min(up)));
    }
    let stable = views
        .stable
        .and_then(|(x, n)| rate_bounds(x, n, split.stable));
    let (canary_lower, canary_lower_over) = lower.unzip();
    ErrorBounds {
        canary_lower,
        canary_lower_over,
        canary_upper: upper,
        stable_lower: stable.map(|b| b.0),
        stable_upper: stable.map(|b| b.1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::distributions::wilson_upper;
    use crate::stats::testing::{SplitMix64, close};

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
    fn alpha_split_shares() {
        // α 0.01 over 4 steps at the first look: half to stable, and the canary's half as
        // 1/2 (rollout), 1/4 over the steps, 1/4 spent over the looks (1/2 of it at look 1).
        let a = AlphaSplit::new(0.01, 4, 1);
        assert_eq!(a.stable, 0.005);
        assert_eq!(a.rollout, 0.0025);
        assert_eq!(a.step, 0.0003125);
        assert_eq!(a.last_minute, 0.000625);
        // The step's share summed over the schedule, and the last minute's over any number
        // of looks, stay within the canary's quarter each: the canary never spends more
        // than α/2, stable α/2.
        let steps = 4.0 * a.step;
        let minute: f64 = (1..=10_000)
            .map(|t| AlphaSplit::new(0.01, 4, t).last_minute)
            .sum();
        assert!(close(steps, 0.00125, 1e-15), "{steps}");
        assert!(minute < 0.00125 && close(minute, 0.00125, 1e-6), "{minute}");
        assert!(a.rollout + steps + 0.00125 <= 0.005 + 1e-15);
        // No schedule counts as one step; look 0 as look 1.
        assert_eq!(AlphaSplit::new(0.01, 0, 0), AlphaSplit::new(0.01, 1, 1));
    }

    #[test]
    fn error_bounds_take_the_tightest_view() {
        // A healthy rollout whose last minute is bad: the minute sets the lower bound, the
        // rollout the upper bound (its most data).
        let views = RateViews {
            rollout: (20.0, 10_000.0),
            step: Some((10.0, 2_000.0)),
            last_minute: Some((30.0, 300.0)),
            stable: Some((50.0, 50_000.0)),
        };
        let b = error_bounds(0.01, 4, 3, &views);
        let a = AlphaSplit::new(0.01, 4, 3);
        let rollout = rate_bounds(20.0, 10_000.0, a.rollout).unwrap();
        let step = rate_bounds(10.0, 2_000.0, a.step).unwrap();
        let minute = rate_bounds(30.0, 300.0, a.last_minute).unwrap();
        let stable = rate_bounds(50.0, 50_000.0, 0.005).unwrap();
        assert!(minute.0 > rollout.0 && minute.0 > step.0);
        assert_eq!(b.canary_lower, Some(minute.0));
        assert_eq!(
            b.canary_lower_over.as_deref(),
            Some("the last minute (30 of 300 requests)")
        );
        assert_eq!(b.canary_upper, Some(rollout.1.min(step.1).min(minute.1)));
        assert_eq!(
            (b.stable_lower, b.stable_upper),
            (Some(stable.0), Some(stable.1))
        );
        // Missing views are skipped; the rollout alone still bounds the canary.
        let b = error_bounds(
            0.01,
            4,
            3,
            &RateViews {
                step: None,
                last_minute: None,
                stable: None,
                ..views
            },
        );
        assert_eq!(b.canary_lower, Some(rollout.0));
        assert_eq!(
            b.canary_lower_over.as_deref(),
            Some("the rollout (20 of 10000 requests)")
        );
        assert_eq!(b.canary_upper, Some(rollout.1));
        assert_eq!((b.stable_lower, b.stable_upper), (None, None));
        // No usable counts at all: no bounds.
        let b = error_bounds(
            0.01,
            4,
            3,
            &RateViews {
                rollout: (0.0, 0.0),
                step: None,
                last_minute: None,
                stable: Some((1.0, 0.0)),
            },
        );
        assert_eq!(b.canary_lower, None);
        assert_eq!(b.canary_lower_over, None);
        assert_eq!(b.canary_upper, None);
        assert_eq!(b.stable_lower, None);
    }
}
