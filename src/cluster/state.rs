//! Rollout state in the cluster: one ConfigMap `<svc>-canary-rollout` per service, holding the
//! core [`Rollout`] unchanged plus everything another operator needs to continue it (policy
//! source text and hash, parameters, schedule overrides). Writes are compare-and-swap on
//! resourceVersion; a 409 becomes [`Error::Conflict`].

use crate::core::rollout::Rollout;
use crate::error::{Error, Result};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "kubectl-canary");
pub const SERVICE_LABEL: &str = "kubectl-canary.io/service";
/// The phase of the rollout in progress (absent when none is): `run --all` finds the active
/// rollouts from metadata alone instead of listing every state document.
pub const PHASE_LABEL: &str = "kubectl-canary.io/phase";

/// Our labels and annotations were named `kubectl-canary/…` before they all took the
/// `kubectl-canary.io/` prefix of the others. Objects written by an earlier version (a
/// rollout in flight across the upgrade, a runner's Lease) still carry the old names: they
/// are read under either, and written under the new one (a state ConfigMap is rewritten
/// whole at its next save, which drops the old labels).
pub fn legacy(name: &str) -> String {
    name.replacen("kubectl-canary.io/", "kubectl-canary/", 1)
}

/// The value of our label or annotation `name` in `map`, under its name or its old one.
pub fn ours<'a>(map: &'a BTreeMap<String, String>, name: &str) -> Option<&'a String> {
    map.get(name).or_else(|| map.get(&legacy(name)))
}
const DATA_KEY: &str = "state.json";
/// Finished rollouts kept per service.
pub const MAX_PREVIOUS: usize = 10;

pub fn configmap_name(service: &str) -> String {
    format!("{service}-canary-rollout")
}

/// The policy a rollout runs, with its source so it can be recompiled without the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyRef {
    /// What the user passed (`default`, `./my.rhai`).
    pub name: String,
    /// The file name the policy was compiled as.
    pub path: String,
    pub sha256: String,
    pub source: String,
}

/// One rollout as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutRecord {
    pub namespace: String,
    pub service: String,
    /// The stable Deployment (None in records from before it was configurable: the service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<String>,
    /// The canary Deployment when it is not `<service>-canary` (`start --canary`); None in
    /// older records and for the default name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
    /// The metrics of the mesh the stable pods were in at start ([`crate::cluster::mesh`]);
    /// None: no mesh found, or a record from before it was looked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<crate::core::schedule::MetricsFlavour>,
    /// container → new image.
    pub images: BTreeMap<String, String>,
    /// container → image of stable when the rollout started.
    #[serde(default)]
    pub previous_images: BTreeMap<String, String>,
    pub provider: String,
    pub route: String,
    pub policy: PolicyRef,
    /// `--set` pairs as given.
    #[serde(default)]
    pub params: Vec<String>,
    /// `--schedule-override` pairs as given.
    #[serde(default)]
    pub schedule_overrides: Vec<String>,
    pub canary_replicas: u32,
    pub started_by: String,
    /// Delete (instead of scale to 0) the canary when rolling back.
    #[serde(default)]
    pub delete_on_rollback: bool,
    /// Stable's pod template when the rollout started: a rollback after promote began
    /// restores it (None in records from before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_template: Option<serde_json::Value>,
    /// The schedule's lifecycle settings at start (defaults for older records).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub scale_down_delay: Option<std::time::Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_canary_replicas: Option<u32>,
    /// Webhook sinks for transitions (`start --notify`); Secret references only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<super::sink::Sink>,
    pub rollout: Rollout,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateDoc {
    pub current: Option<RolloutRecord>,
    /// Finished rollouts, newest last (bounded by [`MAX_PREVIOUS`]).
    #[serde(default)]
    pub previous: Vec<RolloutRecord>,
}

/// A state document with the resourceVersion it was read at (None: not stored yet).
#[derive(Debug, Clone)]
pub struct Stored {
    pub doc: StateDoc,
    pub resource_version: Option<String>,
}

#[derive(Clone)]
pub struct Store {
    api: Api<ConfigMap>,
    namespace: String,
    service: String,
}

impl Store {
    pub fn new(client: &Client, namespace: &str, service: &str) -> Self {
        Store {
            api: Api::namespaced(client.clone(), namespace),
            namespace: namespace.into(),
            service: service.into(),
        }
    }

