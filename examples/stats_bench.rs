//! Statistics benchmark of the shipped policies, through the real simulator and policy engine
//! (`sim::run` → controller → Rhai policy → core gates), so what it measures is what
//! `simulate` and a cluster rollout decide.
//!
//! For every shipped policy and every case below it runs `--seeds` seeds (default 200) and
//! prints one markdown table:
//! * A/A at 10, 100 and 1000 req/s (both versions 0.5% errors, 80 ms): share rolled back;
//! * A/A at each absolute threshold of the policy (both versions *on* the threshold, 100
//!   req/s): share rolled back — a canary as good as stable must not pay for stable's rate;
//! * errors 1% → 2% (stable 1%, canary 2%) at 10 and 100 req/s, and p95 +20% (canary 96 ms
//!   vs 80 ms median, same spread) at 100 req/s: share rolled back and mean canary requests
//!   until the rollback, next to the Wald SPRT's expected sample number at α = 0.01,
//!   power 0.95 for the policy's first weight.
//!
//! ```text
//! cargo run --profile bench --example stats_bench              # 200 seeds, ~10 min on 2 cores
//! cargo run --profile bench --example stats_bench -- --seeds 40 --threads 2
//! cargo run --profile bench --example stats_bench -- --policy statistical --seeds 40 \
//!     --set latency_alpha=0.002 --schedule-override interval=10s --case "1→2%" --verbose
//! ```
//!
//! Flags: `--seeds N`, `--first-seed N` (default 1; seeds N, N+1, … instead of 1, 2, …),
//! `--threads N`, `--policy NAME` (one shipped policy), `--set KEY=VALUE` (policy params, as
//! `kubectl canary --set`; repeatable), `--schedule-override KEY=VALUE` (repeatable),
//! `--case TEXT` (only the cases whose name contains TEXT; repeatable) and `--verbose` (per
//! cell: outcomes, the rolled-back runs' mean canary requests ± its standard error,
//! rollbacks by the test that decided them — the first word of the reason — and by the
//! weight they happened at).

use kubectl_canary::controller::Evaluator;
use kubectl_canary::core::stats::normal_cdf;
use kubectl_canary::policy::{self, Limits, PolicyEngine};
use kubectl_canary::sim::scenario::{Pods, Traffic, Version};
use kubectl_canary::sim::{self, Outcome, Scenario};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const POLICIES: [&str; 6] = [
    "default",
    "istio-runbook",
    "progressive-review",
    "relative-to-stable",
    "eighty-twenty",
    "statistical",
];

/// SPRT design point of the issue: α = 0.01, power 0.95.
const ALPHA: f64 = 0.01;
const BETA: f64 = 0.05;
/// Latency spread of the simulated versions (log-normal σ, the scenario default).
const SPREAD: f64 = 0.3;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// A/A: anything rolled back is a false alarm.
    Aa,
    /// A real regression: a rollback is a detection.
    Detect,
}

#[derive(Clone)]
struct Case {
    name: String,
    kind: Kind,
    rps: f64,
    stable: (f64, f64),
    canary: (f64, f64),
}

fn case(name: &str, kind: Kind, rps: f64, stable: (f64, f64), canary: (f64, f64)) -> Case {
    Case {
        name: name.to_string(),
        kind,
        rps,
        stable,
        canary,
    }
}

/// Median latency whose p99 is `p99_ms` for the log-normal spread of the simulator.
fn median_for_p99(p99_ms: f64) -> f64 {
    p99_ms / (2.326_347_874 * SPREAD).exp()
}

/// The absolute thresholds of each policy (seeds' numbers), as A/A cases on the threshold.
fn boundaries(policy: &str) -> Vec<Case> {
    let on = |name: &str, error: f64, latency: f64| {
        case(name, Kind::Aa, 100.0, (error, latency), (error, latency))
    };
    match policy {
        "default" => vec![
            on("errors 5%", 0.05, 80.0),
            on("p99 1000 ms", 0.005, median_for_p99(1000.0)),
        ],
        // Relative rules only: stable's own high error rate is the boundary that matters.
        "istio-runbook" => vec![on("errors 5% both", 0.05, 80.0)],
        "progressive-review" => vec![on("success 99%", 0.01, 80.0)],
        "relative-to-stable" => vec![on("errors 0.1% floor", 0.001, 80.0)],
        "eighty-twenty" => vec![on("errors 1%", 0.01, 80.0), on("p50 500 ms", 0.005, 500.0)],
        "statistical" => vec![on("errors 1% tolerance", 0.01, 80.0)],
        _ => Vec::new(),
    }
}

