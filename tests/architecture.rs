//! The shape of the source: no two modules of the plugin (`src/`) and its core
//! (`crates/core/src/`, seen as the module `core`, as `src/lib.rs` re-exports it) depend on
//! each other, directly or through others, and no source file grows past what a reader can
//! hold.
//!
//! A module depends on another when its code (comments and `#[cfg(test)] mod tests`
//! excluded) names a path into it: `crate::a::b::…` or `super::…`. A module's own
//! submodules and its ancestors do not count (Rust declares children in their parent).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 1200;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source roots and the module each one is: the plugin's `src/` is the crate root, the
/// core crate is `core`.
fn roots() -> [(PathBuf, &'static str); 2] {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        (root.join("src"), ""),
        (root.join("crates/core/src"), "core"),
    ]
}

/// `src/a/b.rs` and `src/a/b/mod.rs` → `a::b`; `src/lib.rs` → ``; in the core, `core::…`.
fn module_of(src: &Path, prefix: &str, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = prefix
        .split("::")
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    parts.extend(
        rel.components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The code without comments and without the unit-test module at the end.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Paths starting with `crate::` or `super::`, as segments.
fn paths(code: &str) -> Vec<Vec<&str>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < code.len() {
        let rest = &bytes[i..];
        let starts = (rest.starts_with(b"crate::") || rest.starts_with(b"super::"))
            && (i == 0 || !is_ident(bytes[i - 1]));
        if !starts {
            i += 1;
            continue;
        }
        let mut end = i;
        while end < code.len() && (is_ident(bytes[end]) || bytes[end..].starts_with(b"::")) {
            end += if bytes[end..].starts_with(b"::") {
                2
            } else {
                1
            };
        }
        out.push(code[i..end].split("::").filter(|s| !s.is_empty()).collect());
        i = end;
    }
    out
}

fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    // module → (file, the module `crate::` names in it)
    let mut modules: BTreeMap<String, (PathBuf, &str)> = BTreeMap::new();
    for (src, prefix) in roots() {
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        for f in files {
            modules.insert(module_of(&src, prefix, &f).join("::"), (f, prefix));
        }
    }
    let mut deps = BTreeMap::new();
    for (module, (file, crate_root)) in &modules {
        let me: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
        let text = code(&std::fs::read_to_string(file).unwrap());
        let mut to = BTreeSet::new();
        for path in paths(&text) {
            let mut full: Vec<&str> = Vec::new();
            let mut segs = path.as_slice();
            if segs.first() == Some(&"crate") {
                full.extend(crate_root.split("::").filter(|p| !p.is_empty()));
                segs = &segs[1..];
            } else {
                full = me.clone();
                while segs.first() == Some(&"super") {
                    full.pop();
                    segs = &segs[1..];
                }
            }
            full.extend(segs);
            // The longest prefix that is a module.
            let Some(target) = (1..=full.len())
                .rev()
                .map(|k| full[..k].join("::"))
                .find(|m| modules.contains_key(m))
            else {
                continue;
            };
            let related = target == *module
                || module.starts_with(&format!("{target}::"))
                || target.starts_with(&format!("{module}::"));
            if !related {
                to.insert(target);
            }
        }
        deps.insert(module.clone(), to);
    }
    deps
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(deps: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        deps: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        for w in &s.deps[v] {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.stack.contains(&w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        deps,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in deps.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

#[test]
fn the_checker_sees_a_cycle() {
    let deps = BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["c".to_string()])),
        ("c".to_string(), BTreeSet::from(["a".to_string()])),
        ("d".to_string(), BTreeSet::from(["a".to_string()])),
    ]);
    assert_eq!(cycles(&deps), [["a", "b", "c"]]);
    let text =
        "use super::state::X; // crate::ignored::y\nlet t = crate::providers::Target::new();";
    let stripped = code(text);
    let found: Vec<Vec<&str>> = paths(&stripped);
    assert_eq!(
        found,
        [
            vec!["super", "state", "X"],
            vec!["crate", "providers", "Target", "new"]
        ]
    );
}

#[test]
fn no_module_depends_on_itself_through_others() {
    let deps = dependencies();
    assert!(deps.len() > 50, "read {} modules", deps.len());
    assert!(
        deps["cluster::driver"].contains("cluster::world"),
        "the reader sees dependencies: {:?}",
        deps["cluster::driver"]
    );
    assert!(
        deps["core::rollout"].contains("core::retention"),
        "the reader sees the core's own paths: {:?}",
        deps["core::rollout"]
    );
    let found = cycles(&deps);
    let shown: Vec<String> = found
        .iter()
        .map(|c| {
            let edges: Vec<String> = c
                .iter()
                .flat_map(|m| {
                    deps[m]
                        .iter()
                        .filter(|t| c.contains(t))
                        .map(move |t| format!("{m} → {t}"))
                })
                .collect();
            edges.join(", ")
        })
        .collect();
    assert!(found.is_empty(), "module cycles: {shown:#?}");
}

#[test]
fn no_source_file_is_longer_than_a_reader_can_hold() {
    let mut files = Vec::new();
    for (src, _) in roots() {
        rust_files(&src, &mut files);
    }
    // The tests and the test environment's data plane too.
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    rust_files(&tests, &mut files);
    files.retain(|f| !f.components().any(|c| c.as_os_str() == "target"));
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines: {long:?}; split by topic"
    );
}