    pub async fn load(&self) -> Result<Stored> {
        let cm = self.api.get_opt(&configmap_name(&self.service)).await?;
        match cm {
            None => Ok(Stored {
                doc: StateDoc::default(),
                resource_version: None,
            }),
            Some(cm) => {
                let text = cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get(DATA_KEY))
                    .cloned()
                    .unwrap_or_default();
                let doc = if text.is_empty() {
                    StateDoc::default()
                } else {
                    serde_json::from_str(&text).map_err(|e| {
                        Error::Cluster(format!(
                            "ConfigMap {}/{} holds unreadable rollout state: {e}",
                            self.namespace,
                            configmap_name(&self.service)
                        ))
                    })?
                };
                Ok(Stored {
                    doc,
                    resource_version: cm.metadata.resource_version,
                })
            }
        }
    }

    fn object(&self, doc: &StateDoc, rv: Option<String>) -> Result<ConfigMap> {
        let text = serde_json::to_string(doc).map_err(|e| Error::Other(e.to_string()))?;
        let mut labels = BTreeMap::new();
        labels.insert(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string());
        labels.insert(SERVICE_LABEL.to_string(), self.service.clone());
        if let Some(cur) = &doc.current {
            labels.insert(
                PHASE_LABEL.to_string(),
                cur.rollout.phase.as_str().to_string(),
            );
        }
        Ok(ConfigMap {
            metadata: ObjectMeta {
                name: Some(configmap_name(&self.service)),
                namespace: Some(self.namespace.clone()),
                labels: Some(labels),
                resource_version: rv,
                ..Default::default()
            },
            data: Some(BTreeMap::from([(DATA_KEY.to_string(), text)])),
            ..Default::default()
        })
    }

    /// Writes `stored.doc` if nobody wrote since it was read; updates its resourceVersion.
    pub async fn save(&self, stored: &mut Stored) -> Result<()> {
        let cm = self.object(&stored.doc, stored.resource_version.clone())?;
        let pp = PostParams {
            field_manager: Some("kubectl-canary".into()),
            ..Default::default()
        };
        let res = match &stored.resource_version {
            None => self.api.create(&pp, &cm).await,
            Some(_) => {
                self.api
                    .replace(&configmap_name(&self.service), &pp, &cm)
                    .await
            }
        };
        match res {
            Ok(cm) => {
                stored.resource_version = cm.metadata.resource_version;
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Err(Error::Conflict {
                namespace: self.namespace.clone(),
                service: self.service.clone(),
            }),
            Err(e) => Err(e.into()),
        }
    }
}

/// All stored rollouts of a namespace (or all namespaces with `None`).
pub async fn list(client: &Client, namespace: Option<&str>) -> Result<Vec<StateDoc>> {
    let api: Api<ConfigMap> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let lp = ListParams::default().labels(&state_selector());
    let mut out = Vec::new();
    for cm in api.list(&lp).await? {
        if let Some(text) = cm.data.as_ref().and_then(|d| d.get(DATA_KEY))
            && let Ok(doc) = serde_json::from_str::<StateDoc>(text)
        {
            out.push(doc);
        }
    }
    Ok(out)
}

/// A stored rollout as its ConfigMap's metadata tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub namespace: String,
    pub service: String,
    pub resource_version: Option<String>,
    /// From the phase label. `Unlabelled`: written before the label existed, so only the
    /// document tells (see [`phase_of`]).
    pub phase: ListedPhase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListedPhase {
    Current(crate::core::rollout::Phase),
    Unlabelled,
}

/// The stored rollouts of a namespace (or of all with `None`) from one metadata-only list:
/// a runner of many rollouts looks for new ones every few seconds, and listing every state
/// document each time cost megabytes per look.
pub async fn list_metadata(client: &Client, namespace: Option<&str>) -> Result<Vec<Listed>> {
    let api: Api<ConfigMap> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let lp = ListParams::default().labels(&state_selector());
    Ok(api
        .list_metadata(&lp)
        .await?
        .into_iter()
        .filter_map(|m| listed_of(&m.metadata))
        .collect())
}

/// Label selector of the state ConfigMaps.
pub fn state_selector() -> String {
    format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)
}

