//! Test support for integration tests that need a real cluster and Prometheus.
//!
//! Include it from a `tests/*.rs` file with `mod support;`. The environment is
//! started by `bash tests/run.sh` (or `bash tests/env/setup.sh && tests/env/up`
//! and `. /tmp/kubectl-canary-env/env.sh`), which exports:
//!
//! * `CANARY_TEST_KUBECONFIG`  admin kubeconfig of the test cluster,
//! * `CANARY_TEST_PROMETHEUS`  Prometheus base URL (scrape interval 1 s),
//! * `CANARY_TEST_FILE_SD_DIR` Prometheus file_sd directory for demo targets,
//! * `CANARY_TEST_ENV_DIR`     state dir (demo pids are registered there so
//!   `tests/env/down` can always clean up),
//! * `CANARY_TEST_MESH_PROXY` / `CANARY_TEST_MESH_ADMIN` the test data plane
//!   (`canary-demo mesh`): it runs a process per Running pod and routes requests through
//!   Services, EndpointSlices and route objects. Tests count what each pod served from the
//!   pods' own counters ([`Counts`]), never from the route objects.
//!
//! Tests never silently pass without it: [`TestEnv::get`] panics with
//! instructions when the variables are missing.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::{Client, Config};
use serde_json::{Value, json};

/// Field manager used for server-side apply by the tests.
pub const FIELD_MANAGER: &str = "kubectl-canary-tests";

/// Image used for test workloads. kwok never pulls it.
pub const TEST_IMAGE: &str = "kubectl-canary/demo:1.0";

/// The environment the tests run against.
#[derive(Debug, Clone)]
pub struct TestEnv {
    pub kubeconfig: PathBuf,
    pub prometheus: String,
    pub file_sd_dir: Option<PathBuf>,
    pub env_dir: Option<PathBuf>,
    /// True when the cluster is a user-provided one (not the kwok control plane).
    pub external: bool,
    /// The test data plane (`canary-demo mesh`): proxy and admin `host:port`.
    pub mesh_proxy: String,
    pub mesh_admin: String,
}

impl TestEnv {
    /// Read the environment; panics with instructions when it is not set up.
    pub fn get() -> &'static TestEnv {
        static ENV: OnceLock<TestEnv> = OnceLock::new();
        ENV.get_or_init(|| {
            let need = |k: &str| match std::env::var(k) {
                Ok(v) if !v.is_empty() => v,
                _ => panic!(
                    "{k} is not set: these tests need the local Kubernetes control plane and \
                     Prometheus. Run the whole suite with `bash tests/run.sh` (builds and starts \
                     everything, then runs cargo test), or start it yourself with \
                     `bash tests/env/setup.sh && tests/env/up` and \
                     `. ${{KUBECTL_CANARY_ENV_DIR:-/tmp/kubectl-canary-env}}/env.sh` before \
                     `cargo test`."
                ),
            };
            let opt = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
            let kubeconfig = PathBuf::from(need("CANARY_TEST_KUBECONFIG"));
            assert!(
                kubeconfig.exists(),
                "CANARY_TEST_KUBECONFIG={} does not exist (environment stopped? run tests/env/up)",
                kubeconfig.display()
            );
            TestEnv {
                kubeconfig,
                prometheus: need("CANARY_TEST_PROMETHEUS")
                    .trim_end_matches('/')
                    .to_string(),
                file_sd_dir: opt("CANARY_TEST_FILE_SD_DIR").map(PathBuf::from),
                env_dir: opt("CANARY_TEST_ENV_DIR").map(PathBuf::from),
                external: opt("CANARY_TEST_EXTERNAL_CLUSTER").as_deref() == Some("1"),
                mesh_proxy: need("CANARY_TEST_MESH_PROXY"),
                mesh_admin: need("CANARY_TEST_MESH_ADMIN"),
            }
        })
    }

    /// kube config for the test cluster (admin).
    pub async fn config(&self) -> Config {
        let kc = Kubeconfig::read_from(&self.kubeconfig).expect("read CANARY_TEST_KUBECONFIG");
        Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("kube config from CANARY_TEST_KUBECONFIG")
    }

    /// An admin client.
    pub async fn client(&self) -> Client {
        Client::try_from(self.config().await).expect("kube client")
    }

    /// A client impersonating `user` (and `groups`), like `kubectl --as`.
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> Client {
        let mut cfg = self.config().await;
        cfg.auth_info.impersonate = Some(user.to_string());
        if !groups.is_empty() {
            cfg.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
        }
        Client::try_from(cfg).expect("kube client (impersonating)")
    }
}

