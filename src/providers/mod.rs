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

    /// The objects a stored rollout names (its stable and canary Deployments and its route).
    pub fn of_record(rec: &crate::cluster::state::RolloutRecord) -> Self {
        let mut t = Target::new(&rec.namespace, &rec.service);
        t.route = rec.route.clone();
        if let Some(stable) = &rec.stable {
            t.stable_deployment = stable.clone();
        }
        if let Some(canary) = &rec.canary {
            t.canary_deployment = canary.clone();
        }
        t
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

/// What every traffic provider does.
pub trait TrafficRouter: Send + Sync {
    /// Provider name as shown in status ("istio", "smi", "nginx", "gateway-api").
    fn name(&self) -> &'static str;

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
}

pub mod gateway_api;
pub mod istio;
pub mod nginx;
pub mod shared;
pub mod smi;

/// The provider of one rollout, chosen at runtime (auto-detected or `--provider`).
#[derive(Debug, Clone)]
pub enum Router {
    Istio(istio::IstioRouter),
    Smi(smi::Smi),
    Nginx(nginx::Nginx),
    GatewayApi(gateway_api::GatewayApi),
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

/// Does a namespaced object of this kind and name exist? (false when the CRD is absent)
async fn exists(client: &Client, group: &str, version: &str, kind: &str, t: &Target) -> bool {
    let gvk = kube::core::GroupVersionKind::gvk(group, version, kind);
    let ar = kube::api::ApiResource::from_gvk(&gvk);
    let api: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(client.clone(), &t.namespace, &ar);
    matches!(api.get_opt(&t.route).await, Ok(Some(_)))
}

impl Router {
    /// Provider names as stored in the rollout state and accepted by `--provider`.
    pub const NAMES: [&'static str; 5] =
        ["istio", "smi", "nginx", "gateway-api", "linkerd-httproute"];

    /// By the name stored in the rollout state (or given with `--provider`).
    pub async fn by_name(client: &Client, name: &str) -> Result<Router, ProviderError> {
        match name {
            "istio" => Ok(Router::Istio(
                istio::IstioRouter::discover(client)
                    .await?
                    .unwrap_or_default(),
            )),
            "smi" => Ok(Router::Smi(smi::Smi::new())),
            "nginx" => Ok(Router::Nginx(nginx::Nginx::new())),
            "gateway-api" => Ok(Router::GatewayApi(gateway_api::GatewayApi::new())),
            "linkerd-httproute" => Ok(Router::GatewayApi(gateway_api::GatewayApi::linkerd())),
            other => Err(ProviderError::Invalid {
                kind: "provider",
                namespace: String::new(),
                name: other.to_string(),
                message: format!("unknown provider (known: {})", Router::NAMES.join(", ")),
            }),
        }
    }

    /// Detects the provider from the route object named `target.route` that exists:
    /// VirtualService, TrafficSplit, HTTPRoute (Gateway API's, then Linkerd's), then Ingress.
    pub async fn detect(client: &Client, target: &Target) -> Result<Router, ProviderError> {
        if let Some(istio) = istio::IstioRouter::discover(client).await?
            && istio.virtual_service(client, target).await?.is_some()
        {
            return Ok(Router::Istio(istio));
        }
        for v in ["v1alpha2", "v1alpha3", "v1alpha4"] {
            if exists(client, "split.smi-spec.io", v, "TrafficSplit", target).await {
                return Ok(Router::Smi(smi::Smi::new()));
            }
        }
        if exists(
            client,
            "gateway.networking.k8s.io",
            "v1",
            "HTTPRoute",
            target,
        )
        .await
        {
            return Ok(Router::GatewayApi(gateway_api::GatewayApi::new()));
        }
        if exists(
            client,
            gateway_api::LINKERD_GROUP,
            gateway_api::LINKERD_VERSION,
            "HTTPRoute",
            target,
        )
        .await
        {
            return Ok(Router::GatewayApi(gateway_api::GatewayApi::linkerd()));
        }
        if exists(client, "networking.k8s.io", "v1", "Ingress", target).await {
            return Ok(Router::Nginx(nginx::Nginx::new()));
        }
        Err(ProviderError::NotFound {
            kind: "route object",
            namespace: target.namespace.clone(),
            name: target.route.clone(),
            hint: "no VirtualService, TrafficSplit, HTTPRoute or Ingress of that name; create the \
                   route object (or pass --route NAME / --provider)"
                .into(),
        })
    }

    /// Like [`Router::detect`], and when no route object is named like the service: the one
    /// route object that routes the service (a TrafficSplit whose root is it, a
    /// VirtualService for its host, an HTTPRoute or Ingress with a backend to it or to
    /// `<svc>-stable`), e.g. seed 002's TrafficSplit `auth-service-split`. Several are an
    /// error naming them. Returns the provider and sets `target.route`.
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
        // (provider, group, version, kind, does this object route the service?)
        type Routes = fn(&serde_json::Value, &str, &str) -> bool;
        let kinds: [(&str, &str, &str, &str, Routes); 5] = [
            (
                "istio",
                "networking.istio.io",
                "v1",
                "VirtualService",
                // Its hosts name the service, or (a gateway's route, e.g. seed 000's
                // `devmentor-routes` for several services; a delegate VirtualService) one of
                // its routes sends to it. A root that only delegates routes nothing itself.
                |o, svc, _| {
                    let names = |h: &serde_json::Value| {
                        h.as_str()
                            .is_some_and(|h| h == svc || h.starts_with(&format!("{svc}.")))
                    };
                    let routes_itself = o
                        .pointer("/spec/http")
                        .and_then(serde_json::Value::as_array)
                        .is_some_and(|http| http.iter().any(|r| r.get("route").is_some()));
                    routes_itself
                        && o.pointer("/spec/hosts")
                            .and_then(serde_json::Value::as_array)
                            .is_some_and(|h| h.iter().any(names))
                        || o.pointer("/spec/http")
                            .and_then(serde_json::Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(|r| r.get("route").and_then(serde_json::Value::as_array))
                            .flatten()
                            .any(|d| d.pointer("/destination/host").is_some_and(names))
                },
            ),
            (
                "smi",
                "split.smi-spec.io",
                "v1alpha2",
                "TrafficSplit",
                |o, svc, _| {
                    o.pointer("/spec/service")
                        .and_then(serde_json::Value::as_str)
                        == Some(svc)
                },
            ),
            (
                "gateway-api",
                gateway_api::GATEWAY_GROUP,
                "v1",
                "HTTPRoute",
                routes_service_by_httproute,
            ),
            (
                "linkerd-httproute",
                gateway_api::LINKERD_GROUP,
                gateway_api::LINKERD_VERSION,
                "HTTPRoute",
                routes_service_by_httproute,
            ),
            (
                "nginx",
                "networking.k8s.io",
                "v1",
                "Ingress",
                |o, svc, stable| {
                    let canary = o
                        .pointer("/metadata/annotations/nginx.ingress.kubernetes.io~1canary")
                        .and_then(serde_json::Value::as_str)
                        == Some("true");
                    !canary
                        && o.pointer("/spec/rules")
                            .and_then(serde_json::Value::as_array)
                            .is_some_and(|rules| {
                                rules.iter().any(|r| {
                                    r.pointer("/http/paths")
                                        .and_then(serde_json::Value::as_array)
                                        .is_some_and(|ps| {
                                            ps.iter().any(|p| {
                                                let b = p.pointer("/backend/service/name");
                                                b == Some(&serde_json::json!(svc))
                                                    || b == Some(&serde_json::json!(stable))
                                            })
                                        })
                                })
                            })
                },
            ),
        ];
        let mut found: Vec<(&str, String)> = Vec::new();
        for (provider, group, version, kind, routes) in kinds {
            let gvk = kube::core::GroupVersionKind::gvk(group, version, kind);
            let ar = kube::api::ApiResource::from_gvk(&gvk);
            let api: kube::Api<kube::api::DynamicObject> =
                kube::Api::namespaced_with(client.clone(), &target.namespace, &ar);
            // A kind that is not served (CRD absent) routes nothing.
            let Ok(list) = api.list(&Default::default()).await else {
                continue;
            };
            for o in list.items {
                let v = serde_json::to_value(&o).unwrap_or_default();
                if routes(&v, &svc, &stable)
                    && let Some(name) = o.metadata.name.clone()
                {
                    found.push((provider, name));
                }
            }
        }
        match found.as_slice() {
            [(provider, name)] => {
                target.route = name.clone();
                Router::by_name(client, provider).await
            }
            [] => Router::detect(client, target).await,
            many => Err(ProviderError::Invalid {
                kind: "route object",
                namespace: target.namespace.clone(),
                name: svc,
                message: format!(
                    "several route objects route this service ({}); pass --route NAME and --provider",
                    many.iter()
                        .map(|(p, n)| format!("{p} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Router::Istio(r) => r.name(),
            Router::Smi(r) => r.name(),
            Router::Nginx(r) => r.name(),
            Router::GatewayApi(r) => r.name(),
        }
    }

    /// A root VirtualService that only delegates the service's traffic (Istio `delegate`):
    /// the route to edit is its delegate, which holds the routes (`target.route` becomes it).
    pub async fn follow_delegate(
        &self,
        client: &Client,
        target: &mut Target,
    ) -> Result<(), ProviderError> {
        if let Router::Istio(r) = self
            && let Some(delegate) = r.delegate_of(client, target).await?
        {
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
        if let Router::Istio(r) = self
            && let Some(labels) = r.stable_subset_labels(client, target).await?
        {
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
        match self {
            Router::Nginx(_) => {
                let (canaries, sharing) = nginx::neighbours(client, target).await?;
                nginx::refuse_canaries(target, &canaries)?;
                Ok(sharing
                    .iter()
                    .map(|i| {
                        format!(
                            "Ingress {i} sends to the same Service and port as {}, so ingress-nginx gives its requests the same canary share (one upstream per Service and port); its requests count in the metrics too",
                            target.route
                        )
                    })
                    .collect())
            }
            _ => Ok(Vec::new()),
        }
    }

    /// How many header routes the provider can set up, and why no more: see
    /// [`Router::header_routes`]. Istio's and Gateway API's match lists are ORed, so any
    /// number.
    pub fn header_routes_routed(&self) -> (usize, &'static str) {
        match self {
            // linkerd/linkerd-smi `pkg/adaptor/controller.go`: the adaptor reads every
            // TrafficSplit through the v1alpha1 client (so v1alpha3/v1alpha4 `matches` are
            // dropped) and writes each split's backends into the root Service's
            // ServiceProfile `dstOverrides`, the last one synced winning. A second split
            // carrying a header match (smi-spec `traffic-split/v1alpha4`) would therefore
            // send *all* of the root Service's traffic to the canary on Linkerd, the one
            // maintained SMI implementation, whose metrics this provider reads. So none.
            Router::Smi(_) => (
                0,
                "Linkerd's SMI adaptor reads TrafficSplits without `matches` and would give a \
                 header split all traffic; on Linkerd an HTTPRoute on the Service routes by \
                 header (`--provider gateway-api` or `linkerd-httproute`)",
            ),
            // `nginx.ingress.kubernetes.io/canary-by-header` takes one header name.
            Router::Nginx(_) => (1, "ingress-nginx's canary-by-header takes one header"),
            Router::Istio(_) | Router::GatewayApi(_) => (usize::MAX, ""),
        }
    }

    /// The header routes this provider sets up, and a note naming the ones it cannot, and why.
    pub fn header_routes<'h>(
        &self,
        wanted: &'h [HeaderRoute],
    ) -> (&'h [HeaderRoute], Option<String>) {
        let (routed, why) = self.header_routes_routed();
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
        matches!(self, Router::GatewayApi(r) if !r.is_linkerd())
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
        use crate::core::schedule::MetricsFlavour;
        match self {
            Router::Istio(_) => MetricsFlavour::Istio,
            Router::Smi(_) => MetricsFlavour::Linkerd,
            Router::Nginx(_) => MetricsFlavour::Nginx,
            Router::GatewayApi(r) if r.is_linkerd() => MetricsFlavour::Linkerd,
            Router::GatewayApi(_) => mesh.unwrap_or(MetricsFlavour::Generic),
        }
    }

    pub async fn prepare(
        &self,
        client: &Client,
        target: &Target,
        headers: &[HeaderRoute],
    ) -> Result<(), ProviderError> {
        match self {
            Router::Istio(r) => r.prepare(client, target, headers).await,
            Router::Smi(r) => r.prepare(client, target, headers).await,
            Router::Nginx(r) => r.prepare(client, target, headers).await,
            Router::GatewayApi(r) => r.prepare(client, target, headers).await,
        }
    }

    pub async fn set_weight(
        &self,
        client: &Client,
        target: &Target,
        weight: u32,
    ) -> Result<(), ProviderError> {
        match self {
            Router::Istio(r) => r.set_weight(client, target, weight).await,
            Router::Smi(r) => r.set_weight(client, target, weight).await,
            Router::Nginx(r) => r.set_weight(client, target, weight).await,
            Router::GatewayApi(r) => r.set_weight(client, target, weight).await,
        }
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
        match self {
            Router::Istio(r) => r.read_weight(client, target).await,
            Router::Smi(r) => r.read_weight(client, target).await,
            Router::Nginx(r) => r.read_weight(client, target).await,
            Router::GatewayApi(r) => r.read_weight(client, target).await,
        }
    }

    pub async fn cleanup(&self, client: &Client, target: &Target) -> Result<(), ProviderError> {
        match self {
            Router::Istio(r) => r.cleanup(client, target).await,
            Router::Smi(r) => r.cleanup(client, target).await,
            Router::Nginx(r) => r.cleanup(client, target).await,
            Router::GatewayApi(r) => r.cleanup(client, target).await,
        }
    }
}

/// Whether an HTTPRoute (Gateway API's or Linkerd's) routes Service `svc`: attached to it
/// as a GAMMA parent, or sending to it (or to `stable`, its version Service) from a rule.
fn routes_service_by_httproute(o: &serde_json::Value, svc: &str, stable: &str) -> bool {
    // A GAMMA route is attached to the Service itself (parentRef kind
    // Service; gateway-api geps/gep-1426), whatever its backends are.
    let attached = o
        .pointer("/spec/parentRefs")
        .and_then(serde_json::Value::as_array)
        .is_some_and(|ps| {
            ps.iter()
                .any(|p| p["kind"] == "Service" && p["name"] == svc)
        });
    attached
        || o.pointer("/spec/rules")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|rules| {
                rules.iter().any(|r| {
                    r["backendRefs"].as_array().is_some_and(|refs| {
                        refs.iter().any(|b| b["name"] == svc || b["name"] == stable)
                    })
                })
            })
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

    #[test]
    fn header_routes_the_provider_cannot_set_up_are_named_with_the_reason() {
        let wanted = routes(&["x-canary", "x-tier"]);
        let (routed, note) = Router::Smi(smi::Smi::new()).header_routes(&wanted);
        assert!(routed.is_empty());
        let note = note.expect("a note");
        assert!(
            note.contains("(x-canary: 1), (x-tier: 1) are not set up"),
            "{note}"
        );
        assert!(note.contains("--provider gateway-api"), "{note}");

        let (routed, note) = Router::Nginx(nginx::Nginx::new()).header_routes(&wanted);
        assert_eq!(routed, &wanted[..1]);
        assert!(note.expect("a note").contains(
            "(x-tier: 1) is not set up (ingress-nginx's canary-by-header takes one header)"
        ));

        let (routed, note) = Router::Istio(istio::IstioRouter::default()).header_routes(&wanted);
        assert_eq!((routed.len(), note), (2, None));
    }
}
