//! The lifecycle's live cases (issue 10): a rollback during a slow promote restores stable's
//! previous template, and the canary's capacity follows its weight. Real control plane,
//! Prometheus and data plane; traffic is counted by the pods.

mod e2e_common;

use e2e_common::*;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use std::time::Duration;

fn replicas(d: &Deployment) -> i32 {
    d.spec.replicas.unwrap_or(1)
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_during_a_slow_promote_restores_stable() {
    let svc = "web";
    let p = Provider::Istio;
    let (ns, _traffic) = setup("e2e-f3", svc, p, 100.0).await;
    let before = deployment(&ns.client, &ns.name, svc).await.unwrap();
    let old_image = image_of(&before);
    let out = start(&ns.name, svc, p, &[]).await;
    assert_eq!(out.status.code(), Some(0), "start");
    let canary_name = format!("{svc}-canary");
    let canary = deployment(&ns.client, &ns.name, &canary_name)
        .await
        .unwrap();
    assert_eq!(
        replicas(&canary),
        1,
        "5% of 2 stable pods needs one canary pod"
    );

    // A slow stable rollout: new pods count as available only after 20 s (the old ones
    // have been ready longer by then, so restoring them is quick).
    let api: Api<Deployment> = Api::namespaced(ns.client.clone(), &ns.name);
    api.patch(
        svc,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"minReadySeconds": 20}})),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;

    let template_hashes = |pods: Vec<PodCount>| -> std::collections::BTreeSet<String> {
        pods.into_iter()
            .filter(|p| p.live && p.deployment.as_deref() == Some(svc))
            .filter_map(|p| p.labels.get("pod-template-hash").cloned())
            .collect()
    };
    let old_hashes = template_hashes(mesh_pods(&ns.name).await);
    assert_eq!(old_hashes.len(), 1, "{old_hashes:?}");
    let mut promote = kc(&ns.name, &["promote", svc]).spawn().expect("promote");
    wait_for(
        Duration::from_secs(60),
        "stable takes the canary's template",
        || {
            let client = ns.client.clone();
            let ns = ns.name.clone();
            async move {
                deployment(&client, &ns, svc)
                    .await
                    .is_some_and(|d| image_of(&d) == NEW_IMAGE)
            }
        },
    )
    .await;
    let canary = deployment(&ns.client, &ns.name, &canary_name)
        .await
        .unwrap();
    assert_eq!(
        replicas(&canary),
        2,
        "before it carries 100% the canary has stable's replica count"
    );
    let st = status_json(&ns.name, svc).await;
    assert_eq!(st["phase"], "Promoting", "{st}");

    let out = kc_out(
        &ns.name,
        &["rollback", svc, "--reason", "drill during promote"],
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "rollback ends RolledBack");
    let _ = promote.kill().await;

    let stable = deployment(&ns.client, &ns.name, svc).await.unwrap();
    assert_eq!(
        image_of(&stable),
        old_image,
        "stable's previous template is back"
    );
    let labels = stable
        .spec
        .template
        .metadata
        .clone()
        .unwrap()
        .labels
        .unwrap();
    assert_eq!(labels.get("version").map(String::as_str), Some("v1"));
    let st = status_json(&ns.name, svc).await;
    assert_eq!(st["phase"], "RolledBack", "{st}");
    let history = history_json(&ns.name, svc).await;
    let events: Vec<&str> = history["current"]["rollout"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["event"].as_str().unwrap())
        .collect();
    assert!(
        events.ends_with(&["begin_promote", "begin_rollback", "rollback_done"]),
        "{events:?}"
    );
    assert!(
        history["current"]["rollout"]["history"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["reason"]
            .as_str()
            .unwrap()
            .contains("previous template restored")
    );

    // Everything reaches stable's pods of the old template, nothing is dropped.
    wait_serving(&ns.name, svc, 2, Duration::from_secs(60)).await;
    let served = measure(&ns.name, Duration::from_secs(3)).await;
    assert!(served.total() > 100, "traffic flows: {served:?}");
    assert_eq!(served.of(svc), served.total(), "all on stable: {served:?}");
    assert_eq!(served.no_upstream(), 0, "{served:?}");
    wait_for(
        Duration::from_secs(60),
        "only the old template's pods are left",
        || {
            let ns = ns.name.clone();
            let old = old_hashes.clone();
            async move { template_hashes(mesh_pods(&ns).await) == old }
        },
    )
    .await;
    assert_no_leftovers(&ns.name, svc, p).await;
    // The killed promote left nothing to finish; a later step changes nothing.
    let out = kc_out(&ns.name, &["step", svc]).await;
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        image_of(&deployment(&ns.client, &ns.name, svc).await.unwrap()),
        old_image
    );
}
