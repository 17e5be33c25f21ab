//! `canary-demo`: the demo workload used by kubectl-canary's integration tests.
//!
//! * `serve` runs one version (stable or canary) of a tiny HTTP service and
//!   exports, per request served, the metrics a service mesh / ingress
//!   controller would export for it (Istio, Linkerd, ingress-nginx, generic),
//!   plus service signals used by hooks (Kafka lag, Cassandra latency, Kong
//!   gateway overhead). Faults can be injected at run time.
//! * `drive` watches a route object (VirtualService, TrafficSplit, canary
//!   Ingress, HTTPRoute) through the API server and sends a bounded request
//!   rate to loopback backends, split by the route's current weights.

mod drive;
mod metrics;
mod rng;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "canary-demo",
    version,
    about = "Demo workload for kubectl-canary tests"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve one version of the demo service and export mesh-style metrics.
    Serve(serve::ServeArgs),
    /// Send traffic to backends, split by the weights of a watched route object.
    Drive(drive::DriveArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve(a) => serve::run(a).await,
        Cmd::Drive(a) => drive::run(a).await,
    }
}
