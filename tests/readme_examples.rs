//! The examples in README.md and in the book (docs/src/**/*.md) are real: the Rhai blocks are
//! compiled (and the main ones simulated), the scenario blocks loaded, the sample timeline
//! compared with what `simulate` prints, and every `kubectl canary …` line parsed with the
//! real command-line definition and run against a cluster that does not answer. So the
//! documentation cannot drift from what the plugin accepts.

use clap::Parser;
use kubectl_canary::cli::Cli;
use kubectl_canary::controller::Evaluator;
use kubectl_canary::policy::{Limits, PolicyEngine};
use kubectl_canary::sim::{self, Outcome, Scenario};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Where the README's policy and hook examples live now.
const WRITING: &str = "docs/src/policies/writing.md";
const HOOKS: &str = "docs/src/policies/hooks.md";
const SIMULATION: &str = "docs/src/simulation.md";

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel))
        .unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// README.md and every page of the book, as paths relative to the repository.
fn doc_files() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "md") {
                out.push(p);
            }
        }
    }
    let mut pages = Vec::new();
    walk(&Path::new(ROOT).join("docs/src"), &mut pages);
    pages.sort();
    let mut files = vec!["README.md".to_string()];
    files.extend(pages.iter().map(|p| {
        p.strip_prefix(ROOT)
            .unwrap()
            .to_string_lossy()
            .trim_start_matches('/')
            .to_string()
    }));
    assert!(files.len() > 20, "the book has too few pages: {files:?}");
    files
}

/// A fenced code block: its info string (language), first line of the body, body, and the
/// 1-based line of its opening fence.
struct Block {
    lang: String,
    body: String,
    line: usize,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<(String, usize, Vec<&str>)> = None;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim_start();
        match &mut open {
            None if t.starts_with("```") => {
                open = Some((t.trim_start_matches('`').trim().to_string(), i + 1, vec![]))
            }
            None => {}
            Some(_) if t.starts_with("```") => {
                let (lang, line, body) = open.take().unwrap();
                // Blocks inside list items are indented like the item.
                let indent = l.len() - t.len();
                let body: Vec<&str> = body
                    .iter()
                    .map(|b| b.get(indent..).filter(|_| b.len() >= indent).unwrap_or(b))
                    .collect();
                out.push(Block {
                    lang,
                    body: body.join("\n"),
                    line,
                });
            }
            Some((_, _, body)) => body.push(l),
        }
    }
    assert!(open.is_none(), "a fenced block is not closed");
    out
}

/// The body of the fenced block of `file` whose first line starts with `first_line`.
fn doc_block(file: &str, first_line: &str) -> String {
    blocks(&read(file))
        .into_iter()
        .find(|b| b.body.starts_with(first_line))
        .unwrap_or_else(|| panic!("{file} has no block starting with {first_line:?}"))
        .body
}

fn simulate_text(
    engine: &PolicyEngine,
    name: &str,
    text: &str,
    scenario: &Scenario,
) -> sim::Report {
    let limits = Limits::default();
    let policy = engine
        .compile(name, text, &limits)
        .unwrap_or_else(|e| panic!("{name} must compile: {e}"));
    let params = rhai::Map::new();
    let evaluator = Evaluator {
        engine,
        policy: &policy,
        limits: &limits,
        service: "checkout",
        params: &params,
    };
    sim::run(&evaluator, scenario, 1)
}

#[test]
fn readme_policy_decides_like_the_docs_say() {
    let engine = PolicyEngine::new(Vec::new(), &Limits::default());
    let text = doc_block(WRITING, "// checkout.rhai");
    let cases = [
        ("healthy", Outcome::Promoted),
        ("error-spike", Outcome::RolledBack),
        ("latency-regression", Outcome::RolledBack),
        ("kafka-lag", Outcome::Paused),
        ("crash-loop", Outcome::RolledBack),
    ];
    for (scenario, expected) in cases {
        let report = simulate_text(
            &engine,
            "checkout.rhai",
            &text,
            &Scenario::load(scenario).unwrap(),
        );
        assert_eq!(report.outcome, expected, "{scenario}: {}", report.reason);
    }
}

