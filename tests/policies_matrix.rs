//! Every shipped policy × every built-in scenario, through the real decision loop
//! (simulator → controller::Evaluator → policy engine → core gates), with a fixed seed.
//!
//! The expected outcome of each cell is written in [`MATRIX`]; where a policy
//! legitimately differs from the scenario's own `expect:` a comment says why.
//! On failure the whole observed matrix is printed, so a changed policy shows at a
//! glance which cells moved.

use kubectl_canary::controller::Evaluator;
use kubectl_canary::policy::{self, Limits, PolicyEngine};
use kubectl_canary::sim::{self, Outcome, Report, Scenario};
use rhai::Map;
use std::time::Instant;

use Outcome::{Paused as P, Promoted as OK, RolledBack as RB};

/// Seed of the matrix runs: fixed so that a failure reproduces with
/// `kubectl canary simulate --policy P --scenario S --seed 7`.
const SEED: u64 = 7;

const SCENARIOS: [&str; 9] = [
    "healthy",
    "error-spike",
    "latency-regression",
    "no-traffic",
    "crash-loop",
    "kafka-lag",
    "aa-pair",
    "aa-low-traffic",
    "metrics-outage",
];

/// Expected outcome and the latest virtual minute it may happen at, per scenario in the
/// order of [`SCENARIOS`]. Faults start at: error-spike 12m, crash-loop 7m, kafka-lag 8m,
/// latency-regression from the start; no-traffic can only end at the policy's deadline.
#[rustfmt::skip]
const MATRIX: &[(&str, [(Outcome, u64); 9])] = &[
    //                      healthy     error-spike latency-reg  no-traffic   crash-loop  kafka-lag   aa-pair     aa-low      metrics-outage
    ("default",            [(OK, 30),   (RB, 15),   (RB, 10),    (P, 121),    (RB, 9),    (OK, 30),   (OK, 30),   (OK, 90),   (OK, 60)]),
    ("istio-runbook",      [(OK, 125),  (RB, 15),   (RB, 10),    (P, 211),    (RB, 9),    (OK, 125),  (OK, 125),  (OK, 200),  (OK, 160)]),
    ("progressive-review", [(OK, 80),   (RB, 15),   (RB, 10),    (P, 211),    (RB, 9),    (P, 10),    (OK, 80),   (OK, 120),  (OK, 115)]),
    ("relative-to-stable", [(OK, 155),  (RB, 15),   (RB, 10),    (P, 211),    (RB, 9),    (OK, 155),  (OK, 155),  (OK, 200),  (OK, 175)]),
    ("eighty-twenty",      [(OK, 125),  (RB, 15),   (OK, 125),   (P, 211),    (RB, 9),    (OK, 125),  (OK, 125),  (OK, 150),  (OK, 140)]),
    ("statistical",        [(OK, 30),   (RB, 15),   (RB, 10),    (P, 181),    (RB, 9),    (OK, 30),   (OK, 30),   (OK, 90),   (OK, 60)]),
];
// Exceptions to the scenarios' own expectations:
// * kafka-lag: only progressive-review imports the kafka-lag hook (seed 001 asks to watch
//   consumer lag); every other policy judges HTTP only, where the canary is healthy, so it
//   promotes. That is the point of the scenario: without the hook the lag goes unnoticed.
// * latency-regression × eighty-twenty: seed 004's latency limits are absolute (average
//   response time < 200 ms to advance, > 500 ms to roll back); a canary at 128 ms median is
//   60% slower than stable but inside them, so it is promoted. The other policies compare
//   with stable (istio-runbook p95 +10%, progressive-review p95 +20%, relative-to-stable
//   +10%, default p95 > 1.5× stable, statistical rank test +10%) and roll back.
// * no-traffic: every policy pauses at its own max_duration (2h default, 3h statistical,
//   3h30m the runbook policies), never promotes.

/// The metrics-outage scenario takes Prometheus away in [6 min, 40 min).
const OUTAGE: std::ops::Range<u64> = 360..2400;

fn engine() -> PolicyEngine {
    PolicyEngine::new(Vec::new(), &Limits::default())
}

fn run(engine: &PolicyEngine, policy_name: &str, scenario: &str, seed: u64) -> Report {
    let limits = Limits::default();
    let policy = policy::load(engine, policy_name, &limits)
        .unwrap_or_else(|e| panic!("shipped policy {policy_name} must compile: {e}"));
    let params = Map::new();
    let evaluator = Evaluator {
        engine,
        policy: &policy,
        limits: &limits,
        service: "simulated",
        params: &params,
    };
    let scenario = Scenario::load(scenario).expect("built-in scenario");
    sim::run(&evaluator, &scenario, seed)
}

