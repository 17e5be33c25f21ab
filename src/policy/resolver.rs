//! Module resolver for hooks: `import "kafka-lag"` finds `kafka-lag.rhai` in the plugin
//! directories and nowhere else (no paths, no `..`, no absolute files).

use rhai::{Engine, EvalAltResult, Module, ModuleResolver, Position, Shared};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

pub struct PluginResolver {
    dirs: Vec<PathBuf>,
    cache: Mutex<HashMap<String, Shared<Module>>>,
}

impl PluginResolver {
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        PluginResolver {
            dirs,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// A hook name is a plain file stem: letters, digits, `-` and `_`.
    pub fn is_valid_name(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    }

    pub fn find(&self, name: &str) -> Option<PathBuf> {
        self.dirs
            .iter()
            .map(|d| d.join(format!("{name}.rhai")))
            .find(|p| p.is_file())
    }

    fn error(msg: String, pos: Position) -> Box<EvalAltResult> {
        Box::new(EvalAltResult::ErrorModuleNotFound(msg, pos))
    }
}

impl ModuleResolver for PluginResolver {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        if !Self::is_valid_name(path) {
            return Err(Self::error(
                format!(
                    "{path:?} (hooks are imported by name, e.g. import \"kafka-lag\"; paths are not allowed)"
                ),
                pos,
            ));
        }
        if let Some(m) = self.cache.lock().expect("resolver cache").get(path) {
            return Ok(m.clone());
        }
        // Hooks importing each other would recurse until the stack overflows (SIGABRT):
        // a cycle, or a chain deeper than MAX_IMPORT_DEPTH, is an error naming the chain.
        let chain = IMPORTING.with(|s| s.borrow().clone());
        if chain.iter().any(|p| p == path) || chain.len() >= MAX_IMPORT_DEPTH {
            let mut shown = chain.clone();
            shown.push(path.to_string());
            let what = if chain.iter().any(|p| p == path) {
                "import cycle"
            } else {
                "imports nested too deeply"
            };
            // Not ErrorModuleNotFound: Rhai replaces that one's message by the module name.
            return Err(Box::new(EvalAltResult::ErrorRuntime(
                format!("{what}: {}", shown.join(" → ")).into(),
                pos,
            )));
        }
        IMPORTING.with(|s| s.borrow_mut().push(path.to_string()));
        let result = self.load(engine, path, pos);
        IMPORTING.with(|s| {
            s.borrow_mut().pop();
        });
        result
    }
}

/// Hooks may import hooks, at most this deep.
const MAX_IMPORT_DEPTH: usize = 8;

thread_local! {
    /// The hooks being imported on this thread, outermost first.
    static IMPORTING: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl PluginResolver {
    fn load(
        &self,
        engine: &Engine,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        // Plugin dirs first (a team may override a shipped hook), then the shipped hooks.
        let (file, text) = match self.find(path) {
            Some(file) => {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| Self::error(format!("{}: {e}", file.display()), pos))?;
                (file, text)
            }
            None => match crate::shipped::plugin(path) {
                Some(text) => (
                    PathBuf::from(format!("plugins/{path}.rhai")),
                    text.to_string(),
                ),
                None => {
                    let dirs: Vec<String> =
                        self.dirs.iter().map(|d| d.display().to_string()).collect();
                    return Err(Self::error(
                        format!(
                            "{path} (looked in plugin dirs [{}] and the shipped hooks: {})",
                            dirs.join(", "),
                            crate::shipped::PLUGINS
                                .iter()
                                .map(|(n, _)| *n)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        pos,
                    ));
                }
            },
        };
        let mut ast = engine.compile(&text).map_err(|e| {
            Box::new(EvalAltResult::ErrorInModule(
                file.display().to_string(),
                Box::new(EvalAltResult::ErrorParsing(*e.0, e.1)),
                pos,
            ))
        })?;
        ast.set_source(file.display().to_string());
        let module = Module::eval_ast_as_new(rhai::Scope::new(), &ast, engine).map_err(|e| {
            Box::new(EvalAltResult::ErrorInModule(
                file.display().to_string(),
                e,
                pos,
            ))
        })?;
        let module: Shared<Module> = module.into();
        self.cache
            .lock()
            .expect("resolver cache")
            .insert(path.to_string(), module.clone());
        Ok(module)
    }
}
