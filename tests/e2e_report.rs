//! End-to-end: seed 000's rollback drill against the real test environment (Istio subset
//! split, canary-demo data plane, real Prometheus), then `kubectl canary report` of it rendered
//! by a real browser (headless Chromium, installed by tests/env/setup.sh). The test reads the
//! DOM Chromium built, keeps a screenshot in target/test-artifacts/, and checks from
//! Chromium's own network log that the page requested nothing.
//!
//! Drill (seed 000): 1 a harmless change (image 2.0); 2 phases 1–3 (5%, 10%, 25%); 3 500s from
//! the canary; 4 the policy rolls back; 5 100% of the traffic on stable, counted by the pods;
//! 6 time to detection and recovery read from the report.

mod e2e_common;

use chrono::{DateTime, Utc};
use e2e_common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .with_timezone(&Utc)
}

/// What headless Chromium made of a page.
struct Rendered {
    dom: String,
    /// URLs the page itself asked for (Chromium's own background requests excluded).
    page_requests: Vec<String>,
}

/// Renders `page` in headless Chromium: the DOM after load, a screenshot, the network log.
fn chromium(page: &Path, screenshot: Option<&Path>) -> Rendered {
    let profile = tempfile::tempdir().unwrap();
    let netlog = profile.path().join("netlog.json");
    let chromium = |extra: &[String]| {
        let out = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-default-apps",
                // Should the page ask for a host, it must not reach one.
                "--host-resolver-rules=MAP * ~NOTFOUND",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(format!("file://{}", page.display()))
            .output()
            .expect("run chromium (tests/env/setup.sh installs the Debian package)");
        assert!(
            out.status.success(),
            "chromium {extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let out = chromium(&[
        format!("--log-net-log={}", netlog.display()),
        "--dump-dom".into(),
    ]);
    if let Some(png) = screenshot {
        chromium(&[
            format!("--screenshot={}", png.display()),
            "--window-size=1100,3200".into(),
        ]);
    }
    // Requests the page started carry its origin as initiator ("null" for a file); the
    // browser's own start with "not an origin".
    let log: Value = serde_json::from_slice(&std::fs::read(&netlog).expect("chromium net log"))
        .expect("net log JSON");
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].clone();
    let page_requests = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == start_job)
        .filter(|e| e["params"]["initiator"] != "not an origin")
        .filter_map(|e| e["params"]["url"].as_str().map(str::to_string))
        .filter(|u| !u.starts_with("file:") && !u.starts_with("data:") && !u.starts_with("about:"))
        .collect();
    Rendered {
        dom: String::from_utf8_lossy(&out.stdout).to_string(),
        page_requests,
    }
}

