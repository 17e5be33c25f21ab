//! The krew install path, with the real krew and kubectl, offline:
//!
//! 1. krew (pinned in tests/krew/go.mod) is built once by tests/krew/build.sh into
//!    ~/.cache/kubectl-canary-env/krew-<version>/ (as `kubectl-krew`, with krew's
//!    `validate-krew-manifest`);
//! 2. packaging/release.sh packs the test build of kubectl-canary into the release
//!    archive and renders the manifest from krew-manifest.yaml (the release build itself,
//!    LTO and all, is not repeated here: same script, `pack --bin`);
//! 3. `kubectl krew install --manifest=… --archive=…` into a temporary KREW_ROOT, with
//!    proxies pointing at a closed port so any network access would fail;
//! 4. the plugin runs through kubectl's plugin dispatch, `kubectl plugin list` shows it
//!    without warnings, `kubectl canary <TAB>` completes through kubectl_complete-canary;
//! 5. a tampered archive is refused (sha256 mismatch), and uninstall removes the plugin.
//!
//! Missing `go` or `kubectl` fails the test (it never skips).

use sha2::{Digest, Sha256};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_kubectl-canary");
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn require(tool: &str, why: &str) -> PathBuf {
    which(tool).unwrap_or_else(|| {
        panic!("`{tool}` is not on PATH: tests/krew_install.rs needs it {why} (this test does not skip)")
    })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn describe(cmd: &Command, out: &Output) -> String {
    format!(
        "{cmd:?}\nexit: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> Output {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "command failed: {}",
        describe(cmd, &out)
    );
    out
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// Built once per test binary: krew, the archive and the rendered manifest.
struct Fixture {
    _tmp: tempfile::TempDir,
    krew_dir: PathBuf,
    /// Holds only a `kubectl` symlink, so `kubectl plugin list` sees our plugins only.
    tools_dir: PathBuf,
    dist: PathBuf,
    archive: PathBuf,
    manifest: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let kubectl = require("kubectl", "to install and run the plugin through kubectl");
        require("go", "to build krew from tests/krew/go.mod");
        let tmp = tempfile::tempdir().unwrap();

        let t = Instant::now();
        let out = ok(Command::new("bash")
            .arg(Path::new(ROOT).join("tests/krew/build.sh"))
            .stderr(Stdio::inherit()));
        let krew_dir = PathBuf::from(text(&out.stdout).trim());
        eprintln!(
            "[krew] krew ready in {:.1?} ({})",
            t.elapsed(),
            krew_dir.display()
        );

        let tools_dir = tmp.path().join("tools");
        std::fs::create_dir(&tools_dir).unwrap();
        std::os::unix::fs::symlink(&kubectl, tools_dir.join("kubectl")).unwrap();

        let t = Instant::now();
        let dist = tmp.path().join("dist");
        let release = Path::new(ROOT).join("packaging/release.sh");
        ok(Command::new("bash")
            .arg(&release)
            .args(["pack", "--bin", BIN, "--dist"])
            .arg(&dist)
            .current_dir(ROOT));
        ok(Command::new("bash")
            .arg(&release)
            .args(["render", "--dist"])
            .arg(&dist)
            .current_dir(ROOT));
        eprintln!("[krew] packed and rendered in {:.1?}", t.elapsed());

        let plat = format!(
            "{}-{}",
            std::env::consts::OS,
            match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                a => panic!("unsupported arch {a}"),
            }
        );
        let archive = dist.join(format!("kubectl-canary-v{VERSION}-{plat}.tar.gz"));
        assert!(
            archive.is_file(),
            "release.sh did not write {}",
            archive.display()
        );
        let manifest = dist.join("canary.yaml");
        Fixture {
            _tmp: tmp,
            krew_dir,
            tools_dir,
            dist,
            archive,
            manifest,
        }
    })
}

/// A temporary KREW_ROOT, and commands that see krew, KREW_ROOT/bin and kubectl only.
struct KrewRoot {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    path: OsString,
}

impl KrewRoot {
    fn new(f: &Fixture) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("krew");
        let path =
            std::env::join_paths([root.join("bin"), f.krew_dir.clone(), f.tools_dir.clone()])
                .unwrap();
        KrewRoot {
            _tmp: tmp,
            root,
            path,
        }
    }

    fn cmd(&self, prog: &str, args: &[&str]) -> Command {
        let mut c = Command::new(prog);
        c.args(args)
            .env("PATH", &self.path)
            .env("KREW_ROOT", &self.root)
            .env("KREW_NO_UPGRADE_CHECK", "1")
            // Offline: any HTTP(S) request krew might make fails at once.
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .env("https_proxy", "http://127.0.0.1:9")
            .env("http_proxy", "http://127.0.0.1:9")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .env("KUBECONFIG", self.root.with_file_name("no-kubeconfig"));
        c
    }

    fn kubectl(&self, args: &[&str]) -> Command {
        self.cmd("kubectl", args)
    }

    fn install(&self, f: &Fixture, archive: &Path) -> (Command, Output) {
        let mut c = self.kubectl(&["krew", "install"]);
        c.arg(format!("--manifest={}", f.manifest.display()))
            .arg(format!("--archive={}", archive.display()));
        let out = output(&mut c);
        (c, out)
    }
}

