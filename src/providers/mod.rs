//! Traffic providers: one file each. A provider owns only its part of the user's route
//! objects (our route entries, subsets, the canary Ingress) and never clobbers the rest.
//! Writes use resourceVersion (read-modify-write, retry on 409) or JSON patch with `test`.

use kube::Client;

/// Names of the objects a rollout works with (conventions shared by all providers).
#[derive(Debug, Clone)]
pub struct Target {
    pub namespace: String,
    /// The Service users call.
    pub service: String,
    /// The stable Deployment (by default named like the service).
    pub stable_deployment: String,
    /// `<service>-canary`: for host split, the canary's Service (the plugin's own object).
    pub canary_service: String,
    /// The canary Deployment: `<service>-canary` unless the team has one of its own
    /// (`start --canary`).
    pub canary_deployment: String,
    /// `<service>-stable`: the stable-only Service for host split (SMI, NGINX, Gateway API).
    pub stable_service: String,
    /// Route object name (VirtualService, TrafficSplit, primary Ingress, HTTPRoute);
    /// by default the service name.
    pub route: String,
    /// The pods of each version, pinned on labels the pods already carry: stable = its
    /// Deployment's selector + the current ReplicaSet's `pod-template-hash` (so a Service or
    /// subset that also matches canary pods stops doing so), canary = the canary
    /// Deployment's selector. Only `prepare` needs them (empty otherwise).
    pub pods: Option<VersionSelectors>,
    /// The fence a weight write carries (see [`crate::core::rollout::Fence`]); None for
    /// writes outside a rollout's lifecycle (tests, dry runs).
    pub fence: Option<crate::core::rollout::Fence>,
}

/// Label selectors of the stable and canary pods (see [`Target::pods`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionSelectors {
    pub stable: std::collections::BTreeMap<String, String>,
    pub canary: std::collections::BTreeMap<String, String>,
}

impl Target {
    pub fn new(namespace: &str, service: &str) -> Self {
        Target {
            namespace: namespace.to_string(),
            service: service.to_string(),
            stable_deployment: service.to_string(),
            canary_service: format!("{service}-canary"),
            canary_deployment: format!("{service}-canary"),
            stable_service: format!("{service}-stable"),
            route: service.to_string(),
            pods: None,
            fence: None,
        }
    }

    /// The pod selectors, or an error naming what is missing (prepare needs them).
    pub fn selectors(&self) -> Result<&VersionSelectors, ProviderError> {
        self.pods.as_ref().ok_or_else(|| ProviderError::Invalid {
            kind: "Deployment",
            namespace: self.namespace.clone(),
            name: self.service.clone(),
            message: "the stable and canary pod selectors were not resolved before prepare".into(),
        })
    }
}

/// Header match that sends requests to the canary regardless of weight (seed 002).
pub use crate::core::schedule::HeaderRoute;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{kind} {namespace}/{name} not found: {hint}")]
    NotFound {
        kind: &'static str,
        namespace: String,
        name: String,
        hint: String,
    },
    #[error("{kind} {namespace}/{name}: {message}")]
    Invalid {
        kind: &'static str,
        namespace: String,
        name: String,
        message: String,
    },
    /// A stale writer: a newer generation of the rollout (a rollback, a later step) already
    /// wrote this route, so raising the canary's share now would undo it.
    #[error(
        "{kind} {namespace}/{name}: not writing the canary's weight {weight}%: the route was written by a newer state of the rollout (generation {theirs}, ours {ours}); re-run the command to continue from that state"
    )]
    Fenced {
        kind: &'static str,
        namespace: String,
        name: String,
        weight: u32,
        ours: u64,
        theirs: u64,
    },
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// What every traffic provider does. A provider's entry in [`registry::PROVIDERS`] makes it
/// known; the defaults below are what a provider without the feature does.
pub trait TrafficRouter: Send + Sync {
    /// Creates what the provider needs for a split (subsets, canary Ingress, backendRef…)
    /// with the canary at weight 0; idempotent.
    fn prepare(
        &self,
        client: &Client,
        target: &Target,
        headers: &[HeaderRoute],
    ) -> impl std::future::Future<Output = Result<(), ProviderError>> + Send;

