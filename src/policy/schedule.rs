//! Reads the map returned by a policy's `schedule()` into a [`Schedule`], with messages
//! that name the offending key.

use crate::core::schedule::{HeaderRoute, MetricsFlavour, OnError, Schedule};
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
    "readiness_grace",
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
    for (key, v) in map {
        set_key(&mut s, key, v)?;
    }
    Ok(s)
}

/// Applies one `--schedule-override KEY=VALUE` with the same rules as `schedule()`'s map:
/// a whole number is an integer, `none` clears an optional key, steps are `5/25/100`.
pub fn apply_override(s: &mut Schedule, key: &str, text: &str) -> Result<(), String> {
    if !KEYS.contains(&key) || matches!(key, "queries" | "header_route") {
        return Err(format!(
            "unknown key {key:?} (known: {})",
            KEYS.iter()
                .filter(|k| !matches!(**k, "queries" | "header_route"))
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let v = if key == "steps" {
        let weights = text
            .split(['/', ':', ' ', ','])
            .filter(|x| !x.is_empty())
            .map(|x| x.parse::<i64>().map(Dynamic::from_int))
            .collect::<Result<rhai::Array, _>>()
            .map_err(|_| format!("steps={text}: expected e.g. 5/25/50/100"))?;
        Dynamic::from_array(weights)
    } else if text == "none" {
        Dynamic::UNIT
    } else if let Ok(i) = text.parse::<i64>() {
        Dynamic::from_int(i)
    } else {
        Dynamic::from(text.to_string())
    };
    set_key(s, key, &v)
}

fn set_key(s: &mut Schedule, key: &str, v: &Dynamic) -> Result<(), String> {
    let optional = |v: &Dynamic, f: &dyn Fn(&Dynamic) -> Result<Duration, String>| {
        if v.is_unit() {
            Ok(None)
        } else {
            f(v).map(Some)
        }
    };
    match key {
        "steps" => {
            let arr = v
                .clone()
                .into_array()
                .map_err(|t| format!("schedule.steps must be an array of weights, got {t}"))?;
            s.steps = arr
                .iter()
                .map(|w| {
                    uint("steps[]", w).and_then(|w| u32::try_from(w).map_err(|e| e.to_string()))
                })
                .collect::<Result<_, _>>()?;
        }
        "min_step_time" => s.min_step_time = duration(key, v)?,
        "interval" => s.interval = duration(key, v)?,
        "max_duration" => s.max_duration = optional(v, &|v| duration(key, v))?,
        "max_unattended" => s.max_unattended = optional(v, &|v| duration(key, v))?,
        "scale_down_delay" => s.scale_down_delay = duration(key, v)?,
        "readiness_grace" => s.readiness_grace = duration(key, v)?,
        "min_requests" => s.min_requests = uint(key, v)?,
        "canary_replicas" => {
            s.canary_replicas = u32::try_from(uint(key, v)?).map_err(|e| e.to_string())?
        }
        "max_canary_replicas" => {
            s.max_canary_replicas = if v.is_unit() {
                None
            } else {
                Some(u32::try_from(uint(key, v)?).map_err(|e| e.to_string())?)
            }
        }
        "on_error" => {
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
        "queries" => {
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
        "metrics" => {
            let name = v
                .clone()
                .into_string()
                .map_err(|t| format!("schedule.metrics must be a string, got {t}"))?;
            s.metrics =
                Some(MetricsFlavour::parse(&name).map_err(|e| format!("schedule.metrics {e}"))?)
        }
        "header_route" => {
            // One map, or a list of maps (any one header matches).
            let maps: Vec<Dynamic> = match v.clone().try_cast::<rhai::Array>() {
                Some(list) => list,
                None => vec![v.clone()],
            };
            let mut routes = Vec::new();
            for (i, item) in maps.iter().enumerate() {
                let at = if maps.len() > 1 {
                    format!("[{i}]")
                } else {
                    String::new()
                };
                let m = item.clone().try_cast::<Map>().ok_or_else(|| {
                    format!(
                        "schedule.header_route{at} must be a map like #{{ name: \"x-canary\", value: \"true\" }} (or a list of them)"
                    )
                })?;
                let get = |k: &str| {
                    m.get(k)
                        .and_then(|v| v.clone().into_string().ok())
                        .filter(|s| !s.trim().is_empty())
                        .ok_or_else(|| {
                            format!("schedule.header_route{at}.{k} must be a non-empty string")
                        })
                };
                routes.push(HeaderRoute {
                    name: get("name")?,
                    value: get("value")?,
                });
            }
            s.header_routes = routes;
        }
        _ => return Err(format!("schedule has unknown key {key:?}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_routes(rhai_expr: &str) -> Result<Vec<HeaderRoute>, String> {
        let engine = rhai::Engine::new();
        let mut map: Map = engine
            .eval::<Map>("#{ steps: [5, 100] }")
            .expect("base map");
        let v: Dynamic = engine.eval(rhai_expr).expect("expression");
        map.insert("header_route".into(), v);
        schedule_from_map(&map).map(|s| s.header_routes)
    }

    #[test]
    fn header_route_is_one_map_or_a_list_of_maps() {
        let one = header_routes(r#"#{ name: "x-canary", value: "true" }"#).unwrap();
        assert_eq!(
            one,
            [HeaderRoute {
                name: "x-canary".into(),
                value: "true".into()
            }]
        );
        let three = header_routes(
            r#"[#{ name: "x-canary", value: "true" }, #{ name: "x-user-tier", value: "beta" }, #{ name: "x-region", value: "us-west-2" }]"#,
        )
        .unwrap();
        assert_eq!(
            three.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
            ["x-canary", "x-user-tier", "x-region"]
        );
        // The message names the list item and the key.
        let e = header_routes(r#"[#{ name: "x-canary", value: "true" }, #{ name: "x-region" }]"#)
            .unwrap_err();
        assert!(e.contains("schedule.header_route[1].value"), "{e}");
        let e = header_routes(r#"[#{ name: "x-canary", value: "true" }, "x-region"]"#).unwrap_err();
        assert!(e.contains("schedule.header_route[1] must be a map"), "{e}");
    }
}