/// Random-enough lowercase suffix for names.
pub fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    format!("{:08x}", h.finish() as u32)
}

/// A namespace created for one test, deleted (best effort, without waiting) on drop.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
    kubeconfig: PathBuf,
}

impl TestNamespace {
    /// Create `<prefix>-<random>` and wait until its `default` ServiceAccount exists.
    pub async fn create(prefix: &str) -> TestNamespace {
        let env = TestEnv::get();
        let client = env.client().await;
        let name = format!("{prefix}-{}", random_suffix());
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"kubectl-canary-test": "true"}}
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &name);
        wait_for(
            Duration::from_secs(30),
            "default ServiceAccount in test namespace",
            || {
                let sa = sa.clone();
                async move { sa.get_opt("default").await.ok().flatten().is_some() }
            },
        )
        .await;
        TestNamespace {
            name,
            client,
            kubeconfig: env.kubeconfig.clone(),
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Poll `cond` every 200 ms until it returns true; panic after `timeout` naming `what`.
pub async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return;
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Server-side apply every document of a YAML (or JSON) manifest into `ns`
/// (cluster-scoped objects ignore it). Returns the applied objects.
pub async fn apply(client: &Client, ns: &str, manifest: &str) -> Vec<DynamicObject> {
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(manifest) {
        let v: Value = serde::Deserialize::deserialize(doc).expect("manifest is valid YAML");
        if v.is_null() {
            continue;
        }
        out.push(apply_value(client, ns, v).await);
    }
    out
}

/// Server-side apply of one object given as JSON.
pub async fn apply_value(client: &Client, ns: &str, v: Value) -> DynamicObject {
    let obj: DynamicObject =
        serde_json::from_value(v).expect("object has apiVersion/kind/metadata");
    let tm = obj.types.clone().expect("object has apiVersion and kind");
    let gvk = GroupVersionKind::try_from(&tm).expect("valid apiVersion");
    let (ar, caps) = discovery::pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("{}/{} not served: {e}", tm.api_version, tm.kind));
    let name = obj.metadata.name.clone().expect("object has metadata.name");
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => Api::namespaced_with(client.clone(), ns, &ar),
        Scope::Cluster => Api::all_with(client.clone(), &ar),
    };
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&obj),
    )
    .await
    .unwrap_or_else(|e| panic!("applying {} {name}: {e}", tm.kind))
}

/// The stable Deployment `<svc>` as users have it: pods labelled `app: <svc>, version: v1`
/// (none of our labels), selector `app: <svc>`, and Service `<svc>` selecting `app: <svc>`
/// (so it selects a canary's pods too). With `split_services` also the per-version Services
/// a user of host splits keeps: `<svc>-stable` (`version: v1`) and `<svc>-canary` (the
/// canary's documented `track: canary`).
pub async fn create_stable(
    client: &Client,
    ns: &str,
    svc: &str,
    replicas: i32,
    split_services: bool,
) -> Deployment {
    let dep = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": svc, "labels": {"app": svc}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": svc}},
            "template": {
                "metadata": {"labels": {"app": svc, "version": "v1"}},
                "spec": {"containers": [{
                    "name": "app", "image": TEST_IMAGE,
                    "ports": [{"containerPort": 8080, "name": "http"}]
                }]}
            }
        }
    });
    apply_value(client, ns, dep).await;
    apply_value(client, ns, service_json(svc, svc, None)).await;
    if split_services {
        apply_value(
            client,
            ns,
            service_json(&format!("{svc}-stable"), svc, Some(("version", "v1"))),
        )
        .await;
        apply_value(
            client,
            ns,
            service_json(&format!("{svc}-canary"), svc, Some(("track", "canary"))),
        )
        .await;
    }
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get(svc)
        .await
        .expect("get created Deployment")
}

