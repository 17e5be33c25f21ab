//! Command-line surface (clap derive). One file per command under `commands/`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-canary",
    bin_name = "kubectl canary",
    version,
    about = "Canary rollouts on Kubernetes, steered by Rhai policy scripts",
    long_about = "Canary rollouts on Kubernetes, steered by Rhai policy scripts.\n\n\
        The plugin is the engine: no controller to install. The rollout's state lives in the \
        cluster (a ConfigMap next to the service), so any operator can continue it.\n\n\
        Start offline: `kubectl canary simulate` runs the default policy against a simulated service.",
    after_help = "Exit codes: 0 ok/promoted, 1 error, 2 usage, 3 rolled back or aborted, 4 paused, 5 still running / inconclusive."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
    Yaml,
    /// A self-contained HTML page (`report` only; it is report's default).
    Html,
}

/// Help heading of kubectl's own flags, kept apart from each command's options as kubectl
/// keeps its global flags apart.
const KUBE_FLAGS: &str = "Kubernetes flags (as kubectl's)";
/// Help heading of the plugin's options that every command takes.
const GLOBAL_OPTIONS: &str = "Global options";

/// kubectl's own flags, parsed by the plugin (kubectl passes them through unchanged).
#[derive(Debug, Clone, Args, Default)]
pub struct GlobalArgs {
    /// Path to the kubeconfig file to use.
    #[arg(long, global = true, env = "KUBECONFIG", value_name = "FILE", help_heading = KUBE_FLAGS)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true, help_heading = KUBE_FLAGS)]
    pub context: Option<String>,
    /// The kubeconfig cluster to use.
    #[arg(long, global = true, help_heading = KUBE_FLAGS)]
    pub cluster: Option<String>,
    /// The kubeconfig user to use.
    #[arg(long, global = true, help_heading = KUBE_FLAGS)]
    pub user: Option<String>,
    /// Namespace of the service (default: the context's namespace).
    #[arg(short = 'n', long, global = true, help_heading = KUBE_FLAGS)]
    pub namespace: Option<String>,
    /// List rollouts across all namespaces (status).
    #[arg(short = 'A', long = "all-namespaces", global = true, help_heading = KUBE_FLAGS)]
    pub all_namespaces: bool,
    /// Username to impersonate.
    #[arg(long = "as", global = true, value_name = "USER", help_heading = KUBE_FLAGS)]
    pub impersonate: Option<String>,
    /// Group to impersonate (repeatable).
    #[arg(long = "as-group", global = true, value_name = "GROUP", help_heading = KUBE_FLAGS)]
    pub impersonate_groups: Vec<String>,
    /// Timeout of a single API request, e.g. 10s, 1m ("0" = no timeout).
    #[arg(long = "request-timeout", global = true, value_name = "DURATION", help_heading = KUBE_FLAGS)]
    pub request_timeout: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Table, help_heading = GLOBAL_OPTIONS)]
    pub output: OutputFormat,
    /// Extra directory to search for hook scripts (repeatable; the shipped hooks are always available).
    #[arg(long = "plugin-dir", global = true, value_name = "DIR", help_heading = GLOBAL_OPTIONS)]
    pub plugin_dirs: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Policy file, or the name of a shipped policy (default, istio-runbook, progressive-review,
    /// relative-to-stable, eighty-twenty, statistical).
    #[arg(long, short = 'p', value_name = "FILE|NAME", default_value = "default")]
    pub policy: String,
    /// Policy parameter KEY=VALUE, read by the policy with ctx.param("KEY", default) (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ServiceArg {
    /// Name of the stable Deployment and its Service.
    pub service: String,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the canary next to the stable Deployment and route the first weight to it.
    #[command(
        after_help = "Example:\n  kubectl canary start checkout --image app=registry.example/checkout:1.4.0 --policy policies/default.rhai"
    )]
    Start(StartArgs),
    /// Evaluate the policy once now and apply its decision.
    #[command(after_help = "Example:\n  kubectl canary step checkout -n shop")]
    Step(StepArgs),
    /// Evaluate at the policy's interval until the rollout ends, with a live view.
    #[command(after_help = "Example:\n  kubectl canary run checkout -n shop")]
    Run(RunArgs),
    /// Show one rollout in detail, or all rollouts of a namespace (-A: all namespaces).
    #[command(
        visible_alias = "get",
        after_help = "Examples:\n  kubectl canary status checkout\n  kubectl canary get -A -o json"
    )]
    Status(StatusArgs),
    /// Make the canary the new stable now (skips the remaining steps).
    #[command(after_help = "Example:\n  kubectl canary promote checkout --reason 'verified by QA'")]
    Promote(ReasonArgs),
    /// Send all traffic back to stable (weight 0 first), then scale the canary down.
    #[command(
        after_help = "Example:\n  kubectl canary rollback checkout --reason 'p99 regression'"
    )]
    Rollback(RollbackArgs),
    /// Stop the rollout: traffic back to stable, canary scaled down, marked aborted.
    #[command(after_help = "Example:\n  kubectl canary abort checkout --reason 'wrong image'")]
    Abort(ReasonArgs),
    /// Hold the rollout at its current weight until resumed.
    #[command(
        after_help = "Example:\n  kubectl canary pause checkout --reason 'waiting for the batch job'"
    )]
    Pause(ReasonArgs),
    /// Resume a paused rollout.
    #[command(after_help = "Example:\n  kubectl canary resume checkout")]
    Resume(ReasonArgs),
    /// Every transition with time, decision, reason and the metric values behind it.
    #[command(after_help = "Example:\n  kubectl canary history checkout -o yaml")]
    History(HistoryArgs),
    /// Write a rollout's report: one self-contained HTML page (charts, decisions, rollback timings).
    #[command(
        after_help = "Examples:\n  kubectl canary report checkout -n shop --prometheus-url http://prometheus.monitoring:9090\n  kubectl canary report checkout --previous 1 --file last.html\n  kubectl canary report checkout -o json"
    )]
    Report(ReportArgs),
    /// Run each track's metric queries now and, for every one without data, say why: the
    /// label or value Prometheus does not have, what it has instead, and the fix.
    #[command(
        name = "check-metrics",
        after_help = "Examples:\n  kubectl canary check-metrics checkout -n shop --prometheus-url http://prometheus.monitoring:9090\n  kubectl canary check-metrics checkout --metrics generic --prometheus-url http://localhost:9090 -o json"
    )]
    CheckMetrics(CheckMetricsArgs),
    /// Run a policy against a simulated service on a virtual clock (no cluster needed).
    #[command(
        after_help = "Examples:\n  kubectl canary simulate\n  kubectl canary simulate --policy statistical --scenario aa-low-traffic\n  kubectl canary simulate --policy my.rhai --scenario my-scenario.yaml -o json\n  kubectl canary simulate --list"
    )]
    Simulate(SimulateArgs),
    /// Check and test policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Install the in-cluster runner: a Deployment running `run --all`, its ServiceAccount and
    /// a least-privilege Role (-A: ClusterRole, all namespaces).
    #[command(
        name = "install-runner",
        after_help = "Examples:\n  kubectl canary install-runner -n shop --image registry.example/kubectl-canary:0.1.0\n  kubectl canary install-runner -A --dry-run -o yaml"
    )]
    InstallRunner(InstallRunnerArgs),
    /// Print the version, git commit and build target.
    #[command(after_help = "Example:\n  kubectl canary version -o json")]
    Version,
    /// Print a shell completion script.
    #[command(after_help = "Example:\n  source <(kubectl canary completion bash)")]
    Completion(CompletionArgs),
    /// Completion backend of kubectl_complete-canary (Cobra's `__complete` protocol):
    /// prints the candidates for the last word, then `:<directive>`.
    #[command(name = "__complete", hide = true)]
    Complete {
        /// The words after `kubectl canary`; the last one is the word being completed.
        #[arg(num_args = 0.., allow_hyphen_values = true, trailing_var_arg = true)]
        words: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct StartArgs {
    #[command(flatten)]
    pub service: ServiceArg,
    /// New image for a container, CONTAINER=IMAGE (repeatable).
    #[arg(
        long,
        required_unless_present = "filename",
        value_name = "CONTAINER=IMAGE"
    )]
    pub image: Vec<String>,
    /// The canary's whole pod template from a manifest with the stable Deployment in it
    /// (e.g. `helm template` output), so env, config and resource changes can be canaried;
    /// promote gives stable exactly that template. `--image` then overrides images in it.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub filename: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Traffic provider (default: detected from the objects that exist).
    #[arg(long, value_parser = crate::providers::registry::value_parser())]
    pub provider: Option<String>,
    /// Canary replicas (default: the policy's canary_replicas).
    #[arg(long)]
    pub replicas: Option<u32>,
    /// How long to wait for the canary pods to become ready.
    #[arg(long, default_value = "5m")]
    pub timeout: humantime::Duration,
    /// Show what would change without changing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Override a value of the policy's schedule, KEY=VALUE (repeatable or comma-separated):
    /// min_step_time, interval, min_requests, max_duration (or "none"), canary_replicas,
    /// steps (e.g. 5/25/50/100), on_error. Recorded in the rollout state.
    #[arg(
        long = "schedule-override",
        value_name = "KEY=VALUE",
        value_delimiter = ','
    )]
    pub schedule_overrides: Vec<String>,
    /// Extra label on the canary pods, KEY=VALUE (repeatable).
    #[arg(long = "canary-label", value_name = "KEY=VALUE")]
    pub canary_labels: Vec<String>,
    /// Route object name (VirtualService, TrafficSplit, Ingress, HTTPRoute); default: the service name.
    #[arg(long, value_name = "NAME")]
    pub route: Option<String>,
    /// The stable Deployment (default: the Deployment named like the service, else the one
    /// whose pods the Service selects, e.g. bookinfo's reviews-v1 for Service reviews).
    #[arg(long, value_name = "DEPLOYMENT")]
    pub stable: Option<String>,
    /// An existing Deployment to use as the canary (default `<service>-canary`), e.g. a
    /// team's `ai-gateway-v2` waiting at 0 replicas. It is re-imaged and scaled for the
    /// rollout and scaled back to 0 at the end; it is never deleted, and its pods keep the
    /// labels the team's routes select them by.
    #[arg(long, value_name = "DEPLOYMENT")]
    pub canary: Option<String>,
    /// Webhook for every transition (repeatable): `format=json|slack` plus `url=URL` or
    /// `url-secret=SECRET/KEY` (the URL is read from that Secret when sending), and optionally
    /// `token-secret=SECRET/KEY` (sent as a bearer token). Only the references are stored.
    #[arg(long = "notify", value_name = "SPEC")]
    pub notify: Vec<String>,
    /// With Prometheus, start checks that the stable track has data and says why not.
    #[command(flatten)]
    pub prometheus: PrometheusArgs,
}

