//! The book's command reference (docs/src/reference/commands.md) is generated from the clap
//! definition in src/cli.rs: this test renders every command's long help and fails when the
//! committed page differs. `UPDATE_DOCS=1 cargo test --test docs_examples` rewrites it.

use clap::CommandFactory;
use kubectl_canary::cli::Cli;

const PAGE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/docs/src/reference/commands.md"
);

/// Help text must not depend on the environment of whoever generates it: clap shows the
/// current value of an `env = …` variable (`[env: KUBECONFIG=/home/…]`) unless told not to.
fn hide_env_values(cmd: clap::Command) -> clap::Command {
    let cmd = cmd.mut_args(|a| a.hide_env_values(true));
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    names
        .iter()
        .fold(cmd, |cmd, name| cmd.mut_subcommand(name, hide_env_values))
}

/// `(title, anchor, long help)` of a command and, depth first, of each visible subcommand.
fn collect(cmd: &mut clap::Command, path: &str, out: &mut Vec<(String, String)>) {
    let help = cmd.render_long_help().to_string();
    let help: String = help
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n");
    out.push((path.to_string(), help.trim_end().to_string()));
    for sub in cmd.get_subcommands_mut() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let name = sub.get_name().to_string();
        collect(sub, &format!("{path} {name}"), out);
    }
}

fn render() -> String {
    let mut cmd = hide_env_values(Cli::command());
    cmd.build();
    let mut sections = Vec::new();
    collect(&mut cmd, "kubectl canary", &mut sections);
    let mut page = String::from(
        "# Commands\n\n\
         <!-- Generated from src/cli.rs by tests/docs_examples.rs; do not edit by hand.\n     \
         Regenerate with: UPDATE_DOCS=1 cargo test --test docs_examples -->\n\n\
         Every command's `--help`, as `kubectl canary <command> --help` prints it. \
         kubectl's own flags (`--kubeconfig`, `--context`, `-n`, …) and the global options \
         (`-o`, `--plugin-dir`) are accepted by every command. Exit codes are on \
         [their own page](exit-codes.md).\n\n",
    );
    for (path, _) in sections.iter().skip(1) {
        // The link text is the command without `kubectl canary`, so that it does not read
        // as a command example (tests/readme_examples.rs checks those).
        let anchor = path.replace(' ', "-");
        let name = path.trim_start_matches("kubectl canary ");
        page.push_str(&format!("- [`{name}`](#{anchor})\n"));
    }
    for (path, help) in &sections {
        page.push_str(&format!(
            "\n## {path}\n\n```text\n{help}\n```\n",
            path = path,
            help = help
        ));
    }
    page
}

#[test]
fn command_reference_is_generated_from_the_cli() {
    let want = render();
    if std::env::var_os("UPDATE_DOCS").is_some_and(|v| v != "0") {
        std::fs::write(PAGE, &want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(PAGE).unwrap_or_default();
    if have != want {
        let diff = similar::TextDiff::from_lines(&have, &want);
        let shown: String = diff
            .unified_diff()
            .context_radius(2)
            .header("committed", "generated")
            .to_string()
            .lines()
            .take(80)
            .collect::<Vec<_>>()
            .join("\n");
        panic!(
            "docs/src/reference/commands.md is not what src/cli.rs generates.\n\
             Regenerate it with: UPDATE_DOCS=1 cargo test --test docs_examples\n\n{shown}"
        );
    }
}

/// The generated page covers every visible command, each with its own usage line, and
/// shows no value read from the environment of whoever generated it.
#[test]
fn command_reference_covers_every_command() {
    let page = render();
    let cmd = Cli::command();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name();
        assert!(
            page.contains(&format!("\n## kubectl canary {name}\n")),
            "no section for {name}"
        );
        assert!(
            page.contains(&format!("Usage: kubectl canary {name}")),
            "no usage line for {name}"
        );
    }
    for sub in ["check", "test"] {
        assert!(page.contains(&format!("\n## kubectl canary policy {sub}\n")));
    }
    assert!(!page.contains("__complete"));
    assert!(!page.contains("[env: KUBECONFIG="), "an env value leaked");
}