/// The route object of `provider` for `svc` as a user has it before any rollout: a
/// VirtualService to host `<svc>` (no subsets, no DestinationRule), an Ingress for
/// `<svc>.test` with an unrelated annotation, an HTTPRoute for `<svc>.test` to `<svc>`.
/// SMI users have no TrafficSplit yet (the rollout creates it).
pub async fn user_route(client: &Client, ns: &str, provider: Provider, svc: &str) {
    let host = provider.entry_host(svc);
    let obj = match provider {
        Provider::Istio => json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": svc},
            "spec": {"hosts": [svc], "http": [{"name": "primary", "timeout": "5s",
                "route": [{"destination": {"host": svc}}]}]}
        }),
        Provider::Smi => return,
        Provider::Nginx => json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": svc, "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "8m"}},
            "spec": {"ingressClassName": "nginx", "rules": [{"host": host, "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": svc, "port": {"number": 80}}}}]}}]}
        }),
        Provider::GatewayApi => json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": svc},
            "spec": {"parentRefs": [{"name": "public"}], "hostnames": [host],
                "rules": [{"backendRefs": [{"name": svc, "port": 80}]}]}
        }),
    };
    apply_value(client, ns, obj).await;
}

/// A canary Deployment `<svc>-canary` as a rollout would add it (labels app=<svc>,
/// track=canary, version=v2), for data-plane tests that run without the plugin.
pub async fn create_canary(client: &Client, ns: &str, svc: &str, replicas: i32, image: &str) {
    let labels = json!({"app": svc, "track": "canary", "version": "v2"});
    apply_value(
        client,
        ns,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": format!("{svc}-canary"), "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": svc, "track": "canary"}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "app", "image": image}]}
                }
            }
        }),
    )
    .await;
}

fn service_json(name: &str, app: &str, extra: Option<(&str, &str)>) -> Value {
    let mut selector = BTreeMap::new();
    selector.insert("app".to_string(), app.to_string());
    if let Some((k, v)) = extra {
        selector.insert(k.to_string(), v.to_string());
    }
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    })
}

/// Read back a Service (helper for tests that check what was created).
pub async fn get_service(client: &Client, ns: &str, name: &str) -> Option<Service> {
    Api::<Service>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("get Service")
}

/// Traffic-routing providers the demo driver understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Istio VirtualService (subset split, subsets `stable`/`canary` by label `track`).
    Istio,
    /// SMI TrafficSplit over Services `<svc>-stable` / `<svc>-canary`.
    Smi,
    /// ingress-nginx: primary Ingress to `<svc>`, canary Ingress to `<svc>-canary`.
    Nginx,
    /// Gateway API HTTPRoute over Services `<svc>-stable` / `<svc>-canary`.
    GatewayApi,
}

impl Provider {
    pub const ALL: [Provider; 4] = [
        Provider::Istio,
        Provider::Smi,
        Provider::Nginx,
        Provider::GatewayApi,
    ];

    /// Short name, for namespace prefixes and messages.
    pub fn short(self) -> &'static str {
        match self {
            Provider::Istio => "istio",
            Provider::Smi => "smi",
            Provider::Nginx => "nginx",
            Provider::GatewayApi => "gateway",
        }
    }

    /// `--via` of `canary-demo drive`: how a client enters the data plane.
    pub fn via(self) -> &'static str {
        match self {
            Provider::Istio => "istio",
            Provider::Smi => "smi",
            Provider::Nginx => "nginx",
            Provider::GatewayApi => "gateway",
        }
    }

    /// The host a client calls for service `svc`: the Service itself inside the mesh, the
    /// Ingress/HTTPRoute host name (`<svc>.test`) from outside.
    pub fn entry_host(self, svc: &str) -> String {
        match self {
            Provider::Istio | Provider::Smi => svc.to_string(),
            Provider::Nginx | Provider::GatewayApi => format!("{svc}.test"),
        }
    }

    /// Backend keys (stable, canary) as they appear in the route object.
    pub fn keys(self, svc: &str) -> (String, String) {
        match self {
            Provider::Istio => ("stable".into(), "canary".into()),
            Provider::Nginx => (svc.into(), format!("{svc}-canary")),
            Provider::Smi | Provider::GatewayApi => {
                (format!("{svc}-stable"), format!("{svc}-canary"))
            }
        }
    }
}