/// The scenario of "Simulation and policy tests" says what the checkout policy does with a
/// bad build (`expect:`), and it does.
#[test]
fn scenario_example_meets_its_expectation_with_the_checkout_policy() {
    let engine = PolicyEngine::new(Vec::new(), &Limits::default());
    let scenario = Scenario::parse(
        "checkout-bad-build.yaml",
        &doc_block(SIMULATION, "name: checkout-bad-build"),
    )
    .unwrap();
    let expect = scenario
        .expect
        .clone()
        .expect("the example has an expect: block");
    let report = simulate_text(
        &engine,
        "checkout.rhai",
        &doc_block(WRITING, "// checkout.rhai"),
        &scenario,
    );
    assert_eq!(report.outcome, expect.outcome, "{}", report.reason);
    if let Some(within) = expect.within {
        let at = std::time::Duration::from_secs(report.outcome_at_secs);
        assert!(
            at <= within,
            "outcome at {at:?}, expected within {within:?}"
        );
    }
}

/// The statistics page's minimal policy rolls back a bad build and promotes a good one.
#[test]
fn statistics_example_decides_on_evidence() {
    let engine = PolicyEngine::new(Vec::new(), &Limits::default());
    let text = doc_block("docs/src/statistics.md", "// evidence.rhai");
    for (scenario, expected) in [
        ("healthy", Outcome::Promoted),
        ("error-spike", Outcome::RolledBack),
    ] {
        let report = simulate_text(
            &engine,
            "evidence.rhai",
            &text,
            &Scenario::load(scenario).unwrap(),
        );
        assert_eq!(report.outcome, expected, "{scenario}: {}", report.reason);
    }
}

#[test]
fn readme_hook_example_works_as_a_hook() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("queue-depth.rhai"),
        doc_block(HOOKS, "// plugins/queue-depth.rhai"),
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

/// Every ```rhai block in README.md and the book compiles: a policy (it has `fn decide`) as a
/// policy, with the hooks of the docs available to it, and a hook (its first line names
/// `plugins/NAME.rhai`) imported by a policy that calls its `queries` and `check`. A Rhai
/// block that is neither is an error: nothing is shown that is not checked.
#[test]
fn every_rhai_block_compiles() {
    let hooks_dir = tempfile::tempdir().unwrap();
    let mut policies = Vec::new();
    let mut hooks = Vec::new();
    for file in doc_files() {
        for b in blocks(&read(&file)) {
            if b.lang == "rust" {
                panic!("{file}:{}: Rhai examples are fenced as ```rhai", b.line);
            }
            if b.lang != "rhai" {
                continue;
            }
            let first = b.body.lines().next().unwrap_or("");
            if let Some(name) = first
                .strip_prefix("// plugins/")
                .and_then(|r| r.split(".rhai").next())
            {
                std::fs::write(hooks_dir.path().join(format!("{name}.rhai")), &b.body).unwrap();
                hooks.push((format!("{file}:{}", b.line), name.to_string()));
            } else if b.body.contains("fn decide(ctx)") {
                policies.push((format!("{file}:{}", b.line), b.body));
            } else {
                panic!(
                    "{file}:{}: a ```rhai block is neither a policy (fn decide) nor a hook \
                     (first line `// plugins/NAME.rhai`)",
                    b.line
                );
            }
        }
    }
    assert!(policies.len() >= 2, "policies found: {policies:?}");
    assert!(!hooks.is_empty(), "no hook example found");
    let limits = Limits::default();
    let engine = PolicyEngine::new(vec![hooks_dir.path().to_path_buf()], &limits);
    for (at, text) in &policies {
        engine
            .compile(at, text, &limits)
            .unwrap_or_else(|e| panic!("{at}: policy does not compile: {e}"));
    }
    for (at, name) in &hooks {
        let user = format!(
            "import \"{name}\" as h;\n\
             fn schedule() {{ #{{ steps: [50, 100], queries: h::queries(#{{}}) }} }}\n\
             fn decide(ctx) {{ let d = h::check(ctx, #{{}}); if d != () {{ return d; }} advance() }}\n"
        );
        engine
            .compile(&format!("{name}-user.rhai"), &user, &limits)
            .unwrap_or_else(|e| panic!("{at}: hook {name} does not compile as a hook: {e}"));
    }
}

/// Every scenario block (```yaml starting with `name:`) is a scenario the simulator loads.
#[test]
fn every_scenario_block_loads() {
    let mut n = 0;
    for file in doc_files() {
        for b in blocks(&read(&file)) {
            if b.lang == "yaml" && b.body.starts_with("name:") {
                Scenario::parse(&format!("{file}:{}", b.line), &b.body)
                    .unwrap_or_else(|e| panic!("{file}:{}: {e}", b.line));
                n += 1;
            }
        }
    }
    assert!(n >= 1, "no scenario block found");
}

