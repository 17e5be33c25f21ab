//! `check-metrics` against the real test environment: a query without data is explained by
//! what Prometheus does have. Needs `tests/env` up.

mod e2e_common;

use e2e_common::*;
use serde_json::Value;
use std::time::Duration;

/// A Deployment `name` whose pods carry `app: <app>`, and a Service `name` selecting them.
fn workload(name: &str, app: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: 1\n  \
         selector: {{matchLabels: {{app: {app}}}}}\n  template:\n    metadata: {{labels: {{app: {app}}}}}\n    \
         spec: {{containers: [{{name: app, image: \"{TEST_IMAGE}\"}}]}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n\
         spec: {{selector: {{app: {app}}}, ports: [{{port: 80, targetPort: 8080}}]}}\n---\n"
    )
}

fn checks(out: &std::process::Output) -> Vec<Value> {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check-metrics -o json: {e}\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `check-metrics` until stable has every value (two scrapes of traffic in the rate window);
/// the deadline leaves margin for a busy 2-core machine.
async fn wait_stable_data(ns: &str, svc: &str, flavour: &str) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    loop {
        let out = kc_out(
            ns,
            &["check-metrics", svc, "--metrics", flavour, "-o", "json"],
        )
        .await;
        if out.status.code() == Some(0) {
            return checks(&out);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{svc}'s stable track never had data: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn find<'a>(all: &'a [Value], track: &str, name: &str) -> &'a Value {
    all.iter()
        .find(|c| c["track"] == track && c["name"] == name)
        .unwrap_or_else(|| panic!("no {track}/{name} in {all:?}"))
}

/// The application's metrics label `service` with the pods' `app` label. `checkout`'s pods
/// say `app: checkout-api`, so the generic query for `service="checkout"` finds nothing, and
/// check-metrics names the label, the value that exists, and fails. `web`'s pods match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_metrics_names_the_label_that_does_not_match() {
    TestEnv::get();
    let ns = TestNamespace::create("e2e-checkmetrics").await;
    let m = format!(
        "{}{}",
        workload("checkout", "checkout-api"),
        workload("web", "web")
    );
    apply(&ns.client, &ns.name, &m).await;
    wait_serving(&ns.name, "checkout", 1, Duration::from_secs(60)).await;
    wait_serving(&ns.name, "web", 1, Duration::from_secs(60)).await;
    // Traffic to both (an error rate and a p95 need requests in the window).
    let _traffic: Vec<Traffic> = ["checkout", "web"]
        .into_iter()
        .map(|svc| Traffic::start_with(&ns.name, "istio", svc, TrafficOptions::at(20.0, 120)))
        .collect();

    let out = kc_out(
        &ns.name,
        &[
            "check-metrics",
            "checkout",
            "--metrics",
            "generic",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "stable without data fails");
    let all = checks(&out);
    let stable = find(&all, "stable", "requests");
    assert_eq!(stable["value"], Value::Null);
    let why = stable["why"].as_str().unwrap();
    assert!(
        why.contains(&format!(
            r#"found http_requests_total{{namespace="{}"}} but none with service="checkout""#,
            ns.name
        )),
        "{why}"
    );
    assert!(why.contains(r#"service="checkout-api""#), "{why}");

    // Once two scrapes of traffic are in, `web`'s stable track has every value.
    let all = wait_stable_data(&ns.name, "web", "generic").await;
    assert!(
        find(&all, "stable", "requests")["value"].is_number(),
        "{all:?}"
    );
    // No canary yet: its queries say why (no pod labelled track="canary").
    let canary = find(&all, "canary", "requests");
    assert!(
        canary["why"]
            .as_str()
            .unwrap()
            .contains(r#"track="canary""#),
        "{canary}"
    );

    // The table names the same.
    let out = kc_out(
        &ns.name,
        &["check-metrics", "checkout", "--metrics", "generic"],
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("why: found http_requests_total"), "{text}");
    assert!(text.contains("stable has no data"), "{text}");
}

/// `start` with Prometheus checks the stable track: a wrong metrics flavour (nginx on an SMI
/// layout, where nothing goes through an Ingress) is a warning that says why, not a silent
/// hold. The rollout still starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_warns_when_stable_has_no_data() {
    let svc = "web";
    let (ns, _traffic) = setup("e2e-smi-nodata", svc, Provider::Smi, 50.0).await;
    let out = start(
        &ns.name,
        svc,
        Provider::Smi,
        &["--schedule-override", "metrics=nginx"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning: stable requests: no data: "), "{err}");
    assert!(err.contains("nginx_ingress_controller_requests"), "{err}");
    assert!(
        err.contains(&format!("check-metrics {svc} -n {}", ns.name)),
        "{err}"
    );
    // The right flavour for the layout, once stable's traffic is in Prometheus: no warning.
    // (Right after traffic starts the series exist without samples in the window, and the
    // warning is then correct; CI saw that.)
    let (ns, _traffic) = setup("e2e-smi-data", svc, Provider::Smi, 50.0).await;
    wait_stable_data(&ns.name, svc, "linkerd").await;
    let out = start(&ns.name, svc, Provider::Smi, &[]).await;
    assert_eq!(out.status.code(), Some(0), "start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("warning: stable"), "{err}");
}
