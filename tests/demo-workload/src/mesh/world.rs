//! The object graph the test data plane routes over, parsed once from the API objects the
//! mesh watches (any namespace). Only the fields that decide where a request goes are kept.
//!
//! Everything here is pure: [`World`] is filled by the watchers in `mesh/mod.rs` and read by
//! `route.rs`; unit tests build it from hand-written JSON.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

pub type Labels = BTreeMap<String, String>;
/// (namespace, name)
pub type Key = (String, String);

/// The kinds the mesh watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Pod,
    Service,
    EndpointSlice,
    VirtualService,
    DestinationRule,
    TrafficSplit,
    Ingress,
    HttpRoute,
    /// Linkerd's own HTTPRoute (policy.linkerd.io), the Gateway API's shape.
    LinkerdHttpRoute,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Pod,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::TrafficSplit,
        Kind::Ingress,
        Kind::HttpRoute,
        Kind::LinkerdHttpRoute,
    ];

    /// (API group, kind) as served by the API server ("" = core).
    pub fn group_kind(self) -> (&'static str, &'static str) {
        match self {
            Kind::Pod => ("", "Pod"),
            Kind::Service => ("", "Service"),
            Kind::EndpointSlice => ("discovery.k8s.io", "EndpointSlice"),
            Kind::VirtualService => ("networking.istio.io", "VirtualService"),
            Kind::DestinationRule => ("networking.istio.io", "DestinationRule"),
            Kind::TrafficSplit => ("split.smi-spec.io", "TrafficSplit"),
            Kind::Ingress => ("networking.k8s.io", "Ingress"),
            Kind::HttpRoute => ("gateway.networking.k8s.io", "HTTPRoute"),
            Kind::LinkerdHttpRoute => ("policy.linkerd.io", "HTTPRoute"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Pod {
    pub uid: String,
    pub labels: Labels,
    /// Owning Deployment, derived like Istio's workload name: the ReplicaSet owner minus its
    /// `-<pod-template-hash>` suffix.
    pub deployment: Option<String>,
    /// phase Running and not being deleted: the pod has a process.
    pub running: bool,
    /// First container's image and env (the pod's behaviour comes from its template).
    pub image: String,
    pub env: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    /// `None`: a Service without selector (no endpointslice-controller endpoints).
    pub selector: Option<Labels>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EndpointSlice {
    pub service: String,
    /// (pod name, ready)
    pub endpoints: Vec<(String, bool)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
}

impl StringMatch {
    pub fn matches(&self, v: &str) -> bool {
        match self {
            StringMatch::Exact(x) => v == x,
            StringMatch::Prefix(x) => v.starts_with(x.as_str()),
            // Envoy anchors regexes (RE2 full match).
            StringMatch::Regex(x) => regex::Regex::new(&format!("^(?:{x})$"))
                .map(|r| r.is_match(v))
                .unwrap_or(false),
        }
    }
}

/// One `HTTPMatchRequest` of a VirtualService: all present conditions must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IstioMatch {
    pub uri: Option<StringMatch>,
    pub method: Option<StringMatch>,
    pub headers: Vec<(String, StringMatch)>,
    pub without_headers: Vec<(String, StringMatch)>,
    /// A condition this data plane does not model (sourceLabels, port, queryParams, …):
    /// the match never holds, so a test never passes by accident through it.
    pub unsupported: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct IstioDestination {
    pub host: String,
    pub subset: Option<String>,
    pub weight: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct IstioHttpRoute {
    pub name: Option<String>,
    /// Empty = matches every request.
    pub matches: Vec<IstioMatch>,
    pub route: Vec<IstioDestination>,
    /// `delegate: {name, namespace}` (namespace defaulted to the root's): the matching
    /// requests take the delegate VirtualService's routes instead.
    pub delegate: Option<(String, String)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VirtualService {
    pub created: String,
    pub hosts: Vec<String>,
    /// `gateways` as written ("" entries dropped); empty = `mesh` only.
    pub gateways: Vec<String>,
    pub http: Vec<IstioHttpRoute>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DestinationRule {
    pub host: String,
    pub subsets: Vec<(String, Labels)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TrafficSplit {
    pub service: String,
    pub backends: Vec<(String, f64)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PathType {
    Exact,
    Prefix,
    ImplementationSpecific,
}

#[derive(Clone, Debug, PartialEq)]
pub struct IngressPath {
    pub path: String,
    pub path_type: PathType,
    pub service: String,
    /// The backend's `port.number`, else its `port.name` ("" without either): part of
    /// ingress-nginx's upstream name (`internal/ingress/controller/util.go` `upstreamName`).
    pub port: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ingress {
    pub created: String,
    pub class: Option<String>,
    pub annotations: BTreeMap<String, String>,
    /// (host, "" = any host; paths)
    pub rules: Vec<(String, Vec<IngressPath>)>,
    pub default_backend: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum GwPath {
    Exact(String),
    Prefix(String),
    Regex(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct GwMatch {
    pub path: GwPath,
    pub headers: Vec<(String, StringMatch)>,
    pub method: Option<String>,
    pub query: Vec<(String, StringMatch)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GwRule {
    /// Already defaulted: a rule without matches has one `PathPrefix /` match.
    pub matches: Vec<GwMatch>,
    /// (Service name, weight); kind other than Service is dropped with its weight kept as
    /// an invalid backend (see route.rs).
    pub backends: Vec<(Option<String>, f64)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HttpRoute {
    pub created: String,
    pub hostnames: Vec<String>,
    pub rules: Vec<GwRule>,
    /// parentRefs to Services (namespace, name): a GAMMA route, which applies to in-mesh
    /// callers of those Services (kubernetes-sigs/gateway-api `geps/gep-1426`).
    pub parent_services: Vec<(String, String)>,
    /// Whether a parentRef names something other than a Service (a Gateway), or there are
    /// none (the test fixtures' gateway routes name no parent).
    pub attaches_to_gateway: bool,
}

/// Everything the data plane knows, keyed by (namespace, name).
#[derive(Clone, Debug, Default)]
pub struct World {
    pub pods: HashMap<Key, Pod>,
    pub services: HashMap<Key, Service>,
    pub slices: HashMap<Key, EndpointSlice>,
    pub virtual_services: HashMap<Key, VirtualService>,
    pub destination_rules: HashMap<Key, DestinationRule>,
    pub traffic_splits: HashMap<Key, TrafficSplit>,
    pub ingresses: HashMap<Key, Ingress>,
    pub http_routes: HashMap<Key, HttpRoute>,
    pub linkerd_http_routes: HashMap<Key, HttpRoute>,
}

fn s(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

fn str_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        // SMI v1alpha1 weights are quantities ("500m").
        Value::String(x) => {
            let x = x.trim();
            match x.strip_suffix('m') {
                Some(milli) => milli.parse::<f64>().ok().map(|m| m / 1000.0),
                None => x.parse().ok(),
            }
        }
        _ => None,
    }
}

fn arr(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn created(o: &Value) -> String {
    o.pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn string_match(v: &Value) -> Option<StringMatch> {
    if let Some(x) = v.get("exact").and_then(Value::as_str) {
        return Some(StringMatch::Exact(x.into()));
    }
    if let Some(x) = v.get("prefix").and_then(Value::as_str) {
        return Some(StringMatch::Prefix(x.into()));
    }
    v.get("regex")
        .and_then(Value::as_str)
        .map(|x| StringMatch::Regex(x.into()))
}

fn header_matches(v: Option<&Value>) -> Vec<(String, StringMatch)> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.to_ascii_lowercase(),
                        // `{}` means "header present" in Istio; a prefix of "" is the same.
                        string_match(v).unwrap_or(StringMatch::Prefix(String::new())),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn parse_pod(o: &Value) -> Pod {
    let meta = &o["metadata"];
    let labels = str_map(meta.get("labels"));
    let rs_owner = arr(meta.get("ownerReferences"))
        .iter()
        .find(|r| r["kind"] == "ReplicaSet")
        .and_then(|r| s(&r["name"]));
    let deployment = rs_owner.map(|rs| match labels.get("pod-template-hash") {
        Some(h) => rs
            .strip_suffix(&format!("-{h}"))
            .map(str::to_string)
            .unwrap_or(rs.clone()),
        None => rs,
    });
    let running = o.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
        && meta.get("deletionTimestamp").is_none_or(Value::is_null);
    let c0 = o.pointer("/spec/containers/0");
    let image = c0
        .and_then(|c| c.get("image"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let env = arr(c0.and_then(|c| c.get("env")))
        .iter()
        .filter_map(|e| Some((s(&e["name"])?, s(&e["value"])?)))
        .collect();
    Pod {
        uid: meta["uid"].as_str().unwrap_or("").to_string(),
        labels,
        deployment,
        running,
        image,
        env,
    }
}

pub fn parse_service(o: &Value) -> Service {
    Service {
        selector: o
            .pointer("/spec/selector")
            .filter(|v| v.as_object().is_some_and(|m| !m.is_empty()))
            .map(|v| str_map(Some(v))),
    }
}

pub fn parse_endpoint_slice(o: &Value) -> EndpointSlice {
    let service = o
        .pointer("/metadata/labels/kubernetes.io~1service-name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let endpoints = arr(o.get("endpoints"))
        .iter()
        .filter(|e| e.pointer("/targetRef/kind").and_then(Value::as_str) == Some("Pod"))
        .filter_map(|e| {
            let pod = e.pointer("/targetRef/name").and_then(Value::as_str)?;
            // The API: a nil `ready` is to be read as ready.
            let ready = e
                .pointer("/conditions/ready")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            Some((pod.to_string(), ready))
        })
        .collect();
    EndpointSlice { service, endpoints }
}

pub fn parse_virtual_service(o: &Value) -> VirtualService {
    let spec = &o["spec"];
    let vs_ns = o["metadata"]["namespace"].as_str().unwrap_or_default();
    let http = arr(spec.get("http"))
        .iter()
        .map(|h| IstioHttpRoute {
            name: s(&h["name"]),
            matches: arr(h.get("match"))
                .iter()
                .map(|m| {
                    let mut im = IstioMatch {
                        uri: m.get("uri").and_then(string_match),
                        method: m.get("method").and_then(string_match),
                        headers: header_matches(m.get("headers")),
                        without_headers: header_matches(m.get("withoutHeaders")),
                        unsupported: Vec::new(),
                    };
                    if let Some(obj) = m.as_object() {
                        for k in obj.keys() {
                            if !matches!(
                                k.as_str(),
                                "uri" | "method" | "headers" | "withoutHeaders" | "name"
                            ) {
                                im.unsupported.push(k.clone());
                            }
                        }
                    }
                    im
                })
                .collect(),
            route: arr(h.get("route"))
                .iter()
                .filter_map(|d| {
                    Some(IstioDestination {
                        host: s(d.pointer("/destination/host")?)?,
                        subset: d
                            .pointer("/destination/subset")
                            .and_then(s)
                            .filter(|x| !x.is_empty()),
                        weight: d.get("weight").and_then(num),
                    })
                })
                .collect(),
            delegate: h.get("delegate").and_then(|d| {
                let ns = d.get("namespace").and_then(s).unwrap_or(vs_ns.to_string());
                Some((ns, s(&d["name"])?))
            }),
        })
        .collect();
    VirtualService {
        created: created(o),
        hosts: arr(spec.get("hosts")).iter().filter_map(s).collect(),
        gateways: arr(spec.get("gateways")).iter().filter_map(s).collect(),
        http,
    }
}

pub fn parse_destination_rule(o: &Value) -> DestinationRule {
    DestinationRule {
        host: o.pointer("/spec/host").and_then(s).unwrap_or_default(),
        subsets: arr(o.pointer("/spec/subsets"))
            .iter()
            .filter_map(|x| Some((s(&x["name"])?, str_map(x.get("labels")))))
            .collect(),
    }
}

pub fn parse_traffic_split(o: &Value) -> TrafficSplit {
    TrafficSplit {
        service: o.pointer("/spec/service").and_then(s).unwrap_or_default(),
        backends: arr(o.pointer("/spec/backends"))
            .iter()
            .filter_map(|b| Some((s(&b["service"])?, b.get("weight").and_then(num)?)))
            .collect(),
    }
}

/// An Ingress backend's port as ingress-nginx names it in an upstream: the number when it
/// is above 0, else the name (kubernetes/ingress-nginx
/// `internal/ingress/controller/util.go` `upstreamName`).
fn backend_port(port: Option<&Value>) -> String {
    let Some(port) = port else {
        return String::new();
    };
    match port.get("number").and_then(Value::as_u64) {
        Some(n) if n > 0 => n.to_string(),
        _ => port.get("name").and_then(s).unwrap_or_default(),
    }
}

pub fn parse_ingress(o: &Value) -> Ingress {
    let spec = &o["spec"];
    let annotations = str_map(o.pointer("/metadata/annotations"));
    let class = spec
        .get("ingressClassName")
        .and_then(s)
        .or_else(|| annotations.get("kubernetes.io/ingress.class").cloned());
    let rules = arr(spec.get("rules"))
        .iter()
        .map(|r| {
            let host = r.get("host").and_then(s).unwrap_or_default();
            let paths = arr(r.pointer("/http/paths"))
                .iter()
                .filter_map(|p| {
                    Some(IngressPath {
                        path: p.get("path").and_then(s).unwrap_or_else(|| "/".into()),
                        path_type: match p.get("pathType").and_then(Value::as_str) {
                            Some("Exact") => PathType::Exact,
                            Some("Prefix") => PathType::Prefix,
                            _ => PathType::ImplementationSpecific,
                        },
                        service: s(p.pointer("/backend/service/name")?)?,
                        port: backend_port(p.pointer("/backend/service/port")),
                    })
                })
                .collect();
            (host, paths)
        })
        .collect();
    Ingress {
        created: created(o),
        class,
        annotations,
        rules,
        default_backend: spec.pointer("/defaultBackend/service/name").and_then(s),
    }
}

pub fn parse_http_route(o: &Value) -> HttpRoute {
    let spec = &o["spec"];
    let rules = arr(spec.get("rules"))
        .iter()
        .map(|r| {
            let mut matches: Vec<GwMatch> = arr(r.get("matches"))
                .iter()
                .map(|m| {
                    let path = m.get("path");
                    let value = path
                        .and_then(|p| p.get("value"))
                        .and_then(s)
                        .unwrap_or_else(|| "/".into());
                    let path = match path.and_then(|p| p.get("type")).and_then(Value::as_str) {
                        Some("Exact") => GwPath::Exact(value),
                        Some("RegularExpression") => GwPath::Regex(value),
                        _ => GwPath::Prefix(value),
                    };
                    let pairs = |v: Option<&Value>| {
                        arr(v)
                            .iter()
                            .filter_map(|h| {
                                let name = h["name"].as_str()?.to_ascii_lowercase();
                                let value = h["value"].as_str()?.to_string();
                                let m = match h.get("type").and_then(Value::as_str) {
                                    Some("RegularExpression") => StringMatch::Regex(value),
                                    _ => StringMatch::Exact(value),
                                };
                                Some((name, m))
                            })
                            .collect()
                    };
                    GwMatch {
                        path,
                        headers: pairs(m.get("headers")),
                        method: m.get("method").and_then(s),
                        query: pairs(m.get("queryParams")),
                    }
                })
                .collect();
            if matches.is_empty() {
                matches.push(GwMatch {
                    path: GwPath::Prefix("/".into()),
                    headers: Vec::new(),
                    method: None,
                    query: Vec::new(),
                });
            }
            let backends = arr(r.get("backendRefs"))
                .iter()
                .map(|b| {
                    let is_service = b.get("kind").and_then(Value::as_str).unwrap_or("Service")
                        == "Service"
                        && b.get("group")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .is_empty();
                    let name = s(&b["name"]).filter(|_| is_service);
                    (name, b.get("weight").and_then(num).unwrap_or(1.0))
                })
                .collect();
            GwRule { matches, backends }
        })
        .collect();
    let route_ns = o["metadata"]["namespace"].as_str().unwrap_or_default();
    let parents = arr(spec.get("parentRefs"));
    // A Service parent is `kind: Service` in the core group ("" or "core"; GEP-1426).
    let is_service = |p: &Value| {
        p.get("kind").and_then(Value::as_str) == Some("Service")
            && matches!(
                p.get("group").and_then(Value::as_str),
                Some("" | "core") | None
            )
    };
    HttpRoute {
        created: created(o),
        hostnames: arr(spec.get("hostnames")).iter().filter_map(s).collect(),
        rules,
        parent_services: parents
            .iter()
            .filter(|p| is_service(p))
            .filter_map(|p| {
                let ns = p
                    .get("namespace")
                    .and_then(s)
                    .unwrap_or(route_ns.to_string());
                Some((ns, s(&p["name"])?))
            })
            .collect(),
        attaches_to_gateway: parents.is_empty() || parents.iter().any(|p| !is_service(p)),
    }
}

impl World {
    /// Insert or replace an object of `kind` given as JSON.
    pub fn apply(&mut self, kind: Kind, key: Key, o: &Value) {
        match kind {
            Kind::Pod => {
                self.pods.insert(key, parse_pod(o));
            }
            Kind::Service => {
                self.services.insert(key, parse_service(o));
            }
            Kind::EndpointSlice => {
                self.slices.insert(key, parse_endpoint_slice(o));
            }
            Kind::VirtualService => {
                self.virtual_services.insert(key, parse_virtual_service(o));
            }
            Kind::DestinationRule => {
                self.destination_rules
                    .insert(key, parse_destination_rule(o));
            }
            Kind::TrafficSplit => {
                self.traffic_splits.insert(key, parse_traffic_split(o));
            }
            Kind::Ingress => {
                self.ingresses.insert(key, parse_ingress(o));
            }
            Kind::HttpRoute => {
                self.http_routes.insert(key, parse_http_route(o));
            }
            Kind::LinkerdHttpRoute => {
                self.linkerd_http_routes.insert(key, parse_http_route(o));
            }
        }
    }

    pub fn delete(&mut self, kind: Kind, key: &Key) {
        match kind {
            Kind::Pod => drop(self.pods.remove(key)),
            Kind::Service => drop(self.services.remove(key)),
            Kind::EndpointSlice => drop(self.slices.remove(key)),
            Kind::VirtualService => drop(self.virtual_services.remove(key)),
            Kind::DestinationRule => drop(self.destination_rules.remove(key)),
            Kind::TrafficSplit => drop(self.traffic_splits.remove(key)),
            Kind::Ingress => drop(self.ingresses.remove(key)),
            Kind::HttpRoute => drop(self.http_routes.remove(key)),
            Kind::LinkerdHttpRoute => drop(self.linkerd_http_routes.remove(key)),
        }
    }

    /// Replace every object of `kind` (a watcher's relist).
    pub fn replace_all(&mut self, kind: Kind, objs: &[(Key, Value)]) {
        match kind {
            Kind::Pod => self.pods.clear(),
            Kind::Service => self.services.clear(),
            Kind::EndpointSlice => self.slices.clear(),
            Kind::VirtualService => self.virtual_services.clear(),
            Kind::DestinationRule => self.destination_rules.clear(),
            Kind::TrafficSplit => self.traffic_splits.clear(),
            Kind::Ingress => self.ingresses.clear(),
            Kind::HttpRoute => self.http_routes.clear(),
            Kind::LinkerdHttpRoute => self.linkerd_http_routes.clear(),
        }
        for (k, o) in objs {
            self.apply(kind, k.clone(), o);
        }
    }

    /// Ready pods behind Service `ns/svc`, from the EndpointSlices the endpointslice
    /// controller wrote (deduplicated: a pod may sit in two slices during a resync).
    pub fn ready_endpoints(&self, ns: &str, svc: &str) -> Vec<String> {
        let mut pods: Vec<String> = self
            .slices
            .iter()
            .filter(|((sns, _), sl)| sns == ns && sl.service == svc)
            .flat_map(|(_, sl)| sl.endpoints.iter())
            .filter(|(_, ready)| *ready)
            .map(|(p, _)| p.clone())
            .collect();
        pods.sort();
        pods.dedup();
        pods
    }
}
