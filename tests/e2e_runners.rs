//! Runners against the real test environment: the lease per rollout (handover after a
//! kill -9, `step` refusing a leased rollout, unattended rollouts and `max_unattended`),
//! `run --all` over several namespaces and several runners sharing rollouts, and log output
//! when stdout is not a terminal.

mod e2e_common;

use e2e_common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::sync::RwLock;

/// `run --all -A` drives every namespace, so it would also drive (and lease) the rollouts of
/// the tests running beside it: that test takes this lock exclusively, the others share it.
static CLUSTER_SCOPE: RwLock<()> = RwLock::const_new(());

/// A `kubectl-canary` process whose stdout lines are collected as they come.
struct Proc {
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    what: String,
}

impl Proc {
    fn spawn(ns: &str, args: &[&str]) -> Proc {
        let mut child = kc(ns, args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn kubectl-canary");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = lines.clone();
        let what = args.join(" ");
        let tag = what.clone();
        tokio::spawn(async move {
            let mut r = tokio::io::BufReader::new(out).lines();
            while let Ok(Some(l)) = r.next_line().await {
                eprintln!("[{tag}] {l}");
                sink.lock().unwrap().push(l);
            }
        });
        Proc { child, lines, what }
    }

    fn output(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn has(&self, needle: &str) -> bool {
        self.output().iter().any(|l| l.contains(needle))
    }

    /// SIGKILL: no chance to give the lease back.
    async fn kill9(&mut self) {
        self.child.start_kill().expect("kill -9");
        let _ = self.child.wait().await;
        eprintln!("killed -9: {}", self.what);
    }

    async fn exit_code(&mut self, timeout: Duration) -> Option<i32> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not end within {timeout:?}", self.what))
            .unwrap()
            .code()
    }
}

async fn runner_of(ns: &str, svc: &str) -> Value {
    status_json(ns, svc).await["runner"].clone()
}

async fn holder(ns: &str, svc: &str) -> Option<String> {
    runner_of(ns, svc).await["holder"]
        .as_str()
        .map(str::to_string)
}

fn transitions(h: &Value) -> Vec<(String, u64)> {
    h["current"]["rollout"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["event"].as_str().unwrap().to_string(),
                t["weight"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// No transition happened twice: every (event, weight) pair is unique and the advances
/// climb.
fn assert_no_transition_twice(ts: &[(String, u64)]) {
    let unique: BTreeSet<_> = ts.iter().collect();
    assert_eq!(
        unique.len(),
        ts.len(),
        "a transition happened twice: {ts:?}"
    );
    let advances: Vec<u64> = ts
        .iter()
        .filter(|(e, _)| e == "advance")
        .map(|(_, w)| *w)
        .collect();
    assert!(
        advances.windows(2).all(|w| w[0] < w[1]),
        "advances climb: {ts:?}"
    );
}

/// The lease holder is killed with SIGKILL mid-rollout; a second `run`, waiting, takes over
/// within about three intervals and the canary keeps progressing to promotion, each
/// transition once. `step` refuses while a runner holds the lease. Both runs write to a pipe:
/// they log one line per change of decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_after_kill_9() {
    let _scope = CLUSTER_SCOPE.read().await;
    let p = Provider::Istio;
    let svc = "web";
    let (ns, _traffic) = setup("e2e-lease-handover", svc, p, 100.0).await;
    let out = kc_out(
        &ns.name,
        &[
            "start",
            svc,
            "--image",
            "app=kubectl-canary/demo:2.0",
            "--schedule-override",
            "min_step_time=6s,interval=2s,min_requests=50",
            "--set",
            "min_judge=20",
            "--timeout",
            "120s",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "start");

    let mut a = Proc::spawn(&ns.name, &["run", svc, "--metrics-window", "10s"]);
    wait_for(Duration::from_secs(30), "first run holds the lease", || {
        let ns = ns.name.clone();
        async move { holder(&ns, svc).await.is_some() }
    })
    .await;
    let a_id = holder(&ns.name, svc).await.unwrap();
    assert!(a_id.starts_with("e2e@"), "holder names who runs it: {a_id}");

    // A second run waits, and says for whom.
    let mut b = Proc::spawn(&ns.name, &["run", svc, "--metrics-window", "10s"]);
    wait_for(Duration::from_secs(20), "second run waits", || async {
        b.has("waiting: driven by")
    })
    .await;
    assert!(b.has(&a_id), "the waiting run names the holder");

    // step respects the lease, naming the holder.
    let refused = kc_out(&ns.name, &["step", svc]).await;
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains(&a_id) && err.contains("--force"), "{err}");

    // status shows the holder and when it was last renewed.
    let r = runner_of(&ns.name, svc).await;
    assert_eq!(r["attendance"], "held", "{r}");
    assert!(r["renewed_at"].is_string(), "{r}");
    let table = kc_out(&ns.name, &["status", svc]).await;
    assert!(
        String::from_utf8_lossy(&table.stdout).contains(&a_id),
        "status names the runner"
    );

    // Let the first runner make progress, then kill it without a chance to clean up.
    wait_for(
        Duration::from_secs(60),
        "first advance by the first run",
        || {
            let ns = ns.name.clone();
            async move {
                transitions(&history_json(&ns, svc).await)
                    .iter()
                    .any(|(e, _)| e == "advance")
            }
        },
    )
    .await;
    let before = transitions(&history_json(&ns.name, svc).await);
    a.kill9().await;
    let killed = Instant::now();
    wait_for(Duration::from_secs(30), "second run takes over", || {
        let ns = ns.name.clone();
        let a_id = a_id.clone();
        async move { holder(&ns, svc).await.is_some_and(|h| h != a_id) }
    })
    .await;
    eprintln!(
        "takeover {:?} after kill -9 (interval 2s, lease 6s)",
        killed.elapsed()
    );
    assert!(b.has(&format!("took over from {a_id}")), "{:?}", b.output());

    assert_eq!(
        b.exit_code(Duration::from_secs(180)).await,
        Some(0),
        "the second run promotes"
    );
    let after = transitions(&history_json(&ns.name, svc).await);
    assert_eq!(&after[..before.len()], &before[..], "history kept");
    assert!(after.len() > before.len(), "progress after the takeover");
    assert_no_transition_twice(&after);
    assert_eq!(
        after.last().map(|t| t.0.as_str()),
        Some("promote_done"),
        "{after:?}"
    );
    // Log output: one line per change of decision, not one per evaluation.
    let lines = b.output();
    let decision_lines = lines
        .iter()
        .filter(|l| l.contains(" Progressing step "))
        .count();
    let evaluations = history_json(&ns.name, svc).await["current"]["rollout"]["evaluations"]
        .as_array()
        .map(|v| v.len())
        .unwrap_or(0);
    assert!(decision_lines >= 2, "decisions logged: {lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("Progressing → Promoting")),
        "transitions logged: {lines:?}"
    );
    eprintln!("second run logged {decision_lines} decision lines for {evaluations}+ evaluations");
    let r = runner_of(&ns.name, svc).await;
    assert_eq!(r["holder"], Value::Null, "the lease is given back: {r}");
}

/// A rollout whose runner died shows as unattended; with `max_unattended` the next `step`
/// rolls it back, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unattended_rollout_rolls_back_after_max_unattended() {
    let _scope = CLUSTER_SCOPE.read().await;
    let p = Provider::Istio;
    let svc = "web";
    let (ns, _traffic) = setup("e2e-lease-alone", svc, p, 0.0).await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("watched.rhai");
    std::fs::write(
        &policy,
        r#"fn schedule() {
    #{ steps: [10, 100], min_step_time: "1h", interval: "1s", min_requests: 0,
       max_unattended: "6s" }
}
fn decide(ctx) { hold("watching") }
"#,
    )
    .unwrap();
    let out = kc_out(
        &ns.name,
        &[
            "start",
            svc,
            "--image",
            "app=kubectl-canary/demo:2.0",
            "--policy",
            policy.to_str().unwrap(),
            "--timeout",
            "60s",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "start");
    let mut a = Proc::spawn(&ns.name, &["run", svc]);
    wait_for(Duration::from_secs(20), "run holds the lease", || {
        let ns = ns.name.clone();
        async move { holder(&ns, svc).await.is_some() }
    })
    .await;
    a.kill9().await;
    wait_for(Duration::from_secs(20), "status says unattended", || {
        let ns = ns.name.clone();
        async move { runner_of(&ns, svc).await["attendance"] == "unattended" }
    })
    .await;
    let list = kc_out(&ns.name, &["status"]).await;
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("Progressing (unattended)"),
        "the list marks it"
    );
    let detail = kc_out(&ns.name, &["status", svc]).await;
    assert!(String::from_utf8_lossy(&detail.stdout).contains("UNATTENDED"));
    assert_eq!(
        route_weight(&ns.client, &ns.name, svc, p).await,
        Some(10),
        "nobody moved traffic yet"
    );
    // Past max_unattended (6 s since the last renewal): the next step rolls back.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let out = kc_out(&ns.name, &["step", svc]).await;
    assert_eq!(out.status.code(), Some(3), "rolled back");
    let h = history_json(&ns.name, svc).await;
    let rb = h["current"]["rollout"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["event"] == "begin_rollback")
        .cloned()
        .expect("a rollback");
    assert!(
        rb["reason"].as_str().unwrap().contains("unattended for"),
        "{rb}"
    );
    assert_eq!(rb["actor"], "e2e");
    assert_eq!(
        route_weight(&ns.client, &ns.name, svc, p)
            .await
            .unwrap_or(0),
        0
    );
}

