//! `canary-demo`: the demo workload used by kubectl-canary's integration tests.
//!
//! * `serve` runs one version (stable or canary) of a tiny HTTP service and
//!   exports, per request served, the metrics a service mesh / ingress
//!   controller would export for it (Istio, Linkerd, ingress-nginx, generic),
//!   plus service signals used by hooks (Kafka lag, Cassandra latency, Kong
//!   gateway overhead). Faults can be injected at run time.
//!   One process stands for one pod; `mesh` starts them.
//! * `mesh` is the test data plane: one `serve` process per Running pod, and a proxy that
//!   routes each request through the real object graph (Service → EndpointSlices → pod,
//!   VirtualService/DestinationRule, TrafficSplit, Ingress, HTTPRoute semantics).
//! * `drive` sends a bounded request rate into the mesh as a client of one entry.

mod drive;
mod mesh;
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
    /// Exit when standard input reaches end-of-file: a parent that keeps a
    /// pipe open to our stdin takes us down with it, even if it is killed.
    #[arg(long, global = true)]
    exit_on_stdin_eof: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve one version of the demo service and export mesh-style metrics.
    Serve(serve::ServeArgs),
    /// The test data plane: a process per pod, routing through the real object graph.
    Mesh(mesh::MeshArgs),
    /// Send a bounded request rate into the mesh.
    Drive(drive::DriveArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // kube's rustls needs a process-level crypto provider; pick one explicitly
    // so the result does not depend on which features the workspace unifies.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    if cli.exit_on_stdin_eof {
        std::thread::spawn(|| {
            let mut sink = [0u8; 256];
            let mut stdin = std::io::stdin().lock();
            while let Ok(n) = std::io::Read::read(&mut stdin, &mut sink) {
                if n == 0 {
                    break;
                }
            }
            std::process::exit(0);
        });
    }
    match cli.cmd {
        Cmd::Serve(a) => serve::run(a).await,
        Cmd::Mesh(a) => mesh::run(a).await,
        Cmd::Drive(a) => drive::run(a).await,
    }
}
