//! One `canary-demo serve` process per Running pod, started and stopped as pods come and go.
//!
//! # A pod's behaviour comes from its pod template
//! The first container decides, so a canary built from a "bad" image misbehaves by itself:
//! * image tag tokens, separated by `-`: `err<P>` answers P % 500s, `lat<MS>` adds a mean
//!   latency of MS ms, `lag<N>` exports Kafka lag N (kafka_exporter's
//!   `kafka_consumergroup_lag`, group = the Deployment's name), `gw<MS>` a Kong overhead of MS ms
//!   (Kong's `kong_kong_latency_ms`, as Kong would report it for the pod's Kong service
//!   `<namespace>.<Deployment>.80`; see `crate::metrics`);
//!   e.g. `kubectl-canary/demo:2.0-err50` or `demo:1.4-lat1500`;
//! * env vars `DEMO_ERROR_RATE` (0..=1), `DEMO_LATENCY_MS`, `DEMO_KAFKA_LAG`,
//!   `DEMO_GATEWAY_OVERHEAD_MS` override the tag.
//!
//! Defaults: no errors, 2 ms mean latency, no lag, 1 ms gateway overhead.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use super::world::{Key, Pod};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Behaviour {
    pub error_rate: f64,
    pub latency_ms: f64,
    pub kafka_lag: f64,
    pub gateway_overhead_ms: f64,
}

impl Behaviour {
    pub fn of(pod: &Pod) -> Behaviour {
        let mut b = Behaviour {
            error_rate: 0.0,
            latency_ms: 2.0,
            kafka_lag: 0.0,
            gateway_overhead_ms: 1.0,
        };
        // The tag is what follows the last ':' after the last '/' (a registry port is not a tag).
        let last = pod.image.rsplit('/').next().unwrap_or("");
        if let Some((_, tag)) = last.split_once(':') {
            for tok in tag.split('-') {
                let num = |p: &str| tok.strip_prefix(p).and_then(|x| x.parse::<f64>().ok());
                if let Some(x) = num("err") {
                    b.error_rate = (x / 100.0).clamp(0.0, 1.0);
                } else if let Some(x) = num("lat") {
                    b.latency_ms = x.max(0.0);
                } else if let Some(x) = num("lag") {
                    b.kafka_lag = x.max(0.0);
                } else if let Some(x) = num("gw") {
                    b.gateway_overhead_ms = x.max(0.0);
                }
            }
        }
        let env = |k: &str| pod.env.get(k).and_then(|v| v.trim().parse::<f64>().ok());
        if let Some(x) = env("DEMO_ERROR_RATE") {
            b.error_rate = x.clamp(0.0, 1.0);
        }
        if let Some(x) = env("DEMO_LATENCY_MS") {
            b.latency_ms = x.max(0.0);
        }
        if let Some(x) = env("DEMO_KAFKA_LAG") {
            b.kafka_lag = x.max(0.0);
        }
        if let Some(x) = env("DEMO_GATEWAY_OVERHEAD_MS") {
            b.gateway_overhead_ms = x.max(0.0);
        }
        b
    }
}

/// A pod's process as the admin API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub deployment: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub addr: Option<SocketAddr>,
    pub behaviour: Behaviour,
    /// false once the pod is gone; its counts are then final.
    pub live: bool,
    /// Requests received (on arrival), and answered, by status code.
    pub requests: u64,
    pub in_flight: u64,
    pub by_code: BTreeMap<String, u64>,
}

struct Proc {
    uid: String,
    info: PodInfo,
    child: Child,
    _stdin: ChildStdin,
}

/// How long a gone pod's process may finish the requests it has (the default
/// terminationGracePeriodSeconds).
const GRACE: Duration = Duration::from_secs(30);

/// The processes, by pod.
#[derive(Default)]
pub struct Supervisor {
    procs: HashMap<Key, Proc>,
    /// Pods that went away whose process still finishes its requests in flight (as a
    /// terminating pod does: out of the endpoints, but not killed mid-request).
    draining: Vec<(std::time::Instant, Proc)>,
    /// Pods that went away, with the last counts their process reported.
    departed: Vec<PodInfo>,
}

async fn spawn(key: &Key, pod: &Pod) -> anyhow::Result<Proc> {
    let b = Behaviour::of(pod);
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("--exit-on-stdin-eof")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--pod", &key.1, "--namespace", &key.0])
        .args(["--workload", pod.deployment.as_deref().unwrap_or(&key.1)])
        .args(["--error-rate", &b.error_rate.to_string()])
        .args(["--latency-ms", &b.latency_ms.to_string()])
        .args(["--kafka-lag", &b.kafka_lag.to_string()])
        .args(["--gateway-overhead-ms", &b.gateway_overhead_ms.to_string()]);
    for (k, v) in &pod.labels {
        cmd.arg("--label").arg(format!("{k}={v}"));
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdin = child.stdin.take().expect("piped stdin");
    let mut line = String::new();
    let out = child.stdout.take().expect("piped stdout");
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(out).read_line(&mut line),
    )
    .await??;
    let addr: SocketAddr = line.trim().parse()?;
    Ok(Proc {
        uid: pod.uid.clone(),
        info: PodInfo {
            namespace: key.0.clone(),
            name: key.1.clone(),
            uid: pod.uid.clone(),
            deployment: pod.deployment.clone(),
            labels: pod.labels.clone(),
            addr: Some(addr),
            behaviour: b,
            live: true,
            requests: 0,
            in_flight: 0,
            by_code: BTreeMap::new(),
        },
        child,
        _stdin: stdin,
    })
}

