//! Deployments, pods and ReplicaSets watched once per `run --all` runner (issue 11): a runner
//! of 200 rollouts otherwise reads both Deployments and lists the pods and ReplicaSets of both
//! versions at every evaluation of every rollout, 120 requests a second at a 10 s interval, and
//! the lists were the slowest requests of a step under load (the tail of the benchmark's
//! lateness). Three watches (like a controller's informers) keep the same objects in memory;
//! an evaluation reads them without a round trip. Single-rollout commands keep listing: one rollout does not pay for a watch.
//!
//! The cache trails the API server by the watch's delay (milliseconds), as a controller's
//! informer does; the readiness decisions built on it already tolerate that (readiness grace).
//! When the watches cannot start, or one fails later (a Role that allows `list` but not
//! `watch`, a dropped connection), the runner reads as before until the watch recovers.
//!
//! The rollouts' Leases are watched too, so that a runner waiting for one sees it released
//! (handed over to even out the load) at once rather than when the claim would have lapsed.
//!
//! A watch of the state ConfigMaps' metadata only finds new rollouts (instead of a
//! list per discovery round) and tells a runner whether the state it saved last is still
//! the newest: then the next evaluation starts from its own copy instead of a GET. It is only
//! a shortcut: every save is a compare-and-swap on the resourceVersion, so a write the watch
//! has not delivered yet makes the save fail and the state is read again.

use super::lease;
use super::state::{self, Listed};
use super::workloads;
use crate::core::attendance::LeaseFacts;
use crate::core::facts::PodFacts;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// How long a runner waits for the first full list of each watch before it falls back to
/// listing at every evaluation.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

pub struct WatchCache {
    pods: Watched<Pod>,
    sets: Watched<ReplicaSet>,
    deployments: Watched<Deployment>,
    states: Watched<PartialObjectMeta<ConfigMap>>,
    leases: Watched<Lease>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for WatchCache {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// One watch's store and whether it can be trusted: after an error (a watch refused with
/// 403 after its list was allowed, a dropped connection) the store may miss changes, so it
/// serves nothing until the watch delivers again; callers read instead.
struct Watched<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store: Store<K>,
    failure: Arc<Mutex<Option<String>>>,
}

impl<K: Resource + Clone + 'static> Watched<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    fn store(&self) -> Option<&Store<K>> {
        self.failure().is_none().then_some(&self.store)
    }

    fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A watch of `K` in `namespace` (all namespaces with None) feeding a store, without the
/// managedFields nobody here reads (most of a pod's bytes). Deployments read from here are
/// only read (writes always start from a fresh GET).
fn watch<K>(
    client: &Client,
    namespace: Option<&str>,
    config: watcher::Config,
) -> (Watched<K>, JoinHandle<()>)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (reader, writer) = reflector::store();
    let failure = Arc::new(Mutex::new(None));
    let stream = watcher(api, config.any_semantic())
        .default_backoff()
        .modify(|o: &mut K| o.managed_fields_mut().clear())
        .reflect(writer);
    let seen = failure.clone();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        // Errors are retried with backoff by the watcher itself; meanwhile the store is not
        // trusted.
        while let Some(item) = stream.next().await {
            *seen.lock().unwrap_or_else(|e| e.into_inner()) = item.err().map(|e| e.to_string());
        }
    });
    (
        Watched {
            store: reader,
            failure,
        },
        task,
    )
}