fn common_cases() -> Vec<Case> {
    vec![
        case("A/A 10 rps", Kind::Aa, 10.0, (0.005, 80.0), (0.005, 80.0)),
        case("A/A 100 rps", Kind::Aa, 100.0, (0.005, 80.0), (0.005, 80.0)),
        case(
            "A/A 1000 rps",
            Kind::Aa,
            1000.0,
            (0.005, 80.0),
            (0.005, 80.0),
        ),
        case(
            "errors 1→2% @10",
            Kind::Detect,
            10.0,
            (0.01, 80.0),
            (0.02, 80.0),
        ),
        case(
            "errors 1→2% @100",
            Kind::Detect,
            100.0,
            (0.01, 80.0),
            (0.02, 80.0),
        ),
        case(
            "p95 +20% @100",
            Kind::Detect,
            100.0,
            (0.005, 80.0),
            (0.005, 96.0),
        ),
    ]
}

fn scenario(c: &Case) -> Scenario {
    let version = |(error_rate, latency_ms): (f64, f64)| Version {
        error_rate,
        latency_ms,
        latency_spread: SPREAD,
    };
    // The hook signals of the built-in scenarios, healthy, so progressive-review's hooks pass.
    let signals = [
        ("kafka_lag", 40.0),
        ("gateway_overhead_p95_ms", 6.0),
        ("cassandra_read_p99_ms", 9.0),
        ("cassandra_write_p99_ms", 14.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Scenario {
        name: c.name.clone(),
        description: String::new(),
        // Longer than every shipped policy's max_duration: each run ends with a verdict.
        duration: Duration::from_secs(4 * 3600),
        traffic: Traffic { rps: c.rps },
        stable: version(c.stable),
        canary: version(c.canary),
        pods: Pods::default(),
        signals,
        faults: Vec::new(),
        expect: None,
    }
}

/// Outcome of one run and the canary requests served until it.
struct Run {
    outcome: Outcome,
    canary_requests: f64,
    /// First word of the outcome's reason (`errors:`, `latency:`, …) and the weight then.
    cause: String,
    weight: u32,
    /// Virtual minutes until the outcome.
    minutes: f64,
}

fn run_one(
    engine: &PolicyEngine,
    policy: &policy::Policy,
    params: &rhai::Map,
    sc: &Scenario,
    seed: u64,
) -> Run {
    let limits = Limits::default();
    let evaluator = Evaluator {
        engine,
        policy,
        limits: &limits,
        service: "bench",
        params,
    };
    let report = sim::run(&evaluator, sc, seed);
    // Every shipped policy records the evidence first, so its last evaluation carries the
    // canary requests of the whole rollout.
    let canary_requests = report
        .rows
        .iter()
        .rev()
        .find_map(|r| {
            r.observations
                .get("evidence_canary_requests")
                .copied()
                .flatten()
        })
        .unwrap_or(f64::NAN);
    let cause = report
        .reason
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_end_matches(':')
        .to_string();
    // The weight the canary had when it was decided (the last rows may already be at 0).
    let weight = report
        .rows
        .iter()
        .rev()
        .map(|r| r.weight)
        .find(|w| *w > 0)
        .unwrap_or(0);
    Run {
        outcome: report.outcome,
        canary_requests,
        cause,
        weight,
        minutes: report.outcome_at_secs as f64 / 60.0,
    }
}

/// Wald's numerator (1−β)·ln((1−β)/α) + β·ln(β/(1−α)) of the expected sample number under H1.
fn wald_numerator() -> f64 {
    (1.0 - BETA) * ((1.0 - BETA) / ALPHA).ln() + BETA * (BETA / (1.0 - ALPHA)).ln()
}

/// Expected canary requests of the error-share SPRT (H1 = 2× stable) when stable has 1% and
/// the canary 2% errors at canary share `w`.
fn sprt_errors(w: f64) -> f64 {
    let p1 = 2.0 * w / (2.0 * w + 1.0 - w);
    let kl_per_error = p1 * (p1 / w).ln() + (1.0 - p1) * ((1.0 - p1) / (1.0 - w)).ln();
    let errors_per_canary_request = 0.02 + 0.01 * (1.0 - w) / w;
    wald_numerator() / (kl_per_error * errors_per_canary_request)
}

/// Expected canary requests of a Bernoulli SPRT on "canary request slower than stable's
/// p95" (5% under H0) for a canary 20% slower at every quantile.
fn sprt_p95() -> f64 {
    let z95 = 1.644_853_627;
    let p0 = 0.05;
    let p1 = 1.0 - normal_cdf(z95 - 1.2_f64.ln() / SPREAD);
    let kl = p1 * (p1 / p0).ln() + (1.0 - p1) * ((1.0 - p1) / (1.0 - p0)).ln();
    wald_numerator() / kl
}

/// Canary requests until the rollback of the runs that were rolled back.
fn rolled_back_requests(runs: &[Run]) -> Vec<f64> {
    runs.iter()
        .filter(|r| r.outcome == Outcome::RolledBack)
        .map(|r| r.canary_requests)
        .collect()
}

/// Mean and its standard error (sample standard deviation / √n); `None` without values.
fn mean_and_se(values: &[f64]) -> Option<(f64, f64)> {
    let n = values.len() as f64;
    if values.is_empty() {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    Some((mean, (var / n).sqrt()))
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} needs a number, got {v}"))
        })
        .unwrap_or(default)
}