/// Starts `n` rollouts of services `svc-0..` in `ns` with a slow schedule (they stay
/// Progressing while the test watches), no traffic needed.
async fn start_many(ns: &str, client: &kube::Client, prefix: &str, n: usize, policy: &str) {
    for i in 0..n {
        let svc = format!("{prefix}-{i}");
        create_stable(client, ns, &svc, 1, false).await;
        user_route(client, ns, Provider::Istio, &svc).await;
    }
    let starts = (0..n).map(|i| {
        let svc = format!("{prefix}-{i}");
        async move {
            let out = kc(
                ns,
                &[
                    "start",
                    &svc,
                    "--image",
                    "app=kubectl-canary/demo:2.0",
                    "--policy",
                    policy,
                    "--timeout",
                    "120s",
                ],
            )
            .output()
            .await
            .unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "start {svc}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    });
    // A few at a time: the test machine has two cores.
    let mut it = starts.into_iter();
    loop {
        let batch: Vec<_> = it.by_ref().take(5).collect();
        if batch.is_empty() {
            break;
        }
        futures::future::join_all(batch).await;
    }
}

/// Holder of every rollout lease in `ns` (live holders only).
async fn holders(ns: &str) -> BTreeMap<String, Option<String>> {
    let out = kc(ns, &["status", "-o", "json"]).output().await.unwrap();
    let rows: Value = serde_json::from_slice(&out.stdout).expect("status list json");
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["service"].as_str().unwrap().to_string(),
                r["runner"]["holder"].as_str().map(str::to_string),
            )
        })
        .collect()
}