/// The rollout a state ConfigMap's metadata describes (None: not one of ours).
pub fn listed_of(meta: &ObjectMeta) -> Option<Listed> {
    let labels = meta.labels.as_ref()?;
    let name = meta.name.as_deref()?;
    let service = ours(labels, SERVICE_LABEL)
        .cloned()
        .or_else(|| name.strip_suffix(&configmap_name("")).map(str::to_string))?;
    let phase = ours(labels, PHASE_LABEL)
        .and_then(|p| crate::core::rollout::Phase::from_name(p))
        .map_or(ListedPhase::Unlabelled, ListedPhase::Current);
    Some(Listed {
        namespace: meta.namespace.clone()?,
        service,
        resource_version: meta.resource_version.clone(),
        phase,
    })
}

/// The phase of the rollout in progress of a listed ConfigMap without a phase label: the
/// label's absence means either no rollout in progress or a document from before the label.
pub async fn phase_of(
    client: &Client,
    listed: &Listed,
) -> Result<Option<crate::core::rollout::Phase>> {
    let stored = Store::new(client, &listed.namespace, &listed.service)
        .load()
        .await?;
    Ok(stored.doc.current.map(|c| c.rollout.phase))
}

impl StateDoc {
    /// Moves a finished current rollout into `previous` as a summary (bounded). The newest
    /// finished rollout keeps its policy source (`status` reads its schedule when nothing is
    /// in progress); older ones keep only its name and sha.
    pub fn archive_current(&mut self) {
        if let Some(mut cur) = self.current.take() {
            for older in &mut self.previous {
                older.policy.source.clear();
            }
            cur.summarize();
            self.previous.push(cur);
            if self.previous.len() > MAX_PREVIOUS {
                let excess = self.previous.len() - MAX_PREVIOUS;
                self.previous.drain(..excess);
            }
        }
    }
}

impl RolloutRecord {
    /// The objects the rollout names (its stable and canary Deployments and its route).
    pub fn target(&self) -> crate::providers::Target {
        let mut t = crate::providers::Target::new(&self.namespace, &self.service);
        t.route = self.route.clone();
        if let Some(stable) = &self.stable {
            t.stable_deployment = stable.clone();
        }
        if let Some(canary) = &self.canary {
            t.canary_deployment = canary.clone();
        }
        t
    }

