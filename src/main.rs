//! kubectl-canary: see the README. All logic lives in the library crate.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // A promotion polls deeply nested futures, and unoptimized builds keep large frames:
        // 2 MiB (tokio's default) overflowed in a test build. Only touched pages cost memory.
        .thread_stack_size(8 << 20)
        .build();
    match runtime {
        Ok(rt) => rt.block_on(kubectl_canary::app::main()),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
