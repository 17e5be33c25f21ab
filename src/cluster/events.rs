//! Kubernetes Events on the stable Deployment for every transition (best effort: a failed
//! Event never fails a rollout step).

use crate::core::rollout::{EventKind, Phase, Transition};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

fn reason(t: &Transition) -> &'static str {
    match t.event {
        EventKind::CanaryReady => "CanaryStarted",
        EventKind::Advance => "CanaryAdvanced",
        EventKind::Pause => "CanaryPaused",
        EventKind::Resume => "CanaryResumed",
        EventKind::BeginPromote => "CanaryPromoting",
        EventKind::PromoteDone => "CanaryPromoted",
        EventKind::BeginRollback => "CanaryRollingBack",
        EventKind::RollbackDone if t.to == Phase::Aborted => "CanaryAborted",
        EventKind::RollbackDone => "CanaryRolledBack",
        EventKind::Abort => "CanaryAborting",
        EventKind::Fail => "CanaryFailed",
    }
}

pub async fn emit(client: &Client, ns: &str, service: &str, uid: Option<String>, t: &Transition) {
    let warning = matches!(
        t.to,
        Phase::RollingBack | Phase::RolledBack | Phase::Aborting | Phase::Aborted | Phase::Failed
    );
    let now = k8s_openapi::jiff::Timestamp::from_millisecond(t.at.timestamp_millis())
        .ok()
        .map(Time);
    let ev = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{service}.canary.")),
            namespace: Some(ns.to_string()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            name: Some(service.to_string()),
            namespace: Some(ns.to_string()),
            uid,
            ..Default::default()
        },
        reason: Some(reason(t).into()),
        message: Some(format!(
            "{} → {} at step {} ({}% canary) by {}: {}",
            t.from,
            t.to,
            t.step + 1,
            t.weight,
            t.actor,
            t.reason
        )),
        type_: Some(if warning { "Warning" } else { "Normal" }.into()),
        source: Some(EventSource {
            component: Some("kubectl-canary".into()),
            ..Default::default()
        }),
        reporting_component: Some("kubectl-canary".into()),
        reporting_instance: Some(t.actor.clone()),
        first_timestamp: now.clone(),
        last_timestamp: now,
        count: Some(1),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    if let Err(e) = api.create(&PostParams::default(), &ev).await {
        eprintln!("warning: could not record Event on Deployment {ns}/{service}: {e}");
    }
}
