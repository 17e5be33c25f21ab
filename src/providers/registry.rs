//! Every traffic provider, defined once (Flagger's `pkg/router/factory.go` is the model).
//!
//! A provider's module holds its router (a [`TrafficRouter`]) and its [`Provider`] entry:
//! the name `--provider` and the rollout state use, the route object it edits, how
//! discovery recognises a route for the service, and how to build the router.
//! [`super::PROVIDERS`] lists the entries; its order is the order of detection. The CLI
//! (`--provider`'s values and help), `start`, `status`, `report` and the runners all read
//! that list, so a new provider is its own module plus one line there.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use futures::future::BoxFuture;
use kube::Client;

use super::{HeaderRoute, ProviderError, Target, TrafficRouter};
use crate::core::schedule::MetricsFlavour;

/// One provider: what it edits and how it is recognised and built.
pub struct Provider {
    /// As stored in the rollout state and accepted by `--provider`.
    pub name: &'static str,
    /// One line for `--provider`'s help.
    pub summary: &'static str,
    /// The route object it edits: detection looks for one named like the route in each of
    /// `versions` (the versions with the shape the router writes), discovery lists them.
    pub group: &'static str,
    pub versions: &'static [&'static str],
    pub kind: &'static str,
    /// Whether a route object of this kind (as JSON) routes the service: discovery's test
    /// when no route object is named like the service. Arguments: the object, the
    /// service, the stable-only Service `<svc>-stable`.
    pub routes_service: fn(&serde_json::Value, &str, &str) -> bool,
    /// The router, ready for this cluster (served versions discovered).
    pub make: MakeRouter,
}

/// Builds a provider's router for a cluster (see [`Provider::make`]).
pub type MakeRouter =
    for<'c> fn(&'c Client) -> BoxFuture<'c, Result<Arc<dyn DynRouter>, ProviderError>>;

impl Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .finish()
    }
}

/// The provider of that name.
pub fn by_name(name: &str) -> Option<&'static Provider> {
    super::PROVIDERS.iter().copied().find(|p| p.name == name)
}

/// The names, for messages and `--provider`'s values.
pub fn names() -> impl Iterator<Item = &'static str> {
    super::PROVIDERS.iter().map(|p| p.name)
}

/// `--provider`'s values, each with its summary as help.
pub fn value_parser() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        super::PROVIDERS
            .iter()
            .map(|p| clap::builder::PossibleValue::new(p.name).help(p.summary)),
    )
}

/// Builds a router of type `R` for [`Provider::make`].
pub fn boxed<R: TrafficRouter + Debug + 'static>(
    router: R,
) -> Result<Arc<dyn DynRouter>, ProviderError> {
    Ok(Arc::new(router))
}

/// Where a provider's metrics come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metrics {
    /// The data plane that makes the split reports them (Istio's, Linkerd's, the ingress's).
    Of(MetricsFlavour),
    /// The route says nothing of a mesh (Gateway API): the mesh the pods are in, if any,
    /// else the application's own.
    OfMesh,
}

/// [`TrafficRouter`] as an object, so a router is chosen at runtime from [`PROVIDERS`].
/// Implemented for every `TrafficRouter`; not implemented by hand.
pub trait DynRouter: Send + Sync + Debug {
    fn prepare<'a>(
        &'a self,
        client: &'a Client,
        target: &'a Target,
        headers: &'a [HeaderRoute],
    ) -> BoxFuture<'a, Result<(), ProviderError>>;
    fn set_weight<'a>(
        &'a self,
        client: &'a Client,
        target: &'a Target,
        weight: u32,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;
    fn read_weight<'a>(
        &'a self,
        client: &'a Client,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<Option<u32>, ProviderError>>;
    fn cleanup<'a>(
        &'a self,
        client: &'a Client,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;
    fn delegate<'a>(
        &'a self,
        client: &'a Client,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<Option<String>, ProviderError>>;
    fn stable_subset_labels<'a>(
        &'a self,
        client: &'a Client,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<Option<BTreeMap<String, String>>, ProviderError>>;
    fn check_layout<'a>(
        &'a self,
        client: &'a Client,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<Vec<String>, ProviderError>>;
    fn header_routes_routed(&self) -> (usize, &'static str);
    fn metrics(&self) -> Metrics;
}

impl<R: TrafficRouter + Debug + 'static> DynRouter for R {
    fn prepare<'a>(
        &'a self,
        client: &'a Client,
        target: &'a Target,
        headers: &'a [HeaderRoute],
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(TrafficRouter::prepare(self, client, target, headers))
    }
    fn set_weight<'a>(
        &'a self,
        client: &'a Client,
        target: &'a Target,
        weight: u32,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(TrafficRouter::set_weight(self, client, target, weight))
    }
    fn read_weight<'a>(
        &'a self,
        client: &'a Client,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<Option<u32>, ProviderError>> {
        Box::pin(TrafficRouter::read_weight(self, client, target))
    }
    fn cleanup<'a>(
        &'a self,
        client: &'a Client,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(TrafficRouter::cleanup(self, client, target))
    }
    fn delegate<'a>(
        &'a self,
        client: &'a Client,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<Option<String>, ProviderError>> {
        Box::pin(TrafficRouter::delegate(self, client, target))
    }
    fn stable_subset_labels<'a>(
        &'a self,
        client: &'a Client,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<Option<BTreeMap<String, String>>, ProviderError>> {
        Box::pin(TrafficRouter::stable_subset_labels(self, client, target))
    }
    fn check_layout<'a>(
        &'a self,
        client: &'a Client,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<Vec<String>, ProviderError>> {
        Box::pin(TrafficRouter::check_layout(self, client, target))
    }
    fn header_routes_routed(&self) -> (usize, &'static str) {
        TrafficRouter::header_routes_routed(self)
    }
    fn metrics(&self) -> Metrics {
        TrafficRouter::metrics(self)
    }
}
