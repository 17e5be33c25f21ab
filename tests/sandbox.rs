//! Hostile and broken policies: each is contained within a second, never advances or
//! promotes, and its error names file:line:column where there is a position to name.

use chrono::{DateTime, Utc};
use kubectl_canary::controller::Evaluator;
use kubectl_canary::core::evaluate;
use kubectl_canary::core::facts::Facts;
use kubectl_canary::core::rollout::{Cause, Event, Rollout};
use kubectl_canary::policy::{ContextData, Limits, PolicyEngine, PolicyFailure};
use kubectl_canary::sim::{self, Outcome, Scenario};
use rhai::Map;
use std::time::{Duration, Instant};

const NAME: &str = "hostile.rhai";

/// Gates wide open (no minimum time or requests): if anything could slip through as an
/// advance or a promotion, it would here.
const SCHEDULE: &str = r#"
fn schedule() {
    #{ steps: [50, 100], min_step_time: 0, min_requests: 0, interval: "30s", max_duration: "20m" }
}
"#;

fn engine() -> PolicyEngine {
    PolicyEngine::new(Vec::new(), &Limits::default())
}

fn source(decide: &str) -> String {
    format!("{SCHEDULE}\n{decide}\n")
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).unwrap()
}

fn context(facts: Facts) -> ContextData {
    ContextData {
        service: "svc".into(),
        step: 0,
        weight: 50,
        steps: vec![50, 100],
        time_in_step_secs: 600.0,
        elapsed_secs: 600.0,
        min_requests: 0,
        params: Map::new(),
        facts,
        history: Vec::new(),
    }
}

fn healthy_facts() -> Facts {
    let mut f = Facts::default();
    f.canary.requests = Some(5000.0);
    f.canary.errors = Some(1.0);
    f.stable.requests = Some(5000.0);
    f.stable.errors = Some(1.0);
    // Healthy: every pod ready (a canary at weight without ready pods is rolled back by the
    // core's readiness gate, whatever the policy says).
    f.stable_pods.desired = 2;
    f.stable_pods.ready = 2;
    f.canary_pods.desired = 1;
    f.canary_pods.ready = 1;
    f
}

/// Compiles `decide`, evaluates it once (timed) and applies the core's gates; returns the
/// policy's failure and the effective action.
fn evaluate_once(decide: &str) -> (Result<(), PolicyFailure>, &'static str) {
    let engine = engine();
    let limits = Limits::default();
    let policy = engine
        .compile(NAME, &source(decide), &limits)
        .unwrap_or_else(|e| panic!("must compile: {e}"));
    let facts = healthy_facts();
    let started = Instant::now();
    let outcome = engine.evaluate(&policy, context(facts.clone()), &limits);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "{decide}: evaluation took {took:?}"
    );
    let mut rollout = Rollout::new(t0());
    rollout
        .apply(Event::CanaryReady { weight: 50 }, t0(), Cause::default())
        .unwrap();
    let now = t0() + chrono::Duration::seconds(600);
    let policy_result = outcome.decision.clone().map(|_| ());
    let step = evaluate::decide(&rollout, &policy.schedule, outcome.decision, &facts, now);
    let action = step.decision.action();
    assert!(
        action != "advance" && action != "promote",
        "{decide}: a hostile policy must never advance or promote, got {action}"
    );
    (policy_result, action)
}

fn error_message(r: Result<(), PolicyFailure>) -> String {
    match r {
        Err(PolicyFailure::Error(m)) => m,
        other => panic!("expected a policy error, got {other:?}"),
    }
}

/// "hostile.rhai:LINE:COL" somewhere in the message.
fn names_position(msg: &str) -> bool {
    msg.split(&format!("{NAME}:")).skip(1).any(|rest| {
        let mut parts = rest.splitn(3, ':');
        let line = parts.next().unwrap_or("");
        let col = parts.next().unwrap_or("");
        !line.is_empty()
            && line.chars().all(|c| c.is_ascii_digit())
            && !col.is_empty()
            && col.chars().all(|c| c.is_ascii_digit())
    })
}