const HOLDING: &str = r#"fn schedule() {
    #{ steps: [10, 100], min_step_time: "1h", interval: "2s", min_requests: 0 }
}
fn decide(ctx) { hold("watching") }
"#;

/// `run --all -A` drives rollouts of several namespaces, picks up one that starts later, and
/// drops one that finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_across_namespaces() {
    let _scope = CLUSTER_SCOPE.write().await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("holding.rhai");
    std::fs::write(&policy, HOLDING).unwrap();
    let policy = policy.to_str().unwrap().to_string();
    let ns1 = TestNamespace::create("e2e-all-a").await;
    let ns2 = TestNamespace::create("e2e-all-b").await;
    start_many(&ns1.name, &ns1.client, "api", 2, &policy).await;
    start_many(&ns2.name, &ns2.client, "web", 1, &policy).await;
    // run --all finds active rollouts by the phase label; a state saved before that label
    // existed (by an earlier version) is read instead.
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(ns2.client.clone(), &ns2.name);
    let cm = cms.get("web-0-canary-rollout").await.unwrap();
    let phase = cm
        .metadata
        .labels
        .unwrap_or_default()
        .remove("kubectl-canary.io/phase");
    assert_eq!(phase.as_deref(), Some("Progressing"));
    cms.patch(
        "web-0-canary-rollout",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!(
            {"metadata": {"labels": {"kubectl-canary.io/phase": null}}}
        )),
    )
    .await
    .unwrap();
    let mut all = Proc::spawn(
        &ns1.name,
        &["run", "--all", "-A", "--discover-interval", "1s"],
    );
    for (ns, svc) in [
        (&ns1.name, "api-0"),
        (&ns1.name, "api-1"),
        (&ns2.name, "web-0"),
    ] {
        wait_for(
            Duration::from_secs(30),
            &format!("run --all holds {ns}/{svc}"),
            || async move { holder(ns, svc).await.is_some() },
        )
        .await;
    }
    let ids: BTreeSet<_> = [
        holder(&ns1.name, "api-0").await,
        holder(&ns2.name, "web-0").await,
    ]
    .into_iter()
    .collect();
    assert_eq!(ids.len(), 1, "one process holds both namespaces: {ids:?}");
    // A new rollout is picked up.
    start_many(&ns2.name, &ns2.client, "late", 1, &policy).await;
    wait_for(Duration::from_secs(30), "run --all picks up late-0", || {
        let ns = ns2.name.clone();
        async move { holder(&ns, "late-0").await.is_some() }
    })
    .await;
    // A finished one is dropped (and its lease given back).
    // The runner may be saving a step at that moment: a conflict is reported, try again.
    let mut promoted = false;
    for _ in 0..3 {
        let out = kc_out(&ns1.name, &["promote", "api-1", "--reason", "done"]).await;
        if out.status.code() == Some(0) {
            promoted = true;
            break;
        }
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            err.contains("another operator changed") || err.contains("the rollout moved on"),
            "promote fails only on a concurrent save: {err}"
        );
    }
    assert!(promoted, "promote api-1");
    wait_for(Duration::from_secs(30), "run --all drops api-1", || async {
        all.has(&format!("done with {}/api-1", ns1.name))
    })
    .await;
    assert_eq!(holder(&ns1.name, "api-1").await, None);
    // Evaluations keep coming for the others.
    let evals = |ns: String, svc: &'static str| async move {
        history_json(&ns, svc).await["current"]["rollout"]["evaluations"]
            .as_array()
            .map(|v| v.last().cloned())
            .unwrap_or_default()
    };
    let e0 = evals(ns2.name.clone(), "web-0").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_ne!(
        evals(ns2.name.clone(), "web-0").await,
        e0,
        "web-0 keeps being evaluated"
    );
    // SIGTERM: the runner stops between steps and gives its leases back.
    let pid = all.child.id().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    assert_eq!(all.exit_code(Duration::from_secs(30)).await, Some(0));
    assert_eq!(holder(&ns2.name, "web-0").await, None, "lease given back");
}

