//! `canary-demo mesh`: the test environment's data plane.
//!
//! * Watches Pods, Services, EndpointSlices, VirtualServices, DestinationRules,
//!   TrafficSplits, Ingresses and HTTPRoutes in every namespace through the API server.
//! * Runs one `canary-demo serve` process per Running pod (`pods.rs`) and registers them
//!   with Prometheus (file_sd).
//! * Proxies requests like a data plane (`route.rs`): the caller names the entry (`x-mesh-via`:
//!   istio | smi | nginx | gateway), its namespace (`x-mesh-namespace`) and the host (`Host`);
//!   the request goes Service selector → EndpointSlices (written by the real controller) →
//!   pod → that pod's process. Pod IPs are never dialled (they are fake); an endpoint's
//!   `targetRef` names the pod.
//! * Reports on the source side (`/metrics` of the admin listener) what a client proxy or the
//!   ingress controller would: Istio `reporter="source"`, Linkerd `direction="outbound"`, and
//!   the ingress-nginx requests it answered itself (no upstream, no route). A 503 for an empty
//!   destination therefore appears only there: no pod saw it.
//! * Admin API: `GET /pods[?namespace=N]` (live and departed pods with the request counts
//!   their own processes report), `GET /stats[?namespace=N]` (the proxy's outcomes),
//!   `GET /metrics`, `GET /healthz`.

pub mod pods;
pub mod route;
pub mod world;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request as HRequest, Response, StatusCode};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube::api::{Api, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{ApiResource, Discovery};
use kube::runtime::watcher;
use tokio::net::TcpListener;

use crate::rng;
use crate::serve::{Body, HDR_CANARY, HDR_INGRESS, HDR_NGINX_SERVICE, HDR_SERVICE, text};
use pods::{PodInfo, Supervisor};
use route::{Outcome, Via};
use world::{Key, Kind, World};

pub const HDR_VIA: &str = "x-mesh-via";
pub const HDR_NAMESPACE: &str = "x-mesh-namespace";
/// Set on every answer: the pod that served it (absent when the mesh answered itself).
pub const HDR_POD: &str = "x-mesh-pod";

#[derive(Args, Debug, Clone)]
pub struct MeshArgs {
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// Proxy listener (the data plane's entry for test traffic).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Admin listener (pods, stats, source-side metrics).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub admin_listen: SocketAddr,
    /// Write the bound addresses here (`proxy=ADDR` and `admin=ADDR` lines) once serving.
    #[arg(long)]
    pub addr_file: Option<PathBuf>,
    /// Prometheus file_sd directory: the pod processes and the mesh register here.
    #[arg(long)]
    pub file_sd_dir: Option<PathBuf>,
}

/// Source-side counters: (namespace, via, destination service, destination workload,
/// destination version, status, ingress-nginx labels, answered by the mesh) → requests.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SourceKey {
    namespace: String,
    via: Via,
    service: String,
    workload: String,
    version: String,
    status: u16,
    /// ingress-nginx's labels (all "" for other entries).
    nginx: route::NginxLabels,
    local_reply: bool,
}

struct Shared {
    world: RwLock<World>,
    addrs: RwLock<HashMap<Key, SocketAddr>>,
    infos: RwLock<(Vec<PodInfo>, Vec<PodInfo>)>,
    source: Mutex<HashMap<SourceKey, u64>>,
    pods_changed: tokio::sync::Notify,
    http: HttpClient<HttpConnector, Empty<Bytes>>,
    reqwest: reqwest::Client,
}

async fn api_resources(client: &kube::Client) -> anyhow::Result<Vec<(Kind, ApiResource)>> {
    let d = Discovery::new(client.clone()).run().await?;
    let mut out = Vec::new();
    for kind in Kind::ALL {
        let (group, k) = kind.group_kind();
        match d.get(group).and_then(|g| g.recommended_kind(k)) {
            Some((ar, _)) => out.push((kind, ar)),
            None => eprintln!("canary-demo mesh: {k}.{group} is not served; not watched"),
        }
    }
    Ok(out)
}

fn key_of(o: &DynamicObject) -> Key {
    (
        o.metadata.namespace.clone().unwrap_or_default(),
        o.metadata.name.clone().unwrap_or_default(),
    )
}