/// Invariants that hold for every run, whatever the expected outcome.
fn check_invariants(policy: &str, report: &Report) -> Vec<String> {
    let mut bad = Vec::new();
    if report.scenario == "metrics-outage" {
        for r in report.advances().filter(|r| OUTAGE.contains(&r.at_secs)) {
            bad.push(format!(
                "{policy} × metrics-outage: {} at {}s while metrics were down: {}",
                r.action, r.at_secs, r.reason
            ));
        }
    }
    if report.scenario == "no-traffic" && report.outcome == Outcome::Promoted {
        bad.push(format!(
            "{policy} × no-traffic promoted with nothing to judge"
        ));
    }
    if report.scenario.starts_with("aa-") && report.outcome == Outcome::RolledBack {
        bad.push(format!(
            "{policy} × {} rolled back an identical canary: {}",
            report.scenario, report.reason
        ));
    }
    bad
}

#[test]
fn every_policy_against_every_scenario() {
    let started = Instant::now();
    // One thread per policy; each has its own engine (the sinks are thread-local anyway).
    let results: Vec<(String, Vec<Report>)> = std::thread::scope(|s| {
        let handles: Vec<_> = MATRIX
            .iter()
            .map(|(policy, _)| {
                s.spawn(move || {
                    let engine = engine();
                    let reports = SCENARIOS
                        .iter()
                        .map(|sc| run(&engine, policy, sc, SEED))
                        .collect();
                    (policy.to_string(), reports)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("matrix thread"))
            .collect()
    });

    let mut failures = Vec::new();
    let mut table = format!("{:<20}", "policy \\ scenario");
    for sc in SCENARIOS {
        table += &format!(" {sc:<20}");
    }
    table.push('\n');
    for ((policy, expected), (_, reports)) in MATRIX.iter().zip(&results) {
        table += &format!("{policy:<20}");
        for ((sc, (outcome, within_min)), report) in SCENARIOS.iter().zip(expected).zip(reports) {
            let cell = format!(
                "{} @ {}m",
                report.outcome.as_str(),
                report.outcome_at_secs / 60
            );
            table += &format!(" {cell:<20}");
            if report.outcome != *outcome {
                failures.push(format!(
                    "{policy} × {sc}: expected {}, got {} at {}s: {}",
                    outcome.as_str(),
                    report.outcome.as_str(),
                    report.outcome_at_secs,
                    report.reason
                ));
            } else if report.outcome_at_secs > within_min * 60 {
                failures.push(format!(
                    "{policy} × {sc}: {} at {}s, later than {within_min}m: {}",
                    outcome.as_str(),
                    report.outcome_at_secs,
                    report.reason
                ));
            }
            failures.extend(check_invariants(policy, report));
        }
        table.push('\n');
    }
    eprintln!("{table}matrix took {:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "\n{}\n\nobserved:\n{table}",
        failures.join("\n")
    );
}

/// Identical builds must not be rolled back, whatever the luck of the draw: ~20 seeds of
/// both A/A scenarios for the statistical and the default policy.
#[test]
fn aa_scenarios_are_never_rolled_back() {
    const SEEDS: u64 = 20;
    let started = Instant::now();
    let bad: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = ["statistical", "default"]
            .into_iter()
            .flat_map(|p| ["aa-pair", "aa-low-traffic"].map(|sc| (p, sc)))
            .map(|(policy, sc)| {
                s.spawn(move || {
                    let engine = engine();
                    (1..=SEEDS)
                        .map(|seed| (seed, run(&engine, policy, sc, seed)))
                        .filter(|(_, r)| r.outcome == Outcome::RolledBack)
                        .map(|(seed, r)| {
                            format!(
                                "{policy} × {sc} seed {seed}: rolled back at {}s: {}",
                                r.outcome_at_secs, r.reason
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("seed thread"))
            .collect()
    });
    eprintln!("A/A seeds took {:?}", started.elapsed());
    assert!(
        bad.is_empty(),
        "false alarms on identical builds:\n{}",
        bad.join("\n")
    );
}

/// A scenario in which both versions have the same error rate and latency.
fn same_build(name: &str, rps: f64, error_rate: f64, latency_ms: f64) -> Scenario {
    let text = format!(
        "name: {name}\nduration: 4h\ntraffic: {{ rps: {rps} }}\n\
         stable: {{ error_rate: {error_rate}, latency_ms: {latency_ms} }}\n\
         canary: {{ error_rate: {error_rate}, latency_ms: {latency_ms} }}\n\
         signals: {{ kafka_lag: 40, gateway_overhead_p95_ms: 6, cassandra_read_p99_ms: 9, cassandra_write_p99_ms: 14 }}\n"
    );
    Scenario::parse(name, &text).expect("valid scenario")
}

fn run_scenario(
    engine: &PolicyEngine,
    policy_name: &str,
    scenario: &Scenario,
    seed: u64,
) -> Report {
    let limits = Limits::default();
    let policy = policy::load(engine, policy_name, &limits).expect("shipped policy compiles");
    let params = Map::new();
    let evaluator = Evaluator {
        engine,
        policy: &policy,
        limits: &limits,
        service: "simulated",
        params: &params,
    };
    sim::run(&evaluator, scenario, seed)
}

/// Rollbacks of identical builds over `seeds` seeds per (policy, scenario), one thread per
/// policy: every line is a false alarm.
fn false_rollbacks(scenarios: &[Scenario], seeds: u64) -> Vec<String> {
    std::thread::scope(|s| {
        let handles: Vec<_> = MATRIX
            .iter()
            .map(|(policy, _)| {
                s.spawn(move || {
                    let engine = engine();
                    let mut bad = Vec::new();
                    for sc in scenarios {
                        for seed in 1..=seeds {
                            let r = run_scenario(&engine, policy, sc, seed);
                            if r.outcome == Outcome::RolledBack {
                                bad.push(format!(
                                    "{policy} × {} seed {seed}: rolled back at {}s: {}",
                                    sc.name, r.outcome_at_secs, r.reason
                                ));
                            }
                        }
                    }
                    bad
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("policy thread"))
            .collect()
    })
}

/// A canary as good as stable is never rolled back for stable's own error rate or latency,
/// even when stable itself sits on (or beyond) a policy's threshold: every shipped policy, both
/// versions at 1% errors (seed 001's "success > 99%", seed 004's "> 1%"), at 5% (seed 002's
/// limit) and with a p99 of 1000 ms (seed 002's latency limit), 8 seeds each.
#[test]
fn stable_on_the_threshold_does_not_roll_back_an_identical_canary() {
    let started = Instant::now();
    let p99_1000 = 1000.0 / (2.326_347_874_f64 * 0.3).exp();
    let scenarios = [
        same_build("both-1pct", 100.0, 0.01, 80.0),
        same_build("both-5pct", 100.0, 0.05, 80.0),
        same_build("both-p99-1000ms", 100.0, 0.005, p99_1000),
    ];
    let bad = false_rollbacks(&scenarios, 8);
    eprintln!("threshold A/A took {:?}", started.elapsed());
    assert!(
        bad.is_empty(),
        "false alarms on identical builds:\n{}",
        bad.join("\n")
    );
}

/// Identical builds at 10 req/s (0.5% errors: one error in a small window looks like a big
/// rate) through every shipped policy, 8 seeds.
#[test]
fn low_traffic_identical_builds_are_never_rolled_back() {
    let bad = false_rollbacks(&[same_build("aa-10rps", 10.0, 0.005, 80.0)], 8);
    assert!(
        bad.is_empty(),
        "false alarms on identical builds:\n{}",
        bad.join("\n")
    );
}

/// Errors doubling from 1% to 2%: `statistical` rolls it back (evidence accumulated over the
/// rollout), while `default` promotes it — its 5% limit is absolute, as README's policy table
/// says.
#[test]
fn doubling_errors_statistical_detects_default_promotes() {
    let text = "name: errors-1-to-2\nduration: 4h\ntraffic: { rps: 100 }\n\
                stable: { error_rate: 0.01, latency_ms: 80 }\n\
                canary: { error_rate: 0.02, latency_ms: 80 }\n";
    let sc = Scenario::parse("errors-1-to-2", text).unwrap();
    let engine = engine();
    let seeds = 1..=10u64;
    let detected = seeds
        .clone()
        .filter(|s| run_scenario(&engine, "statistical", &sc, *s).outcome == Outcome::RolledBack)
        .count();
    assert!(detected >= 9, "statistical rolled back only {detected}/10");
    let promoted = seeds
        .filter(|s| run_scenario(&engine, "default", &sc, *s).outcome == Outcome::Promoted)
        .count();
    assert_eq!(
        promoted, 10,
        "default's absolute 5% limit promotes a 1% → 2% canary"
    );
}

/// The same seed gives the same timeline: the matrix above is reproducible.
#[test]
fn runs_are_deterministic() {
    let engine = engine();
    let a = run(&engine, "default", "error-spike", 42);
    let b = run(&engine, "default", "error-spike", 42);
    assert_eq!(a.outcome, b.outcome);
    assert_eq!(a.outcome_at_secs, b.outcome_at_secs);
    assert_eq!(a.rows.len(), b.rows.len());
    for (x, y) in a.rows.iter().zip(&b.rows) {
        assert_eq!(
            (x.at_secs, &x.action, &x.reason),
            (y.at_secs, &y.action, &y.reason)
        );
    }
}
