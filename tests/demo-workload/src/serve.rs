//! `canary-demo serve`: one version of the demo HTTP service.

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

use crate::metrics::{Identity, Metrics};
use crate::rng;

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on (port 0 = pick a free port; the bound address is printed first on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Logical service name (Istio destination_service_name, generic `service`).
    #[arg(long)]
    pub service: String,
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Workload (Deployment) name: Istio destination_workload, Linkerd deployment.
    #[arg(long)]
    pub workload: String,
    /// Version label (Istio destination_version).
    #[arg(long, default_value = "v1")]
    pub version: String,
    /// stable or canary.
    #[arg(long, value_parser = ["stable", "canary"])]
    pub track: String,
    /// Ingress name for ingress-nginx labels (default: the service name).
    #[arg(long)]
    pub ingress: Option<String>,
    /// Service name used in ingress-nginx labels when track=canary (default: <service>-canary).
    #[arg(long)]
    pub canary_service: Option<String>,
    /// Probability of answering 500.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Mean added latency in milliseconds (exponentially distributed).
    #[arg(long, default_value_t = 0.0)]
    pub latency_ms: f64,
}

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
}

type Body = Full<Bytes>;

fn text(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Body> {
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
                            eprintln!("canary-demo[{}]: fault state now {:?}", state.id.track, *f);
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
        (Method::GET, "/") => serve_request(&state).await,
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    };
    Ok(resp)
}

async fn serve_request(state: &State) -> Response<Body> {
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
        m.record(code, elapsed_ms);
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
        format!(
            "{} {} {} {}\n",
            state.id.workload, state.id.version, state.id.track, code
        ),
    )
}

pub async fn run(a: ServeArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&a.error_rate) {
        anyhow::bail!("--error-rate must be within 0..=1");
    }
    let nginx_service = if a.track == "canary" {
        a.canary_service
            .clone()
            .unwrap_or_else(|| format!("{}-canary", a.service))
    } else {
        a.service.clone()
    };
    let id = Identity {
        service: a.service.clone(),
        namespace: a.namespace.clone(),
        workload: a.workload.clone(),
        version: a.version.clone(),
        track: a.track.clone(),
        ingress: a.ingress.clone().unwrap_or_else(|| a.service.clone()),
        nginx_service,
    };
    let state = Arc::new(State {
        fault: Mutex::new(Fault {
            error_rate: a.error_rate,
            latency_ms: a.latency_ms,
            kafka_lag: 0.0,
            cassandra_read_ms: 2.0,
            cassandra_write_ms: 4.0,
            gateway_overhead_ms: 1.0,
        }),
        metrics: Mutex::new(Metrics::new(id.clone())),
        id,
    });
    let listener = TcpListener::bind(a.listen).await?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{addr}")?;
        out.flush()?;
    }
    eprintln!(
        "canary-demo serve: {} {}/{} version={} track={} on http://{addr}",
        a.workload, a.namespace, a.service, a.version, a.track
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