/// Keep `World` current for one kind.
async fn watch_kind(shared: Arc<Shared>, client: kube::Client, kind: Kind, ar: ApiResource) {
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    let mut init: Vec<(Key, serde_json::Value)> = Vec::new();
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                eprintln!("canary-demo mesh: watch {:?}: {e}", kind);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let value = |o: &DynamicObject| serde_json::to_value(o).unwrap_or_default();
        match ev {
            watcher::Event::Init => init.clear(),
            watcher::Event::InitApply(o) => init.push((key_of(&o), value(&o))),
            watcher::Event::InitDone => {
                shared
                    .world
                    .write()
                    .unwrap()
                    .replace_all(kind, &std::mem::take(&mut init));
            }
            watcher::Event::Apply(o) => {
                shared
                    .world
                    .write()
                    .unwrap()
                    .apply(kind, key_of(&o), &value(&o));
            }
            watcher::Event::Delete(o) => shared.world.write().unwrap().delete(kind, &key_of(&o)),
        }
        if kind == Kind::Pod {
            shared.pods_changed.notify_one();
        }
    }
}

async fn supervise(shared: Arc<Shared>, file_sd: Option<PathBuf>, admin: SocketAddr) {
    let mut sup = Supervisor::default();
    if let Some(dir) = &file_sd {
        pods::write_json(
            &dir.join("mesh.json"),
            &serde_json::json!([{"targets": [admin.to_string()],
                                 "labels": {"canary_demo_component": "mesh"}}]),
        );
    }
    loop {
        let pods = shared.world.read().unwrap().pods.clone();
        let changed = sup.reconcile(&pods, &shared.reqwest).await;
        {
            let mut addrs = shared.addrs.write().unwrap();
            addrs.clear();
            for p in sup.infos(None).0 {
                if let Some(a) = p.addr {
                    addrs.insert((p.namespace.clone(), p.name.clone()), a);
                }
            }
        }
        *shared.infos.write().unwrap() = sup.infos(None);
        if changed && let Some(dir) = &file_sd {
            pods::write_json(&dir.join("mesh-pods.json"), &sup.targets());
        }
        // Also look every second: a process may have died.
        let _ = tokio::time::timeout(Duration::from_secs(1), shared.pods_changed.notified()).await;
    }
}