#[test]
fn infinite_loop_is_stopped() {
    let (r, action) = evaluate_once("fn decide(ctx) {\n    loop { }\n}");
    let msg = error_message(r);
    assert!(msg.contains(NAME), "{msg}");
    assert_eq!(action, "hold", "on_error hold: {msg}");
}

#[test]
fn string_growth_is_stopped() {
    let (r, _) = evaluate_once("fn decide(ctx) {\n    let s = \"x\";\n    loop { s += s; }\n}");
    let msg = error_message(r);
    // Rhai reports the size limit without a position; the file is still named.
    assert!(msg.contains(NAME) && msg.contains("too large"), "{msg}");
}

#[test]
fn deep_recursion_is_stopped() {
    let (r, _) = evaluate_once("fn f(n) { f(n + 1) }\nfn decide(ctx) {\n    f(0)\n}");
    let msg = error_message(r);
    assert!(msg.contains(NAME), "{msg}");
}

#[test]
fn throw_names_the_position() {
    let (r, action) = evaluate_once("fn decide(ctx) {\n    throw \"boom\";\n}");
    let msg = error_message(r);
    assert!(msg.contains("boom") && names_position(&msg), "{msg}");
    assert_eq!(action, "hold");
}

#[test]
fn garbage_decisions_are_errors() {
    for (decide, needle) in [
        ("fn decide(ctx) { 42 }", "expected a decision"),
        (
            "fn decide(ctx) { #{ reason: \"no action\" } }",
            "without `action`",
        ),
        ("fn decide(ctx) { #{ action: \"yolo\" } }", "unknown action"),
        ("fn decide(ctx) { \"advance\" }", "expected a decision"),
        (
            "fn decide(ctx) { advance_to(500) }",
            "weight must be within",
        ),
    ] {
        let (r, action) = evaluate_once(decide);
        let msg = error_message(r);
        assert!(msg.contains(needle), "{decide}: {msg}");
        assert!(msg.contains(NAME), "{decide}: {msg}");
        assert_eq!(action, "hold", "{decide}");
    }
}

#[test]
fn missing_metric_is_inconclusive_not_a_pass() {
    // p99 has no data in the facts: the getter throws "no data" and the core holds.
    let (r, action) = evaluate_once(
        "fn decide(ctx) {\n    if ctx.canary.p99 > 500 { return rollback(\"slow\"); }\n    advance()\n}",
    );
    match r {
        Err(PolicyFailure::NoData(what)) => {
            assert!(what.contains("canary.p99"), "{what}");
            assert!(names_position(&what), "{what}");
        }
        other => panic!("expected no data, got {other:?}"),
    }
    assert_eq!(action, "hold");
    // An undeclared named query is a policy error, not a silent pass.
    let (r, action) = evaluate_once(
        "fn decide(ctx) {\n    if ctx.query(\"nope\") > 1 { return rollback(\"x\"); }\n    advance()\n}",
    );
    let msg = error_message(r);
    assert!(msg.contains("not declared"), "{msg}");
    assert_eq!(action, "hold");
}