/// A hand-made split (no plugin): the route object of `provider` named `route` for service
/// `svc`, sending `canary_weight` percent to the canary (0..=100), for pods made with
/// [`create_stable`] (`version: v1`) and [`create_canary`] (`version: v2`).
/// Istio also gets the DestinationRule `<svc>` with subsets stable/canary on `version`; the
/// nginx canary Ingress is `<route>-canary` (host `<svc>.test`).
pub async fn set_route(
    client: &Client,
    ns: &str,
    provider: Provider,
    svc: &str,
    route: &str,
    canary_weight: u32,
) {
    let cw = canary_weight.min(100);
    let sw = 100 - cw;
    let (sk, ck) = provider.keys(svc);
    match provider {
        Provider::Istio => {
            apply_value(
                client,
                ns,
                json!({
                    "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                    "metadata": {"name": svc},
                    "spec": {"host": svc, "subsets": [
                        {"name": "stable", "labels": {"version": "v1"}},
                        {"name": "canary", "labels": {"version": "v2"}}
                    ]}
                }),
            )
            .await;
            apply_value(
                client,
                ns,
                json!({
                    "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                    "metadata": {"name": route},
                    "spec": {"hosts": [svc], "http": [{"name": "primary", "route": [
                        {"destination": {"host": svc, "subset": sk}, "weight": sw},
                        {"destination": {"host": svc, "subset": ck}, "weight": cw}
                    ]}]}
                }),
            )
            .await;
        }
        Provider::Smi => {
            apply_value(
                client,
                ns,
                json!({
                    "apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
                    "metadata": {"name": route},
                    "spec": {"service": svc, "backends": [
                        {"service": sk, "weight": sw},
                        {"service": ck, "weight": cw}
                    ]}
                }),
            )
            .await;
        }
        Provider::Nginx => {
            create_ingress(client, ns, route, &format!("{svc}.test"), &sk, None).await;
            create_ingress(
                client,
                ns,
                &format!("{route}-canary"),
                &format!("{svc}.test"),
                &ck,
                Some(cw),
            )
            .await;
        }
        Provider::GatewayApi => {
            apply_value(
                client,
                ns,
                json!({
                    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                    "metadata": {"name": route},
                    "spec": {
                        "parentRefs": [{"name": "test-gateway"}],
                        "hostnames": [format!("{svc}.test")],
                        "rules": [{"backendRefs": [
                            {"name": sk, "port": 80, "weight": sw},
                            {"name": ck, "port": 80, "weight": cw}
                        ]}]
                    }
                }),
            )
            .await;
        }
    }
}

/// Create or update an Ingress (class nginx) for `host` → `service:80`.
/// `canary_weight: Some(w)` makes it an ingress-nginx canary Ingress.
pub async fn create_ingress(
    client: &Client,
    ns: &str,
    name: &str,
    host: &str,
    service: &str,
    canary_weight: Option<u32>,
) {
    let mut annotations = serde_json::Map::new();
    if let Some(w) = canary_weight {
        annotations.insert("nginx.ingress.kubernetes.io/canary".into(), json!("true"));
        annotations.insert(
            "nginx.ingress.kubernetes.io/canary-weight".into(),
            json!(w.to_string()),
        );
    }
    apply_value(
        client,
        ns,
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "annotations": annotations},
            "spec": {
                "ingressClassName": "nginx",
                "rules": [{"host": host, "http": {"paths": [{
                    "path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": service, "port": {"number": 80}}}
                }]}}]
            }
        }),
    )
    .await;
}

/// Path of the `canary-demo` binary; builds it with cargo if it is missing.
/// `CANARY_DEMO_BIN` overrides the location.
pub fn canary_demo_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("CANARY_DEMO_BIN") {
            return PathBuf::from(p);
        }
        // Test executables live in <target>/<profile>/deps/.
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary in <target>/<profile>/deps")
            .to_path_buf();
        let bin = profile_dir.join("canary-demo");
        if !bin.exists() {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cmd.current_dir(root).args(["build", "-p", "canary-demo"]);
            if profile_dir.file_name().and_then(|n| n.to_str()) == Some("release") {
                cmd.arg("--release");
            }
            let st = cmd.status().expect("run cargo build -p canary-demo");
            assert!(st.success(), "cargo build -p canary-demo failed");
        }
        assert!(bin.exists(), "canary-demo not found at {}", bin.display());
        bin
    })
    .clone()
}

