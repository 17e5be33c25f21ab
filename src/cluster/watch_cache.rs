//! Deployments, pods and ReplicaSets watched once per `run --all` runner (issue 11): a runner
//! of 200 rollouts otherwise reads both Deployments and lists the pods and ReplicaSets of both
//! versions at every evaluation of every rollout, 120 requests a second at a 10 s interval, and
//! the lists were the slowest requests of a step under load (the tail of the benchmark's
//! lateness). Three watches (like a controller's informers) keep the same objects in memory;
//! an evaluation reads them without a round trip. Single-rollout commands keep listing: one rollout does not pay for a watch.
//!
//! The cache trails the API server by the watch's delay (milliseconds), as a controller's
//! informer does; the readiness decisions built on it already tolerate that (readiness grace).
//! When the watches cannot start (no `watch` permission, say) the runner lists as before.

use super::workloads;
use crate::core::facts::PodFacts;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use std::time::Duration;
use tokio::task::JoinHandle;

/// How long a runner waits for the first full list of each watch before it falls back to
/// listing at every evaluation.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

pub struct WatchCache {
    pods: Store<Pod>,
    sets: Store<ReplicaSet>,
    deployments: Store<Deployment>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for WatchCache {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A watch of `K` in `namespace` (all namespaces with None) feeding a store, without the
/// managedFields nobody here reads (most of a pod's bytes). Deployments read from here are
/// only read (writes always start from a fresh GET).
fn watch<K>(client: &Client, namespace: Option<&str>) -> (Store<K>, JoinHandle<()>)
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
    let stream = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(|o: &mut K| o.managed_fields_mut().clear())
        .reflect(writer)
        .applied_objects();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        // Errors (a dropped watch, a 410) are retried with backoff by the watcher itself.
        while stream.next().await.is_some() {}
    });
    (reader, task)
}

impl WatchCache {
    /// Starts the watches and waits for their first list; Err says why they cannot serve.
    pub async fn start(client: &Client, namespace: Option<&str>) -> Result<WatchCache, String> {
        let (pods, t1) = watch::<Pod>(client, namespace);
        let (sets, t2) = watch::<ReplicaSet>(client, namespace);
        let (deployments, t3) = watch::<Deployment>(client, namespace);
        let cache = WatchCache {
            pods,
            sets,
            deployments,
            tasks: vec![t1, t2, t3],
        };
        let ready = async {
            cache.pods.wait_until_ready().await.ok();
            cache.sets.wait_until_ready().await.ok();
            cache.deployments.wait_until_ready().await.ok();
        };
        tokio::time::timeout(READY_TIMEOUT, ready)
            .await
            .map_err(|_| {
                format!(
                    "Deployments, pods and ReplicaSets could not be watched within {READY_TIMEOUT:?} (is `watch` allowed?); listing them at every evaluation instead"
                )
            })?;
        Ok(cache)
    }

    /// Deployment `name` in `namespace` as last watched (None: not seen).
    pub fn deployment(&self, namespace: &str, name: &str) -> Option<Deployment> {
        self.deployments
            .get(&ObjectRef::new(name).within(namespace))
            .map(|d| (*d).clone())
    }

    /// Pod health of `d`'s pods, as [`workloads::deployment_pod_facts`] reads it by listing.
    pub fn facts(&self, d: &Deployment) -> PodFacts {
        // Called twice per evaluation over every cached object in scope: no allocation per
        // object (a profile of 200 rollouts showed namespace clones here).
        let ns = d.metadata.namespace.as_deref();
        let uid = d.metadata.uid.as_deref();
        let selector = workloads::selector_of(d);
        let sets = self.sets.state_filter(|rs| {
            rs.metadata.namespace.as_deref() == ns
                && rs
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| Some(o.uid.as_str()) == uid)
        });
        let pods = self.pods.state_filter(|p| {
            p.metadata.namespace.as_deref() == ns
                && p.metadata
                    .labels
                    .as_ref()
                    .is_some_and(|labels| workloads::selects(&selector, labels))
        });
        workloads::pod_facts_of(d, &sets, &pods)
    }
}