fn header(req: &HRequest<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn proxy(shared: Arc<Shared>, req: HRequest<Incoming>) -> Result<Response<Body>, Infallible> {
    let Some(via) = header(&req, HDR_VIA).as_deref().and_then(Via::parse) else {
        return Ok(text(
            StatusCode::BAD_REQUEST,
            "text/plain",
            format!("{HDR_VIA}: istio|smi|nginx|gateway required\n"),
        ));
    };
    let Some(namespace) = header(&req, HDR_NAMESPACE) else {
        return Ok(text(
            StatusCode::BAD_REQUEST,
            "text/plain",
            format!("{HDR_NAMESPACE} required\n"),
        ));
    };
    let host = header(&req, "host")
        .map(|h| h.split(':').next().unwrap_or("").to_string())
        .unwrap_or_default();
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| {
            Some((
                k.as_str().to_ascii_lowercase(),
                v.to_str().ok()?.to_string(),
            ))
        })
        .collect();
    let r = route::Request {
        via,
        namespace: namespace.clone(),
        host,
        path: req.uri().path().to_string(),
        method: req.method().as_str().to_string(),
        headers,
    };
    let outcome = {
        let w = shared.world.read().unwrap();
        route::resolve(&w, &r, &mut rng::uniform)
    };
    let (status, body, key, pod) = match outcome {
        Outcome::Pod {
            namespace: pns,
            pod,
            service,
            nginx,
        } => {
            let (workload, version) = {
                let w = shared.world.read().unwrap();
                let p = w.pods.get(&(pns.clone(), pod.clone()));
                (
                    p.and_then(|p| p.deployment.clone())
                        .unwrap_or_else(|| pod.clone()),
                    p.and_then(|p| p.labels.get("version").cloned())
                        .unwrap_or_else(|| "unknown".into()),
                )
            };
            let addr = shared
                .addrs
                .read()
                .unwrap()
                .get(&(pns.clone(), pod.clone()))
                .copied();
            let mut key = SourceKey {
                namespace: namespace.clone(),
                via,
                service: service.clone(),
                workload,
                version,
                status: 503,
                nginx: nginx.clone().unwrap_or_default(),
                local_reply: true,
            };
            match addr {
                None => (
                    503,
                    format!("no healthy upstream: pod {pns}/{pod} has no process (yet)\n"),
                    key,
                    None,
                ),
                Some(addr) => {
                    let mut b = hyper::Request::builder()
                        .uri(format!("http://{addr}/"))
                        .header(HDR_SERVICE, &service);
                    if let Some(n) = &nginx {
                        b = b
                            .header(HDR_INGRESS, &n.ingress)
                            .header(HDR_NGINX_SERVICE, &n.service)
                            .header(HDR_CANARY, &n.canary);
                    }
                    let fwd = b.body(Empty::<Bytes>::new()).expect("valid request");
                    match tokio::time::timeout(Duration::from_secs(30), shared.http.request(fwd))
                        .await
                    {
                        Ok(Ok(resp)) => {
                            let st = resp.status().as_u16();
                            let body = resp
                                .into_body()
                                .collect()
                                .await
                                .map(|b| String::from_utf8_lossy(&b.to_bytes()).to_string())
                                .unwrap_or_default();
                            key.status = st;
                            key.local_reply = false;
                            (st, body, key, Some(pod))
                        }
                        // The pod went away mid-request: Envoy's upstream reset.
                        _ => (
                            503,
                            "upstream connect error or disconnect/reset\n".into(),
                            key,
                            None,
                        ),
                    }
                }
            }
        }
        Outcome::Reply {
            status,
            service,
            why,
        } => (
            status,
            format!("{why}\n"),
            SourceKey {
                namespace: namespace.clone(),
                via,
                service: service.unwrap_or_default(),
                workload: "unknown".into(),
                version: "unknown".into(),
                status,
                nginx: route::NginxLabels::default(),
                local_reply: true,
            },
            None,
        ),
    };
    *shared.source.lock().unwrap().entry(key).or_default() += 1;
    let mut resp = text(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        "text/plain",
        body,
    );
    if let Some(p) = pod
        && let Ok(v) = hyper::header::HeaderValue::from_str(&p)
    {
        resp.headers_mut().insert(HDR_POD, v);
    }
    Ok(resp)
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

fn render_source(m: &HashMap<SourceKey, u64>) -> String {
    let mut rows: Vec<_> = m.iter().collect();
    rows.sort();
    let mut o = String::new();
    o.push_str("# TYPE istio_requests_total counter\n");
    for (k, n) in rows.iter().filter(|(k, _)| k.via == Via::Istio) {
        let flags = if k.local_reply && k.status == 503 {
            "UH"
        } else {
            "-"
        };
        let _ = writeln!(
            o,
            "istio_requests_total{{reporter=\"source\",source_workload=\"canary-demo-client\",source_workload_namespace=\"{}\",destination_service_name=\"{}\",destination_workload=\"{}\",destination_workload_namespace=\"{}\",destination_version=\"{}\",response_code=\"{}\",response_flags=\"{flags}\"}} {n}",
            esc(&k.namespace),
            esc(&k.service),
            esc(&k.workload),
            esc(&k.namespace),
            esc(&k.version),
            k.status
        );
    }
    o.push_str("# TYPE response_total counter\n");
    for (k, n) in rows.iter().filter(|(k, _)| k.via == Via::Smi) {
        let class = if k.status >= 500 {
            "failure"
        } else {
            "success"
        };
        let _ = writeln!(
            o,
            "response_total{{direction=\"outbound\",namespace=\"{}\",dst_deployment=\"{}\",dst_namespace=\"{}\",authority=\"{}\",classification=\"{class}\",status_code=\"{}\"}} {n}",
            esc(&k.namespace),
            esc(&k.workload),
            esc(&k.namespace),
            esc(&k.service),
            k.status
        );
    }
    // ingress-nginx: the controller's own answers (the pods report what they served).
    o.push_str("# TYPE nginx_ingress_controller_requests counter\n");
    for (k, n) in rows
        .iter()
        .filter(|(k, _)| k.via == Via::Nginx && k.local_reply)
    {
        let _ = writeln!(
            o,
            "nginx_ingress_controller_requests{{ingress=\"{}\",namespace=\"{}\",service=\"{}\",canary=\"{}\",status=\"{}\"}} {n}",
            esc(&k.nginx.ingress),
            esc(&k.namespace),
            esc(&k.nginx.service),
            esc(&k.nginx.canary),
            k.status
        );
    }
    o.push_str("# TYPE canary_demo_mesh_requests_total counter\n");
    for (k, n) in &rows {
        let _ = writeln!(
            o,
            "canary_demo_mesh_requests_total{{namespace=\"{}\",via=\"{}\",service=\"{}\",workload=\"{}\",status=\"{}\",local_reply=\"{}\"}} {n}",
            esc(&k.namespace),
            k.via.as_str(),
            esc(&k.service),
            esc(&k.workload),
            k.status,
            k.local_reply
        );
    }
    o
}

fn query_param(req: &HRequest<Incoming>, name: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

async fn admin(shared: Arc<Shared>, req: HRequest<Incoming>) -> Result<Response<Body>, Infallible> {
    let ns = query_param(&req, "namespace");
    let resp = match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n"),
        "/metrics" => {
            let m = shared.source.lock().unwrap().clone();
            text(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                render_source(&m),
            )
        }
        "/pods" => {
            let (mut live, gone) = {
                let (l, g) = &*shared.infos.read().unwrap();
                let keep = |p: &&PodInfo| ns.as_deref().is_none_or(|n| n == p.namespace);
                (
                    l.iter().filter(keep).cloned().collect::<Vec<_>>(),
                    g.iter().filter(keep).cloned().collect::<Vec<_>>(),
                )
            };
            futures::future::join_all(
                live.iter_mut()
                    .map(|p| pods::fetch_stats(&shared.reqwest, p)),
            )
            .await;
            let all: Vec<PodInfo> = live.into_iter().chain(gone).collect();
            text(
                StatusCode::OK,
                "application/json",
                serde_json::to_vec(&all).unwrap_or_default(),
            )
        }
        "/stats" => {
            let m = shared.source.lock().unwrap().clone();
            let rows: Vec<serde_json::Value> = m
                .iter()
                .filter(|(k, _)| ns.as_deref().is_none_or(|n| n == k.namespace))
                .map(|(k, n)| {
                    serde_json::json!({
                        "namespace": k.namespace, "via": k.via.as_str(), "service": k.service,
                        "workload": k.workload, "status": k.status,
                        "local_reply": k.local_reply, "requests": n,
                    })
                })
                .collect();
            text(
                StatusCode::OK,
                "application/json",
                serde_json::to_vec(&rows).unwrap_or_default(),
            )
        }
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    };
    Ok(resp)
}

async fn serve_loop<F, Fut>(listener: TcpListener, shared: Arc<Shared>, handler: F)
where
    F: Fn(Arc<Shared>, HRequest<Incoming>) -> Fut + Copy + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let io = TokioIo::new(stream);
        let sh = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handler(sh.clone(), req));
            let _ = http1::Builder::new().serve_connection(io, svc).await;
        });
    }
}