/// Where metrics come from (Prometheus HTTP API).
#[derive(Debug, Clone, Args, Default)]
pub struct PrometheusArgs {
    /// Prometheus base URL, e.g. http://prometheus.monitoring:9090.
    #[arg(
        long = "prometheus-url",
        env = "KUBECTL_CANARY_PROMETHEUS_URL",
        value_name = "URL"
    )]
    pub url: Option<String>,
    /// Bearer token for Prometheus.
    #[arg(
        long = "prometheus-token",
        env = "KUBECTL_CANARY_PROMETHEUS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Basic-auth user for Prometheus.
    #[arg(
        long = "prometheus-user",
        env = "KUBECTL_CANARY_PROMETHEUS_USER",
        value_name = "USER"
    )]
    pub user: Option<String>,
    /// Basic-auth password for Prometheus.
    #[arg(
        long = "prometheus-password",
        env = "KUBECTL_CANARY_PROMETHEUS_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// Extra CA certificate (PEM) to trust for Prometheus.
    #[arg(
        long = "prometheus-ca",
        env = "KUBECTL_CANARY_PROMETHEUS_CA",
        value_name = "FILE"
    )]
    pub ca: Option<PathBuf>,
    /// Accept any TLS certificate from Prometheus (testing only).
    #[arg(long = "prometheus-insecure-skip-verify")]
    pub insecure: bool,
    /// Timeout of one Prometheus query.
    #[arg(
        id = "prometheus_timeout",
        long = "prometheus-timeout",
        default_value = "10s",
        value_name = "DURATION"
    )]
    pub timeout: humantime::Duration,
    /// Prometheus' scrape interval (lower bound of every range).
    #[arg(
        long = "scrape-interval",
        env = "KUBECTL_CANARY_SCRAPE_INTERVAL",
        default_value = "15s",
        value_name = "DURATION"
    )]
    pub scrape_interval: humantime::Duration,
    /// Range for rates, error ratios and latency quantiles.
    #[arg(
        long = "metrics-window",
        default_value = "60s",
        value_name = "DURATION"
    )]
    pub window: humantime::Duration,
}