    /// Drops what only a rollout in progress needs: stable's previous template (restored by a
    /// rollback from Promoting) and the per-evaluation detail (see `core::retention`).
    pub fn summarize(&mut self) {
        self.previous_template = None;
        self.rollout.summarize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::decision::{Decision, Evaluation};
    use crate::core::rollout::{Cause, Event};
    use chrono::{DateTime, Duration, Utc};

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn state_written_under_the_old_label_names_is_listed_as_under_the_new() {
        let meta = |labels: &[(&str, &str)]| ObjectMeta {
            name: Some("web-canary-rollout".into()),
            namespace: Some("shop".into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        };
        let new = listed_of(&meta(&[
            (SERVICE_LABEL, "web"),
            (PHASE_LABEL, "Progressing"),
        ]))
        .unwrap();
        let old = listed_of(&meta(&[
            ("kubectl-canary/service", "web"),
            ("kubectl-canary/phase", "Progressing"),
        ]))
        .unwrap();
        assert_eq!(
            new.phase,
            ListedPhase::Current(crate::core::rollout::Phase::Progressing)
        );
        assert_eq!(old, new);
        // The new name wins where both are (a save that raced an older writer).
        let both = BTreeMap::from([
            ("kubectl-canary/phase".to_string(), "Paused".to_string()),
            (PHASE_LABEL.to_string(), "Progressing".to_string()),
        ]);
        assert_eq!(
            ours(&both, PHASE_LABEL).map(String::as_str),
            Some("Progressing")
        );
        assert_eq!(legacy(SERVICE_LABEL), "kubectl-canary/service");
    }

    #[tokio::test]
    async fn a_save_writes_only_the_new_label_names() {
        // A client that is never called: `object` builds the ConfigMap a save replaces
        // whole, so the old names an earlier version wrote are gone after it.
        let client =
            Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
        let store = Store::new(&client, "shop", "web");
        let cm = store.object(&StateDoc::default(), None).unwrap();
        let labels = cm.metadata.labels.unwrap();
        assert_eq!(labels.get(SERVICE_LABEL).map(String::as_str), Some("web"));
        assert!(
            !labels.keys().any(|k| k.starts_with("kubectl-canary/")),
            "{labels:?}"
        );
    }

    /// A rollout of `evaluations` evaluations at 30 s with Prometheus-backed observations,
    /// 10 resolved queries and full policy logs, through 5 steps to a promote.
    fn long_rollout(start: i64, evaluations: usize) -> RolloutRecord {
        let mut r = Rollout::new(t(start));
        let at = |i: usize| t(start + 30 * i as i64);
        r.apply(
            Event::CanaryReady { weight: 5 },
            at(0),
            Cause::new("e2e", "start"),
        )
        .unwrap();
        for i in 0..evaluations {
            let advance = i % (evaluations / 5) == evaluations / 5 - 1;
            let decision = if advance {
                Decision::Advance {
                    to_weight: None,
                    reason: "soaked: error share within bounds".into(),
                }
            } else {
                Decision::hold("collecting evidence")
            };
            r.record_evaluation(Evaluation {
                at: at(i),
                step: r.step,
                weight: r.weight,
                decision,
                observations: (0..12)
                    .map(|k| (format!("canary_observation_{k}"), Some(i as f64 / 7.0)))
                    .collect(),
                queries: (0..10)
                    .map(|k| (format!("sum(rate(istio_requests_total{{destination_workload=\"web-canary\",namespace=\"shop\",response_code=~\"5..\",q=\"{k}\"}}[1m]))"), Some(1.0)))
                    .collect(),
                values: Default::default(),
                canary_ready: None,
                log: vec!["p".repeat(500); 50],
            });
            if advance && r.step + 1 < 5 {
                r.apply(
                    Event::Advance {
                        step: r.step + 1,
                        weight: r.weight * 2,
                    },
                    at(i),
                    Cause::policy("soaked"),
                )
                .unwrap();
            }
        }
        r.apply(Event::BeginPromote, at(evaluations), Cause::policy("done"))
            .unwrap();
        r.apply(
            Event::PromoteDone,
            at(evaluations) + Duration::seconds(40),
            Cause::policy("done"),
        )
        .unwrap();
        serde_json::from_value(serde_json::json!({
            "namespace": "shop", "service": "web", "images": {"app": "shop/web:2.0"},
            "previous_images": {"app": "shop/web:1.0"}, "provider": "istio",
            "route": "web", "canary_replicas": 1, "started_by": "e2e",
            "policy": {"name": "default", "path": "default.rhai", "sha256": "ab".repeat(32),
                "source": include_str!("../../policies/default.rhai")},
            "previous_template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"name": "app", "image": "shop/web:1.0", "env": (0..40).map(|k| serde_json::json!({"name": format!("ENV_{k}"), "value": "v".repeat(40)})).collect::<Vec<_>>()}]}},
            "rollout": r,
        }))
        .unwrap()
    }

    #[test]
    fn a_thousand_evaluations_and_ten_finished_rollouts_fit_in_256_kib() {
        let mut doc = StateDoc::default();
        // Recording is the slow part in a debug build: one finished rollout, archived 12 times.
        let finished = long_rollout(0, 1000);
        for _ in 0..12 {
            doc.current = Some(finished.clone());
            doc.archive_current();
        }
        doc.current = Some(long_rollout(2_000_000, 1000));
        let bytes = serde_json::to_vec(&doc).unwrap().len();
        assert!(bytes <= 256 * 1024, "{bytes} bytes");
        assert_eq!(doc.previous.len(), MAX_PREVIOUS);
        let newest = doc.previous.last().unwrap();
        assert!(
            !newest.policy.source.is_empty(),
            "the newest finished keeps its policy"
        );
        assert!(doc.previous[0].policy.source.is_empty());
        assert!(doc.previous.iter().all(|p| p.previous_template.is_none()));
        assert!(
            doc.previous.iter().all(|p| p.rollout.history.len() == 7),
            "transitions are kept whole"
        );
        let cur = &doc.current.as_ref().unwrap().rollout;
        assert!(cur.evaluations.len() >= 50, "{}", cur.evaluations.len());
        eprintln!(
            "state: {bytes} bytes; current keeps {} of 1000 evaluations, each finished {}",
            cur.evaluations.len(),
            doc.previous[0].rollout.evaluations.len()
        );
    }
}