    /// Sets the canary's share to `weight` percent (stable gets the rest), in one write.
    fn set_weight(
        &self,
        client: &Client,
        target: &Target,
        weight: u32,
    ) -> impl std::future::Future<Output = Result<(), ProviderError>> + Send;

    /// Reads the canary weight back from the route object (None if not set up).
    fn read_weight(
        &self,
        client: &Client,
        target: &Target,
    ) -> impl std::future::Future<Output = Result<Option<u32>, ProviderError>> + Send;

    /// Removes what `prepare` added; all traffic on stable. Idempotent.
    fn cleanup(
        &self,
        client: &Client,
        target: &Target,
    ) -> impl std::future::Future<Output = Result<(), ProviderError>> + Send;

    /// The route object to edit instead of `target.route` when that one only delegates the
    /// service's traffic (Istio's `delegate`).
    fn delegate(
        &self,
        _client: &Client,
        _target: &Target,
    ) -> impl std::future::Future<Output = Result<Option<String>, ProviderError>> + Send {
        async { Ok(None) }
    }

    /// Labels of the pods the route sends general traffic to, when the route says (Istio's
    /// DestinationRule subset); see [`Router::stable_pod_labels`].
    fn stable_subset_labels(
        &self,
        _client: &Client,
        _target: &Target,
    ) -> impl std::future::Future<
        Output = Result<Option<std::collections::BTreeMap<String, String>>, ProviderError>,
    > + Send {
        async { Ok(None) }
    }

    /// Checks the layout before anything is created: an error for what would make the
    /// split not apply, and notes on what the user should know (shown by start).
    fn check_layout(
        &self,
        _client: &Client,
        _target: &Target,
    ) -> impl std::future::Future<Output = Result<Vec<String>, ProviderError>> + Send {
        async { Ok(Vec::new()) }
    }

    /// How many header routes the provider can set up, and why no more (shown by start).
    fn header_routes_routed(&self) -> (usize, &'static str) {
        (usize::MAX, "")
    }

    /// Where its metrics come from.
    fn metrics(&self) -> registry::Metrics;
}

#[cfg(test)]
mod fake;
pub mod gateway_api;
pub mod istio;
pub mod nginx;
pub mod registry;
pub mod shared;
pub mod smi;

pub use registry::Provider;

/// The providers, in the order of detection: a route object named like the route is
/// looked for in this order, and the first found decides.
pub static PROVIDERS: &[&Provider] = &[
    &istio::PROVIDER,
    &smi::PROVIDER,
    &gateway_api::PROVIDER,
    &gateway_api::LINKERD_PROVIDER,
    &nginx::PROVIDER,
    #[cfg(test)]
    &fake::PROVIDER,
];

/// The provider of one rollout, chosen at runtime (auto-detected or `--provider`).
#[derive(Debug, Clone)]
pub struct Router {
    provider: &'static Provider,
    router: std::sync::Arc<dyn registry::DynRouter>,
}

/// Routers by provider name, discovered once per process and kept for a while: discovery
/// (Istio's served versions) is several API calls, and a runner of many rollouts would
/// otherwise repeat it at every step of every rollout.
#[derive(Debug, Default)]
pub struct Routers {
    known: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Router)>>,
}

impl Routers {
    /// A CRD upgrade (a new served version) is picked up within this long.
    const KEEP: std::time::Duration = std::time::Duration::from_secs(300);