/// Candidate values (before any TAB description) and the directive line.
fn completions(out: &Output) -> (Vec<String>, String) {
    let s = text(&out.stdout);
    let mut lines: Vec<&str> = s.lines().filter(|l| !l.is_empty()).collect();
    let directive = lines.pop().unwrap_or_default().to_string();
    let values = lines
        .iter()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    (values, directive)
}

#[test]
fn manifests_pass_krews_validation() {
    let f = fixture();
    let validate = f.krew_dir.join("validate-krew-manifest");

    // The rendered manifest: structure (krew's own validator) and checksums.
    ok(Command::new(&validate)
        .arg("-manifest")
        .arg(&f.manifest)
        .arg("-skip-install"));
    let rendered: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&f.manifest).unwrap()).unwrap();
    assert_eq!(
        rendered["spec"]["version"].as_str(),
        Some(format!("v{VERSION}").as_str())
    );
    let platforms = rendered["spec"]["platforms"].as_sequence().unwrap();
    assert!(!platforms.is_empty());
    for p in platforms {
        // Only platforms whose archive exists are in the manifest, with its exact sha256.
        let uri = p["uri"].as_str().unwrap();
        let local = f.dist.join(uri.rsplit('/').next().unwrap());
        assert!(
            local.is_file(),
            "manifest lists {uri} but {} was not built",
            local.display()
        );
        assert_eq!(
            p["sha256"].as_str().unwrap(),
            sha256_hex(&local),
            "sha256 of {uri}"
        );
        let files: Vec<&str> = p["files"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|fo| fo["from"].as_str().unwrap())
            .collect();
        assert_eq!(
            files,
            ["kubectl-canary", "LICENSE", "kubectl_complete-canary"]
        );
    }

    // The template itself, with its placeholders filled by stand-ins (test only).
    let template = std::fs::read_to_string(Path::new(ROOT).join("krew-manifest.yaml")).unwrap();
    let mut filled = template.replace("@VERSION@", VERSION);
    while let Some(i) = filled.find("@SHA256_") {
        let j = i + 1 + filled[i + 1..].find('@').unwrap();
        filled.replace_range(i..=j, &"0".repeat(64));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canary.yaml"); // krew wants <name>.yaml
    std::fs::write(&path, &filled).unwrap();
    ok(Command::new(&validate)
        .arg("-manifest")
        .arg(&path)
        .arg("-skip-install"));
    let t: serde_yaml_ng::Value = serde_yaml_ng::from_str(&filled).unwrap();
    let mut selected: Vec<String> = t["spec"]["platforms"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            let l = &p["selector"]["matchLabels"];
            format!(
                "{}/{}",
                l["os"].as_str().unwrap(),
                l["arch"].as_str().unwrap()
            )
        })
        .collect();
    selected.sort();
    assert_eq!(
        selected,
        [
            "darwin/amd64",
            "darwin/arm64",
            "linux/amd64",
            "linux/arm64",
            "windows/amd64"
        ]
    );
    let short = t["spec"]["shortDescription"].as_str().unwrap();
    assert!(
        !short.contains('\n') && short.len() <= 60,
        "shortDescription: {short:?}"
    );
}