/// `--policy NAME` runs the cells of one shipped policy only.
fn only_policy() -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == "--policy")?;
    let name = args.get(i + 1).expect("--policy needs a name").clone();
    assert!(
        POLICIES.contains(&name.as_str()),
        "--policy: one of {POLICIES:?}"
    );
    Some(name)
}

/// Every value of a repeatable flag `name VALUE`.
fn values(name: &str) -> Vec<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .enumerate()
        .filter(|(_, a)| *a == name)
        .map(|(i, _)| {
            args.get(i + 1)
                .unwrap_or_else(|| panic!("{name} needs a value"))
                .clone()
        })
        .collect()
}

/// A shipped policy with the `--schedule-override` pairs applied.
fn load(engine: &PolicyEngine, name: &str) -> policy::Policy {
    let mut pol =
        policy::load(engine, name, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    for pair in values("--schedule-override") {
        let (k, v) = pair
            .split_once('=')
            .unwrap_or_else(|| panic!("--schedule-override {pair:?}: expected KEY=VALUE"));
        policy::schedule::apply_override(&mut pol.schedule, k.trim(), v.trim())
            .unwrap_or_else(|e| panic!("--schedule-override {pair}: {e}"));
    }
    pol.schedule
        .validate()
        .unwrap_or_else(|e| panic!("schedule after overrides: {e}"));
    pol
}

fn main() {
    let seeds = arg("--seeds", 200) as u64;
    let first_seed = arg("--first-seed", 1) as u64;
    let only = only_policy();
    let threads = arg("--threads", 2).max(1);
    let params = kubectl_canary::controller::parse_params(&values("--set"))
        .unwrap_or_else(|e| panic!("{e}"));
    let only_cases = values("--case");
    let verbose = std::env::args().any(|a| a == "--verbose");
    let started = Instant::now();
    let jobs: Vec<(&str, Case)> = POLICIES
        .iter()
        .filter(|p| only.as_deref().is_none_or(|o| o == **p))
        .flat_map(|p| {
            common_cases()
                .into_iter()
                .chain(boundaries(p))
                .map(move |c| (*p, c))
        })
        .filter(|(_, c)| only_cases.is_empty() || only_cases.iter().any(|t| c.name.contains(t)))
        .collect();
    let tasks: Vec<(usize, u64)> = (0..jobs.len())
        .flat_map(|j| (first_seed..first_seed + seeds).map(move |s| (j, s)))
        .collect();
    let next = AtomicUsize::new(0);
    let results: Mutex<BTreeMap<usize, Vec<Run>>> = Mutex::new(BTreeMap::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let engine = PolicyEngine::new(Vec::new(), &Limits::default());
                let mut compiled = BTreeMap::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(job, seed)) = tasks.get(i) else {
                        break;
                    };
                    let (name, case) = &jobs[job];
                    let policy = compiled.entry(*name).or_insert_with(|| load(&engine, name));
                    let run = run_one(&engine, policy, &params, &scenario(case), seed);
                    results.lock().unwrap().entry(job).or_default().push(run);
                }
            });
        }
    });
    let results = results.into_inner().unwrap();

    let cell = |job: usize| -> (f64, Option<f64>) {
        let runs = &results[&job];
        let rolled = rolled_back_requests(runs);
        let share = rolled.len() as f64 / runs.len() as f64;
        (share, mean_and_se(&rolled).map(|(mean, _)| mean))
    };
    println!(
        "stats_bench: {seeds} seeds per cell ({first_seed}–{}), {} runs, {:.0} s on {threads} threads\n",
        first_seed + seeds - 1,
        tasks.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "A/A: share of identical canaries rolled back (goal ≤ 1%); boundary = both versions on the policy's threshold, 100 req/s.\n"
    );
    println!("| policy | A/A 10 rps | A/A 100 rps | A/A 1000 rps | A/A on the thresholds |");
    println!("|---|---|---|---|---|");
    for p in POLICIES
        .into_iter()
        .filter(|p| only.as_deref().is_none_or(|o| o == *p))
    {
        let mut row = format!("| `{p}` |");
        let mut bounds = Vec::new();
        for (j, (name, c)) in jobs.iter().enumerate().filter(|(_, (n, _))| *n == p) {
            let _ = name;
            if c.kind != Kind::Aa {
                continue;
            }
            let (share, _) = cell(j);
            if c.name.starts_with("A/A") {
                row += &format!(" {:.1}% |", share * 100.0);
            } else {
                bounds.push(format!("{} {:.1}%", c.name, share * 100.0));
            }
        }
        println!("{row} {} |", bounds.join(", "));
    }
    println!(
        "\nDetection: share rolled back, mean canary requests until the rollback (rolled-back runs), and the Wald SPRT's expected sample number at α 0.01 / power 0.95 for the policy's first weight.\n"
    );
    println!(
        "| policy | first weight | errors 1→2% @10 rps | errors 1→2% @100 rps | SPRT errors | p95 +20% @100 rps | SPRT p95 |"
    );
    println!("|---|---|---|---|---|---|---|");
    for p in POLICIES
        .into_iter()
        .filter(|p| only.as_deref().is_none_or(|o| o == *p))
    {
        let engine = PolicyEngine::new(Vec::new(), &Limits::default());
        let w = load(&engine, p).schedule.weight_at(0);
        let mut row = format!("| `{p}` | {w}% |");
        for (j, (_, c)) in jobs.iter().enumerate().filter(|(_, (n, _))| *n == p) {
            if c.kind != Kind::Detect {
                continue;
            }
            let (share, mean) = cell(j);
            let mean = mean.map_or("–".to_string(), |m| format!("{m:.0}"));
            row += &format!(" {:.1}%, {mean} |", share * 100.0);
            if c.name == "errors 1→2% @100" {
                row += &format!(" {:.0} |", sprt_errors(f64::from(w) / 100.0));
            }
        }
        row += &format!(" {:.0} |", sprt_p95());
        println!("{row}");
    }
    if verbose {
        println!(
            "\nPer cell: outcomes (count, mean minutes); rollbacks by cause and by weight (count, mean canary requests):\n"
        );
        for (j, (p, c)) in jobs.iter().enumerate() {
            let mut by_cause: BTreeMap<&str, usize> = BTreeMap::new();
            let mut by_weight: BTreeMap<u32, (usize, f64)> = BTreeMap::new();
            for r in results[&j]
                .iter()
                .filter(|r| r.outcome == Outcome::RolledBack)
            {
                *by_cause.entry(&r.cause).or_default() += 1;
                let e = by_weight.entry(r.weight).or_default();
                e.0 += 1;
                e.1 += r.canary_requests;
            }
            let mut by_outcome: BTreeMap<String, (usize, f64)> = BTreeMap::new();
            for r in &results[&j] {
                let e = by_outcome.entry(format!("{:?}", r.outcome)).or_default();
                e.0 += 1;
                e.1 += r.minutes;
            }
            let outcomes: Vec<String> = by_outcome
                .iter()
                .map(|(o, (n, m))| format!("{o} {n} ({:.0} min)", m / *n as f64))
                .collect();
            let causes: Vec<String> = by_cause.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let mean_se = mean_and_se(&rolled_back_requests(&results[&j]))
                .map_or("–".to_string(), |(m, se)| format!("{m:.0} ± {se:.0} req"));
            let weights: Vec<String> = by_weight
                .iter()
                .map(|(w, (n, sum))| format!("{w}%: {n} (mean {:.0} req)", sum / *n as f64))
                .collect();
            println!(
                "- `{p}` {}: {} | rolled back: {mean_se} | {} | {}",
                c.name,
                outcomes.join(", "),
                causes.join(", "),
                weights.join(", ")
            );
        }
    }
}