/// The sample timelines (README, Getting started) are what `simulate` prints: each line of
/// the sample is a line of the real output, in order; `…` stands for the rest of a line or,
/// alone, for lines left out.
#[test]
fn sample_timeline_is_what_simulate_prints() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-canary"))
        .arg("simulate")
        .current_dir(ROOT)
        .env_remove("KUBECTL_CANARY_PROMETHEUS_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let squash = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
    let real: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(squash)
        .collect();
    let mut samples = 0;
    for file in doc_files() {
        for b in blocks(&read(&file)) {
            if !(b.lang == "text" && b.body.starts_with("policy ")) {
                continue;
            }
            samples += 1;
            let mut at = 0;
            for line in b.body.lines() {
                let (want, prefix) = match line.split_once('…') {
                    Some((before, _)) => (squash(before), true),
                    None => (squash(line), false),
                };
                if want.is_empty() {
                    continue;
                }
                let found = real[at..].iter().position(|r| {
                    if prefix {
                        r.starts_with(&want)
                    } else {
                        *r == want
                    }
                });
                match found {
                    Some(i) => at += i + 1,
                    None => panic!(
                        "{file}:{}: sample line {line:?} is not in `simulate`'s output (in order):\n{}",
                        b.line,
                        real.join("\n")
                    ),
                }
            }
        }
    }
    assert!(samples >= 2, "sample timelines found: {samples}");
}

/// A `kubectl canary …` example with the file and line it is on.
struct Example {
    at: String,
    args: String,
}

/// Every `kubectl canary …` example of README.md and the book: command lines in code blocks
/// (comments after ` #` dropped, `\` continuations joined; `cargo run -- …` counts as the
/// same command) and inline `kubectl canary …` code spans in the text and tables.
fn command_examples() -> Vec<Example> {
    let mut examples = Vec::new();
    for file in doc_files() {
        let text = read(&file);
        let mut pending: Option<(usize, String)> = None;
        for (i, line) in text.lines().enumerate() {
            let at = format!("{file}:{}", i + 1);
            for part in line.split('`').skip(1).step_by(2) {
                if let Some(rest) = part.strip_prefix("kubectl canary ")
                    && !line.trim_start().starts_with("kubectl")
                {
                    examples.push(Example {
                        at: at.clone(),
                        args: rest.to_string(),
                    });
                }
            }
            let t = line.trim();
            if let Some((start, mut acc)) = pending.take() {
                acc.push(' ');
                acc.push_str(t.trim_end_matches('\\'));
                if t.ends_with('\\') {
                    pending = Some((start, acc));
                } else {
                    examples.push(Example {
                        at: format!("{file}:{start}"),
                        args: acc,
                    });
                }
                continue;
            }
            let rest = t
                .strip_prefix("kubectl canary ")
                .or_else(|| t.strip_prefix("cargo run -- "));
            if let Some(rest) = rest {
                let rest = rest.split(" #").next().unwrap_or(rest).trim();
                if rest.ends_with('\\') {
                    pending = Some((i + 1, rest.trim_end_matches('\\').to_string()));
                } else {
                    examples.push(Example {
                        at,
                        args: rest.to_string(),
                    });
                }
            }
        }
    }
    examples
}