#[test]
fn krew_installs_the_archive_and_kubectl_runs_and_completes_the_plugin() {
    let f = fixture();
    let k = KrewRoot::new(f);

    let t = Instant::now();
    let (cmd, out) = k.install(f, &f.archive);
    let log = describe(&cmd, &out);
    assert!(out.status.success(), "krew install failed: {log}");
    assert!(
        text(&out.stderr).contains("Installed plugin: canary"),
        "{log}"
    );
    assert!(
        !text(&out.stderr).contains("index"),
        "krew touched its plugin index: {log}"
    );
    assert!(
        !k.root.join("index/default").exists(),
        "krew cloned the default index"
    );
    eprintln!("[krew] installed in {:.1?}", t.elapsed());
    let store = k.root.join(format!("store/canary/v{VERSION}"));
    for file in ["kubectl-canary", "LICENSE", "kubectl_complete-canary"] {
        assert!(
            store.join(file).is_file(),
            "{file} not installed in {}",
            store.display()
        );
    }

    // kubectl's plugin dispatch finds and runs KREW_ROOT/bin/kubectl-canary.
    let out = ok(&mut k.kubectl(&["canary", "version", "-o", "json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], VERSION);
    let target = v["target"].as_str().unwrap();
    assert!(
        target.starts_with(std::env::consts::ARCH) && target.contains(std::env::consts::OS),
        "build target {target}"
    );
    let commit = v["commit"].as_str().unwrap();
    let in_git = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(ROOT)
        .output()
        .is_ok_and(|o| o.status.success());
    if in_git {
        assert!(
            commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit()),
            "git commit not stamped: {commit:?}"
        );
    }
    let out = ok(&mut k.kubectl(&["canary", "version"]));
    assert!(
        text(&out.stdout).contains(&format!("v{VERSION}")),
        "{}",
        text(&out.stdout)
    );

    // Completion through kubectl: the helper copied onto PATH as the caveats say.
    std::fs::copy(
        store.join("kubectl_complete-canary"),
        k.root.join("bin/kubectl_complete-canary"),
    )
    .unwrap();
    let (values, directive) = completions(&ok(&mut k.kubectl(&["__complete", "canary", "si"])));
    assert_eq!(
        (values, directive.as_str()),
        (vec!["simulate".to_string()], ":4")
    );
    let (values, _) = completions(&ok(&mut k.kubectl(&[
        "__complete",
        "canary",
        "simulate",
        "--",
    ])));
    for flag in [
        "--policy",
        "--scenario",
        "--seed",
        "--namespace",
        "--output",
    ] {
        assert!(values.iter().any(|v| v == flag), "{flag} not in {values:?}");
    }
    let (values, _) = completions(&ok(&mut k.kubectl(&[
        "__complete",
        "canary",
        "version",
        "-o",
        "",
    ])));
    assert_eq!(values, ["table", "json", "yaml", "html"]);
    let (values, directive) = completions(&ok(&mut k.kubectl(&[
        "__complete",
        "canary",
        "simulate",
        "--policy",
        "",
    ])));
    assert_eq!(
        (values.len(), directive.as_str()),
        (0, ":0"),
        "policy files: shell file completion"
    );
    // The helper called directly, as kubectl does (and with Cobra's leading __complete).
    let (values, _) = completions(&ok(&mut k.cmd("kubectl_complete-canary", &["pol"])));
    assert_eq!(values, ["policy"]);
    let (values, _) = completions(&ok(
        &mut k.cmd("kubectl_complete-canary", &["__complete", "si"])
    ));
    assert_eq!(values, ["simulate"]);

    // `kubectl plugin list` shows the plugin, without any warning.
    let mut c = k.kubectl(&["plugin", "list"]);
    let out = output(&mut c);
    let log = describe(&c, &out);
    assert!(out.status.success(), "{log}");
    let bin = k.root.join("bin/kubectl-canary");
    assert!(
        text(&out.stdout)
            .lines()
            .any(|l| l == bin.to_str().unwrap()),
        "{log}"
    );
    assert!(!log.to_lowercase().contains("warning"), "{log}");

    // Uninstall removes the plugin from kubectl's view. `krew uninstall` insists on an
    // initialized plugin index (a git checkout under KREW_ROOT/index/), which every real
    // krew setup has from `kubectl krew update`; offline, an empty repository stands in.
    ok(Command::new("git")
        .args(["init", "-q"])
        .arg(k.root.join("index/default")));
    let out = ok(&mut k.kubectl(&["krew", "uninstall", "canary"]));
    assert!(
        text(&out.stderr).contains("Uninstalled plugin: canary"),
        "{}",
        text(&out.stderr)
    );
    assert!(!bin.exists() && !store.exists());
    let out = output(&mut k.kubectl(&["plugin", "list"]));
    assert!(
        !text(&out.stdout)
            .lines()
            .any(|l| l.ends_with("/kubectl-canary")),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn krew_refuses_a_tampered_archive() {
    let f = fixture();
    let k = KrewRoot::new(f);
    let mut bytes = std::fs::read(&f.archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    let tampered = k.root.with_file_name(f.archive.file_name().unwrap());
    std::fs::write(&tampered, bytes).unwrap();

    let (cmd, out) = k.install(f, &tampered);
    let log = describe(&cmd, &out);
    assert!(
        !out.status.success(),
        "krew installed a tampered archive: {log}"
    );
    assert!(
        text(&out.stderr).contains("checksum does not match"),
        "{log}"
    );
    assert!(!k.root.join("bin/kubectl-canary").exists(), "{log}");
    assert!(!k.root.join("store/canary").exists(), "{log}");
}
