//! kubectl-canary: see the README. All logic lives in the library crate.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    kubectl_canary::app::main().await
}
