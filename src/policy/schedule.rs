//! Reads the map returned by a policy's `schedule()` into a [`Schedule`], with messages
//! that name the offending key.

use crate::core::schedule::{HeaderRoute, OnError, Schedule};
use rhai::{Dynamic, Map};
use std::time::Duration;

const KEYS: &[&str] = &[
    "steps",
    "min_step_time",
    "min_requests",
    "interval",
    "on_error",
    "canary_replicas",
    "max_duration",
    "queries",
    "header_route",
    "metrics",
    "scale_down_delay",
    "max_canary_replicas",
    "max_unattended",
];

/// The longest duration a schedule may name (a rollout is not planned for longer).
pub const MAX_SCHEDULE_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

fn duration(key: &str, v: &Dynamic) -> Result<Duration, String> {
    let d = if let Ok(secs) = v.as_int() {
        u64::try_from(secs)
            .map(Duration::from_secs)
            .map_err(|_| format!("schedule.{key} must not be negative"))?
    } else if let Ok(f) = v.as_float() {
        if !(f.is_finite() && f >= 0.0) {
            return Err(format!(
                "schedule.{key} must be a finite, non-negative number of seconds"
            ));
        }
        // Checked: from_secs_f64 panics on values such as 1e20.
        Duration::try_from_secs_f64(f).map_err(|e| format!("schedule.{key} = {f}: {e}"))?
    } else {
        let text = v.clone().into_string().map_err(|t| {
            format!("schedule.{key} must be a duration like \"5m\" or seconds, got {t}")
        })?;
        humantime::parse_duration(&text).map_err(|e| format!("schedule.{key} = {text:?}: {e}"))?
    };
    if d > MAX_SCHEDULE_DURATION {
        return Err(format!(
            "schedule.{key} = {} is longer than the limit of {}",
            humantime::format_duration(d),
            humantime::format_duration(MAX_SCHEDULE_DURATION)
        ));
    }
    Ok(d)
}

fn uint(key: &str, v: &Dynamic) -> Result<u64, String> {
    v.as_int()
        .ok()
        .and_then(|i| u64::try_from(i).ok())
        .ok_or_else(|| {
            format!(
                "schedule.{key} must be a non-negative integer, got {}",
                v.type_name()
            )
        })
}

pub fn schedule_from_map(map: &Map) -> Result<Schedule, String> {
    if let Some(unknown) = map.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!(
            "schedule has unknown key {unknown:?} (known: {})",
            KEYS.join(", ")
        ));
    }
    let mut s = Schedule::default();
    if let Some(v) = map.get("steps") {
        let arr = v
            .clone()
            .into_array()
            .map_err(|t| format!("schedule.steps must be an array of weights, got {t}"))?;
        s.steps = arr
            .iter()
            .map(|w| uint("steps[]", w).and_then(|w| u32::try_from(w).map_err(|e| e.to_string())))
            .collect::<Result<_, _>>()?;
    }
    if let Some(v) = map.get("min_step_time") {
        s.min_step_time = duration("min_step_time", v)?;
    }
    if let Some(v) = map.get("interval") {
        s.interval = duration("interval", v)?;
    }
    if let Some(v) = map.get("max_duration") {
        s.max_duration = Some(duration("max_duration", v)?);
    }
    if let Some(v) = map.get("max_unattended") {
        s.max_unattended = Some(duration("max_unattended", v)?);
    }
    if let Some(v) = map.get("min_requests") {
        s.min_requests = uint("min_requests", v)?;
    }
    if let Some(v) = map.get("canary_replicas") {
        s.canary_replicas =
            u32::try_from(uint("canary_replicas", v)?).map_err(|e| e.to_string())?;
    }
    if let Some(v) = map.get("scale_down_delay") {
        s.scale_down_delay = duration("scale_down_delay", v)?;
    }
    if let Some(v) = map.get("max_canary_replicas") {
        s.max_canary_replicas =
            Some(u32::try_from(uint("max_canary_replicas", v)?).map_err(|e| e.to_string())?);
    }
    if let Some(v) = map.get("on_error") {
        let text = v.clone().into_string().unwrap_or_default();
        s.on_error = match text.as_str() {
            "hold" => OnError::Hold,
            "pause" => OnError::Pause,
            "rollback" => OnError::Rollback,
            _ => {
                return Err(format!(
                    "schedule.on_error must be \"hold\", \"pause\" or \"rollback\", got {v}"
                ));
            }
        };
    }
    if let Some(v) = map.get("queries") {
        let q = v
            .clone()
            .try_cast::<Map>()
            .ok_or("schedule.queries must be a map of name → PromQL template")?;
        for (name, text) in q {
            let text = text
                .into_string()
                .map_err(|t| format!("schedule.queries.{name} must be a string, got {t}"))?;
            s.queries.insert(name.to_string(), text);
        }
    }
    if let Some(v) = map.get("metrics") {
        s.metrics = Some(
            v.clone()
                .into_string()
                .map_err(|t| format!("schedule.metrics must be a string, got {t}"))?,
        );
    }
    if let Some(v) = map.get("header_route") {
        let m = v.clone().try_cast::<Map>().ok_or(
            "schedule.header_route must be a map like #{ name: \"x-canary\", value: \"true\" }",
        )?;
        let get = |k: &str| {
            m.get(k)
                .and_then(|v| v.clone().into_string().ok())
                .ok_or_else(|| format!("schedule.header_route.{k} must be a string"))
        };
        s.header_route = Some(HeaderRoute {
            name: get("name")?,
            value: get("value")?,
        });
    }
    Ok(s)
}
