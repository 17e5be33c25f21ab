//! The report as one self-contained HTML page: inline SVG charts, inline CSS, no script, and a
//! Content-Security-Policy (`default-src 'none'`) so the browser fetches nothing, whatever a
//! policy wrote into a reason. Text is escaped by `maud`.

use super::timings::{RecoveryBasis, RollbackTimings, fmt_secs};
use super::{Chart, DecisionMark, MetricsOrigin, Point, Report, Series, Unit};
use crate::core::facts::Track;
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};

/// No fetch of any kind; only the inline style sheet.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'";

const STYLE: &str = r#"
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px auto; max-width: 1000px; color: #212529; padding: 0 16px; }
h1 { font-size: 1.5rem; margin-bottom: 4px; }
h2 { font-size: 1.15rem; border-bottom: 1px solid #dee2e6; padding-bottom: 4px; margin-top: 32px; }
.sub { color: #495057; margin-top: 0; }
.phase { display: inline-block; padding: 2px 8px; border-radius: 4px; background: #e9ecef; font-weight: 600; }
.phase-RolledBack, .phase-RollingBack, .phase-Aborted, .phase-Failed { background: #ffe3e3; color: #c92a2a; }
.phase-Promoted { background: #d3f9d8; color: #2b8a3e; }
.timings { display: flex; gap: 16px; flex-wrap: wrap; }
.timing { border: 1px solid #dee2e6; border-radius: 6px; padding: 12px 16px; min-width: 260px; flex: 1; }
.timing .label { display: block; color: #495057; font-size: 0.85rem; }
.timing .value { display: block; font-size: 1.8rem; font-weight: 700; }
.timing .how { display: block; color: #495057; font-size: 0.8rem; }
.met { color: #2b8a3e; } .missed { color: #c92a2a; } .unknown { color: #868e96; }
figure.chart { margin: 12px 0; }
figure.chart figcaption { font-weight: 600; font-size: 0.95rem; }
figure.chart.small { display: inline-block; width: 48%; vertical-align: top; }
svg { width: 100%; height: auto; background: #fff; }
svg text { font-size: 11px; fill: #495057; }
.axis line, .grid line { stroke: #dee2e6; }
.series { fill: none; stroke-width: 1.8; }
.series-canary { stroke: #e8590c; } .dot-canary { fill: #e8590c; }
.series-stable { stroke: #1971c2; } .dot-stable { fill: #1971c2; }
.series-other { stroke: #5f3dc4; } .dot-other { fill: #5f3dc4; }
.series-weight { stroke: #5f3dc4; stroke-width: 2.2; fill: none; }
.decision circle { fill: #adb5bd; stroke: #fff; }
.decision-advance circle { fill: #2f9e44; }
.decision-rollback circle, .decision-begin_rollback circle, .decision-abort circle { fill: #e03131; }
.decision-pause circle { fill: #f08c00; } .decision-promote circle, .decision-begin_promote circle { fill: #1971c2; }
.milestone line { stroke: #c92a2a; stroke-dasharray: 4 3; } .milestone text { fill: #c92a2a; }
.transition-line { stroke: #ced4da; stroke-dasharray: 2 3; }
.legend span { margin-right: 16px; font-size: 0.85rem; }
.legend .swatch { display: inline-block; width: 12px; height: 3px; vertical-align: middle; margin-right: 4px; }
table { border-collapse: collapse; width: 100%; font-size: 0.85rem; }
th, td { text-align: left; padding: 4px 6px; border-bottom: 1px solid #f1f3f5; vertical-align: top; }
th { background: #f8f9fa; }
td.obs { font-family: ui-monospace, monospace; font-size: 0.78rem; color: #495057; }
tr.hold td { color: #6c757d; }
dl.context { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; }
dl.context dt { font-weight: 600; } dl.context dd { margin: 0; font-family: ui-monospace, monospace; }
.notes li { color: #862e9c; }
footer { margin-top: 32px; color: #868e96; font-size: 0.8rem; }
"#;

const WIDTH: f64 = 960.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// Time (x) and value (y) scales of one chart.
struct Frame {
    t0: DateTime<Utc>,
    t1: DateTime<Utc>,
    width: f64,
    height: f64,
    ymin: f64,
    ymax: f64,
}

impl Frame {
    fn x(&self, t: DateTime<Utc>) -> f64 {
        let span = (self.t1 - self.t0).num_milliseconds().max(1) as f64;
        let off = (t - self.t0).num_milliseconds() as f64;
        LEFT + (off / span).clamp(0.0, 1.0) * (self.width - LEFT - RIGHT)
    }

    fn y(&self, v: f64) -> f64 {
        let span = (self.ymax - self.ymin).max(f64::EPSILON);
        let h = self.height - TOP - BOTTOM;
        TOP + h - ((v - self.ymin) / span).clamp(0.0, 1.0) * h
    }
}

/// A "nice" tick step (1, 2 or 5 × 10^k) giving about `n` ticks over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    if !(span.is_finite() && span > 0.0) {
        return 1.0;
    }
    let raw = span / n;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// The value range of a chart: always includes 0, rounded out to whole ticks.
fn value_range(values: impl Iterator<Item = f64>, unit: Unit) -> (f64, f64, f64) {
    let (mut lo, mut hi) = (0.0f64, 0.0f64);
    for v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if hi - lo <= f64::EPSILON {
        hi = match unit {
            Unit::Ratio => 0.01,
            Unit::Percent => 100.0,
            _ => 1.0,
        } + lo;
    }
    let step = nice_step(hi - lo, 4.0);
    ((lo / step).floor() * step, (hi / step).ceil() * step, step)
}

pub fn fmt_value(v: f64, unit: Unit) -> String {
    let compact = |v: f64| {
        if v == 0.0 {
            "0".to_string()
        // Ticks are multiples of a step: 0.6 × 100 is 60.000…01, still "60".
        } else if v.abs() >= 100.0 || (v - v.round()).abs() < 1e-9 {
            format!("{v:.0}")
        } else if v.abs() >= 1.0 {
            format!("{v:.1}")
        } else {
            let s = format!("{v:.4}");
            s.trim_end_matches('0').to_string()
        }
    };
    match unit {
        Unit::Ratio => format!("{}%", compact(v * 100.0)),
        Unit::Percent => format!("{}%", compact(v)),
        Unit::Milliseconds => format!("{} ms", compact(v)),
        Unit::PerSecond => format!("{}/s", compact(v)),
        Unit::Number => compact(v),
    }
}

/// "+1m30s" from the rollout's start.
fn elapsed(start: DateTime<Utc>, t: DateTime<Utc>) -> String {
    let s = (t - start).num_seconds().max(0) as u64;
    format!("+{}", crate::output::secs(s))
}

fn clock(t: DateTime<Utc>) -> String {
    t.format("%H:%M:%S%.3f").to_string()
}

fn track_class(track: Option<Track>) -> &'static str {
    match track {
        Some(Track::Canary) => "canary",
        Some(Track::Stable) => "stable",
        None => "other",
    }
}

/// Polyline segments of a series (a `None` breaks the line; a lone point becomes a dot).
fn segments(f: &Frame, points: &[Point]) -> Vec<Vec<(f64, f64)>> {
    let mut out = vec![Vec::new()];
    for p in points {
        match p.value {
            Some(v) => out
                .last_mut()
                .expect("never empty")
                .push((f.x(p.at), f.y(v))),
            None => out.push(Vec::new()),
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

fn coords(points: &[(f64, f64)]) -> String {
    points
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn axes(f: &Frame, unit: Unit, ystep: f64) -> Markup {
    let span = (f.t1 - f.t0).num_seconds().max(1) as f64;
    // Whole seconds, minutes or hours on the time axis.
    let candidates = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
    ];
    let tstep = candidates
        .iter()
        .copied()
        .find(|c| span / c <= 8.0)
        .unwrap_or(span / 8.0);
    let xticks: Vec<f64> = (0..=((span / tstep) as i64))
        .map(|i| i as f64 * tstep)
        .collect();
    let yticks: Vec<f64> = (0..=(((f.ymax - f.ymin) / ystep).round() as i64))
        .map(|i| f.ymin + i as f64 * ystep)
        .collect();
    let bottom = f.height - BOTTOM;
    html! {
        g.grid {
            @for v in &yticks {
                line x1=(LEFT) x2=(f.width - RIGHT) y1=(format!("{:.1}", f.y(*v))) y2=(format!("{:.1}", f.y(*v))) {}
            }
        }
        g.axis {
            line x1=(LEFT) x2=(f.width - RIGHT) y1=(bottom) y2=(bottom) {}
            @for v in &yticks {
                text x=(LEFT - 6.0) y=(format!("{:.1}", f.y(*v) + 4.0)) text-anchor="end" { (fmt_value(*v, unit)) }
            }
            @for s in &xticks {
                @let t = f.t0 + chrono::Duration::milliseconds((*s * 1000.0) as i64);
                text x=(format!("{:.1}", f.x(t))) y=(bottom + 16.0) text-anchor="middle" { (elapsed(f.t0, t)) }
            }
        }
    }
}

fn series_markup(f: &Frame, s: &Series, unit: Unit) -> Markup {
    let class = track_class(s.track);
    html! {
        g.track data-track=(class) data-points=(s.points.iter().filter(|p| p.value.is_some()).count()) {
            @for seg in segments(f, &s.points) {
                @if seg.len() == 1 {
                    circle class=(format!("dot-{class}")) cx=(format!("{:.1}", seg[0].0)) cy=(format!("{:.1}", seg[0].1)) r="2.5" {}
                } @else {
                    polyline class=(format!("series series-{class}")) points=(coords(&seg)) {}
                }
            }
            @if let Some(last) = s.points.iter().rev().find_map(|p| p.value) {
                title { (s.label) ", last value " (fmt_value(last, unit)) }
            }
        }
    }
}

/// The rollback's milestones as dashed vertical lines.
fn milestones(rb: &RollbackTimings) -> Vec<(&'static str, DateTime<Utc>)> {
    let mut m = Vec::new();
    if let Some(b) = rb.first_breach_at {
        m.push(("first breach", b));
    }
    m.push(("rollback decision", rb.decision_at));
    if let Some(z) = rb.canary_traffic_zero_at {
        m.push(("canary traffic 0", z));
    }
    m
}

fn milestone_lines(f: &Frame, r: &Report, labels: bool) -> Markup {
    let ms = r.rollback.as_ref().map(milestones).unwrap_or_default();
    html! {
        @for t in r.lifecycle.iter() {
            line.transition-line x1=(format!("{:.1}", f.x(t.at))) x2=(format!("{:.1}", f.x(t.at))) y1=(TOP) y2=(f.height - BOTTOM) {}
        }
        @for (i, (name, at)) in ms.iter().enumerate() {
            g.milestone data-milestone=(name) {
                line x1=(format!("{:.1}", f.x(*at))) x2=(format!("{:.1}", f.x(*at))) y1=(TOP) y2=(f.height - BOTTOM) {}
                @if labels {
                    text x=(format!("{:.1}", f.x(*at) - 4.0)) y=(TOP + 10.0 + 12.0 * i as f64) text-anchor="end" { (name) }
                }
                title { (name) " at " (clock(*at)) }
            }
        }
    }
}

fn legend(series: &[Series]) -> Markup {
    html! {
        div.legend {
            @for s in series {
                span {
                    span.swatch style=(format!("background: {}", match s.track {
                        Some(Track::Canary) => "#e8590c",
                        Some(Track::Stable) => "#1971c2",
                        None => "#5f3dc4",
                    })) {}
                    (s.label)
                }
            }
        }
    }
}

fn frame(r: &Report, height: f64, width: f64, ymin: f64, ymax: f64) -> Frame {
    // Prometheus may see the canary's traffic end after the last recorded transition.
    let last_milestone = r
        .rollback
        .as_ref()
        .and_then(|rb| rb.canary_traffic_zero_at)
        .unwrap_or(r.ended_at);
    Frame {
        t0: r.started_at,
        t1: r
            .ended_at
            .max(last_milestone)
            .max(r.started_at + chrono::Duration::seconds(1)),
        width,
        height,
        ymin,
        ymax,
    }
}

fn chart_figure(r: &Report, c: &Chart, small: bool) -> Markup {
    let values = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.value));
    let (ymin, ymax, ystep) = value_range(values, c.unit);
    let (width, height) = if small {
        (480.0, 170.0)
    } else {
        (WIDTH, 200.0)
    };
    let f = frame(r, height, width, ymin, ymax);
    let class = if small { "chart small" } else { "chart" };
    html! {
        figure class=(class) id=(c.id) data-series=(c.series.len()) {
            figcaption { (c.title) }
            @if c.has_data() {
                svg viewBox=(format!("0 0 {width} {height}")) role="img" aria-label=(c.title) {
                    (axes(&f, c.unit, ystep))
                    (milestone_lines(&f, r, false))
                    @for s in &c.series {
                        (series_markup(&f, s, c.unit))
                    }
                }
                @if !small { (legend(&c.series)) }
            } @else {
                p.unknown.no-data { (no_data_text(r)) }
            }
        }
    }
}

fn no_data_text(r: &Report) -> &'static str {
    match r.metrics_origin {
        MetricsOrigin::Recorded => {
            "No data: the policy did not record this value (pass --prometheus-url to query it)."
        }
        MetricsOrigin::Prometheus { .. } => "No data in Prometheus for this rollout's time range.",
    }
}

fn decision_title(d: &DecisionMark) -> String {
    let mut s = format!(
        "{} {} at {}% (step {}) by {}: {}",
        clock(d.at),
        d.action,
        d.weight,
        d.step,
        d.by,
        d.reason
    );
    if !d.observations.is_empty() {
        s.push('\n');
        s.push_str(&crate::output::observations(&d.observations));
    }
    s
}

fn weight_chart(r: &Report) -> Markup {
    let height = 240.0;
    let f = frame(r, height, WIDTH, 0.0, 100.0);
    // A step function: the weight holds until the next change.
    let mut stepped = Vec::new();
    for w in r.weight.windows(2) {
        if let (Some(a), Some(b)) = (w[0].value, w[1].value) {
            stepped.push((f.x(w[0].at), f.y(a)));
            stepped.push((f.x(w[1].at), f.y(a)));
            stepped.push((f.x(w[1].at), f.y(b)));
        }
    }
    html! {
        figure.chart id="chart-weight" data-decisions=(r.decisions.len()) {
            figcaption { "Canary weight and decisions" }
            svg viewBox=(format!("0 0 {WIDTH} {height}")) role="img" aria-label="Canary weight over time" {
                (axes(&f, Unit::Percent, 25.0))
                (milestone_lines(&f, r, true))
                polyline.series-weight points=(coords(&stepped)) {}
                @for d in &r.decisions {
                    @let big = d.action != "hold";
                    g class=(format!("decision decision-{}", d.action)) data-action=(d.action) {
                        circle cx=(format!("{:.1}", f.x(d.at))) cy=(format!("{:.1}", f.y(f64::from(d.weight)))) r=(if big { "6" } else { "3" }) {}
                        title { (decision_title(d)) }
                    }
                }
            }
            p.sub { "Each dot is an evaluation (grey: hold); hover for its reason and observations." }
        }
    }
}

fn timing_box(id: &str, label: &str, value: Markup, how: Markup) -> Markup {
    html! {
        div.timing id=(id) {
            span.label { (label) }
            span.value { (value) }
            span.how { (how) }
        }
    }
}

fn seconds_value(s: Option<f64>) -> Markup {
    html! {
        @match s {
            Some(s) => span data-seconds=(format!("{s:.3}")) { (fmt_secs(s)) },
            None => span.unknown data-seconds="" { "not measured" },
        }
    }
}

fn rollback_section(r: &Report, rb: &RollbackTimings) -> Markup {
    let at = |t: Option<DateTime<Utc>>| match t {
        Some(t) => format!("{} ({})", clock(t), elapsed(r.started_at, t)),
        None => "—".into(),
    };
    let since_decision = |t: Option<DateTime<Utc>>| match t {
        Some(t) => format!(
            "{:+.3}s",
            (t - rb.decision_at).num_milliseconds() as f64 / 1000.0
        ),
        None => String::new(),
    };
    let rows: [(&str, Option<DateTime<Utc>>, &str); 6] = [
        (
            "last clean evaluation",
            rb.last_clean_evaluation_at,
            "the breach began after this evaluation",
        ),
        (
            "first breaching evaluation",
            rb.first_breach_at,
            "a rollback decision, or a policy observation *_breach ≠ 0",
        ),
        (
            "rollback decision",
            Some(rb.decision_at),
            rb.reason.as_str(),
        ),
        (
            "weight 0 written",
            Some(rb.weight_zero_at),
            "recorded with the begin_rollback transition, in the same step as the write",
        ),
        (
            "canary traffic 0",
            rb.canary_traffic_zero_at,
            "Prometheus: no canary request over two scrape intervals",
        ),
        (
            "rollback done",
            rb.rollback_done_at,
            "canary scaled down, its pods gone, our route changes undone",
        ),
    ];
    let (target_class, target_text) = match rb.target_met {
        Some(true) => ("met", "met"),
        Some(false) => ("missed", "missed"),
        None => ("unknown", "not verified"),
    };
    let recovery_how = match rb.recovery_basis {
        RecoveryBasis::CanaryTrafficZero => format!(
            "decision → weight 0 written {} → canary traffic 0 in Prometheus {}",
            fmt_secs(rb.decision_to_weight_zero_secs),
            fmt_secs(rb.weight_zero_to_canary_traffic_zero_secs.unwrap_or(0.0))
        ),
        RecoveryBasis::CanaryPodsGone => format!(
            "at most: decision → rollback done (canary pods gone); weight 0 written after {}; no Prometheus data on the canary's traffic",
            fmt_secs(rb.decision_to_weight_zero_secs)
        ),
        RecoveryBasis::NotMeasured => "the rollback has not finished".into(),
    };
    html! {
        section id="rollback" {
            h2 { "Rollback" }
            p { "Decided by " strong { (rb.decided_by) } ": " (rb.reason) }
            div.timings {
                (timing_box("time-to-detection", "Time to detection", seconds_value(rb.time_to_detection_secs),
                    html! { @match rb.first_breach_at {
                        Some(b) => { "first breaching evaluation " (clock(b)) " → decision " (clock(rb.decision_at)) },
                        None => "no evaluation recorded a breach before the decision",
                    } }))
                (timing_box("time-to-recovery", "Time to recovery", seconds_value(rb.time_to_recovery_secs), html! { (recovery_how) }))
                (timing_box("recovery-target", "2-minute target",
                    html! { span class=(target_class) data-target-met=(target_text) { (target_text) } },
                    html! { "recovery within " (rb.target_secs) " s of detection (seed 000's drill criterion)" }))
            }
            table id="milestones" {
                thead { tr { th { "milestone" } th { "time (UTC)" } th { "from decision" } th { "what" } } }
                tbody {
                    @for (name, t, what) in rows {
                        tr data-milestone=(name) { td { (name) } td { (at(t)) } td { (since_decision(t)) } td { (what) } }
                    }
                }
            }
        }
    }
}

fn origin_text(o: &MetricsOrigin) -> String {
    match o {
        MetricsOrigin::Recorded => "From the values the policy recorded at each evaluation (pass --prometheus-url for range queries at full resolution).".into(),
        MetricsOrigin::Prometheus { url, step_secs, window_secs } => format!(
            "Prometheus range queries ({url}), one point every {step_secs}s, rates over {window_secs}s: the built-in queries of the rollout's metrics flavour."
        ),
    }
}

/// The whole page.
pub fn render(r: &Report) -> String {
    let c = &r.context;
    let phase_class = format!("phase phase-{}", r.phase.as_str());
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="Content-Security-Policy" content=(CONTENT_SECURITY_POLICY);
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Canary report: " (r.title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { "Canary report: " (r.title) }
                    p.sub {
                        span class=(phase_class) id="phase" { (r.phase) }
                        " · started " (r.started_at.format("%Y-%m-%d %H:%M:%S UTC"))
                        " · " (crate::output::secs((r.ended_at - r.started_at).num_seconds().max(0) as u64))
                        @if r.simulated { " · simulated (virtual clock)" }
                    }
                    p.sub {
                        @for (container, image) in &c.images {
                            (container) ": " code { (c.previous_images.get(container).map(String::as_str).unwrap_or("?")) } " → " code { (image) } " "
                        }
                    }
                }
                @if let Some(rb) = &r.rollback {
                    (rollback_section(r, rb))
                }
                section id="weight" {
                    h2 { "Weight" }
                    (weight_chart(r))
                }
                section id="metrics" {
                    h2 { "Canary vs stable" }
                    p.sub id="metrics-origin" { (origin_text(&r.metrics_origin)) }
                    @for chart in &r.metrics {
                        (chart_figure(r, chart, false))
                    }
                }
                @if !r.observations.is_empty() {
                    section id="observations" {
                        h2 { "Policy observations" }
                        @for chart in &r.observations {
                            (chart_figure(r, chart, true))
                        }
                    }
                }
                section id="decisions" {
                    h2 { "Decisions" }
                    table {
                        thead { tr { th { "time" } th { "step" } th { "weight" } th { "decision" } th { "by" } th { "reason" } th { "observations" } } }
                        tbody {
                            @for d in &r.decisions {
                                tr class=(d.action) data-action=(d.action) {
                                    td { (clock(d.at)) br; small { (elapsed(r.started_at, d.at)) } }
                                    td { (d.step) }
                                    td { (d.weight) "%" }
                                    td { (d.action) @if let Some(t) = &d.transition { br; small { "→ " (t) } } }
                                    td { (d.by) }
                                    td { (d.reason) }
                                    td.obs { (crate::output::observations(&d.observations)) }
                                }
                            }
                        }
                    }
                }
                section id="lifecycle" {
                    h2 { "Lifecycle" }
                    table {
                        thead { tr { th { "time" } th { "transition" } th { "step" } th { "weight" } th { "by" } th { "reason" } } }
                        tbody {
                            @for t in &r.lifecycle {
                                tr data-event=(t.event) {
                                    td { (clock(t.at)) br; small { (elapsed(r.started_at, t.at)) } }
                                    td { (t.event) br; small { (t.from) " → " (t.to) } }
                                    td { (t.step + 1) }
                                    td { (t.weight) "%" }
                                    td { (t.actor) }
                                    td { (t.reason) }
                                }
                            }
                        }
                    }
                }
                section id="context" {
                    h2 { "Context" }
                    dl.context {
                        dt { "policy" } dd { (c.policy) " (" (c.policy_path) ")" }
                        dt { "policy sha256" } dd id="policy-sha256" { (c.policy_sha256) }
                        dt { "steps" } dd { (c.steps.iter().map(|s| format!("{s}%")).collect::<Vec<_>>().join(" → ")) }
                        dt { "parameters" } dd { @if c.params.is_empty() { "none" } @else { (c.params.join(", ")) } }
                        dt { "schedule overrides" } dd { @if c.schedule_overrides.is_empty() { "none" } @else { (c.schedule_overrides.join(", ")) } }
                        dt { "traffic" } dd { (c.provider) " " (c.route) }
                        dt { "started by" } dd { (c.started_by) }
                    }
                }
                @if !r.notes.is_empty() {
                    section id="notes" {
                        h2 { "Notes" }
                        ul.notes { @for n in &r.notes { li { (n) } } }
                    }
                }
                footer {
                    "Generated " (r.generated_at.format("%Y-%m-%d %H:%M:%S UTC"))
                    " by kubectl-canary " (env!("CARGO_PKG_VERSION")) ". Self-contained: no script, nothing fetched."
                }
            }
        }
    };
    page.into_string()
}
