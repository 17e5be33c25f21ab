//! `kubectl canary policy check|test`.

use crate::cli::{GlobalArgs, PolicyCommand};
use crate::controller::{Evaluator, parse_params};
use crate::error::{Error, Exit, Result};
use crate::output;
use crate::policy::{self, Limits};
use crate::sim::{self, Scenario};
use serde::Serialize;

pub fn run(g: &GlobalArgs, cmd: PolicyCommand) -> Result<Exit> {
    match cmd {
        PolicyCommand::Check { files } => check(g, &files),
        PolicyCommand::Test {
            policy,
            scenario,
            params,
            seed,
        } => test(g, &policy, &scenario, &params, seed),
    }
}

#[derive(Serialize)]
struct CheckResult {
    policy: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule: Option<crate::core::schedule::Schedule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
}

fn check(g: &GlobalArgs, files: &[String]) -> Result<Exit> {
    let engine = super::engine(g);
    let limits = Limits::default();
    let results: Vec<CheckResult> = files
        .iter()
        .map(|f| match policy::load(&engine, f, &limits) {
            Ok(p) => CheckResult {
                policy: f.clone(),
                ok: true,
                error: None,
                schedule: Some(p.schedule),
                sha256: Some(p.sha256),
            },
            Err(e) => CheckResult {
                policy: f.clone(),
                ok: false,
                error: Some(e.to_string()),
                schedule: None,
                sha256: None,
            },
        })
        .collect();
    let failed = results.iter().filter(|r| !r.ok).count();
    if !output::structured(g.output, &results)? {
        for r in &results {
            match (&r.error, &r.schedule) {
                (Some(e), _) => eprintln!("✖ {e}"),
                (None, Some(s)) => println!(
                    "✔ {}: steps {:?}, {} and {} requests per step, every {}",
                    r.policy,
                    s.steps,
                    humantime::format_duration(s.min_step_time),
                    s.min_requests,
                    humantime::format_duration(s.interval)
                ),
                _ => {}
            }
        }
    }
    if failed > 0 {
        return Err(Error::Other(format!(
            "{failed} of {} policies failed the check",
            results.len()
        )));
    }
    Ok(Exit::Ok)
}

#[derive(Serialize)]
struct TestResult {
    scenario: String,
    expected: String,
    within_secs: Option<u64>,
    outcome: String,
    outcome_at_secs: u64,
    reason: String,
    pass: bool,
}

fn test(
    g: &GlobalArgs,
    policy_file: &str,
    scenarios: &[String],
    params: &[String],
    seed: u64,
) -> Result<Exit> {
    let engine = super::engine(g);
    let limits = Limits::default();
    let policy = policy::load(&engine, policy_file, &limits)?;
    let params = parse_params(params).map_err(Error::Usage)?;
    let evaluator = Evaluator {
        engine: &engine,
        policy: &policy,
        limits: &limits,
        service: "simulated",
        params: &params,
    };
    let mut results = Vec::new();
    for name in scenarios {
        let scenario = Scenario::load(name)?;
        let expect = scenario.expect.clone().ok_or_else(|| {
            Error::Usage(format!(
                "{name}: scenario has no `expect:` block (e.g. expect: {{ outcome: rolled_back, within: 30m }})"
            ))
        })?;
        let report = sim::run(&evaluator, &scenario, seed);
        results.push(TestResult {
            scenario: name.clone(),
            expected: expect.outcome.as_str().to_string(),
            within_secs: expect.within.map(|w| w.as_secs()),
            outcome: report.outcome.as_str().to_string(),
            outcome_at_secs: report.outcome_at_secs,
            reason: report.reason.clone(),
            pass: sim::meets(&report, &expect),
        });
    }
    let failed = results.iter().filter(|r| !r.pass).count();
    if !output::structured(g.output, &results)? {
        let mut t = output::table(&["", "scenario", "expected", "got", "at", "reason"]);
        for r in &results {
            let expected = match r.within_secs {
                Some(w) => format!("{} within {}", r.expected, output::secs(w)),
                None => r.expected.clone(),
            };
            t.add_row(vec![
                if r.pass { "✔" } else { "✖" }.to_string(),
                r.scenario.clone(),
                expected,
                r.outcome.clone(),
                output::secs(r.outcome_at_secs),
                r.reason.clone(),
            ]);
        }
        println!("{t}");
        println!("{} passed, {failed} failed", results.len() - failed);
    }
    if failed > 0 {
        return Err(Error::Other(format!(
            "policy {policy_file}: {failed} scenario(s) did not meet their expectation"
        )));
    }
    Ok(Exit::Ok)
}