impl WatchCache {
    /// Starts the watches and waits for their first list; Err says why they cannot serve.
    pub async fn start(client: &Client, namespace: Option<&str>) -> Result<WatchCache, String> {
        let all = watcher::Config::default;
        let (pods, t1) = watch::<Pod>(client, namespace, all());
        let (sets, t2) = watch::<ReplicaSet>(client, namespace, all());
        let (deployments, t3) = watch::<Deployment>(client, namespace, all());
        // Metadata only: a state document can be 256 KiB.
        let (states, t4) = watch::<PartialObjectMeta<ConfigMap>>(
            client,
            namespace,
            all().labels(&state::state_selector()),
        );
        // The rollouts' Leases: a runner waiting for one sees it handed over at once.
        let (leases, t5) =
            watch::<Lease>(client, namespace, all().labels(&state::state_selector()));
        let cache = WatchCache {
            pods,
            sets,
            deployments,
            states,
            leases,
            tasks: vec![t1, t2, t3, t4, t5],
        };
        let ready = async {
            cache.pods.store.wait_until_ready().await.ok();
            cache.sets.store.wait_until_ready().await.ok();
            cache.deployments.store.wait_until_ready().await.ok();
            cache.states.store.wait_until_ready().await.ok();
            cache.leases.store.wait_until_ready().await.ok();
        };
        tokio::time::timeout(READY_TIMEOUT, ready)
            .await
            .map_err(|_| {
                format!(
                    "Deployments, pods, ReplicaSets, rollout states and Leases could not be watched within {READY_TIMEOUT:?} (is `watch` allowed?); listing them at every evaluation instead"
                )
            })?;
        Ok(cache)
    }

    /// Why some watch cannot serve right now (its last error), if one cannot.
    pub fn trouble(&self) -> Option<String> {
        [
            ("pods", self.pods.failure()),
            ("ReplicaSets", self.sets.failure()),
            ("Deployments", self.deployments.failure()),
            ("rollout states", self.states.failure()),
            ("Leases", self.leases.failure()),
        ]
        .into_iter()
        .find_map(|(what, f)| {
            f.map(|f| {
                format!("watching {what} failed; reading them instead until it recovers: {f}")
            })
        })
    }

    /// The rollouts in scope as last watched, like [`state::list_metadata`] (None: the watch
    /// is failing).
    pub fn listed_states(&self) -> Option<Vec<Listed>> {
        Some(
            self.states
                .store()?
                .state()
                .iter()
                .filter_map(|m| state::listed_of(&m.metadata))
                .collect(),
        )
    }

    /// The resourceVersion of `service`'s state in `namespace` as last watched.
    pub fn state_version(&self, namespace: &str, service: &str) -> Option<String> {
        self.states
            .store()?
            .get(&ObjectRef::new(&state::configmap_name(service)).within(namespace))
            .and_then(|m| m.metadata.resource_version.clone())
    }

    /// The Lease of `service`'s rollout in `namespace` as last watched (default: none yet;
    /// None: the watch is failing).
    pub fn lease(&self, namespace: &str, service: &str) -> Option<LeaseFacts> {
        let store = self.leases.store()?;
        Some(
            store
                .get(&ObjectRef::new(&state::configmap_name(service)).within(namespace))
                .map(|l| lease::facts_of(&l))
                .unwrap_or_default(),
        )
    }

    /// Deployment `name` in `namespace` as last watched (None: not seen, or the watch is
    /// failing).
    pub fn deployment(&self, namespace: &str, name: &str) -> Option<Deployment> {
        self.deployments
            .store()?
            .get(&ObjectRef::new(name).within(namespace))
            .map(|d| (*d).clone())
    }

    /// Pod health of `d`'s pods, as [`workloads::deployment_pod_facts`] reads it by listing
    /// (None: a watch is failing).
    pub fn facts(&self, d: &Deployment) -> Option<PodFacts> {
        let (sets, pods) = (self.sets.store()?, self.pods.store()?);
        // Called twice per evaluation over every cached object in scope: no allocation per
        // object (a profile of 200 rollouts showed namespace clones here).
        let ns = d.metadata.namespace.as_deref();
        let uid = d.metadata.uid.as_deref();
        let selector = workloads::selector_of(d);
        let sets = sets.state_filter(|rs| {
            rs.metadata.namespace.as_deref() == ns
                && rs
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| Some(o.uid.as_str()) == uid)
        });
        let pods = pods.state_filter(|p| {
            p.metadata.namespace.as_deref() == ns
                && p.metadata
                    .labels
                    .as_ref()
                    .is_some_and(|labels| workloads::selects(&selector, labels))
        });
        Some(workloads::pod_facts_of(d, &sets, &pods))
    }
}