fn compile_error(text: &str) -> String {
    let engine = engine();
    let started = Instant::now();
    let r = engine.compile(NAME, text, &Limits::default());
    assert!(started.elapsed() < Duration::from_secs(1));
    match r {
        Ok(_) => panic!("must not compile:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn eval_is_disabled() {
    let msg = compile_error(&source("fn decide(ctx) {\n    eval(\"advance()\")\n}"));
    assert!(names_position(&msg), "{msg}");
}

#[test]
fn imports_by_path_are_refused() {
    let msg = compile_error(&format!(
        "import \"../../etc/passwd\" as p;\n{}",
        source("fn decide(ctx) { advance() }")
    ));
    assert!(msg.contains("paths are not allowed"), "{msg}");
    assert!(msg.contains(&format!("{NAME}:1")), "{msg}");
}

#[test]
fn missing_hook_is_a_compile_error() {
    let msg = compile_error(&format!(
        "import \"no-such-hook\" as h;\n{}",
        source("fn decide(ctx) { advance() }")
    ));
    assert!(
        msg.contains("no-such-hook") && msg.contains("kafka-lag"),
        "{msg}"
    );
    assert!(msg.contains(&format!("{NAME}:1")), "{msg}");
}

#[test]
fn syntax_error_names_line_and_column() {
    let msg = compile_error(
        "fn schedule() { #{ steps: [5, 100] } }\nfn decide(ctx) {\n    let x = ;\n}\n",
    );
    assert!(msg.contains(&format!("{NAME}:3:")), "{msg}");
    assert!(names_position(&msg), "{msg}");
}

#[test]
fn missing_contract_functions() {
    let msg = compile_error("fn decide(ctx) { advance() }");
    assert!(msg.contains("fn schedule()"), "{msg}");
    let msg = compile_error(SCHEDULE);
    assert!(msg.contains("fn decide(ctx)"), "{msg}");
}

/// Through the whole loop: a policy that throws or returns garbage at every evaluation
/// holds until its deadline pauses it; it is never promoted.
#[test]
fn hostile_policies_never_promote_in_the_simulator() {
    let engine = engine();
    let limits = Limits::default();
    let scenario = Scenario::load("healthy").unwrap();
    let params = Map::new();
    for decide in [
        "fn decide(ctx) { throw \"boom\" }",
        "fn decide(ctx) { 42 }",
        "fn decide(ctx) { #{ action: \"yolo\" } }",
        "fn decide(ctx) { if ctx.query(\"kafka_lag\") > 0 { advance() } else { promote() } }",
        "fn decide(ctx) { let s = \"x\"; loop { s += s; } }",
    ] {
        let policy = engine.compile(NAME, &source(decide), &limits).unwrap();
        let evaluator = Evaluator {
            engine: &engine,
            policy: &policy,
            limits: &limits,
            service: "simulated",
            params: &params,
        };
        let started = Instant::now();
        let report = sim::run(&evaluator, &scenario, 1);
        assert!(started.elapsed() < Duration::from_secs(20), "{decide}");
        assert_eq!(report.advances().count(), 0, "{decide}");
        assert_eq!(
            report.outcome,
            Outcome::Paused,
            "{decide}: {}",
            report.reason
        );
        assert!(
            report.reason.contains("deadline"),
            "{decide}: {}",
            report.reason
        );
    }
}

/// An engine whose plugin dir holds the hooks `(name, source)` (the dir lives as long as the
/// returned guard).
fn engine_with_hooks(hooks: &[(&str, &str)]) -> (tempfile::TempDir, PolicyEngine) {
    let dir = tempfile::tempdir().unwrap();
    for (name, source) in hooks {
        std::fs::write(dir.path().join(format!("{name}.rhai")), source).unwrap();
    }
    let engine = PolicyEngine::new(vec![dir.path().to_path_buf()], &Limits::default());
    (dir, engine)
}

/// Hooks that import each other are a clear compile error naming the chain, not a stack
/// overflow that kills the process (issue 10 F10).
#[test]
fn import_cycles_are_errors() {
    let (_dir, engine) = engine_with_hooks(&[
        ("ping", "import \"pong\" as pong;\nfn check(ctx) { () }\n"),
        ("pong", "import \"ping\" as ping;\nfn check(ctx) { () }\n"),
    ]);
    let src = "import \"ping\" as ping;\nfn schedule() { #{ steps: [10, 100] } }\nfn decide(ctx) { hold(\"x\") }\n";
    let err = match engine.compile("cycle.rhai", src, &Limits::default()) {
        Ok(_) => panic!("a cycle must not compile"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("import cycle: ping → pong → ping"), "{err}");
}

/// Bad numbers are errors that name what is wrong, never a silently disabled threshold or a
/// panic (issue 10 F15).
#[test]
fn bad_numbers_are_errors() {
    for v in ["nan", "inf", "-inf", "NaN"] {
        let e =
            kubectl_canary::controller::parse_params(&[format!("max_error_rate={v}")]).unwrap_err();
        assert!(
            e.contains("not a finite number") && e.contains("max_error_rate"),
            "{e}"
        );
    }
    assert!(kubectl_canary::controller::parse_params(&["x=0.05".into()]).is_ok());
    let engine = engine();
    for d in ["1e20", "1.0e300", "\"100000h\""] {
        let src = format!(
            "fn schedule() {{ #{{ steps: [10, 100], min_step_time: {d} }} }}\nfn decide(ctx) {{ hold(\"x\") }}\n"
        );
        let err = match engine.compile("nums.rhai", &src, &Limits::default()) {
            Ok(_) => panic!("min_step_time {d} must be refused"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("min_step_time"), "{d}: {err}");
    }
}

/// A policy tells a query that failed from one without data (issue 10 F9): `ctx.query_error`
/// gives the failure's text, `()` for a query that answered; reading either value is "no data"
/// (hold), and the failure's text reaches the reason.
#[test]
fn a_failed_query_is_told_from_no_data() {
    let engine = engine();
    let limits = Limits::default();
    let src = r#"
fn schedule() { #{ steps: [50, 100], queries: #{ lag: "x", gone: "y" } } }
fn decide(ctx) {
    let failed = ctx.query_error("lag");
    let empty = ctx.query_error("gone");
    let p95 = ctx.query_error("stable.p95");
    if failed == () || empty != () || p95 == () { return rollback("wrong"); }
    if ctx.has_query("lag") || ctx.has_query("gone") { return rollback("wrong"); }
    ctx.query("lag");
    advance()
}
"#;
    let policy = engine.compile("failed.rhai", src, &limits).unwrap();
    let mut f = healthy_facts();
    f.queries.insert("lag".into(), None);
    f.queries.insert("gone".into(), None);
    f.failed
        .insert("lag".into(), "bad_data: parse error at char 3".into());
    f.failed.insert("stable.p95".into(), "timeout".into());
    let out = engine.evaluate(&policy, context(f), &limits);
    assert!(
        matches!(&out.decision, Err(PolicyFailure::NoData(what)) if what.contains("query lag") && what.contains("parse error")),
        "{:?}",
        out.decision
    );
}

/// The metrics flavour is parsed once into a type: an unknown one is a compile error of the
/// policy that names the known ones; a known one is carried as its type.
#[test]
fn metrics_flavour_is_checked_when_the_policy_compiles() {
    let engine = engine();
    let src = |m: &str| {
        format!(
            "fn schedule() {{ #{{ steps: [10, 100], metrics: \"{m}\" }} }}\nfn decide(ctx) {{ hold(\"x\") }}\n"
        )
    };
    let err = match engine.compile("flavour.rhai", &src("envoy"), &Limits::default()) {
        Ok(_) => panic!("metrics: envoy must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("schedule.metrics") && err.contains("envoy") && err.contains("linkerd"),
        "{err}"
    );
    let p = engine
        .compile("flavour.rhai", &src("linkerd"), &Limits::default())
        .unwrap();
    assert_eq!(
        p.schedule.metrics,
        Some(kubectl_canary::core::schedule::MetricsFlavour::Linkerd)
    );
}

/// A print flood keeps a bounded log (issue 10 F11): at most 50 lines of 500 characters and a
/// marker, whatever the policy prints.
#[test]
fn print_floods_are_bounded() {
    let engine = engine();
    let limits = Limits::default();
    let policy = engine
        .compile(
            NAME,
            &source("fn decide(ctx) { let s = \"x\"; for i in 0..12 { s += s; } for i in 0..300 { print(s); } hold(\"x\") }"),
            &limits,
        )
        .unwrap();
    let out = engine.evaluate(&policy, context(healthy_facts()), &limits);
    assert_eq!(out.log.len(), 51, "50 lines and a marker");
    assert!(out.log.iter().all(|l| l.chars().count() <= 505));
    assert!(out.log.last().unwrap().contains("dropped"));
}

/// A placeholder typo in a named query is a compile error naming it (issue 10 F9), not "no
/// data" for a whole rollout.
#[test]
fn named_query_placeholder_typos_are_errors() {
    let engine = engine();
    let src = "fn schedule() { #{ steps: [10, 100], queries: #{ lag: `sum(kafka_lag{group=\"{{canary_wrkload}}\"})` } } }\nfn decide(ctx) { hold(\"x\") }\n";
    let err = match engine.compile("typo.rhai", src, &Limits::default()) {
        Ok(_) => panic!("an unknown placeholder must not compile"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("canary_wrkload") && err.contains("lag"),
        "{err}"
    );
}

/// The default policy with only stable's p95 query failing holds as inconclusive; it does not
/// skip its latency comparison and advance (issue 10 F9).
#[test]
fn default_policy_holds_when_only_stables_p95_is_missing() {
    let engine = engine();
    let limits = Limits::default();
    let (path, text) = kubectl_canary::shipped::policy("default").unwrap();
    let policy = engine.compile(path, text, &limits).unwrap();
    let mut f = healthy_facts();
    for m in [&mut f.canary, &mut f.stable] {
        m.request_rate = Some(50.0);
        m.error_rate = Some(0.0);
        m.latency_p50 = Some(5.0);
        m.latency_p95 = Some(9.0);
        m.latency_p99 = Some(12.0);
    }
    let out = engine.evaluate(&policy, context(f.clone()), &limits);
    assert_eq!(
        out.decision.as_ref().map(|d| d.action()).ok(),
        Some("advance"),
        "{:?}",
        out.decision
    );
    f.stable.latency_p95 = None;
    let out = engine.evaluate(&policy, context(f), &limits);
    assert!(
        matches!(&out.decision, Err(PolicyFailure::NoData(what)) if what.contains("p95")),
        "{:?}",
        out.decision
    );
}

/// The step's latency samples (two range queries, the dearest part of a fetch) are fetched
/// for policies that read them: known when the policy calls `latency_test`/`latency_check`
/// itself, learned when it reads them through a hook — that evaluation is void
/// (`wanted_latency_samples`) and the caller evaluates again with them (issue 11, runner CPU).
#[test]
fn latency_samples_are_fetched_for_policies_that_read_them() {
    let (_dir, engine) = engine_with_hooks(&[(
        "lat",
        "fn check(ctx) { ctx.latency_test(#{ min_samples: 5 }) }\n",
    )]);
    let limits = Limits::default();
    let direct = engine
        .compile(
            NAME,
            &source("fn decide(ctx) { let l = ctx.latency_test(); hold(\"x\") }"),
            &limits,
        )
        .unwrap();
    assert!(direct.reads_latency_samples());
    let none = engine
        .compile(
            NAME,
            &source("fn decide(ctx) { hold(\"watching\") }"),
            &limits,
        )
        .unwrap();
    assert!(!none.reads_latency_samples());
    let shipped = engine
        .compile(
            "statistical.rhai",
            include_str!("../policies/statistical.rhai"),
            &limits,
        )
        .unwrap();
    assert!(shipped.reads_latency_samples());

    let hooked = engine
        .compile(
            NAME,
            &format!(
                "import \"lat\" as lat;\n{SCHEDULE}\nfn decide(ctx) {{ let l = lat::check(ctx); hold(`looks ${{l.look}}`) }}\n"
            ),
            &limits,
        )
        .unwrap();
    assert!(!hooked.reads_latency_samples(), "hidden in a hook");
    let params = Map::new();
    let evaluator = Evaluator {
        engine: &engine,
        policy: &hooked,
        limits: &limits,
        service: "svc",
        params: &params,
    };
    let mut rollout = Rollout::new(t0());
    rollout
        .apply(Event::CanaryReady { weight: 50 }, t0(), Cause::default())
        .unwrap();
    let now = t0() + chrono::Duration::seconds(600);
    let mut facts = healthy_facts();
    facts.latency_samples_skipped = true;
    let first = evaluator.evaluate(&rollout, &facts, now);
    assert!(
        first.wanted_latency_samples,
        "the hook read skipped samples"
    );
    assert!(
        hooked.reads_latency_samples(),
        "learned for the next fetches"
    );
    facts.latency_samples_skipped = false;
    facts.canary.latency_samples = vec![100.0; 10];
    facts.stable.latency_samples = vec![100.0; 10];
    let second = evaluator.evaluate(&rollout, &facts, now);
    assert!(!second.wanted_latency_samples);
    // A policy that reads nothing never asks for them.
    let quiet = Evaluator {
        policy: &none,
        ..evaluator
    };
    facts.latency_samples_skipped = true;
    assert!(!quiet.evaluate(&rollout, &facts, now).wanted_latency_samples);
    assert!(!none.reads_latency_samples());
}
