//! `canary-demo serve`: one version of the demo HTTP service.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::metrics::{Identity, Metrics, RouteCtx};
use crate::rng;

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on (port 0 = pick a free port; the bound address is printed first on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The pod this process stands for.
    #[arg(long)]
    pub pod: String,
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// The pod's owning Deployment: Istio destination_workload, Linkerd deployment.
    #[arg(long)]
    pub workload: String,
    /// The pod's labels, KEY=VALUE, repeatable: `version` gives Istio's destination_version,
    /// `app` the app name, `track` the generic flavour's track label.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Probability of answering 500.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Mean added latency in milliseconds (exponentially distributed).
    #[arg(long, default_value_t = 0.0)]
    pub latency_ms: f64,
    /// Initial Kafka consumer lag exported for this workload.
    #[arg(long, default_value_t = 0.0)]
    pub kafka_lag: f64,
    /// Mean Kong gateway overhead in milliseconds.
    #[arg(long, default_value_t = 1.0)]
    pub gateway_overhead_ms: f64,
}

/// Headers the data plane sets on each request it forwards (how it was routed).
pub const HDR_SERVICE: &str = "x-mesh-service";
pub const HDR_INGRESS: &str = "x-mesh-ingress";
pub const HDR_CANARY: &str = "x-mesh-nginx-canary";
/// ingress-nginx's `service` label: the primary location's Service (also for canary requests).
pub const HDR_NGINX_SERVICE: &str = "x-mesh-nginx-service";

/// Run-time fault state; `POST /admin/fault` updates any subset of fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    pub error_rate: f64,
    pub latency_ms: f64,
    pub kafka_lag: f64,
    pub cassandra_read_ms: f64,
    pub cassandra_write_ms: f64,
    pub gateway_overhead_ms: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultPatch {
    error_rate: Option<f64>,
    latency_ms: Option<f64>,
    kafka_lag: Option<f64>,
    cassandra_read_ms: Option<f64>,
    cassandra_write_ms: Option<f64>,
    gateway_overhead_ms: Option<f64>,
}

impl Fault {
    fn apply(&mut self, p: FaultPatch) -> Result<(), String> {
        let check = |name: &str, v: Option<f64>, max: f64| -> Result<Option<f64>, String> {
            match v {
                Some(x) if !x.is_finite() || x < 0.0 || x > max => {
                    Err(format!("{name} must be within 0..={max}, got {x}"))
                }
                other => Ok(other),
            }
        };
        let p = FaultPatch {
            error_rate: check("error_rate", p.error_rate, 1.0)?,
            latency_ms: check("latency_ms", p.latency_ms, 60_000.0)?,
            kafka_lag: check("kafka_lag", p.kafka_lag, f64::MAX)?,
            cassandra_read_ms: check("cassandra_read_ms", p.cassandra_read_ms, 60_000.0)?,
            cassandra_write_ms: check("cassandra_write_ms", p.cassandra_write_ms, 60_000.0)?,
            gateway_overhead_ms: check("gateway_overhead_ms", p.gateway_overhead_ms, 60_000.0)?,
        };
        if let Some(v) = p.error_rate {
            self.error_rate = v;
        }
        if let Some(v) = p.latency_ms {
            self.latency_ms = v;
        }
        if let Some(v) = p.kafka_lag {
            self.kafka_lag = v;
        }
        if let Some(v) = p.cassandra_read_ms {
            self.cassandra_read_ms = v;
        }
        if let Some(v) = p.cassandra_write_ms {
            self.cassandra_write_ms = v;
        }
        if let Some(v) = p.gateway_overhead_ms {
            self.gateway_overhead_ms = v;
        }
        Ok(())
    }
}

struct State {
    fault: Mutex<Fault>,
    metrics: Mutex<Metrics>,
    id: Identity,
    /// Requests received (counted on arrival: a request in flight when the route changes
    /// was still sent before the change).
    arrived: std::sync::atomic::AtomicU64,
}

pub(crate) type Body = Full<Bytes>;

