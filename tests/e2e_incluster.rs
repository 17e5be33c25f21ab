//! The in-cluster runner against the real test apiserver: `install-runner` applies the
//! shipped namespaced manifests; the binary then runs as a process that authenticates with
//! the runner ServiceAccount's token (kwok pods run no containers) and drives a rollout to
//! promotion, which proves the Role suffices; the same identity is denied everything else.

mod e2e_common;

use e2e_common::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn kubectl(kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl");
    eprintln!(
        "$ kubectl {} -> {:?}\n{}{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A kubeconfig for the test cluster that authenticates with `token` only.
fn token_kubeconfig(dir: &Path, ns: &str, token: &str) -> PathBuf {
    let admin = &TestEnv::get().kubeconfig;
    let view = kubectl(
        admin,
        &["config", "view", "--raw", "--minify", "-o", "json"],
    );
    let v: Value = serde_json::from_slice(&view.stdout).unwrap();
    let cluster = v["clusters"][0]["cluster"].clone();
    let kc = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": "runner", "user": {"token": token}}],
        "contexts": [{"name": "runner", "context": {"cluster": "test", "user": "runner", "namespace": ns}}],
        "current-context": "runner"
    });
    let path = dir.join("runner.kubeconfig");
    std::fs::write(&path, serde_json::to_string(&kc).unwrap()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_as_service_account_drives_and_is_confined() {
    let p = Provider::Istio;
    let svc = "web";
    let (ns, _traffic) = setup("e2e-runner-sa", svc, p, 100.0).await;
    let admin = TestEnv::get().kubeconfig.clone();

    // The rendered manifests: namespaced variant, and the cluster one validated by the server.
    let dry = kc_out(&ns.name, &["install-runner", "--dry-run", "-o", "yaml"]).await;
    assert_eq!(dry.status.code(), Some(0));
    let text = String::from_utf8_lossy(&dry.stdout).to_string();
    for kind in [
        "kind: ServiceAccount",
        "kind: Role",
        "kind: RoleBinding",
        "kind: Deployment",
    ] {
        assert!(text.contains(kind), "{kind} in:\n{text}");
    }
    assert!(!text.contains("ClusterRole"), "namespaced only");
    let cluster = kc_out(
        &ns.name,
        &[
            "install-runner",
            "-A",
            "-n",
            &ns.name,
            "--dry-run",
            "-o",
            "json",
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cluster_file = dir.path().join("cluster.json");
    std::fs::write(&cluster_file, &cluster.stdout).unwrap();
    let validated = kubectl(
        &admin,
        &[
            "apply",
            "--dry-run=server",
            "-f",
            cluster_file.to_str().unwrap(),
        ],
    );
    assert!(validated.status.success(), "the cluster variant is valid");

    // Install for real (kwok runs no containers: the runner below is a local process).
    let inst = kc_out(&ns.name, &["install-runner", "--replicas", "1"]).await;
    assert_eq!(inst.status.code(), Some(0));
    let token = kubectl(
        &admin,
        &[
            "-n",
            &ns.name,
            "create",
            "token",
            "kubectl-canary-runner",
            "--duration",
            "1h",
        ],
    );
    assert!(token.status.success());
    let token = String::from_utf8_lossy(&token.stdout).trim().to_string();
    let sa = token_kubeconfig(dir.path(), &ns.name, &token);
    let who = kubectl(
        &sa,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&who.stdout),
        format!("system:serviceaccount:{}:kubectl-canary-runner", ns.name)
    );

    let out = start(&ns.name, svc, p, &[]).await;
    assert_eq!(out.status.code(), Some(0), "start (as admin)");

    let env = TestEnv::get();
    let mut runner = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-canary"))
        .arg("--kubeconfig")
        .arg(&sa)
        .args([
            "run",
            "--all",
            "--discover-interval",
            "1s",
            "--metrics-window",
            "10s",
        ])
        .env("KUBECTL_CANARY_PROMETHEUS_URL", &env.prometheus)
        .env("KUBECTL_CANARY_SCRAPE_INTERVAL", "1s")
        .env("KUBECTL_CANARY_ACTOR", "runner-pod-0")
        .env_remove("KUBECONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for(
        Duration::from_secs(150),
        "the ServiceAccount runner promotes the canary",
        || {
            let ns = ns.name.clone();
            async move { status_json(&ns, svc).await["phase"] == "Promoted" }
        },
    )
    .await;
    assert!(
        runner.try_wait().unwrap().is_none(),
        "the runner keeps running"
    );
    let h = history_json(&ns.name, svc).await;
    let events: Vec<&str> = h["current"]["rollout"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["event"].as_str().unwrap())
        .collect();
    assert!(
        events.ends_with(&["begin_promote", "promote_done"]),
        "{events:?}"
    );
    let _ = runner.start_kill();
    let out = runner.wait_with_output().await.unwrap();
    // The Role allows the watches the runner relies on (it would fall back to reads and say so).
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !said.contains("could not be watched") && !said.contains("failed; reading"),
        "{said}"
    );

    // Everything beyond the Role is denied.
    let denied = |args: &[&str]| {
        let out = kubectl(&sa, args);
        assert!(!out.status.success(), "allowed: {args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("forbidden"),
            "{args:?} denied by RBAC"
        );
    };
    denied(&["-n", &ns.name, "get", "secrets"]);
    denied(&["-n", "default", "get", "configmaps"]);
    denied(&["-n", &ns.name, "create", "deployment", "x", "--image=y"]);
    denied(&[
        "-n",
        &ns.name,
        "create",
        "role",
        "r",
        "--verb=get",
        "--resource=pods",
    ]);
    denied(&["delete", "namespace", &ns.name]);
    denied(&["get", "nodes"]);
    let all = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-canary"))
        .arg("--kubeconfig")
        .arg(&sa)
        .args(["status", "-A"])
        .output()
        .await
        .unwrap();
    assert_eq!(all.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&all.stderr).contains("permission denied"),
        "{}",
        String::from_utf8_lossy(&all.stderr)
    );
}