/// The counts a pod's process reports at `/admin/stats`.
pub async fn fetch_stats(http: &reqwest::Client, info: &mut PodInfo) {
    let Some(addr) = info.addr else { return };
    let r = http
        .get(format!("http://{addr}/admin/stats"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    if let Ok(r) = r
        && let Ok(v) = r.json::<serde_json::Value>().await
    {
        info.requests = v["requests"].as_u64().unwrap_or(0);
        info.in_flight = v["in_flight"].as_u64().unwrap_or(0);
        info.by_code = v["by_code"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
    }
}

impl Supervisor {
    /// Bring the processes in line with `pods`. Returns whether the set changed.
    pub async fn reconcile(&mut self, pods: &HashMap<Key, Pod>, http: &reqwest::Client) -> bool {
        let mut changed = false;
        // Stop processes of pods that are gone, not running, replaced (same name, new
        // uid), or whose process died (it is started again below).
        let mut stale: Vec<Key> = self
            .procs
            .iter()
            .filter(|(k, p)| {
                !pods
                    .get(*k)
                    .is_some_and(|pod| pod.running && pod.uid == p.uid)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for (k, p) in self.procs.iter_mut() {
            if let Ok(Some(st)) = p.child.try_wait() {
                eprintln!(
                    "canary-demo mesh: process of pod {}/{} exited: {st}",
                    k.0, k.1
                );
                stale.push(k.clone());
            }
        }
        for k in stale {
            if let Some(p) = self.procs.remove(&k) {
                self.draining.push((std::time::Instant::now(), p));
                changed = true;
            }
        }
        let mut still = Vec::new();
        for (since, mut p) in std::mem::take(&mut self.draining) {
            fetch_stats(http, &mut p.info).await;
            let exited = matches!(p.child.try_wait(), Ok(Some(_)));
            if exited || p.info.in_flight == 0 || since.elapsed() > GRACE {
                let _ = p.child.kill().await;
                p.info.live = false;
                eprintln!(
                    "canary-demo mesh: stopped pod {}/{} after {} requests",
                    p.info.namespace, p.info.name, p.info.requests
                );
                self.departed.push(p.info);
            } else {
                still.push((since, p));
            }
        }
        self.draining = still;
        // Keep the history bounded.
        if self.departed.len() > 5000 {
            self.departed.drain(..1000);
        }
        for (k, pod) in pods.iter().filter(|(_, p)| p.running) {
            if self.procs.contains_key(k) {
                continue;
            }
            match spawn(k, pod).await {
                Ok(p) => {
                    eprintln!(
                        "canary-demo mesh: pod {}/{} ({}) -> {} {:?}",
                        k.0,
                        k.1,
                        pod.deployment.as_deref().unwrap_or("-"),
                        p.info.addr.map(|a| a.to_string()).unwrap_or_default(),
                        p.info.behaviour
                    );
                    self.procs.insert(k.clone(), p);
                    changed = true;
                }
                Err(e) => eprintln!("canary-demo mesh: starting pod {}/{}: {e:#}", k.0, k.1),
            }
        }
        changed
    }

    /// Live and departed pods of `namespace` (all when `None`), live counts fetched now.
    pub fn infos(&self, namespace: Option<&str>) -> (Vec<PodInfo>, Vec<PodInfo>) {
        let ns_ok = |ns: &str| namespace.is_none_or(|n| n == ns);
        let live = self
            .procs
            .values()
            .filter(|p| ns_ok(&p.info.namespace))
            .map(|p| p.info.clone())
            .collect();
        let gone = self
            .draining
            .iter()
            .map(|(_, p)| {
                let mut i = p.info.clone();
                i.live = false;
                i
            })
            .chain(self.departed.iter().cloned())
            .filter(|p| ns_ok(&p.namespace))
            .collect();
        (live, gone)
    }

    /// Prometheus file_sd targets: one per pod process.
    pub fn targets(&self) -> serde_json::Value {
        let t: Vec<serde_json::Value> = self
            .procs
            .values()
            .filter_map(|p| {
                Some(serde_json::json!({
                    "targets": [p.info.addr?.to_string()],
                    "labels": {
                        "canary_demo_namespace": p.info.namespace,
                        "canary_demo_pod": p.info.name,
                        "canary_demo_deployment": p.info.deployment.clone().unwrap_or_default(),
                    }
                }))
            })
            .collect();
        serde_json::Value::Array(t)
    }
}

/// Write `v` to `path` atomically (Prometheus may read it at any time).
pub fn write_json(path: &PathBuf, v: &serde_json::Value) {
    let tmp = path.with_extension("json.tmp");
    if std::fs::write(&tmp, serde_json::to_vec_pretty(v).unwrap_or_default()).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(image: &str, env: &[(&str, &str)]) -> Pod {
        Pod {
            uid: "u".into(),
            labels: BTreeMap::new(),
            deployment: None,
            running: true,
            image: image.into(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn behaviour_from_image_tag_and_env() {
        let b = Behaviour::of(&pod("kubectl-canary/demo:2.0-err50-lat1500", &[]));
        assert_eq!((b.error_rate, b.latency_ms), (0.5, 1500.0));
        let b = Behaviour::of(&pod("reg:5000/demo:1.0", &[]));
        assert_eq!((b.error_rate, b.latency_ms), (0.0, 2.0));
        let b = Behaviour::of(&pod("reg:5000/demo", &[("DEMO_ERROR_RATE", "0.25")]));
        assert_eq!(b.error_rate, 0.25);
        let b = Behaviour::of(&pod("demo:2-lag5000-gw80", &[("DEMO_LATENCY_MS", "7")]));
        assert_eq!(
            (b.kafka_lag, b.gateway_overhead_ms, b.latency_ms),
            (5000.0, 80.0, 7.0)
        );
    }
}