/// A response with a body of `ctype` (shared with the mesh's listeners).
pub(crate) fn text(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(body.into()))
        .expect("valid response")
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let resp = match (req.method().clone(), path.as_str()) {
        (Method::GET, "/metrics") => {
            let lag = state.fault.lock().unwrap().kafka_lag;
            let body = state.metrics.lock().unwrap().render(lag);
            text(StatusCode::OK, "text/plain; version=0.0.4", body)
        }
        (Method::GET, "/healthz") => text(StatusCode::OK, "text/plain", "ok\n"),
        (Method::GET, "/admin/stats") => {
            let counts = state.metrics.lock().unwrap().counts();
            let by_code: BTreeMap<String, u64> =
                counts.iter().map(|(c, n)| (c.to_string(), *n)).collect();
            let arrived = state.arrived.load(std::sync::atomic::Ordering::SeqCst);
            let done: u64 = counts.values().sum();
            let body = serde_json::json!({
                "pod": state.id.pod,
                "requests": arrived,
                "in_flight": arrived.saturating_sub(done),
                "by_code": by_code,
            });
            text(StatusCode::OK, "application/json", body.to_string())
        }
        (Method::GET, "/admin/fault") => {
            let f = state.fault.lock().unwrap().clone();
            text(
                StatusCode::OK,
                "application/json",
                serde_json::to_vec(&f).unwrap_or_default(),
            )
        }
        (Method::POST, "/admin/fault") => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return Ok(text(
                        StatusCode::BAD_REQUEST,
                        "text/plain",
                        format!("{e}\n"),
                    ));
                }
            };
            match serde_json::from_slice::<FaultPatch>(&body) {
                Ok(patch) => {
                    let mut f = state.fault.lock().unwrap();
                    match f.apply(patch) {
                        Ok(()) => {
                            eprintln!("canary-demo[{}]: fault state now {:?}", state.id.pod, *f);
                            text(
                                StatusCode::OK,
                                "application/json",
                                serde_json::to_vec(&*f).unwrap_or_default(),
                            )
                        }
                        Err(e) => text(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
                    }
                }
                Err(e) => text(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
            }
        }
        (Method::GET, _) => {
            let h = |n: &str| {
                req.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            let mut ctx = RouteCtx {
                service: h(HDR_SERVICE),
                ingress: h(HDR_INGRESS),
                nginx_service: h(HDR_NGINX_SERVICE),
                canary: h(HDR_CANARY),
            };
            if ctx.service.is_empty() {
                ctx.service = state.id.app.clone();
            }
            serve_request(&state, &ctx).await
        }
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    };
    Ok(resp)
}

async fn serve_request(state: &State, ctx: &RouteCtx) -> Response<Body> {
    state
        .arrived
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let start = Instant::now();
    let f = state.fault.lock().unwrap().clone();
    let delay = rng::exp(f.latency_ms);
    if delay > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(delay / 1000.0)).await;
    }
    let code: u16 = if rng::chance(f.error_rate) { 500 } else { 200 };
    let elapsed_ms = start.elapsed().as_secs_f64() * 1000.0;
    {
        let mut m = state.metrics.lock().unwrap();
        m.record(ctx, code, elapsed_ms);
        m.record_signals(
            rng::exp(f.cassandra_read_ms),
            rng::exp(f.cassandra_write_ms),
            rng::exp(f.gateway_overhead_ms),
        );
    }
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    text(
        status,
        "text/plain",
        format!("{} {} {}\n", state.id.pod, state.id.workload, code),
    )
}

pub async fn run(a: ServeArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&a.error_rate) {
        anyhow::bail!("--error-rate must be within 0..=1");
    }
    let mut labels = BTreeMap::new();
    for l in &a.labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--label {l:?}: expected KEY=VALUE"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    let label = |k: &str| labels.get(k).cloned();
    let id = Identity {
        namespace: a.namespace.clone(),
        pod: a.pod.clone(),
        workload: a.workload.clone(),
        version: label("version").unwrap_or_else(|| "unknown".into()),
        app: label("app")
            .or_else(|| label("app.kubernetes.io/name"))
            .unwrap_or_else(|| a.workload.clone()),
        track: label("track").unwrap_or_default(),
        istio_reporter: if label("istio.io/dataplane-mode").as_deref() == Some("ambient") {
            "waypoint"
        } else {
            "destination"
        },
    };
    let state = Arc::new(State {
        fault: Mutex::new(Fault {
            error_rate: a.error_rate,
            latency_ms: a.latency_ms,
            kafka_lag: a.kafka_lag,
            cassandra_read_ms: 2.0,
            cassandra_write_ms: 4.0,
            gateway_overhead_ms: a.gateway_overhead_ms,
        }),
        metrics: Mutex::new(Metrics::new(id.clone())),
        id,
        arrived: Default::default(),
    });
    let listener = TcpListener::bind(a.listen).await?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{addr}")?;
        out.flush()?;
    }
    eprintln!(
        "canary-demo serve: pod {}/{} ({}) on http://{addr}",
        a.namespace, a.pod, a.workload
    );
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => r?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let io = TokioIo::new(stream);
        let st = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(st.clone(), req));
            let _ = http1::Builder::new().serve_connection(io, svc).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Fault {
        Fault {
            error_rate: 0.0,
            latency_ms: 0.0,
            kafka_lag: 0.0,
            cassandra_read_ms: 2.0,
            cassandra_write_ms: 4.0,
            gateway_overhead_ms: 1.0,
        }
    }

    #[test]
    fn partial_fault_update() {
        let mut f = base();
        let p: FaultPatch = serde_json::from_str(r#"{"error_rate":0.5,"kafka_lag":5000}"#).unwrap();
        f.apply(p).unwrap();
        assert_eq!(f.error_rate, 0.5);
        assert_eq!(f.kafka_lag, 5000.0);
        assert_eq!(f.cassandra_write_ms, 4.0);
    }

    #[test]
    fn rejects_bad_fault() {
        let mut f = base();
        let p: FaultPatch = serde_json::from_str(r#"{"error_rate":1.5}"#).unwrap();
        assert!(f.apply(p).is_err());
        assert_eq!(f.error_rate, 0.0);
        assert!(serde_json::from_str::<FaultPatch>(r#"{"bogus":1}"#).is_err());
    }
}
