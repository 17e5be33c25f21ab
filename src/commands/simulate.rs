//! `kubectl canary simulate`: the real decision loop against a simulated service.

use crate::cli::{GlobalArgs, SimulateArgs};
use crate::controller::{Evaluator, parse_params};
use crate::error::{Error, Exit, Result};
use crate::output;
use crate::policy::{self, Limits};
use crate::report::{Context, Report};
use crate::sim::{self, Outcome, Scenario};

pub fn outcome_exit(o: Outcome) -> Exit {
    match o {
        Outcome::Promoted => Exit::Ok,
        Outcome::RolledBack => Exit::RolledBack,
        Outcome::Paused => Exit::Paused,
        Outcome::Inconclusive => Exit::Running,
    }
}

pub fn run(g: &GlobalArgs, args: &SimulateArgs) -> Result<Exit> {
    if args.list {
        let mut t = output::table(&["scenario", "expected", "description"]);
        for (name, _) in sim::scenario::BUILTIN {
            let s = Scenario::load(name)?;
            let expected = s.expect.as_ref().map(|e| e.outcome.as_str()).unwrap_or("-");
            t.add_row(vec![name.to_string(), expected.to_string(), s.description]);
        }
        println!("{t}");
        return Ok(Exit::Ok);
    }
    let engine = super::engine(g);
    let limits = Limits::default();
    let policy = policy::load(&engine, &args.policy.policy, &limits)?;
    let params = parse_params(&args.policy.params).map_err(Error::Usage)?;
    let scenario = Scenario::load(&args.scenario)?;
    let evaluator = Evaluator {
        engine: &engine,
        policy: &policy,
        limits: &limits,
        service: "simulated",
        params: &params,
    };
    let report = sim::run(&evaluator, &scenario, args.seed);
    if let Some(file) = &args.report {
        let context = Context {
            policy: args.policy.policy.clone(),
            policy_path: policy.path.clone(),
            policy_sha256: policy.sha256.clone(),
            params: args.policy.params.clone(),
            steps: policy.schedule.steps.clone(),
            provider: "simulated".into(),
            started_by: "simulate".into(),
            ..Context::default()
        };
        let title = format!(
            "simulation of {} (scenario {}, seed {})",
            policy.path, report.scenario, report.seed
        );
        let page = Report::of_simulation(title, context, &report.rollout);
        super::report::write_page(&page, file)?;
        // stderr: stdout carries the timeline or -o json.
        eprintln!("report written to {}", file.display());
    }
    if !output::structured(g.output, &report)? {
        print_timeline(&report, args.verbose);
    }
    Ok(outcome_exit(report.outcome))
}

fn print_timeline(report: &sim::Report, verbose: bool) {
    println!(
        "policy {}  scenario {}  seed {}",
        report.policy, report.scenario, report.seed
    );
    let mut t = output::table(&["time", "weight", "decision", "reason", "observations"]);
    let mut last: Option<(String, String)> = None;
    let mut hidden = 0;
    for row in &report.rows {
        // Consecutive evaluations that say the same thing are folded unless --verbose.
        let kind = row
            .reason
            .split([':', ' '])
            .next()
            .unwrap_or_default()
            .to_string();
        let key = (row.action.clone(), kind);
        let show = verbose || row.transition.is_some() || last.as_ref() != Some(&key);
        last = Some(key);
        if !show {
            hidden += 1;
            continue;
        }
        t.add_row(vec![
            output::secs(row.at_secs),
            format!("{}%", row.weight),
            row.action.clone(),
            row.reason.clone(),
            output::observations(&row.observations),
        ]);
    }
    println!("{t}");
    if hidden > 0 {
        println!("({hidden} similar evaluations folded; --verbose shows all)");
    }
    println!(
        "outcome: {} at {} — {}",
        report.outcome.as_str(),
        output::secs(report.outcome_at_secs),
        report.reason
    );
}