pub async fn run(a: MeshArgs) -> anyhow::Result<()> {
    let kc = Kubeconfig::read_from(&a.kubeconfig)
        .with_context(|| format!("reading kubeconfig {}", a.kubeconfig.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(cfg)?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let shared = Arc::new(Shared {
        world: RwLock::new(World::default()),
        addrs: RwLock::new(HashMap::new()),
        infos: RwLock::new((Vec::new(), Vec::new())),
        source: Mutex::new(HashMap::new()),
        pods_changed: tokio::sync::Notify::new(),
        http: HttpClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector),
        reqwest: reqwest::Client::new(),
    });
    for (kind, ar) in api_resources(&client).await? {
        tokio::spawn(watch_kind(shared.clone(), client.clone(), kind, ar));
    }
    let proxy_l = TcpListener::bind(a.listen).await?;
    let admin_l = TcpListener::bind(a.admin_listen).await?;
    let (paddr, aaddr) = (proxy_l.local_addr()?, admin_l.local_addr()?);
    tokio::spawn(supervise(shared.clone(), a.file_sd_dir.clone(), aaddr));
    tokio::spawn(serve_loop(proxy_l, shared.clone(), proxy));
    tokio::spawn(serve_loop(admin_l, shared.clone(), admin));
    if let Some(f) = &a.addr_file {
        let tmp = f.with_extension("tmp");
        std::fs::write(&tmp, format!("proxy={paddr}\nadmin={aaddr}\n"))?;
        std::fs::rename(&tmp, f)?;
    }
    eprintln!("canary-demo mesh: proxy on http://{paddr}, admin on http://{aaddr}");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
