//! kubectl-canary: see the README. All logic lives in the library crate.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    quiet_on_closed_stdout();
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

/// `kubectl canary simulate | head`: when the reader closes the pipe, Rust's `println!`
/// panics ("failed printing to stdout: Broken pipe") where C programs die of SIGPIPE. Exit
/// as they do (128 + 13), without the panic message; other panics keep the default hook.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
