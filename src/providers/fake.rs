//! A provider that exists only in the unit tests: its weights live in memory. It shows what
//! adding a provider takes (this module and one line in [`super::registry::PROVIDERS`]),
//! and lets the tests drive [`super::Router`] and the CLI without a cluster.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use kube::Client;

use super::{HeaderRoute, ProviderError, Target, TrafficRouter, registry};
use crate::core::schedule::MetricsFlavour;

pub static PROVIDER: super::Provider = super::Provider {
    name: "fake",
    summary: "in-memory weights (unit tests only)",
    group: "fake.kubectl-canary.test",
    versions: &["v1"],
    kind: "FakeRoute",
    routes_service: |o, svc, _| o.pointer("/spec/service").and_then(|s| s.as_str()) == Some(svc),
    make: |_| Box::pin(async { registry::boxed(Fake) }),
};

/// Canary weight by `namespace/route`.
static WEIGHTS: LazyLock<Mutex<HashMap<String, u32>>> = LazyLock::new(Default::default);

fn key(t: &Target) -> String {
    format!("{}/{}", t.namespace, t.route)
}

#[derive(Debug)]
pub struct Fake;

impl TrafficRouter for Fake {
    async fn prepare(
        &self,
        _: &Client,
        target: &Target,
        _: &[HeaderRoute],
    ) -> Result<(), ProviderError> {
        WEIGHTS.lock().unwrap().entry(key(target)).or_insert(0);
        Ok(())
    }

    async fn set_weight(
        &self,
        _: &Client,
        target: &Target,
        weight: u32,
    ) -> Result<(), ProviderError> {
        match WEIGHTS.lock().unwrap().get_mut(&key(target)) {
            Some(w) => {
                *w = weight;
                Ok(())
            }
            None => Err(ProviderError::NotFound {
                kind: "FakeRoute",
                namespace: target.namespace.clone(),
                name: target.route.clone(),
                hint: "prepare first".into(),
            }),
        }
    }

    async fn read_weight(&self, _: &Client, target: &Target) -> Result<Option<u32>, ProviderError> {
        Ok(WEIGHTS.lock().unwrap().get(&key(target)).copied())
    }

    async fn cleanup(&self, _: &Client, target: &Target) -> Result<(), ProviderError> {
        WEIGHTS.lock().unwrap().remove(&key(target));
        Ok(())
    }

    fn header_routes_routed(&self) -> (usize, &'static str) {
        (0, "the fake route has no matches")
    }

    fn metrics(&self) -> registry::Metrics {
        registry::Metrics::Of(MetricsFlavour::Generic)
    }
}