#[derive(Debug, Args)]
pub struct StepArgs {
    #[command(flatten)]
    pub service: ServiceArg,
    #[command(flatten)]
    pub prometheus: PrometheusArgs,
    /// Show what would change without changing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Step even though a `run` holds the rollout's lease (its CAS still keeps a transition
    /// from happening twice).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Name of the stable Deployment and its Service (omit with --all).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub service: Option<String>,
    #[command(flatten)]
    pub prometheus: PrometheusArgs,
    /// Show what would change without changing anything.
    #[arg(long, conflicts_with = "all")]
    pub dry_run: bool,
    /// Stop watching after this long (the rollout stays resumable).
    #[arg(long)]
    pub max_time: Option<humantime::Duration>,
    /// Drive every active rollout of the namespace (-n) or of all namespaces (-A), picking
    /// up new ones as they start; several `run --all` share the rollouts by their leases.
    #[arg(long)]
    pub all: bool,
    /// With --all: how often to look for rollouts that started.
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    pub discover_interval: humantime::Duration,
    /// Take the rollout's lease now even if another runner holds it (that runner stops
    /// driving at its next renewal).
    #[arg(long)]
    pub take_over: bool,
}

#[derive(Debug, Args)]
pub struct InstallRunnerArgs {
    /// Print the manifests instead of applying them.
    #[arg(long)]
    pub dry_run: bool,
    /// The runner image (built from the Dockerfile).
    #[arg(long, default_value = concat!("kubectl-canary:", env!("CARGO_PKG_VERSION")))]
    pub image: String,
    /// Runner replicas; they share the rollouts by their leases.
    #[arg(long, default_value_t = 3)]
    pub replicas: u32,
    /// Prometheus base URL the runner reads metrics from.
    #[arg(long = "prometheus-url", value_name = "URL")]
    pub prometheus_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Service name; omit to list all rollouts in the namespace.
    pub service: Option<String>,
    /// Keep watching and redraw on change.
    #[arg(long, short = 'w')]
    pub watch: bool,
    /// For a rolled-back rollout, Prometheus tells when the canary's traffic reached 0.
    #[command(flatten)]
    pub prometheus: PrometheusArgs,
    /// In the list: also read each rollout's route weight and pods (requests per rollout).
    #[arg(long)]
    pub detail: bool,
}