/// A running `canary-demo` child process (the traffic driver).
pub struct DemoProcess {
    child: Mutex<Child>,
    what: String,
    _stdin: Option<ChildStdin>,
    pid_file: Option<PathBuf>,
}

impl DemoProcess {
    fn spawn(args: &[String]) -> DemoProcess {
        let mut child = Command::new(canary_demo_bin())
            .arg("--exit-on-stdin-eof")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn canary-demo");
        let stdin = child.stdin.take();
        let pid_file = TestEnv::get().env_dir.as_ref().map(|d| {
            let p = d.join("demo-pids").join(child.id().to_string());
            let _ = std::fs::create_dir_all(d.join("demo-pids"));
            let _ = std::fs::write(&p, "");
            p
        });
        DemoProcess {
            child: Mutex::new(child),
            what: args.first().cloned().unwrap_or_default(),
            _stdin: stdin,
            pid_file,
        }
    }

    /// Panic if the process has exited (it should run until dropped).
    pub fn assert_running(&self) {
        let mut c = self.child.lock().unwrap();
        if let Ok(Some(st)) = c.try_wait() {
            panic!(
                "canary-demo {} (pid {}) exited unexpectedly: {st} (its stderr is in the test output)",
                self.what,
                c.id()
            );
        }
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        let c = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = c.kill();
        let _ = c.wait();
        if let Some(p) = &self.pid_file {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Options for [`Traffic::start_with`].
#[derive(Debug, Clone)]
pub struct TrafficOptions {
    pub rps: f64,
    /// The driver stops by itself after this long.
    pub duration: Duration,
    /// `NAME:VALUE` sent with `header_share` of the requests.
    pub header: Option<String>,
    pub header_share: f64,
    /// Request path (default `/`).
    pub path: Option<String>,
    /// Enter through this Istio Gateway instead of the caller's sidecar (`x-mesh-gateway`).
    pub gateway: Option<String>,
}

impl Default for TrafficOptions {
    fn default() -> Self {
        TrafficOptions {
            rps: 60.0,
            duration: Duration::from_secs(300),
            header: None,
            header_share: 0.0,
            path: None,
            gateway: None,
        }
    }
}

impl TrafficOptions {
    /// `rps` requests per second for `secs` seconds, no header.
    pub fn at(rps: f64, secs: u64) -> Self {
        TrafficOptions {
            rps,
            duration: Duration::from_secs(secs),
            ..TrafficOptions::default()
        }
    }

    /// `share` of the requests carry the header `NAME:VALUE`.
    pub fn with_header(mut self, header: &str, share: f64) -> Self {
        self.header = Some(header.to_string());
        self.header_share = share;
        self
    }

    /// Requests to `path` (not `/`).
    pub fn with_path(mut self, path: &str) -> Self {
        self.path = Some(path.to_string());
        self
    }

    /// Requests enter through Istio Gateway `gateway` instead of the caller's sidecar.
    pub fn through_gateway(mut self, gateway: &str) -> Self {
        self.gateway = Some(gateway.to_string());
        self
    }
}

/// A client sending a steady request rate into the data plane (`canary-demo drive`), as a
/// caller of `host` through `via`. Where requests land is measured with [`Counts`].
pub struct Traffic {
    driver: DemoProcess,
}

impl Traffic {
    /// The client of `provider`'s entry for `svc`, 60 rps for at most 300 s.
    pub fn start(ns: &str, provider: Provider, svc: &str) -> Traffic {
        Self::start_with(
            ns,
            provider.via(),
            &provider.entry_host(svc),
            TrafficOptions::default(),
        )
    }

    pub fn start_with(ns: &str, via: &str, host: &str, o: TrafficOptions) -> Traffic {
        let env = TestEnv::get();
        let mut args: Vec<String> = [
            "drive",
            "--mesh",
            &env.mesh_proxy,
            "--via",
            via,
            "--namespace",
            ns,
            "--host",
            host,
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        args.extend([
            "--rps".into(),
            o.rps.to_string(),
            "--duration".into(),
            o.duration.as_secs_f64().to_string(),
        ]);
        if let Some(h) = &o.header {
            args.extend([
                "--header".into(),
                h.clone(),
                "--header-share".into(),
                o.header_share.to_string(),
            ]);
        }
        if let Some(p) = &o.path {
            args.extend(["--path".into(), p.clone()]);
        }
        if let Some(g) = &o.gateway {
            args.extend(["--gateway".into(), g.clone()]);
        }
        Traffic {
            driver: DemoProcess::spawn(&args),
        }
    }

    pub fn assert_running(&self) {
        self.driver.assert_running();
    }
}

/// One pod as the data plane runs it, with the requests its own process counted.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct PodCount {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub deployment: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub addr: Option<String>,
    /// false: the pod is gone and these counts are final.
    pub live: bool,
    pub requests: u64,
    pub by_code: BTreeMap<String, u64>,
}

async fn mesh_get(path: &str) -> Value {
    let url = format!("http://{}{path}", TestEnv::get().mesh_admin);
    // A pooled connection the admin server just closed fails once; try again.
    let mut last = None;
    for _ in 0..3 {
        match http().get(&url).send().await {
            Ok(r) => return r.json().await.unwrap_or_else(|e| panic!("GET {url}: {e}")),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("GET {url}: {last:?} (is the data plane up? tests/env/up)")
}

/// Every pod of `ns` the data plane has run (live and departed).
pub async fn mesh_pods(ns: &str) -> Vec<PodCount> {
    serde_json::from_value(mesh_get(&format!("/pods?namespace={ns}")).await)
        .expect("mesh /pods JSON")
}

/// What the pods of a namespace served, and what the data plane answered itself, at one moment.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// pod uid → (Deployment, requests, 5xx)
    pub pods: BTreeMap<String, (String, u64, u64)>,
    /// Requests the data plane answered itself, by status (503 = no healthy upstream).
    pub local_replies: BTreeMap<u16, u64>,
    pub at: Option<Instant>,
}

/// Requests over an interval: per Deployment, plus the data plane's own answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Served {
    pub by_deployment: BTreeMap<String, u64>,
    pub errors_by_deployment: BTreeMap<String, u64>,
    pub local_replies: BTreeMap<u16, u64>,
}

impl Counts {
    pub async fn now(ns: &str) -> Counts {
        let pods = mesh_pods(ns)
            .await
            .into_iter()
            .map(|p| {
                let errors = p
                    .by_code
                    .iter()
                    .filter(|(c, _)| c.starts_with('5'))
                    .map(|(_, n)| n)
                    .sum();
                (
                    p.uid,
                    (p.deployment.unwrap_or_default(), p.requests, errors),
                )
            })
            .collect();
        let mut local_replies = BTreeMap::new();
        for row in mesh_get(&format!("/stats?namespace={ns}"))
            .await
            .as_array()
            .into_iter()
            .flatten()
        {
            if row["local_reply"] == true {
                *local_replies
                    .entry(row["status"].as_u64().unwrap_or(0) as u16)
                    .or_default() += row["requests"].as_u64().unwrap_or(0);
            }
        }
        Counts {
            pods,
            local_replies,
            at: Some(Instant::now()),
        }
    }

    /// What was served between `earlier` and `self`.
    pub fn since(&self, earlier: &Counts) -> Served {
        let mut s = Served::default();
        for (uid, (dep, n, e)) in &self.pods {
            let (n0, e0) = earlier
                .pods
                .get(uid)
                .map(|(_, n, e)| (*n, *e))
                .unwrap_or((0, 0));
            *s.by_deployment.entry(dep.clone()).or_default() += n.saturating_sub(n0);
            *s.errors_by_deployment.entry(dep.clone()).or_default() += e.saturating_sub(e0);
        }
        for (st, n) in &self.local_replies {
            let n0 = earlier.local_replies.get(st).copied().unwrap_or(0);
            s.local_replies.insert(*st, n.saturating_sub(n0));
        }
        s
    }
}

impl Served {
    /// All requests: served by a pod or answered by the data plane.
    pub fn total(&self) -> u64 {
        self.by_deployment.values().sum::<u64>() + self.local_replies.values().sum::<u64>()
    }

    pub fn of(&self, deployment: &str) -> u64 {
        self.by_deployment.get(deployment).copied().unwrap_or(0)
    }

    /// Share of all requests that reached pods of `deployment` (None without requests).
    pub fn share(&self, deployment: &str) -> Option<f64> {
        let t = self.total();
        (t > 0).then(|| self.of(deployment) as f64 / t as f64)
    }

    pub fn no_upstream(&self) -> u64 {
        self.local_replies.get(&503).copied().unwrap_or(0)
    }
}

/// Count what the pods of `ns` serve during `window`.
pub async fn measure(ns: &str, window: Duration) -> Served {
    let a = Counts::now(ns).await;
    tokio::time::sleep(window).await;
    Counts::now(ns).await.since(&a)
}

/// Wait until the data plane runs `n` live pods of Deployment `deployment` and Prometheus
/// scrapes them.
pub async fn wait_serving(ns: &str, deployment: &str, n: usize, timeout: Duration) {
    wait_for(
        timeout,
        &format!("data plane running {n} pods of {ns}/{deployment}"),
        || async move {
            mesh_pods(ns)
                .await
                .iter()
                .filter(|p| p.live && p.deployment.as_deref() == Some(deployment))
                .count()
                >= n
        },
    )
    .await;
    let q = format!(
        "count(up{{job=\"canary-demo\",canary_demo_namespace=\"{ns}\",canary_demo_deployment=\"{deployment}\"}} == 1)"
    );
    wait_for(
        timeout,
        &format!("Prometheus scraping {n} pods of {ns}/{deployment} ({q})"),
        || {
            let q = q.clone();
            async move { prom_query(&q).await.is_some_and(|v| v >= n as f64) }
        },
    )
    .await;
}

/// POST a (partial) fault state, e.g. `json!({"error_rate": 0.5})`, to every live pod of
/// `deployment` (for faults that start mid-run; a pod's initial behaviour comes from its
/// image tag, see tests/env/README.md).
pub async fn inject_fault(ns: &str, deployment: &str, fault: Value) {
    let pods: Vec<PodCount> = mesh_pods(ns)
        .await
        .into_iter()
        .filter(|p| p.live && p.deployment.as_deref() == Some(deployment))
        .collect();
    assert!(
        !pods.is_empty(),
        "no live pod of {ns}/{deployment} to inject {fault}"
    );
    for p in pods {
        let url = format!(
            "http://{}/admin/fault",
            p.addr.expect("live pod has an address")
        );
        let resp = http()
            .post(&url)
            .json(&fault)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let status = resp.status();
        assert!(
            status.is_success(),
            "POST {url} -> {status}: {}",
            resp.text().await.unwrap_or_default()
        );
    }
}

/// Serialise access to the shared HTTP client.
fn http() -> &'static reqwest::Client {
    static C: OnceLock<reqwest::Client> = OnceLock::new();
    C.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("reqwest client")
    })
}

