//! One sandboxed Rhai engine; policies are compiled once and their `decide` function is
//! called on the AST at each evaluation.

use super::context::{self, ContextData, NO_DATA, PolicyContext};
use super::resolver::PluginResolver;
use super::schedule::schedule_from_map;
use crate::core::decision::{Decision, Observations, PolicyFailure};
use crate::core::schedule::Schedule;
use rhai::{AST, ASTNode, CallFnOptions, Dynamic, Engine, EvalAltResult, Expr, Map, Scope};
use sha2::{Digest, Sha256};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Sandbox limits for policy and hook code.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_operations: u64,
    pub max_call_levels: usize,
    pub max_expr_depth: usize,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
    pub wall_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 1_000_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_string_size: 64 * 1024,
            max_array_size: 10_000,
            max_map_size: 1_000,
            wall_time: Duration::from_millis(250),
        }
    }
}

thread_local! {
    /// Wall-clock deadline of the evaluation running on this thread.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: cannot read policy: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{location}: {message}")]
    Script { location: String, message: String },
    #[error("{path}: {message}")]
    Contract { path: String, message: String },
}

/// A compiled policy with its declared schedule.
#[derive(Debug, Clone)]
pub struct Policy {
    pub path: String,
    pub sha256: String,
    pub schedule: Schedule,
    ast: AST,
    /// Whether evaluations need the step's latency samples (one range query per version,
    /// the most expensive fetch of an evaluation). Set when the policy's own code calls
    /// `latency_test`/`latency_check`, and learned the first time one of its evaluations
    /// reads them through a hook or a function pointer (that evaluation is run again with
    /// them). Shared by the clones of one compiled policy.
    reads_latency_samples: Arc<AtomicBool>,
}

/// Functions of the context that read the step's latency samples.
const SAMPLE_READERS: [&str; 2] = ["latency_test", "latency_check"];

impl Policy {
    /// Whether to fetch the latency samples for an evaluation of this policy.
    pub fn reads_latency_samples(&self) -> bool {
        self.reads_latency_samples.load(Ordering::Relaxed)
    }

    /// An evaluation read the samples although they were not fetched: fetch them from now on.
    pub fn learned_it_reads_latency_samples(&self) {
        self.reads_latency_samples.store(true, Ordering::Relaxed);
    }
}

/// Whether the policy's own code (not its imports) calls one of [`SAMPLE_READERS`].
fn calls_sample_readers(ast: &AST) -> bool {
    let mut found = false;
    ast.walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Expr(Expr::FnCall(f, _) | Expr::MethodCall(f, _))) = path.last()
            && SAMPLE_READERS.contains(&f.name.as_str())
        {
            found = true;
        }
        !found
    });
    found
}

/// Result of one call of `decide`.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyOutcome {
    /// `Err` holds a message naming file:line:column; the caller applies `on_error`.
    pub decision: Result<Decision, PolicyFailure>,
    pub observations: Observations,
    pub log: Vec<String>,
    /// The policy read latency samples that were not fetched (`Facts::latency_samples_skipped`):
    /// this outcome is void; fetch them and evaluate again.
    pub wanted_latency_samples: bool,
}

pub struct PolicyEngine {
    engine: Engine,
    plugin_dirs: Vec<PathBuf>,
}

impl PolicyEngine {
    pub fn new(plugin_dirs: Vec<PathBuf>, limits: &Limits) -> Self {
        let mut engine = Engine::new();
        engine
            .set_max_operations(limits.max_operations)
            .set_max_call_levels(limits.max_call_levels)
            .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
            .set_max_string_size(limits.max_string_size)
            .set_max_array_size(limits.max_array_size)
            .set_max_map_size(limits.max_map_size)
            .set_max_modules(16)
            .set_module_resolver(PluginResolver::new(plugin_dirs.clone()));
        engine.disable_symbol("eval");
        // Never stdout: `-o json` must stay parseable. Lines go to the rollout log.
        engine.on_print(|s| context::log_line(s.to_string()));
        engine.on_debug(|s, src, pos| {
            let at = match (src, pos.line()) {
                (Some(src), Some(l)) => format!("{src}:{l}: "),
                _ => String::new(),
            };
            context::log_line(format!("{at}{s}"))
        });
        let wall = limits.wall_time;
        engine.on_progress(move |ops| {
            // Checking the clock on every operation is costly; every 256th is enough.
            if ops % 256 != 0 {
                return None;
            }
            match DEADLINE.get() {
                Some(d) if Instant::now() > d => {
                    Some(format!("policy exceeded its wall-clock limit of {wall:?}").into())
                }
                _ => None,
            }
        });
        context::register(&mut engine);
        PolicyEngine {
            engine,
            plugin_dirs,
        }
    }

