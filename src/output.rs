//! Rendering for `-o table|json|yaml`. Only these functions write command results to stdout.

use crate::cli::OutputFormat;
use crate::error::{Error, Result};
use serde::Serialize;

/// Prints `value` as JSON or YAML; returns false for table output (the caller renders it).
pub fn structured<T: Serialize>(format: OutputFormat, value: &T) -> Result<bool> {
    let text = match format {
        OutputFormat::Table => return Ok(false),
        OutputFormat::Html => {
            return Err(Error::Usage(
                "-o html: only `kubectl canary report` writes HTML (use table, json or yaml)"
                    .into(),
            ));
        }
        OutputFormat::Json => {
            serde_json::to_string_pretty(value).map_err(|e| Error::Output(e.to_string()))?
        }
        OutputFormat::Yaml => {
            serde_yaml_ng::to_string(value).map_err(|e| Error::Output(e.to_string()))?
        }
    };
    println!("{}", text.trim_end());
    Ok(true)
}

pub fn table(header: &[&str]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Dynamic)
        .set_header(header.iter().map(|h| h.to_uppercase()));
    t
}

/// "1h 5m 30s"-style duration for tables.
pub fn secs(s: u64) -> String {
    let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s:02}s"),
        _ => format!("{h}h{m:02}m{s:02}s"),
    }
}

/// Observations as "name=value" pairs; no data shows as "n/a", never as 0. The evidence the
/// statistics carry from one evaluation to the next is bookkeeping, left to `-o json`.
pub fn observations(obs: &crate::core::decision::Observations) -> String {
    obs.iter()
        .filter(|(k, _)| !crate::core::stats::EVIDENCE_KEYS.contains(&k.as_str()))
        .map(|(k, v)| match v {
            Some(v) if v.fract() == 0.0 && v.abs() < 1e12 => format!("{k}={v:.0}"),
            Some(v) if v.abs() < 1.0 => format!("{k}={v:.4}"),
            Some(v) => format!("{k}={v:.1}"),
            None => format!("{k}=n/a"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}