#[derive(Debug, Args)]
pub struct ReasonArgs {
    #[command(flatten)]
    pub service: ServiceArg,
    /// Why (recorded in history and in the Event).
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub inner: ReasonArgs,
    /// Delete the canary Deployment instead of scaling it to 0.
    #[arg(long)]
    pub delete: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub service: ServiceArg,
    /// Only what happened since then: a duration back from now (30m, 2h, 7d) or a time
    /// (2026-01-31T12:00:00Z, 2026-01-31).
    #[arg(long, value_name = "DURATION|TIME")]
    pub since: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub service: ServiceArg,
    /// Report an earlier rollout: 1 is the most recent finished one before the current.
    #[arg(long, value_name = "N")]
    pub previous: Option<usize>,
    /// Where to write the HTML page ("-": stdout). Default: SERVICE-report.html.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Charts from range queries at full resolution, and the canary's traffic after a rollback.
    #[command(flatten)]
    pub prometheus: PrometheusArgs,
}

#[derive(Debug, Args)]
pub struct CheckMetricsArgs {
    #[command(flatten)]
    pub service: ServiceArg,
    /// Metric family to check (istio, linkerd, nginx, generic). Default: the rollout's, else
    /// the detected provider's.
    #[arg(long, value_name = "FLAVOUR", value_parser = parse_flavour)]
    pub metrics: Option<crate::core::schedule::MetricsFlavour>,
    #[command(flatten)]
    pub prometheus: PrometheusArgs,
}