/// The markup of the element with `id` in a DOM dump, up to the first `close` tag after it
/// (the report nests no element of the same kind inside a chart or a timing).
fn element<'a>(dom: &'a str, id: &str, close: &str) -> &'a str {
    let start = dom
        .find(&format!(r#"id="{id}""#))
        .unwrap_or_else(|| panic!("no #{id} in the DOM"));
    let rest = &dom[start..];
    &rest[..rest
        .find(close)
        .unwrap_or_else(|| panic!("#{id} has no {close}"))]
}

fn seconds_in(dom: &str, id: &str) -> f64 {
    let el = element(dom, id, "</div>");
    let v = el
        .split(r#"data-seconds=""#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("#{id} shows no seconds: {el}"));
    v.parse()
        .unwrap_or_else(|_| panic!("#{id} seconds {v:?}: {el}"))
}

/// Records each canary pod's highest request counter (by uid) and says whether any grew
/// past it. Compared with the highest value seen, pod by pod: a pod the data plane could
/// not reach in one poll reads 0 (its stats fetch timed out on a busy machine), and a sum
/// over the pods listed also grows when a pod missing from one poll is listed again.
fn canary_served_since(highest: &mut BTreeMap<String, u64>, now: &Counts) -> bool {
    let mut grew = false;
    for (uid, (deployment, n, _)) in &now.pods {
        if deployment != "web-canary" {
            continue;
        }
        let seen = highest.entry(uid.clone()).or_insert(*n);
        if *n > *seen {
            *seen = *n;
            grew = true;
        }
    }
    grew
}

/// How one drill runs: the policy and schedule, and how long each part may take.
struct Plan {
    name: &'static str,
    /// Arguments of `start` after `start web --image …`.
    start: &'static [&'static str],
    /// `run`'s (and the report's) metrics window.
    window: &'static str,
    phase3_within: Duration,
    run_max: &'static str,
    traffic_secs: u64,
}

/// Seed 000's steps on the fast test schedule (a 6 s soak, 2 s interval).
const FAST_DRILL: Plan = Plan {
    name: "default policy, steps 5/10/25/50/100, min_step_time 6s, interval 2s, metrics window 10s",
    start: &[
        "--provider",
        "istio",
        "--schedule-override",
        "min_step_time=6s,interval=2s,min_requests=50,steps=5/10/25/50/100",
        "--set",
        "min_judge=20",
    ],
    window: "10s",
    phase3_within: Duration::from_secs(150),
    run_max: "240s",
    traffic_secs: 300,
};

/// The README's drill as written: the istio-runbook policy with its own soaks (5 and 10
/// minutes before phase 3), a 30 s interval and a 60 s metrics window.
const RUNBOOK_DRILL: Plan = Plan {
    name: "istio-runbook policy as shipped (soaks 5m/10m, interval 30s, metrics window 60s)",
    start: &["--provider", "istio", "--policy", "istio-runbook"],
    window: "60s",
    phase3_within: Duration::from_secs(25 * 60),
    run_max: "40m",
    traffic_secs: 45 * 60,
};

/// What a drill left: the namespace (still serving), when the fault went in, when the pods
/// last served the canary, the state's transitions and the report's model.
struct Drilled {
    ns: TestNamespace,
    _traffic: Option<Traffic>,
    injected_at: DateTime<Utc>,
    last_canary_request_seen: DateTime<Utc>,
    history: Vec<Value>,
    report: Value,
}

/// Seed 000's drill, steps 1–6, with the checks every drill must pass.
async fn drill(plan: &Plan, prefix: &str) -> Drilled {
    let p = Provider::Istio;
    let (ns, traffic) = setup_with(
        prefix,
        "web",
        p,
        TrafficOptions::at(100.0, plan.traffic_secs),
    )
    .await;
    // 1. A harmless change.
    let mut args = vec![
        "start",
        "web",
        "--image",
        "app=kubectl-canary/demo:2.0",
        "--timeout",
        "120s",
    ];
    args.extend_from_slice(plan.start);
    let out = kc_out(&ns.name, &args).await;
    assert_eq!(out.status.code(), Some(0), "start");
    // 2. Phases 1–3: the policy advances 5% → 10% → 25% on healthy traffic.
    let mut run = kc(
        &ns.name,
        &[
            "run",
            "web",
            "--max-time",
            plan.run_max,
            "--metrics-window",
            plan.window,
        ],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + plan.phase3_within;
    while route_weight(&ns.client, &ns.name, "web", p).await != Some(25) {
        assert!(
            Instant::now() < deadline,
            "no phase 3 (25%) within {:?}: {:#}",
            plan.phase3_within,
            history_json(&ns.name, "web").await["current"]["rollout"]["history"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 3. The canary answers 500 to everything.
    let injected_at = Utc::now();
    inject_fault(
        &ns.name,
        "web-canary",
        serde_json::json!({"error_rate": 1.0}),
    )
    .await;
    // 4. The policy rolls back; meanwhile the pods' own counters say when the canary got its
    // last request (to a poll interval), independently of Prometheus.
    let mut highest = BTreeMap::new();
    canary_served_since(&mut highest, &Counts::now(&ns.name).await);
    let mut last_canary_request_seen = Utc::now();
    let exit = loop {
        if let Some(st) = run.try_wait().unwrap() {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        if canary_served_since(&mut highest, &Counts::now(&ns.name).await) {
            last_canary_request_seen = Utc::now();
        }
    };
    assert_eq!(exit.code(), Some(3), "run ends rolled back");
    // 5. Every request reaches stable, counted by the pods.
    let served = measure(&ns.name, Duration::from_secs(3)).await;
    assert!(served.total() >= 100, "traffic still flows: {served:?}");
    assert_eq!(served.share("web"), Some(1.0), "{served:?}");
    assert_eq!(served.of("web-canary"), 0);
    // Prometheus scrapes every second: let it see a few idle scrapes of the canary.
    tokio::time::sleep(Duration::from_secs(4)).await;

    // 6. The report's numbers. The same metrics window as `run`: the charts show what the
    // decisions saw.
    let out = kc(
        &ns.name,
        &[
            "report",
            "web",
            "--metrics-window",
            plan.window,
            "-o",
            "json",
        ],
    )
    .output()
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("report -o json");
    let h = history_json(&ns.name, "web").await;
    let history = h["current"]["rollout"]["history"]
        .as_array()
        .unwrap()
        .clone();
    let weights: Vec<u64> = history
        .iter()
        .filter(|t| t["event"] == "canary_ready" || t["event"] == "advance")
        .map(|t| t["weight"].as_u64().unwrap())
        .collect();
    assert_eq!(weights, [5, 10, 25], "phases 1–3 before the fault");
    let begin = history
        .iter()
        .find(|t| t["event"] == "begin_rollback")
        .expect("rolled back");
    assert_eq!(begin["actor"], "policy");
    assert_eq!(begin["step"], 2, "rolled back in phase 3");

    let rb = &report["rollback"];
    assert_eq!(time(&rb["decision_at"]), time(&begin["at"]));
    let first_breach = time(&rb["first_breach_at"]);
    assert!(
        first_breach >= injected_at,
        "no breach before the 500s: breach {first_breach}, injected {injected_at}"
    );
    assert!(first_breach <= time(&rb["decision_at"]));
    assert_eq!(rb["recovery_basis"], "canary_traffic_zero", "{rb:#}");
    let traffic_zero = time(&rb["canary_traffic_zero_at"]);
    assert!(traffic_zero >= time(&rb["weight_zero_at"]));
    // Prometheus (one scrape a second, increase over two scrapes) agrees with the pods'
    // own counters on when the canary's last request was served.
    let off = (traffic_zero - last_canary_request_seen).num_milliseconds() as f64 / 1000.0;
    assert!(
        (-1.0..=6.0).contains(&off),
        "Prometheus says the canary's traffic ended at {traffic_zero}, its pods last served at {last_canary_request_seen} ({off:+.1}s)"
    );
    assert_eq!(report["metrics_origin"]["kind"], "prometheus");
    for chart in report["metrics"].as_array().unwrap() {
        let tracks: Vec<&str> = chart["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["label"].as_str().unwrap())
            .collect();
        assert_eq!(tracks, ["canary", "stable"], "{}", chart["id"]);
    }
    Drilled {
        ns,
        _traffic: traffic,
        injected_at,
        last_canary_request_seen,
        history,
        report,
    }
}

/// The drill's times, as kept in target/test-artifacts/ and quoted in the README.
fn times_text(plan: &Plan, d: &Drilled, page: &Path) -> String {
    let rb = &d.report["rollback"];
    let secs = |k: &str| rb[k].as_f64().unwrap_or(f64::NAN);
    let at = |k: &str| time(&rb[k]).format("%H:%M:%S%.3f").to_string();
    let fault_to_decision =
        (time(&rb["decision_at"]) - d.injected_at).num_milliseconds() as f64 / 1000.0;
    format!(
        "rollback drill (seed 000): {}; istio, 100 rps, scrape 1s, 500s injected at 25%\n  \
         fault injected {} → first breaching evaluation {} → decision {} ({fault_to_decision:.1}s after the fault)\n  \
         time to detection {:.1}s\n  \
         time to recovery {:.1}s (decision → weight 0 {:.1}s → canary traffic 0 in Prometheus {:.1}s; pods last served {}), 2-minute target met: {}\n  \
         report {}\n",
        plan.name,
        d.injected_at.format("%H:%M:%S%.3f"),
        at("first_breach_at"),
        at("decision_at"),
        secs("time_to_detection_secs"),
        secs("time_to_recovery_secs"),
        secs("decision_to_weight_zero_secs"),
        secs("weight_zero_to_canary_traffic_zero_secs"),
        d.last_canary_request_seen.format("%H:%M:%S%.3f"),
        rb["target_met"],
        page.display(),
    )
}

/// The README's drill with the shipped istio-runbook policy: the fault goes in when phase 3
/// starts, after the 5 and 10 minute soaks, so it takes ~16 minutes and is not part of
/// `tests/run.sh`. `cargo test --test e2e_report -- --ignored` runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "~16 minutes: the runbook's own soaks"]
async fn rollback_drill_istio_runbook_as_in_the_readme() {
    let d = drill(&RUNBOOK_DRILL, "e2e-report-runbook").await;
    let page = artifacts().join("drill-runbook-report.html");
    let page_arg = page.to_string_lossy().to_string();
    let out = kc_out(
        &d.ns.name,
        &[
            "report",
            "web",
            "--metrics-window",
            RUNBOOK_DRILL.window,
            "--file",
            &page_arg,
        ],
    )
    .await;
    assert!(out.status.success());
    let times = times_text(&RUNBOOK_DRILL, &d, &page);
    eprintln!("{times}");
    std::fs::write(artifacts().join("drill-runbook-times.txt"), &times).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_drill_report_in_a_browser() {
    let d = drill(&FAST_DRILL, "e2e-report-drill").await;
    let (ns, history, report) = (&d.ns, &d.history, &d.report);
    let rb = &report["rollback"];
    let begin = history
        .iter()
        .find(|t| t["event"] == "begin_rollback")
        .unwrap();
    let detection = rb["time_to_detection_secs"].as_f64().unwrap();
    let recovery = rb["time_to_recovery_secs"].as_f64().unwrap();
    // Without Prometheus: the recorded values, and the end of the rollback bounds recovery.
    let out = kc(
        &ns.name,
        &["report", "web", "-o", "json", "--prometheus-url", ""],
    )
    .output()
    .await
    .unwrap();
    let recorded: Value = serde_json::from_slice(&out.stdout).expect("report json");
    assert_eq!(recorded["metrics_origin"]["kind"], "recorded");
    let done = history
        .iter()
        .find(|t| t["event"] == "rollback_done")
        .expect("rollback done");
    let bound = &recorded["rollback"];
    assert_eq!(bound["recovery_basis"], "canary_pods_gone");
    let expected = (time(&done["at"]) - time(&begin["at"])).num_milliseconds() as f64 / 1000.0;
    assert!((bound["time_to_recovery_secs"].as_f64().unwrap() - expected).abs() < 0.002);
    assert_eq!(
        bound["time_to_detection_secs"],
        rb["time_to_detection_secs"]
    );

    // history --since keeps what happened from then on; --previous names earlier rollouts.
    let decided = rb["decision_at"].as_str().unwrap();
    let out = kc(
        &ns.name,
        &["history", "web", "--since", decided, "-o", "json"],
    )
    .output()
    .await
    .unwrap();
    let recent: Value = serde_json::from_slice(&out.stdout).expect("history --since json");
    let events: Vec<&str> = recent["current"]["rollout"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["begin_rollback", "rollback_done"]);
    let out = kc(&ns.name, &["history", "web", "--since", "1h", "-o", "json"])
        .output()
        .await
        .unwrap();
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        all["current"]["rollout"]["history"],
        Value::Array(history.clone())
    );
    let out = kc_out(
        &ns.name,
        &["report", "web", "--previous", "1", "-o", "json"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--previous 1"));
    // status shows the same timings.
    let st = status_json(&ns.name, "web").await;
    assert_eq!(st["rollback"]["decision_at"], rb["decision_at"]);
    assert_eq!(st["rollback"]["recovery_basis"], "canary_traffic_zero");
    let out = kc_out(&ns.name, &["status", "web"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("Rollback:"))
        .unwrap_or_else(|| panic!("status shows no rollback timings:\n{text}"));
    assert!(
        line.contains("canary traffic 0 in Prometheus") && line.contains("2-minute target"),
        "{line}"
    );

    let dir = artifacts();
    let page = dir.join("drill-report.html");
    let png = dir.join("drill-report.png");
    let _ = std::fs::remove_file(&png);
    let page_arg = page.to_string_lossy().to_string();
    let out = kc_out(
        &ns.name,
        &[
            "report",
            "web",
            "--metrics-window",
            "10s",
            "--file",
            &page_arg,
        ],
    )
    .await;
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("rollback: detected"));
    let html = std::fs::read_to_string(&page).unwrap();
    for attr in ["src=", "href=", "<script", "url("] {
        assert!(!html.contains(attr), "the page references {attr}");
    }
    assert!(
        html.contains(r#"<meta http-equiv="Content-Security-Policy" content="default-src 'none'"#)
    );

    let rendered = chromium(&page, Some(&png));
    let dom = &rendered.dom;
    assert!(
        rendered.page_requests.is_empty(),
        "the page made requests: {:?}",
        rendered.page_requests
    );
    // The charts are there, with data for both versions from Prometheus.
    let weight = element(dom, "chart-weight", "</figure>");
    assert!(weight.contains("<polyline"), "weight line drawn");
    assert!(
        weight.contains(r#"data-action="rollback""#),
        "rollback marker"
    );
    for id in [
        "chart-error-rate",
        "chart-p95",
        "chart-p99",
        "chart-request-rate",
    ] {
        let chart = element(dom, id, "</figure>");
        for track in ["canary", "stable"] {
            let pts = chart
                .split(&format!(r#"data-track="{track}" data-points=""#))
                .nth(1)
                .and_then(|s| s.split('"').next())
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("#{id} has no {track} series"));
            assert!(pts > 10, "#{id} {track}: {pts} points");
        }
    }
    // The timings shown are the computed ones.
    assert!((seconds_in(dom, "time-to-detection") - detection).abs() < 0.01);
    assert!((seconds_in(dom, "time-to-recovery") - recovery).abs() < 0.01);
    let target = if rb["target_met"] == true {
        "met"
    } else {
        "missed"
    };
    assert!(
        element(dom, "recovery-target", "</div>")
            .contains(&format!(r#"data-target-met="{target}""#))
    );
    let png_bytes = std::fs::read(&png).expect("screenshot");
    assert!(png_bytes.starts_with(b"\x89PNG") && png_bytes.len() > 20_000);

    // The network check can fail: the same page with one external image is caught.
    let leaky = dir.join("leaky.html");
    std::fs::write(
        &leaky,
        html.replace("default-src", "x-disabled").replace(
            "</body>",
            r#"<img src="http://drill.invalid/pixel.png"></body>"#,
        ),
    )
    .unwrap();
    let caught = chromium(&leaky, None);
    assert_eq!(caught.page_requests, ["http://drill.invalid/pixel.png"]);
    let _ = std::fs::remove_file(&leaky);

    let times = times_text(&FAST_DRILL, &d, &page);
    eprintln!("{times}");
    std::fs::write(dir.join("drill-times.txt"), &times).unwrap();
}

/// `simulate --report`: the offline report of a simulated rollback, also clean in a browser;
/// stdout stays the JSON of the simulation.
#[test]
fn simulate_writes_a_self_contained_report() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("spike.html");
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-canary"))
        .args([
            "simulate",
            "--scenario",
            "error-spike",
            "-o",
            "json",
            "--report",
        ])
        .arg(&page)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "rolled back");
    let sim: Value = serde_json::from_slice(&out.stdout).expect("stdout is the simulation's JSON");
    assert_eq!(sim["outcome"], "rolled_back");
    let rendered = chromium(&page, None);
    assert!(
        rendered.page_requests.is_empty(),
        "{:?}",
        rendered.page_requests
    );
    let dom = &rendered.dom;
    assert!(dom.contains("simulated (virtual clock)"));
    assert!(element(dom, "chart-weight", "</figure>").contains(r#"data-action="rollback""#));
    assert!(element(dom, "chart-error-rate", "</figure>").contains(r#"data-track="canary""#));
    // Without Prometheus the end of the rollback bounds the recovery: on the virtual clock
    // that is the weight-0 write at the decision plus the default 30 s scale-down delay.
    assert_eq!(seconds_in(dom, "time-to-recovery"), 30.0);
}
