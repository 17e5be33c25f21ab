//! Stamps the build with the git commit and the target triple, read by
//! `kubectl canary version` (src/commands/version.rs) through option_env!.
//!
//! KUBECTL_CANARY_GIT_COMMIT may be set by the caller (e.g. CI building from a
//! source archive without .git); otherwise `git rev-parse` is asked, and
//! "unknown" is used when that fails.
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=KUBECTL_CANARY_GIT_COMMIT");
    let commit = match std::env::var("KUBECTL_CANARY_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => {
            // Rebuild when HEAD moves: HEAD itself, the branch it points to, packed refs.
            // Only files that exist: cargo counts a missing one as changed on every build
            // (a fresh clone has no packed-refs, a packed branch has no file of its own).
            let branch = git(&["symbolic-ref", "-q", "HEAD"]);
            for p in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
                if let Some(path) = git(&["rev-parse", "--git-path", p])
                    && std::path::Path::new(&path).exists()
                {
                    println!("cargo:rerun-if-changed={path}");
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
        }
    };
    println!("cargo:rustc-env=KUBECTL_CANARY_GIT_COMMIT={commit}");
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=KUBECTL_CANARY_TARGET={target}");
}
