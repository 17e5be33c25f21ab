//! The policy and hook examples in README.md are real: extracted from the README, compiled
//! and simulated here, so the README cannot drift from what the engine accepts.

use kubectl_canary::controller::Evaluator;
use kubectl_canary::policy::{Limits, PolicyEngine};
use kubectl_canary::sim::{self, Outcome, Scenario};

/// The body of the fenced code block whose first line starts with `first_line`.
fn readme_block(first_line: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut lines = readme.lines().skip_while(|l| !l.starts_with(first_line));
    let mut block = Vec::new();
    for l in lines.by_ref() {
        if l.starts_with("```") {
            break;
        }
        block.push(l);
    }
    assert!(
        !block.is_empty(),
        "README has no block starting with {first_line:?}"
    );
    block.join("\n")
}

fn simulate(engine: &PolicyEngine, text: &str, scenario: &str) -> sim::Report {
    let limits = Limits::default();
    let policy = engine
        .compile("README.md#checkout.rhai", text, &limits)
        .unwrap_or_else(|e| panic!("README policy must compile: {e}"));
    let params = rhai::Map::new();
    let evaluator = Evaluator {
        engine,
        policy: &policy,
        limits: &limits,
        service: "checkout",
        params: &params,
    };
    sim::run(&evaluator, &Scenario::load(scenario).unwrap(), 1)
}

#[test]
fn readme_policy_decides_like_the_readme_says() {
    let engine = PolicyEngine::new(Vec::new(), &Limits::default());
    let text = readme_block("// checkout.rhai");
    let cases = [
        ("healthy", Outcome::Promoted),
        ("error-spike", Outcome::RolledBack),
        ("latency-regression", Outcome::RolledBack),
        ("kafka-lag", Outcome::Paused),
        ("crash-loop", Outcome::RolledBack),
    ];
    for (scenario, expected) in cases {
        let report = simulate(&engine, &text, scenario);
        assert_eq!(report.outcome, expected, "{scenario}: {}", report.reason);
    }
}

#[test]
fn readme_hook_example_works_as_a_hook() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("queue-depth.rhai"),
        readme_block("// plugins/queue-depth.rhai"),
    )
    .unwrap();
    let engine = PolicyEngine::new(vec![dir.path().to_path_buf()], &Limits::default());
    let policy = r#"
import "queue-depth" as queue;
fn schedule() { #{ steps: [50, 100], min_step_time: "1m", min_requests: 10, queries: queue::queries(#{}) } }
fn decide(ctx) {
    let d = queue::check(ctx, #{ max_depth: 100 });
    if d != () { return d; }
    advance()
}
"#;
    let scenario = |depth: f64| {
        let mut s = Scenario::load("healthy").unwrap();
        s.signals.insert("queue_depth".into(), depth);
        s
    };
    let limits = Limits::default();
    let policy = engine.compile("hook-user.rhai", policy, &limits).unwrap();
    let params = rhai::Map::new();
    let evaluator = Evaluator {
        engine: &engine,
        policy: &policy,
        limits: &limits,
        service: "s",
        params: &params,
    };
    assert_eq!(
        sim::run(&evaluator, &scenario(20.0), 1).outcome,
        Outcome::Promoted
    );
    let deep = sim::run(&evaluator, &scenario(500.0), 1);
    assert_eq!(deep.outcome, Outcome::Paused, "{}", deep.reason);
    assert!(deep.reason.contains("queue depth"), "{}", deep.reason);
}

/// Every `kubectl canary …` example in README.md (code blocks and the command table) is a
/// command line the plugin accepts: none ends in a usage error (exit 2), so an example with a
/// flag a command does not have cannot recur. Cluster commands point at a cluster that does
/// not answer and fail with exit 1 (a cluster error) after parsing; offline ones just run.
#[test]
fn every_command_example_parses() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    // A cluster on a loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n\
             users: [{{name: u, user: {{token: x}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: u}}}}]\ncurrent-context: c\n"
        ),
    )
    .unwrap();
    // The README's own policy file, as `checkout.rhai`, and the repository's files it names.
    std::fs::write(
        dir.path().join("checkout.rhai"),
        readme_block("// checkout.rhai"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("checkout-bad-build.yaml"),
        readme_block("name: checkout-bad-build"),
    )
    .unwrap();
    for d in ["policies", "plugins", "tests"] {
        std::os::unix::fs::symlink(
            concat!(env!("CARGO_MANIFEST_DIR"), "/").to_string() + d,
            dir.path().join(d),
        )
        .unwrap();
    }
    let mut examples = Vec::new();
    let mut pending = String::new();
    for line in readme.lines() {
        // Inline examples in the table: `kubectl canary …`.
        for part in line.split('`').skip(1).step_by(2) {
            if let Some(rest) = part.strip_prefix("kubectl canary ")
                && !line.trim_start().starts_with("kubectl")
            {
                examples.push(rest.to_string());
            }
        }
        let t = line.trim();
        if !pending.is_empty() {
            pending.push(' ');
            pending.push_str(t.trim_end_matches('\\'));
            if !t.ends_with('\\') {
                examples.push(std::mem::take(&mut pending));
            }
            continue;
        }
        if let Some(rest) = t.strip_prefix("kubectl canary ") {
            let rest = rest.split(" #").next().unwrap_or(rest).trim();
            if rest.ends_with('\\') {
                pending = rest.trim_end_matches('\\').to_string();
            } else {
                examples.push(rest.to_string());
            }
        }
    }
    assert!(examples.len() >= 20, "examples found: {examples:?}");
    let mut checked = 0;
    for ex in &examples {
        let words = shell_words(ex);
        // Shell constructs and placeholders are not command lines.
        if words
            .iter()
            .any(|w| w.contains('<') || w.contains('…') || w.contains('|') || w.contains('*'))
        {
            continue;
        }
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-canary"))
            .args(&words)
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBECTL_CANARY_PROMETHEUS_URL")
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A usage error exits at once; a command still running after a while (`run --all`
        // keeps retrying an unreachable cluster) has parsed its arguments.
        let started = std::time::Instant::now();
        while child.try_wait().unwrap().is_none()
            && started.elapsed() < std::time::Duration::from_secs(10)
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        let code = out.status.code();
        assert_ne!(
            code,
            Some(2),
            "README example `kubectl canary {ex}` is refused as a usage error:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 20, "checked only {checked} of {examples:?}");
}

/// Words of a shell command line: whitespace-separated, double quotes group.
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}