    pub async fn by_name(&self, client: &Client, name: &str) -> Result<Router, ProviderError> {
        let now = std::time::Instant::now();
        if let Some((at, r)) = self.lock().get(name)
            && now.duration_since(*at) < Self::KEEP
        {
            return Ok(r.clone());
        }
        let router = Router::by_name(client, name).await?;
        self.lock().insert(name.to_string(), (now, router.clone()));
        Ok(router)
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (std::time::Instant, Router)>>
    {
        // A panic elsewhere cannot leave the map half-written: insert is one call.
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The API of one version of a provider's route kind.
fn route_api(
    client: &Client,
    p: &Provider,
    version: &str,
    ns: &str,
) -> kube::Api<kube::api::DynamicObject> {
    let gvk = kube::core::GroupVersionKind::gvk(p.group, version, p.kind);
    let ar = kube::api::ApiResource::from_gvk(&gvk);
    kube::Api::namespaced_with(client.clone(), ns, &ar)
}

impl Router {
    /// Provider names as stored in the rollout state and accepted by `--provider`.
    pub fn names() -> Vec<&'static str> {
        registry::names().collect()
    }

    /// By the name stored in the rollout state (or given with `--provider`).
    pub async fn by_name(client: &Client, name: &str) -> Result<Router, ProviderError> {
        match registry::by_name(name) {
            Some(p) => Router::of(client, p).await,
            None => Err(ProviderError::Invalid {
                kind: "provider",
                namespace: String::new(),
                name: name.to_string(),
                message: format!("unknown provider (known: {})", Router::names().join(", ")),
            }),
        }
    }

    async fn of(client: &Client, provider: &'static Provider) -> Result<Router, ProviderError> {
        Ok(Router {
            provider,
            router: (provider.make)(client).await?,
        })
    }

    /// Detects the provider from the route object named `target.route` that exists, trying
    /// the providers in [`PROVIDERS`] order (VirtualService, TrafficSplit, HTTPRoute
    /// (Gateway API's, then Linkerd's), then Ingress), each in every version it edits.
    pub async fn detect(client: &Client, target: &Target) -> Result<Router, ProviderError> {
        for &p in PROVIDERS {
            for v in p.versions {
                // A kind or version that is not served (CRD absent) has no such object.
                let api = route_api(client, p, v, &target.namespace);
                if matches!(api.get_opt(&target.route).await, Ok(Some(_))) {
                    return Router::of(client, p).await;
                }
            }
        }
        let mut kinds: Vec<&str> = PROVIDERS.iter().map(|p| p.kind).collect();
        kinds.dedup();
        Err(ProviderError::NotFound {
            kind: "route object",
            namespace: target.namespace.clone(),
            name: target.route.clone(),
            hint: format!(
                "no {} of that name; create the route object (or pass --route NAME / --provider)",
                kinds.join(", ")
            ),
        })
    }

    /// Like [`Router::detect`], and when no route object is named like the service: the one
    /// route object that routes the service ([`Provider::routes_service`]: a TrafficSplit
    /// whose root is it, a VirtualService for its host, an HTTPRoute or Ingress with a
    /// backend to it or to `<svc>-stable`), e.g. a TrafficSplit named `auth-service-split`.
    /// Several are an error naming them. Returns the provider and sets `target.route`.
    pub async fn discover(client: &Client, target: &mut Target) -> Result<Router, ProviderError> {
        match Router::detect(client, target).await {
            Err(ProviderError::NotFound { .. }) => {}
            Ok(router) => {
                router.follow_delegate(client, target).await?;
                return Ok(router);
            }
            other => return other,
        }
        let svc = target.service.clone();
        let stable = target.stable_service.clone();
        let mut found: Vec<(&'static Provider, String)> = Vec::new();
        for &p in PROVIDERS {
            // The first version served lists them all (the API server converts).
            for v in p.versions {
                let Ok(list) = route_api(client, p, v, &target.namespace)
                    .list(&Default::default())
                    .await
                else {
                    continue;
                };
                for o in list.items {
                    let json = serde_json::to_value(&o).unwrap_or_default();
                    if (p.routes_service)(&json, &svc, &stable)
                        && let Some(name) = o.metadata.name.clone()
                    {
                        found.push((p, name));
                    }
                }
                break;
            }
        }
        match found.as_slice() {
            [(p, name)] => {
                target.route = name.clone();
                Router::of(client, p).await
            }
            [] => Router::detect(client, target).await,
            many => Err(ProviderError::Invalid {
                kind: "route object",
                namespace: target.namespace.clone(),
                name: svc,
                message: format!(
                    "several route objects route this service ({}); pass --route NAME and --provider",
                    many.iter()
                        .map(|(p, n)| format!("{} {n}", p.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }

    pub fn name(&self) -> &'static str {
        self.provider.name
    }

    /// A root route object that only delegates the service's traffic (Istio `delegate`):
    /// the route to edit is its delegate, which holds the routes (`target.route` becomes it).
    pub async fn follow_delegate(
        &self,
        client: &Client,
        target: &mut Target,
    ) -> Result<(), ProviderError> {
        if let Some(delegate) = self.router.delegate(client, target).await? {
            target.route = delegate;
        }
        Ok(())
    }

    /// Labels that only stable's pods carry, as the route says (the subset its general
    /// traffic goes to, or the selector of a version Service `<svc>-stable`); start uses
    /// them when the Service selects several Deployments. None: the route does not say.
    pub async fn stable_pod_labels(
        &self,
        client: &Client,
        target: &Target,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>, ProviderError> {
        if let Some(labels) = self.router.stable_subset_labels(client, target).await? {
            return Ok(Some(labels));
        }
        let stable: Option<k8s_openapi::api::core::v1::Service> =
            kube::Api::namespaced(client.clone(), &target.namespace)
                .get_opt(&target.stable_service)
                .await?;
        Ok(stable
            .and_then(|s| s.spec?.selector)
            .filter(|s| !s.is_empty()))
    }

    /// Checks the layout before anything is created: an error for what would make the split
    /// not apply, and notes on what the user should know (shown by start).
    pub async fn check_layout(
        &self,
        client: &Client,
        target: &Target,
    ) -> Result<Vec<String>, ProviderError> {
        self.router.check_layout(client, target).await
    }

    /// The header routes this provider sets up, and a note naming the ones it cannot, and why.
    pub fn header_routes<'h>(
        &self,
        wanted: &'h [HeaderRoute],
    ) -> (&'h [HeaderRoute], Option<String>) {
        let (routed, why) = self.router.header_routes_routed();
        let n = routed.min(wanted.len());
        let (routed, dropped) = wanted.split_at(n);
        let note = (!dropped.is_empty()).then(|| {
            format!(
                "{} matches {}; the policy's header route{} {} {} not set up ({why})",
                self.name(),
                match n {
                    0 => "no header".to_string(),
                    1 => "one header".to_string(),
                    n => format!("{n} headers"),
                },
                if dropped.len() > 1 { "s" } else { "" },
                dropped
                    .iter()
                    .map(|h| format!("({}: {})", h.name, h.value))
                    .collect::<Vec<_>>()
                    .join(", "),
                if dropped.len() > 1 { "are" } else { "is" },
            )
        });
        (routed, note)
    }

    /// Whether the metrics depend on the mesh the pods are in: a Gateway API route says
    /// nothing of one (Linkerd's own HTTPRoute kind does).
    pub fn metrics_follow_mesh(&self) -> bool {
        self.router.metrics() == registry::Metrics::OfMesh
    }

    /// Metric family that matches the provider's data plane. `mesh` is the mesh the stable
    /// pods are in ([`crate::cluster::mesh`]): a Gateway API route says nothing of a mesh,
    /// so its metrics are the mesh's where there is one (Linkerd's and Istio's GAMMA), else
    /// the application's own. An ingress's metrics stay the controller's, since they see
    /// the split where it is made.
    pub fn metrics_flavour(
        &self,
        mesh: Option<crate::core::schedule::MetricsFlavour>,
    ) -> crate::core::schedule::MetricsFlavour {
        match self.router.metrics() {
            registry::Metrics::Of(flavour) => flavour,
            registry::Metrics::OfMesh => {
                mesh.unwrap_or(crate::core::schedule::MetricsFlavour::Generic)
            }
        }
    }

    pub async fn prepare(
        &self,
        client: &Client,
        target: &Target,
        headers: &[HeaderRoute],
    ) -> Result<(), ProviderError> {
        self.router.prepare(client, target, headers).await
    }

    pub async fn set_weight(
        &self,
        client: &Client,
        target: &Target,
        weight: u32,
    ) -> Result<(), ProviderError> {
        self.router.set_weight(client, target, weight).await
    }

    /// All traffic to stable. A route object that was never prepared (or is gone) sends
    /// nothing to the canary, so "not found" is success here: rollback and abort must reach
    /// a terminal state whatever happened to the route.
    pub async fn route_to_stable(
        &self,
        client: &Client,
        target: &Target,
    ) -> Result<(), ProviderError> {
        match self.set_weight(client, target, 0).await {
            Ok(()) | Err(ProviderError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn read_weight(
        &self,
        client: &Client,
        target: &Target,
    ) -> Result<Option<u32>, ProviderError> {
        self.router.read_weight(client, target).await
    }

    pub async fn cleanup(&self, client: &Client, target: &Target) -> Result<(), ProviderError> {
        self.router.cleanup(client, target).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(names: &[&str]) -> Vec<HeaderRoute> {
        names
            .iter()
            .map(|n| HeaderRoute {
                name: n.to_string(),
                value: "1".into(),
            })
            .collect()
    }

    /// A client that is never called: the routers below are built without the cluster.
    fn offline_client() -> Client {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        Client::try_from(config).unwrap()
    }

    #[tokio::test]
    async fn header_routes_the_provider_cannot_set_up_are_named_with_the_reason() {
        let client = offline_client();
        let wanted = routes(&["x-canary", "x-tier"]);
        let smi = Router::by_name(&client, "smi").await.unwrap();
        let (routed, note) = smi.header_routes(&wanted);
        assert!(routed.is_empty());
        let note = note.expect("a note");
        assert!(
            note.contains("(x-canary: 1), (x-tier: 1) are not set up"),
            "{note}"
        );
        assert!(note.contains("--provider gateway-api"), "{note}");

        let nginx = Router::by_name(&client, "nginx").await.unwrap();
        let (routed, note) = nginx.header_routes(&wanted);
        assert_eq!(routed, &wanted[..1]);
        assert!(note.expect("a note").contains(
            "(x-tier: 1) is not set up (ingress-nginx's canary-by-header takes one header)"
        ));

        let gateway = Router::by_name(&client, "gateway-api").await.unwrap();
        assert_eq!(gateway.header_routes(&wanted), (&wanted[..], None));
    }

    #[test]
    fn every_provider_has_one_entry_and_a_known_route_kind() {
        let names = Router::names();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for p in PROVIDERS {
            assert!(!p.versions.is_empty(), "{}", p.name);
            assert!(!p.summary.is_empty(), "{}", p.name);
        }
        assert!(registry::by_name("istio").is_some());
        assert!(registry::by_name("linkerd").is_none());
    }

    #[tokio::test]
    async fn a_provider_added_in_the_registry_is_usable_everywhere() {
        // The fake provider is its own module plus one registry line.
        let client = offline_client();
        let router = Router::by_name(&client, "fake").await.unwrap();
        assert_eq!(router.name(), "fake");
        let target = Target::new("shop", "web");
        assert_eq!(router.read_weight(&client, &target).await.unwrap(), None);
        router.prepare(&client, &target, &[]).await.unwrap();
        router.set_weight(&client, &target, 25).await.unwrap();
        assert_eq!(
            router.read_weight(&client, &target).await.unwrap(),
            Some(25)
        );
        router.cleanup(&client, &target).await.unwrap();
        router.route_to_stable(&client, &target).await.unwrap();
        assert_eq!(
            router.metrics_flavour(Some(crate::core::schedule::MetricsFlavour::Istio)),
            crate::core::schedule::MetricsFlavour::Generic
        );
        let (_, note) = router.header_routes(&routes(&["x"]));
        assert!(note.unwrap().contains("the fake route has no matches"));
        // The CLI takes it by name.
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "kubectl-canary",
            "start",
            "web",
            "--image",
            "app=demo:2",
            "--provider",
            "fake",
        ]);
        assert!(cli.is_ok(), "{:?}", cli.err());
        let unknown = crate::cli::Cli::try_parse_from([
            "kubectl-canary",
            "start",
            "web",
            "--image",
            "app=demo:2",
            "--provider",
            "linkerd",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            unknown.contains("fake") && unknown.contains("gateway-api"),
            "{unknown}"
        );
    }

    #[tokio::test]
    async fn an_unknown_provider_name_lists_the_known() {
        let err = Router::by_name(&offline_client(), "traefik")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("known: istio, smi, gateway-api, linkerd-httproute, nginx"),
            "{err}"
        );
    }
}