fn parse_flavour(s: &str) -> Result<crate::core::schedule::MetricsFlavour, String> {
    crate::core::schedule::MetricsFlavour::parse(s)
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Built-in scenario name or a scenario YAML file.
    #[arg(long, short = 's', default_value = "healthy", value_name = "NAME|FILE")]
    pub scenario: String,
    /// Random seed; the same seed gives the same timeline.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// List the built-in scenarios and exit.
    #[arg(long)]
    pub list: bool,
    /// Show every evaluation, not only transitions and changes of reason.
    #[arg(long)]
    pub verbose: bool,
    /// Also write the simulated rollout's report (self-contained HTML) to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate syntax and the policy contract (schedule() and decide(ctx)).
    #[command(after_help = "Example:\n  kubectl canary policy check policies/*.rhai")]
    Check {
        /// Policy files (or shipped policy names).
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Run a policy against scenario files that state the expected outcome.
    #[command(
        after_help = "Example:\n  kubectl canary policy test policies/default.rhai --scenario tests/scenarios/*.yaml"
    )]
    Test {
        /// Policy file (or shipped policy name).
        policy: String,
        /// Scenario files or built-in names with an `expect:` block (repeatable).
        #[arg(long, short = 's', required = true, num_args = 1..)]
        scenario: Vec<String>,
        /// Policy parameter KEY=VALUE (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

impl GlobalArgs {
    /// kubectl's connection flags, for the cluster adapter.
    pub fn connection(&self) -> crate::cluster::client::Connection {
        crate::cluster::client::Connection {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            cluster: self.cluster.clone(),
            user: self.user.clone(),
            namespace: self.namespace.clone(),
            impersonate: self.impersonate.clone(),
            impersonate_groups: self.impersonate_groups.clone(),
            request_timeout: self.request_timeout.clone(),
        }
    }
}

impl PrometheusArgs {
    /// The Prometheus client's configuration; None without a URL (no metrics source).
    pub fn config(&self) -> Option<crate::metrics::prometheus::PrometheusConfig> {
        use crate::metrics::prometheus::{Auth, PrometheusConfig};
        let url = self.url.clone().filter(|u| !u.is_empty())?;
        let auth = match (&self.token, &self.user) {
            (Some(t), _) => Auth::Bearer(t.clone()),
            (None, Some(u)) => Auth::Basic {
                username: u.clone(),
                password: self.password.clone(),
            },
            (None, None) => Auth::None,
        };
        Some(PrometheusConfig {
            base_url: url,
            timeout: self.timeout.into(),
            auth,
            ca_cert: self.ca.clone(),
            insecure_skip_verify: self.insecure,
            window: self.window.into(),
            scrape_interval: self.scrape_interval.into(),
            ..PrometheusConfig::default()
        })
    }
}
