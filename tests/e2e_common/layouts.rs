//! What the layout tests (`e2e_layouts`) check on the team's own objects: snapshots of the
//! parts the team owns, and that a rollback leaves them, and stable's pods, as they were.

use super::*;
use serde_json::{Value, json};
use std::time::Duration;

pub fn kubectl_json(ns: &str, what: &str) -> Value {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&TestEnv::get().kubeconfig)
        .args(["-n", ns, "get", what, "-o", "json"])
        .output()
        .expect("kubectl get");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "kubectl get {what}: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `kubectl ARGS` in namespace `ns` against the test cluster; it must succeed.
pub fn kubectl(ns: &str, args: &[&str]) {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&TestEnv::get().kubeconfig)
        .args(["-n", ns])
        .args(args)
        .output()
        .expect("kubectl");
    assert!(out.status.success(), "kubectl {args:?}: {out:?}");
}

/// The user-owned parts of an object (what must be exactly as before after a rollout).
pub fn user_view(o: &Value) -> Value {
    json!({"spec": o["spec"], "annotations": o["metadata"]["annotations"], "labels": o["metadata"]["labels"]})
}

/// The team's `objects` as they are now (to compare after the rollout).
pub fn snapshot(ns: &str, objects: &[&str]) -> Vec<Value> {
    objects
        .iter()
        .map(|o| user_view(&kubectl_json(ns, o)))
        .collect()
}

/// After a rollback: the canary gets nothing and no request is left without an upstream, the
/// team's `objects` are as in `before`, and `stable` still runs the pods it had.
pub async fn assert_restored(
    ns: &str,
    canary: &str,
    objects: &[&str],
    before: &[Value],
    stable: &str,
    stable_before: &[String],
) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (share, served) = canary_share(ns, canary).await;
    assert_eq!(share, 0.0, "{served:?}");
    assert_eq!(served.no_upstream(), 0, "{served:?}");
    assert_eq!(
        snapshot(ns, objects),
        before,
        "the team's objects as they had them"
    );
    assert_eq!(stable_pod_uids(ns, stable).await, stable_before);
}

/// Share of the canary Deployment over a few seconds, with enough requests to be sure.
pub async fn canary_share(ns: &str, canary: &str) -> (f64, Served) {
    let s = measure(ns, Duration::from_secs(6)).await;
    (s.share(canary).unwrap_or(0.0), s)
}
