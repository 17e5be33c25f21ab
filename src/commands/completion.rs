//! Shell completion.
//!
//! * `kubectl canary completion SHELL` prints clap_complete's static script for the
//!   `kubectl-canary` executable (completes `kubectl-canary <TAB>` when called directly).
//! * `kubectl canary __complete WORDS… CURRENT` (hidden) answers in Cobra's `__complete`
//!   format: one candidate per line (`value<TAB>description`), then `:<directive>`.
//!   kubectl ≥ 1.26 completes `kubectl canary <TAB>` by running the executable
//!   `kubectl_complete-canary WORDS… CURRENT` found on PATH; ours
//!   (packaging/kubectl_complete-canary) forwards to this command.

use crate::cli::Cli;
use crate::error::{Exit, Result};
use clap::{Arg, ArgAction, CommandFactory, ValueHint};
use std::io::Write;

/// Static completion script for the `kubectl-canary` executable.
pub fn run(shell: clap_complete::Shell) -> Result<Exit> {
    let mut out = Vec::new();
    static_script(shell, &mut out);
    std::io::stdout()
        .lock()
        .write_all(&out)
        .map_err(|e| crate::error::Error::Output(e.to_string()))?;
    Ok(Exit::Ok)
}

fn static_script(shell: clap_complete::Shell, out: &mut Vec<u8>) {
    // The Cli's bin_name is "kubectl canary" (for help texts). A completion script can only
    // be registered for one executable name, so it is generated for kubectl-canary. The
    // subcommands keep bin names "kubectl canary …", from which clap_complete's bash script
    // names its per-subcommand cases (kubectl__subcmd__canary__subcmd__simulate) while its
    // state machine says kubectl__canary__subcmd__simulate: subcommand flags would not
    // complete. Renaming the bin names did not take, so the bash text is made consistent.
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "kubectl-canary", &mut script);
    if shell == clap_complete::Shell::Bash {
        let text =
            String::from_utf8_lossy(&script).replace("kubectl__subcmd__canary", "kubectl__canary");
        out.extend_from_slice(text.as_bytes());
    } else {
        out.extend_from_slice(&script);
    }
}

/// Cobra's ShellCompDirective values.
pub mod directive {
    /// Let the shell complete file names when there is no candidate.
    pub const DEFAULT: u32 = 0;
    /// No file name completion.
    pub const NO_FILE_COMP: u32 = 4;
    /// Complete directory names only.
    pub const FILTER_DIRS: u32 = 16;
}

/// Prints the completion candidates for `words` (the last word is the one being completed).
pub fn complete(words: &[String]) -> Result<Exit> {
    let (candidates, directive) = candidates(words);
    let mut text = String::new();
    for c in candidates {
        text.push_str(&c);
        text.push('\n');
    }
    text.push_str(&format!(":{directive}\n"));
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(|e| crate::error::Error::Output(e.to_string()))?;
    Ok(Exit::Ok)
}

/// Candidate lines (`value` or `value<TAB>description`) and the Cobra directive.
pub fn candidates(words: &[String]) -> (Vec<String>, u32) {
    let mut root = Cli::command();
    root.build(); // propagates the global flags to every subcommand
    let (done, current) = match words.split_last() {
        Some((last, rest)) => (rest, last.as_str()),
        None => (&[][..], ""),
    };

    let mut cmd = &root;
    let mut pending: Option<&Arg> = None; // an option that waits for its value
    let mut positionals = 0usize;
    let mut only_positionals = false;
    for w in done {
        if pending.take().is_some() {
            continue; // w is that option's value
        }
        if only_positionals {
            positionals += 1;
        } else if w == "--" {
            only_positionals = true;
        } else if let Some(long) = w.strip_prefix("--") {
            let (name, inline_value) = match long.split_once('=') {
                Some((n, _)) => (n, true),
                None => (long, false),
            };
            pending = find_long(cmd, name).filter(|a| takes_value(a) && !inline_value);
        } else if w.len() > 1 && w.starts_with('-') {
            // -abc, -n NS, -nNS
            let shorts: Vec<char> = w[1..].chars().collect();
            for (i, c) in shorts.iter().enumerate() {
                if let Some(a) = cmd.get_arguments().find(|a| a.get_short() == Some(*c)) {
                    if takes_value(a) {
                        if i + 1 == shorts.len() {
                            pending = Some(a);
                        }
                        break;
                    }
                }
            }
        } else if let Some(sub) = (positionals == 0 && cmd.has_subcommands())
            .then(|| cmd.find_subcommand(w))
            .flatten()
        {
            cmd = sub;
        } else {
            positionals += 1;
        }
    }

    if let Some(a) = pending {
        return values(a, "", current);
    }
    if !only_positionals && current.starts_with('-') {
        if let Some((name, value)) = current.strip_prefix("--").and_then(|l| l.split_once('=')) {
            return match find_long(cmd, name) {
                Some(a) => values(a, &format!("--{name}="), value),
                None => (vec![], directive::NO_FILE_COMP),
            };
        }
        let mut out = Vec::new();
        for a in cmd.get_arguments() {
            if a.is_positional() || a.is_hide_set() {
                continue;
            }
            let help = help_of(a.get_help());
            if let Some(l) = a.get_long() {
                let flag = format!("--{l}");
                if flag.starts_with(current) {
                    out.push(line(&flag, &help));
                }
            }
            if let (Some(s), "-") = (a.get_short(), current) {
                out.push(line(&format!("-{s}"), &help));
            }
        }
        return (out, directive::NO_FILE_COMP);
    }
    if positionals == 0 && cmd.has_subcommands() {
        let out = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name().starts_with(current))
            .map(|s| line(s.get_name(), &help_of(s.get_about())))
            .collect();
        return (out, directive::NO_FILE_COMP);
    }
    let positional = cmd.get_positionals().enumerate().find(|(i, a)| {
        *i == positionals || (*i < positionals && matches!(a.get_action(), ArgAction::Append))
    });
    match positional {
        Some((_, a)) => values(a, "", current),
        None => (vec![], directive::NO_FILE_COMP),
    }
}