/// Instant query; returns all samples as (labels, value) with non-finite values dropped.
pub async fn prom_query_vec(promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let env = TestEnv::get();
    let url = reqwest::Url::parse_with_params(
        &format!("{}/api/v1/query", env.prometheus),
        &[("query", promql)],
    )
    .expect("prometheus URL");
    let resp = http()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("Prometheus query failed ({promql}): {e}"));
    let v: Value = resp.json().await.expect("Prometheus JSON");
    assert_eq!(v["status"], "success", "Prometheus error for {promql}: {v}");
    let data = &v["data"];
    let parse = |x: &Value| {
        x.get(1)
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<f64>().ok())
    };
    match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                let val = parse(&s["value"]).filter(|f| f.is_finite())?;
                let labels = s["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                Some((labels, val))
            })
            .collect(),
        Some("scalar") => parse(&data["result"])
            .filter(|f| f.is_finite())
            .map(|f| vec![(BTreeMap::new(), f)])
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Instant query returning the first sample's value; empty result, NaN or ±Inf → None.
pub async fn prom_query(promql: &str) -> Option<f64> {
    prom_query_vec(promql)
        .await
        .into_iter()
        .next()
        .map(|(_, v)| v)
}

/// Process-wide lock for tests that must not overlap (rarely needed).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|e| e.into_inner())
}
