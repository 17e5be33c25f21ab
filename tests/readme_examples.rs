//! The policy and hook examples in README.md are real: extracted from the README, compiled
//! and simulated here, so the README cannot drift from what the engine accepts.

use kubectl_canary::controller::Evaluator;
use kubectl_canary::policy::{Limits, PolicyEngine};
use kubectl_canary::sim::{self, Outcome, Scenario};

/// The body of the fenced code block whose first line starts with `first_line`.
fn readme_block(first_line: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut lines = readme.lines().skip_while(|l| !l.starts_with(first_line));
    let mut block = Vec::new();
    for l in lines.by_ref() {
        if l.starts_with("```") {
            break;
        }
        block.push(l);
    }
    assert!(
        !block.is_empty(),
        "README has no block starting with {first_line:?}"
    );
    block.join("\n")
}

fn simulate(engine: &PolicyEngine, text: &str, scenario: &str) -> sim::Report {
    let limits = Limits::default();
    let policy = engine
        .compile("README.md#checkout.rhai", text, &limits)
        .unwrap_or_else(|e| panic!("README policy must compile: {e}"));
    let params = rhai::Map::new();
    let evaluator = Evaluator {
        engine,
        policy: &policy,
        limits: &limits,
        service: "checkout",
        params: &params,
    };
    sim::run(&evaluator, &Scenario::load(scenario).unwrap(), 1)
}

#[test]
fn readme_policy_decides_like_the_readme_says() {
    let engine = PolicyEngine::new(Vec::new(), &Limits::default());
    let text = readme_block("// checkout.rhai");
    let cases = [
        ("healthy", Outcome::Promoted),
        ("error-spike", Outcome::RolledBack),
        ("latency-regression", Outcome::RolledBack),
        ("kafka-lag", Outcome::Paused),
        ("crash-loop", Outcome::RolledBack),
    ];
    for (scenario, expected) in cases {
        let report = simulate(&engine, &text, scenario);
        assert_eq!(report.outcome, expected, "{scenario}: {}", report.reason);
    }
}

#[test]
fn readme_hook_example_works_as_a_hook() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("queue-depth.rhai"),
        readme_block("// plugins/queue-depth.rhai"),
    )
    .unwrap();
    let engine = PolicyEngine::new(vec![dir.path().to_path_buf()], &Limits::default());
    let policy = r#"
import "queue-depth" as queue;
fn schedule() { #{ steps: [50, 100], min_step_time: "1m", min_requests: 10, queries: queue::queries(#{}) } }
fn decide(ctx) {
    let d = queue::check(ctx, #{ max_depth: 100 });
    if d != () { return d; }
    advance()
}
"#;
    let scenario = |depth: f64| {
        let mut s = Scenario::load("healthy").unwrap();
        s.signals.insert("queue_depth".into(), depth);
        s
    };
    let limits = Limits::default();
    let policy = engine.compile("hook-user.rhai", policy, &limits).unwrap();
    let params = rhai::Map::new();
    let evaluator = Evaluator {
        engine: &engine,
        policy: &policy,
        limits: &limits,
        service: "s",
        params: &params,
    };
    assert_eq!(
        sim::run(&evaluator, &scenario(20.0), 1).outcome,
        Outcome::Promoted
    );
    let deep = sim::run(&evaluator, &scenario(500.0), 1);
    assert_eq!(deep.outcome, Outcome::Paused, "{}", deep.reason);
    assert!(deep.reason.contains("queue depth"), "{}", deep.reason);
}