/// Three `run --all` share many rollouts: each rollout has exactly one driver at a time, the
/// rollouts spread across the runners, and a runner killed with SIGKILL has its rollouts
/// taken over by the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_runners_share_rollouts() {
    let _scope = CLUSTER_SCOPE.read().await;
    // 30 in the issue; 12 keep this test within the 2-core machine's means next to the rest
    // of the suite (`status -A` and the 200-rollout benchmark cover scale).
    let n: usize = std::env::var("CANARY_TEST_SHARE_ROLLOUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("holding.rhai");
    std::fs::write(&policy, HOLDING).unwrap();
    let ns = TestNamespace::create("e2e-share").await;
    start_many(&ns.name, &ns.client, "svc", n, policy.to_str().unwrap()).await;
    let mut runners: Vec<Proc> = (0..3)
        .map(|_| Proc::spawn(&ns.name, &["run", "--all", "--discover-interval", "1s"]))
        .collect();
    wait_for(
        Duration::from_secs(60),
        "every rollout has a runner",
        || {
            let ns = ns.name.clone();
            async move { holders(&ns).await.values().all(Option::is_some) }
        },
    )
    .await;
    // Runners hand rollouts over until each has its share: wait until every rollout has a
    // holder and nothing moved for 3 s, then check that the runners' own logs agree with
    // the leases (each rollout exactly one driver).
    let settled = Instant::now() + Duration::from_secs(90);
    let mut last = holders(&ns.name).await;
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = holders(&ns.name).await;
        if now == last && now.values().all(Option::is_some) {
            break;
        }
        assert!(Instant::now() < settled, "the leases settle: {now:?}");
        last = now;
    }
    let by_runner = |h: &BTreeMap<String, Option<String>>| {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (svc, who) in h {
            m.entry(who.clone().unwrap_or_default())
                .or_default()
                .push(svc.clone());
        }
        m
    };
    let h = holders(&ns.name).await;
    let spread = by_runner(&h);
    eprintln!(
        "spread over runners: {:?}",
        spread.values().map(Vec::len).collect::<Vec<_>>()
    );
    assert!(
        spread.len() >= 2,
        "the rollouts spread over the runners: {spread:?}"
    );
    for (svc, who) in &h {
        let who = who.as_ref().unwrap();
        let claimants: Vec<usize> = runners
            .iter()
            .enumerate()
            .filter(|(_, r)| drives(&r.output(), &ns.name, svc))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            claimants.len(),
            1,
            "{svc}: exactly one runner drives it (lease: {who}): {claimants:?}"
        );
    }
    // Kill the runner with the most rollouts.
    let (victim_id, victim_svcs) = spread
        .iter()
        .max_by_key(|(_, v)| v.len())
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();
    let victim = runners
        .iter()
        .position(|r| r.has(&format!("runner {victim_id} drives")))
        .expect("the victim's log names it");
    runners[victim].kill9().await;
    let killed = Instant::now();
    let killed_at = chrono::Utc::now();
    wait_for(
        Duration::from_secs(60),
        "the killed runner's rollouts are taken over",
        || {
            let ns = ns.name.clone();
            let victim_id = victim_id.clone();
            async move {
                holders(&ns)
                    .await
                    .values()
                    .all(|h| h.as_ref().is_some_and(|h| *h != victim_id))
            }
        },
    )
    .await;
    // When each was taken, from its Lease (the polling above adds its own delay).
    let leases: Api<Lease> = Api::namespaced(ns.client.clone(), &ns.name);
    let mut last_taken = chrono::Duration::zero();
    let mut slowest = String::new();
    for svc in &victim_svcs {
        let l = leases.get(&format!("{svc}-canary-rollout")).await.unwrap();
        let acquired = l
            .spec
            .and_then(|s| s.acquire_time)
            .and_then(|t| chrono::DateTime::from_timestamp_micros(t.0.as_microsecond()));
        if let Some(t) = acquired
            && t - killed_at > last_taken
        {
            last_taken = t - killed_at;
            slowest = svc.clone();
        }
    }
    eprintln!(
        "{} rollouts taken over {:?} after kill -9 (interval 2s); the last Lease was acquired {:.1} s after the kill",
        victim_svcs.len(),
        killed.elapsed(),
        last_taken.num_milliseconds() as f64 / 1000.0
    );
    if last_taken > chrono::Duration::seconds(8) {
        // Slower than a lease (6 s) and a look: what each runner said about that rollout.
        eprintln!("killed at {killed_at}; the slowest was {slowest}:");
        for (i, r) in runners.iter().enumerate() {
            for l in r
                .output()
                .iter()
                .filter(|l| l.contains(&format!("/{slowest} ")))
            {
                eprintln!("  runner {i}: {l}");
            }
        }
    }
    // Its replacement gets a share: the others hand over what they drive beyond theirs.
    let replacement = Proc::spawn(&ns.name, &["run", "--all", "--discover-interval", "1s"]);
    wait_for(
        Duration::from_secs(90),
        "the replacement runner drives some rollouts",
        || async {
            let out = replacement.output();
            (0..n)
                .filter(|i| drives(&out, &ns.name, &format!("svc-{i}")))
                .count()
                >= 2
        },
    )
    .await;
    wait_for(
        Duration::from_secs(30),
        "every rollout has a runner",
        || {
            let ns = ns.name.clone();
            async move { holders(&ns).await.values().all(Option::is_some) }
        },
    )
    .await;
    let spread = by_runner(&holders(&ns.name).await);
    eprintln!(
        "after the replacement joined: {:?}",
        spread.values().map(Vec::len).collect::<Vec<_>>()
    );
    runners.push(replacement);
    let claimants = |runners: &[Proc], svc: &str| {
        runners
            .iter()
            .filter(|r| r.child.id().is_some() && drives(&r.output(), &ns.name, svc))
            .count()
    };
    // Never two at once; exactly one once a handover in flight (lease taken, its log line
    // not yet printed) has landed.
    for (svc, _) in holders(&ns.name).await {
        assert!(
            claimants(&runners, &svc) <= 1,
            "{svc}: at most one live runner drives it"
        );
    }
    wait_for(
        Duration::from_secs(20),
        "every rollout is driven by exactly one live runner",
        || {
            let ns = ns.name.clone();
            let runners = &runners;
            async move {
                holders(&ns)
                    .await
                    .keys()
                    .all(|svc| claimants(runners, svc) == 1)
            }
        },
    )
    .await;
    for r in runners.iter_mut() {
        let _ = r.child.start_kill();
    }
}

