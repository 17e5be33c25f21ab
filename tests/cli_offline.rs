//! The command line without a cluster: simulate, policy check, policy test.

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::PathBuf;

fn kc() -> Command {
    let mut c = Command::cargo_bin("kubectl-canary").expect("binary");
    // Run from the repository root so `tests/scenarios/...` and `plugins/` resolve.
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = kc().args(args).output().expect("run");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: stdout is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn temp_policy(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn simulate_without_arguments_promotes() {
    kc().arg("simulate")
        .assert()
        .code(0)
        .stdout(predicate::str::contains("outcome: promoted"))
        .stdout(predicate::str::contains("TIME"))
        .stdout(predicate::str::contains("advance"));
}

#[test]
fn simulate_error_spike_exits_3() {
    kc().args(["simulate", "--scenario", "error-spike"])
        .assert()
        .code(3)
        .stdout(predicate::str::contains("outcome: rolled_back"));
}

#[test]
fn simulate_json_is_valid_and_print_stays_off_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let policy = temp_policy(
        &dir,
        "chatty.rhai",
        r#"
fn schedule() { #{ steps: [50, 100], min_step_time: "1m", min_requests: 10 } }
fn decide(ctx) {
    print("PRINTED-BY-POLICY");
    debug("DEBUGGED-BY-POLICY");
    advance()
}
"#,
    );
    let out = kc()
        .args(["simulate", "-o", "json", "--policy"])
        .arg(&policy)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // print()/debug() lines are kept in the rollout record (inside the JSON strings),
    // never written to stdout as raw lines.
    assert!(
        !stdout
            .lines()
            .any(|l| l.trim().starts_with("PRINTED-BY-POLICY")),
        "print() reached stdout as a raw line"
    );
    assert!(
        !stdout
            .lines()
            .any(|l| l.trim().starts_with("DEBUGGED-BY-POLICY")),
        "debug() reached stdout as a raw line"
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("valid JSON");
    assert_eq!(v["outcome"], "promoted");
    assert!(v["rows"].as_array().is_some_and(|r| !r.is_empty()));
}

#[test]
fn seed_makes_runs_reproducible() {
    let args = |seed: &'static str| ["simulate", "-s", "aa-pair", "-o", "json", "--seed", seed];
    let a = json(&args("11"));
    let b = json(&args("11"));
    assert_eq!(a, b, "same seed, same JSON");
    // Different seeds draw different traffic; the recorded observations differ.
    let c = json(&args("12"));
    assert_ne!(
        a["rows"], c["rows"],
        "different seeds should give different timelines"
    );
}

#[test]
fn policy_check_ok_and_broken() {
    kc().args(["policy", "check"])
        .args([
            "policies/default.rhai",
            "policies/istio-runbook.rhai",
            "policies/progressive-review.rhai",
            "policies/relative-to-stable.rhai",
            "policies/eighty-twenty.rhai",
            "policies/statistical.rhai",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "✔ policies/progressive-review.rhai",
        ));

    let dir = tempfile::tempdir().unwrap();
    let broken = temp_policy(
        &dir,
        "broken.rhai",
        "fn schedule() { #{ steps: [5, 100] } }\nfn decide(ctx) {\n    let x = ;\n}\n",
    );
    let shown = broken.display().to_string();
    kc().args(["policy", "check"])
        .arg(&broken)
        .assert()
        .failure()
        .stderr(predicate::str::contains(format!("{shown}:3:")));

    let no_decide = temp_policy(
        &dir,
        "nodecide.rhai",
        "fn schedule() { #{ steps: [5, 100] } }\n",
    );
    kc().args(["policy", "check"])
        .arg(&no_decide)
        .assert()
        .failure()
        .stderr(predicate::str::contains("fn decide(ctx)"));
}

#[test]
fn policy_test_with_scenario_files() {
    kc().args([
        "policy",
        "test",
        "default",
        "-s",
        "tests/scenarios/error-burst.yaml",
        "tests/scenarios/quiet-healthy.yaml",
        "healthy",
    ])
    .assert()
    .success()
    .stdout(predicate::str::contains("3 passed, 0 failed"));

    // A policy that never rolls back fails the error-burst expectation.
    let dir = tempfile::tempdir().unwrap();
    let lax = temp_policy(
        &dir,
        "lax.rhai",
        "fn schedule() { #{ steps: [50, 100], min_step_time: \"1m\", min_requests: 10 } }\nfn decide(ctx) { advance() }\n",
    );
    kc().args(["policy", "test"])
        .arg(&lax)
        .args(["-s", "tests/scenarios/error-burst.yaml"])
        .assert()
        .failure()
        .stdout(predicate::str::contains("0 passed, 1 failed"));
}

#[test]
fn unknown_scenario_lists_the_builtins() {
    kc().args(["simulate", "--scenario", "no-such-scenario"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("no-such-scenario"))
        .stderr(predicate::str::contains("healthy"))
        .stderr(predicate::str::contains("metrics-outage"));
}

#[test]
fn unknown_policy_lists_the_shipped_ones() {
    kc().args(["simulate", "--policy", "no-such-policy"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("statistical"));
}

#[test]
fn usage_errors_exit_2() {
    // Ours (a value clap cannot judge) and clap's own.
    kc().args(["simulate", "--set", "max_error_rate=nan"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("max_error_rate"));
    kc().args(["simulate", "--no-such-flag"]).assert().code(2);
}