/// Words of a shell command line: whitespace-separated, double or single quotes group.
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut cur, mut quote) = (Vec::new(), String::new(), None);
    for c in line.chars() {
        match (c, quote) {
            ('"' | '\'', None) => quote = Some(c),
            (c, Some(q)) if c == q => quote = None,
            (c, None) if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            (c, _) => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// Shell constructs and placeholders (`<svc>`, `…`, `a|b`, globs) are not command lines.
fn is_command_line(words: &[String]) -> bool {
    !words
        .iter()
        .any(|w| w.contains('<') || w.contains('…') || w.contains('|') || w.contains('*'))
}

/// Every example parses with the real clap definition (`Cli`), in process: a flag a command
/// does not have, a missing argument or a bad value fails here with the file and line.
#[test]
fn every_command_example_parses_with_the_cli() {
    let examples = command_examples();
    assert!(examples.len() >= 60, "examples found: {}", examples.len());
    let mut checked = 0;
    let mut failures = Vec::new();
    for ex in &examples {
        let words = shell_words(&ex.args);
        if !is_command_line(&words) {
            continue;
        }
        let argv = std::iter::once("kubectl-canary".to_string()).chain(words);
        if let Err(e) = Cli::try_parse_from(argv) {
            failures.push(format!("{}: `kubectl canary {}`:\n{e}", ex.at, ex.args));
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 60, "checked only {checked}");
}

/// The parse check above fails on what it must: an unknown flag, a missing argument.
#[test]
fn the_parse_check_catches_bad_examples() {
    for bad in [
        "start checkout --image-name app=x",
        "rollback",
        "simulate --scenario",
        "promote checkout --reson x",
    ] {
        let argv = std::iter::once("kubectl-canary".to_string()).chain(shell_words(bad));
        assert!(Cli::try_parse_from(argv).is_err(), "{bad} parsed");
    }
}

/// Every example also runs as a command line the binary accepts: none ends in a usage error
/// (exit 2), which also covers checks made after parsing (e.g. `--set`, `--notify`).
/// Cluster commands point at a cluster that does not answer and fail with exit 1 (a cluster
/// error) after parsing; offline ones just run.
#[test]
fn every_command_example_runs_without_a_usage_error() {
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
    // The docs' own policy and scenario files, and the repository's files they name.
    std::fs::write(
        dir.path().join("checkout.rhai"),
        doc_block(WRITING, "// checkout.rhai"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("checkout-bad-build.yaml"),
        doc_block(SIMULATION, "name: checkout-bad-build"),
    )
    .unwrap();
    for d in ["policies", "plugins", "tests"] {
        std::os::unix::fs::symlink(Path::new(ROOT).join(d), dir.path().join(d)).unwrap();
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut checked = 0;
    for ex in command_examples() {
        // The generated reference repeats the examples of src/cli.rs's help texts: they are
        // parsed above, but what they do is the CLI's business, not the book's.
        if ex.at.starts_with("docs/src/reference/commands.md:") {
            continue;
        }
        let words = shell_words(&ex.args);
        if !is_command_line(&words) || !seen.insert(words.clone()) {
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
        assert_ne!(
            out.status.code(),
            Some(2),
            "{}: example `kubectl canary {}` is refused as a usage error:\n{}",
            ex.at,
            ex.args,
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 50, "checked only {checked}");
}

/// Relative links between the README and the book's pages point at files that exist and,
/// with `#anchor`, at a heading of that page (mdBook's ids: lower case, spaces to `-`,
/// other punctuation dropped).
#[test]
fn doc_links_resolve() {
    fn anchors(text: &str) -> Vec<String> {
        let mut in_code = false;
        let mut out = Vec::new();
        for l in text.lines() {
            if l.trim_start().starts_with("```") {
                in_code = !in_code;
            }
            if in_code || !l.starts_with('#') {
                continue;
            }
            let title = l.trim_start_matches('#').trim();
            let id: String = title
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => {
                        Some(c.to_lowercase().next().unwrap())
                    }
                    _ => None,
                })
                .collect();
            out.push(id);
        }
        out
    }
    let mut checked = 0;
    for file in doc_files() {
        let text = read(&file);
        let base = Path::new(&file).parent().unwrap().to_path_buf();
        for (i, line) in text.lines().enumerate() {
            for piece in line.split("](").skip(1) {
                let Some(target) = piece.split(')').next() else {
                    continue;
                };
                if target.contains("://") || target.starts_with('#') && file == "README.md" {
                    continue;
                }
                let (path, anchor) = match target.split_once('#') {
                    Some((p, a)) => (p, Some(a)),
                    None => (target, None),
                };
                let rel = if path.is_empty() {
                    PathBuf::from(&file)
                } else {
                    base.join(path)
                };
                let full = Path::new(ROOT).join(&rel);
                assert!(
                    full.exists(),
                    "{file}:{}: link to {target} ({}) does not exist",
                    i + 1,
                    rel.display()
                );
                if let Some(anchor) = anchor {
                    let page = std::fs::read_to_string(&full).unwrap();
                    assert!(
                        anchors(&page).iter().any(|a| a == anchor),
                        "{file}:{}: {} has no heading for #{anchor}",
                        i + 1,
                        rel.display()
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 50, "links checked: {checked}");
}