/// From a runner's log: whether its last lease event for `ns/svc` left it driving.
fn drives(lines: &[String], ns: &str, svc: &str) -> bool {
    let key = format!(" {ns}/{svc} ");
    let mut driving = false;
    for l in lines.iter().filter(|l| l.contains(&key)) {
        if l.contains("holding the lease") || l.contains("took over from") {
            driving = true;
        } else if l.contains("lease taken over by")
            || l.contains("handing over:")
            || l.contains(&format!("done with {ns}/{svc}"))
        {
            driving = false;
        }
    }
    driving
}

/// A Prometheus in front of the real one that answers queries mentioning `slow_marker`
/// only after `delay` (every response closes its connection, so each query is seen).
async fn slow_prometheus(slow_marker: &'static str, delay: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = TestEnv::get().prometheus.clone();
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (http, upstream) = (http.clone(), upstream.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                if path.contains(slow_marker) {
                    tokio::time::sleep(delay).await;
                }
                let (status, body) = match http.get(format!("{upstream}{path}")).send().await {
                    Ok(r) => (r.status().as_u16(), r.bytes().await.unwrap_or_default()),
                    Err(_) => (502, Default::default()),
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
                let _ = sock.write_all(&body).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

/// One rollout behind a slow Prometheus query never delays the others: each rollout of
/// `run --all` is its own task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_rollout_does_not_delay_the_others() {
    let _scope = CLUSTER_SCOPE.read().await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("holding.rhai");
    std::fs::write(&policy, HOLDING).unwrap();
    let policy = policy.to_str().unwrap().to_string();
    let ns = TestNamespace::create("e2e-all-slow").await;
    start_many(&ns.name, &ns.client, "slow", 1, &policy).await;
    start_many(&ns.name, &ns.client, "fast", 2, &policy).await;
    let prom = slow_prometheus("slow-0", Duration::from_secs(8)).await;
    let mut all = Proc::spawn(
        &ns.name,
        &[
            "run",
            "--all",
            "--discover-interval",
            "1s",
            "--prometheus-url",
            &prom,
            "--prometheus-timeout",
            "30s",
        ],
    );
    for svc in ["slow-0", "fast-0", "fast-1"] {
        let ns = ns.name.clone();
        wait_for(Duration::from_secs(30), &format!("{svc} held"), || {
            let ns = ns.clone();
            async move { holder(&ns, svc).await.is_some() }
        })
        .await;
    }
    let count = |svc: &'static str| {
        let ns = ns.name.clone();
        async move {
            history_json(&ns, svc).await["current"]["rollout"]["evaluations"]
                .as_array()
                .map(|v| {
                    v.iter()
                        .filter_map(|e| e["at"].as_str().map(str::to_string))
                        .collect::<BTreeSet<_>>()
                })
                .unwrap_or_default()
        }
    };
    let (s0, f0) = (count("slow-0").await, count("fast-0").await);
    tokio::time::sleep(Duration::from_secs(12)).await;
    let (s1, f1) = (count("slow-0").await, count("fast-0").await);
    let slow_new = s1.difference(&s0).count();
    let fast_new = f1.difference(&f0).count();
    eprintln!(
        "in 12 s: slow-0 evaluated {slow_new}×, fast-0 {fast_new}× (interval 2 s, slow query 8 s)"
    );
    assert!(
        fast_new >= 4,
        "fast-0 keeps its 2 s interval while slow-0 waits on Prometheus: {fast_new}"
    );
    assert!(slow_new <= 2, "slow-0 is held up by its query: {slow_new}");
    let _ = all.child.start_kill();
}