fn find_long<'a>(cmd: &'a clap::Command, name: &str) -> Option<&'a Arg> {
    cmd.get_arguments().find(|a| {
        a.get_long() == Some(name) || a.get_all_aliases().is_some_and(|al| al.contains(&name))
    })
}

fn takes_value(a: &Arg) -> bool {
    a.get_num_args().is_some_and(|n| n.takes_values())
}

/// Candidates for the value of `a`, each prefixed with `prefix` (e.g. `--output=`).
fn values(a: &Arg, prefix: &str, current: &str) -> (Vec<String>, u32) {
    let possible = a.get_possible_values();
    if !possible.is_empty() {
        let out = possible
            .iter()
            .filter(|v| !v.is_hide_set() && v.get_name().starts_with(current))
            .map(|v| line(&format!("{prefix}{}", v.get_name()), &help_of(v.get_help())))
            .collect();
        return (out, directive::NO_FILE_COMP);
    }
    // Files and directories are completed by the shell; other values (service names,
    // KEY=VALUE, durations) have no candidates.
    let names = a
        .get_value_names()
        .map(|v| v.join("|"))
        .unwrap_or_else(|| a.get_id().to_string())
        .to_uppercase();
    let hint = a.get_value_hint();
    if matches!(hint, ValueHint::DirPath) || (names.contains("DIR") && !names.contains("FILE")) {
        (vec![], directive::FILTER_DIRS)
    } else if matches!(hint, ValueHint::AnyPath | ValueHint::FilePath)
        || names.contains("FILE")
        || names.contains("POLICY")
    {
        (vec![], directive::DEFAULT)
    } else {
        (vec![], directive::NO_FILE_COMP)
    }
}

fn help_of(s: Option<&clap::builder::StyledStr>) -> String {
    s.map(|s| s.to_string())
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or("")
        .replace('\t', " ")
}

fn line(value: &str, help: &str) -> String {
    if help.is_empty() {
        value.to_string()
    } else {
        format!("{value}\t{help}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(words: &[&str]) -> (Vec<String>, u32) {
        let words: Vec<String> = words.iter().map(|s| s.to_string()).collect();
        let (c, d) = candidates(&words);
        let values = c
            .iter()
            .map(|l| l.split('\t').next().unwrap().to_string())
            .collect();
        (values, d)
    }

    #[test]
    fn subcommands() {
        let (c, d) = run(&["si"]);
        assert_eq!(c, ["simulate"]);
        assert_eq!(d, directive::NO_FILE_COMP);
        let (c, _) = run(&[""]);
        for s in [
            "start",
            "simulate",
            "policy",
            "version",
            "completion",
            "status",
        ] {
            assert!(c.iter().any(|x| x == s), "{s} missing from {c:?}");
        }
        assert!(
            !c.iter().any(|x| x.starts_with("__")),
            "hidden command listed: {c:?}"
        );
        assert_eq!(run(&["policy", "c"]).0, ["check"]);
    }

    #[test]
    fn static_bash_script_completes_subcommands_and_their_flags() {
        let mut script = Vec::new();
        static_script(clap_complete::Shell::Bash, &mut script);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("comp.bash");
        std::fs::write(&path, script).unwrap();
        let probe = |words: &str| {
            let sh = format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
                 _kubectl__canary kubectl-canary \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
                 echo \"${{COMPREPLY[@]}}\"",
                path.display()
            );
            let out = std::process::Command::new("bash")
                .arg("-c")
                .arg(sh)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        assert_eq!(probe("kubectl-canary si"), "simulate");
        assert_eq!(probe("kubectl-canary simulate --sc"), "--scenario");
        assert_eq!(probe("kubectl-canary policy c"), "check");
        for shell in [
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
            clap_complete::Shell::PowerShell,
        ] {
            let mut script = Vec::new();
            static_script(shell, &mut script);
            let text = String::from_utf8(script).unwrap();
            assert!(
                text.contains("kubectl-canary") && text.contains("simulate"),
                "{shell}"
            );
        }
    }

    #[test]
    fn flags_and_values() {
        let (c, d) = run(&["simulate", "--"]);
        for f in [
            "--policy",
            "--scenario",
            "--seed",
            "--list",
            "--namespace",
            "--output",
        ] {
            assert!(c.iter().any(|x| x == f), "{f} missing from {c:?}");
        }
        assert_eq!(d, directive::NO_FILE_COMP);
        assert_eq!(run(&["simulate", "--sc"]).0, ["--scenario"]);
        assert_eq!(run(&["version", "-o", "j"]).0, ["json"]);
        assert_eq!(
            run(&["-n", "shop", "version", "--output", ""]).0,
            ["table", "json", "yaml", "html"]
        );
        assert_eq!(run(&["version", "--output=y"]).0, ["--output=yaml"]);
        assert_eq!(run(&["completion", "z"]).0, ["zsh"]);
        // Policy files: the shell completes file names.
        assert_eq!(
            run(&["simulate", "--policy", ""]),
            (vec![], directive::DEFAULT)
        );
        assert_eq!(
            run(&["policy", "check", "a.rhai", ""]),
            (vec![], directive::DEFAULT)
        );
        assert_eq!(
            run(&["start", "--plugin-dir", ""]).1,
            directive::FILTER_DIRS
        );
        // A service name: nothing to offer, and no file names either.
        assert_eq!(run(&["step", ""]), (vec![], directive::NO_FILE_COMP));
    }
}