    pub fn plugin_dirs(&self) -> &[PathBuf] {
        &self.plugin_dirs
    }

    pub fn compile_file(&self, path: &Path, limits: &Limits) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        self.compile(&path.display().to_string(), &text, limits)
    }

    /// Compiles a policy and checks its contract: `fn schedule()` returning a valid
    /// schedule map and `fn decide(ctx)`.
    pub fn compile(&self, name: &str, text: &str, limits: &Limits) -> Result<Policy, PolicyError> {
        // Resolving imports now makes a missing hook a compile error, and evaluation cheap.
        let mut ast = self
            .engine
            .compile_into_self_contained(&Scope::new(), text)
            .map_err(|e| PolicyError::Script {
                location: format!("{name}:{}", error_position(&e, text)),
                message: e.to_string(),
            })?;
        ast.set_source(name);
        let contract = |message: String| PolicyError::Contract {
            path: name.to_string(),
            message,
        };
        let has = |f: &str, n: usize| {
            ast.iter_functions()
                .any(|m| m.name == f && m.params.len() == n)
        };
        if !has("decide", 1) {
            return Err(contract(
                "missing `fn decide(ctx)` (called at each evaluation)".into(),
            ));
        }
        if !has("schedule", 0) {
            return Err(contract(
                "missing `fn schedule()` (returns #{ steps: [...], min_step_time: \"5m\", ... })"
                    .into(),
            ));
        }
        let raw = self
            .call(&ast, "schedule", (), limits.wall_time)
            .map_err(|e| match e {
                PolicyFailure::NoData(m) | PolicyFailure::Error(m) => {
                    contract(format!("schedule() failed: {m}"))
                }
            })?;
        let map = raw.try_cast::<Map>().ok_or_else(|| {
            contract("schedule() must return a map like #{ steps: [5, 25, 50, 100] }".into())
        })?;
        let schedule = schedule_from_map(&map).map_err(contract)?;
        schedule.validate().map_err(contract)?;
        // A placeholder typo in a named query would make it "no data" for the whole rollout:
        // refuse it here, so `policy check` and `start` catch it.
        crate::metrics::templates::check_named(&schedule.queries)
            .map_err(|e| contract(format!("schedule().queries: {e}")))?;
        let sha256 = hex::encode(Sha256::digest(text.as_bytes()));
        let reads_latency_samples = Arc::new(AtomicBool::new(calls_sample_readers(&ast)));
        Ok(Policy {
            path: name.to_string(),
            sha256,
            schedule,
            ast,
            reads_latency_samples,
        })
    }

    fn call(
        &self,
        ast: &AST,
        name: &str,
        args: impl rhai::FuncArgs,
        wall: Duration,
    ) -> Result<Dynamic, PolicyFailure> {
        DEADLINE.set(Some(Instant::now() + wall));
        // eval_ast(true): top-level `import`s must run so functions can see the hooks.
        let options = CallFnOptions::new().eval_ast(true).rewind_scope(true);
        let result = self.engine.call_fn_with_options::<Dynamic>(
            options,
            &mut Scope::new(),
            ast,
            name,
            args,
        );
        DEADLINE.set(None);
        result.map_err(|e| describe(&e, ast.source().unwrap_or("policy")))
    }

    /// Calls `decide(ctx)`. Never panics and never promotes on failure: every failure is
    /// returned as [`PolicyFailure`] for the caller to turn into hold/pause/rollback.
    pub fn evaluate(&self, policy: &Policy, data: ContextData, limits: &Limits) -> PolicyOutcome {
        context::reset_sinks();
        let ctx = PolicyContext(Arc::new(data));
        let result = self.call(&policy.ast, "decide", (ctx,), limits.wall_time);
        let (observations, log) = context::take_sinks();
        let wanted_latency_samples = context::take_wanted_samples();
        let decision = result.and_then(|d| {
            parse_decision(d)
                .map_err(|m| PolicyFailure::Error(format!("{}: decide(ctx) {m}", policy.path)))
        });
        PolicyOutcome {
            decision,
            observations,
            log,
            wanted_latency_samples,
        }
    }
}

fn position(pos: &rhai::Position) -> String {
    match (pos.line(), pos.position()) {
        (Some(l), Some(c)) => format!("{l}:{c}"),
        (Some(l), None) => format!("{l}"),
        _ => "?".to_string(),
    }
}

/// Position of a compile error; an unresolved import carries none, so find its line.
fn error_position(e: &EvalAltResult, text: &str) -> String {
    if !e.position().is_none() {
        return position(&e.position());
    }
    let msg = e.to_string();
    let module = msg
        .split("Module not found: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|m| m.trim_matches('"'));
    module
        .and_then(|m| {
            let needle = format!("\"{m}\"");
            text.lines()
                .position(|l| l.contains("import") && l.contains(&needle))
        })
        .map(|i| format!("{}", i + 1))
        .unwrap_or_else(|| "?".into())
}

/// Flattens Rhai's nested errors into "file:line:column: message" at the innermost frame.
fn describe(err: &EvalAltResult, source: &str) -> PolicyFailure {
    let mut err = err;
    let mut source = source.to_string();
    let mut calls = Vec::new();
    loop {
        match err {
            EvalAltResult::ErrorInFunctionCall(f, src, inner, _) => {
                calls.push(f.clone());
                if !src.is_empty() {
                    source = src.clone();
                }
                err = inner;
            }
            EvalAltResult::ErrorInModule(m, inner, _) => {
                source = m.clone();
                err = inner;
            }
            _ => break,
        }
    }
    let message = match err {
        EvalAltResult::ErrorRuntime(v, _) => v.to_string(),
        other => other
            .to_string()
            .split(" (line")
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    let via = if calls.is_empty() {
        String::new()
    } else {
        format!(" (in {})", calls.join(" → "))
    };
    let text = format!("{source}:{}: {message}{via}", position(&err.position()));
    match message.strip_prefix(NO_DATA) {
        Some(what) => {
            PolicyFailure::NoData(format!("{what} at {source}:{}", position(&err.position())))
        }
        None => PolicyFailure::Error(text),
    }
}

fn parse_decision(d: Dynamic) -> Result<Decision, String> {
    let type_name = d.type_name();
    let map = d.try_cast::<Map>().ok_or_else(|| {
        format!("returned {type_name}, expected a decision such as advance(), hold(\"why\")")
    })?;
    let action = map
        .get("action")
        .and_then(|a| a.clone().into_string().ok())
        .ok_or("returned a map without `action`; use advance(), hold(..), pause(..), rollback(..) or promote()")?;
    let reason = map
        .get("reason")
        .and_then(|r| r.clone().into_string().ok())
        .unwrap_or_default();
    Ok(match action.as_str() {
        "advance" => {
            let to_weight = match map.get("to_weight") {
                None => None,
                Some(w) => {
                    let w = w
                        .as_int()
                        .map_err(|_| "advance_to(weight) needs an integer weight")?;
                    if !(1..=100).contains(&w) {
                        return Err(format!("advance_to({w}): weight must be within 1..=100"));
                    }
                    Some(w as u32)
                }
            };
            Decision::Advance { to_weight, reason }
        }
        "hold" => Decision::Hold { reason },
        "pause" => Decision::Pause { reason },
        "rollback" => Decision::Rollback { reason },
        "promote" => Decision::Promote { reason },
        other => return Err(format!("returned unknown action {other:?}")),
    })
}
