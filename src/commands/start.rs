//! `kubectl canary start`: canary Deployment from stable's pod template with the new image(s),
//! wait until ready, traffic split at the policy's first weight, state recorded.

use crate::cli::{GlobalArgs, StartArgs};
use crate::cluster::client::Session;
use crate::cluster::clock;
use crate::cluster::driver::{self, apply_overrides};
use crate::cluster::state::{PolicyRef, RolloutRecord, Store, Stored};
use crate::cluster::world::ClusterWorld;
use crate::cluster::{self, notify, workloads};
use crate::controller::parse_params;
use crate::core::plan::Settings;
use crate::core::rollout::{Cause, Event, Phase, Rollout};
use crate::core::schedule::HeaderRoute;
use crate::error::{Error, Exit, Result};
use crate::lifecycle;
use crate::output;
use crate::policy::{self, Limits};
use crate::providers::{Router, Target};
use std::collections::BTreeMap;

fn policy_source(name_or_path: &str) -> Result<String> {
    let path = std::path::Path::new(name_or_path);
    if path.exists() {
        return std::fs::read_to_string(path)
            .map_err(|e| Error::Other(format!("{name_or_path}: {e}")));
    }
    crate::shipped::policy(name_or_path)
        .map(|(_, text)| text.to_string())
        .ok_or_else(|| Error::Usage(format!("no policy {name_or_path:?}")))
}

fn parse_labels(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| Error::Usage(format!("--canary-label {p:?}: expected KEY=VALUE")))
        })
        .collect()
}

pub async fn run(g: &GlobalArgs, args: &StartArgs) -> Result<Exit> {
    let sess = cluster::connect(&g.connection()).await?;
    let ns = sess.namespace.clone();
    let service = args.service.service.clone();
    let client = sess.client.clone();

    // Policy first: a typo must fail before anything is created.
    let engine = super::engine(g);
    let limits = Limits::default();
    let mut policy = policy::load(&engine, &args.policy.policy, &limits)?;
    let source = policy_source(&args.policy.policy)?;
    apply_overrides(&mut policy.schedule, &args.schedule_overrides)?;
    parse_params(&args.policy.params).map_err(Error::Usage)?;
    let extra_labels = parse_labels(&args.canary_labels)?;
    let sinks = args
        .notify
        .iter()
        .map(|s| notify::parse_sink(s))
        .collect::<Result<Vec<_>>>()?;
    notify::check(&client, &ns, &sinks).await?;
    let schedule = policy.schedule.clone();
    let replicas = args.replicas.unwrap_or(schedule.canary_replicas).max(1);

    let store = Store::new(&client, &ns, &service);
    let mut stored = store.load().await?;
    let resuming = match stored.doc.current.as_ref() {
        Some(cur) if !cur.rollout.phase.is_terminal() => {
            if cur.rollout.phase == Phase::Initializing {
                // A start that crashed while waiting: continue it (same images only).
                let images_given: Vec<_> = args
                    .image
                    .iter()
                    .map(|s| s.split_once('=').map(|x| x.1).unwrap_or(s))
                    .collect();
                if !images_given
                    .iter()
                    .all(|i| cur.images.values().any(|v| v == i))
                {
                    return Err(Error::Refused(format!(
                        "a rollout of {ns}/{service} to {:?} is starting (Initializing, by {}); abort it first with `kubectl canary abort {service}`",
                        cur.images, cur.started_by
                    )));
                }
                true
            } else {
                let r = &cur.rollout;
                return Err(Error::Refused(format!(
                    "a rollout of {ns}/{service} is already in progress: {} at step {} ({}% canary), started by {} at {}.\n\
                     Continue it with `kubectl canary run {service}`, or stop it with `kubectl canary abort {service}`.",
                    r.phase,
                    r.step + 1,
                    r.weight,
                    cur.started_by,
                    r.started_at.format("%Y-%m-%d %H:%M:%S UTC")
                )));
            }
        }
        _ => false,
    };

    // A resumed start keeps the Deployments its record names.
    let resumed = stored.doc.current.as_ref().filter(|_| resuming);
    let resumed_stable = resumed.and_then(|r| r.stable.clone());
    let canary_name = args
        .canary
        .clone()
        .or(resumed.and_then(|r| r.canary.clone()))
        .unwrap_or_else(|| format!("{service}-canary"));
    if let Some(name) = &args.canary {
        // Adopting is for a Deployment the team keeps; a typo must not create a new one.
        if workloads::deployments(&client, &ns)
            .get_opt(name)
            .await?
            .is_none()
        {
            return Err(Error::Usage(format!(
                "--canary {name}: no Deployment {ns}/{name} (leave --canary out to have {service}-canary created)"
            )));
        }
    }
    // The route first (its errors wait until stable is known): when the Service selects
    // several Deployments, the route says which is stable.
    let mut target = Target::new(&ns, &service);
    target.canary_deployment = canary_name.clone();
    if let Some(r) = &args.route {
        target.route = r.clone();
    }
    let router = match (resumed, args.provider.as_deref()) {
        (Some(rec), _) => {
            target.route = rec.route.clone();
            Router::by_name(&client, &rec.provider).await
        }
        (None, Some(p)) => Router::by_name(&client, p).await,
        (None, None) if args.route.is_some() => match Router::detect(&client, &target).await {
            Ok(r) => r.follow_delegate(&client, &mut target).await.map(|()| r),
            e => e,
        },
        (None, None) => Router::discover(&client, &mut target).await,
    };
    let explicit = args.stable.as_deref().or(resumed_stable.as_deref());
    let narrow = match (&router, explicit) {
        (Ok(r), None) => r.stable_pod_labels(&client, &target).await.ok().flatten(),
        _ => None,
    };
    let stable = workloads::find_stable(
        &client,
        &ns,
        &service,
        explicit,
        &canary_name,
        narrow.as_ref(),
    )
    .await?;
    let router = router?;
    if stable.metadata.name.as_deref() == Some(canary_name.as_str()) {
        return Err(Error::Usage(format!(
            "--canary {canary_name} is the stable Deployment; name another Deployment with --canary or --stable"
        )));
    }
    let stable_name = stable.metadata.name.clone().unwrap_or_default();
    let manifest = args
        .filename
        .as_deref()
        .map(|f| workloads::template_from_manifest(f, &stable_name))
        .transpose()?;
    // With -f the images are the manifest's, and --image overrides some of them.
    let images = match &manifest {
        None => workloads::parse_images(&args.image, &stable)?,
        Some(t) => {
            let mut from_file = stable.clone();
            from_file.spec.template = t.clone();
            let mut imgs = workloads::container_images(&from_file);
            imgs.extend(workloads::parse_images(&args.image, &from_file)?);
            imgs
        }
    };
    target.stable_deployment = stable_name.clone();
    // The canary starts with the capacity its first weight needs (it grows with the weight).
    let settings = Settings {
        canary_replicas: replicas,
        max_canary_replicas: schedule.max_canary_replicas,
        scale_down_delay: schedule.scale_down_delay,
        delete_on_rollback: false,
    };
    let stable_replicas = stable.spec.replicas.unwrap_or(1).max(0) as u32;
    let start_replicas = settings.capacity(schedule.steps[0], stable_replicas);
    let canary = workloads::canary_deployment(
        &stable,
        manifest.as_ref(),
        &target.canary_deployment,
        &service,
        &images,
        start_replicas,
        &extra_labels,
    )?;

    // A route that says nothing of a mesh (Gateway API) reads the mesh's metrics when the
    // pods are in one; the schedule's `metrics` still overrides.
    let mesh = cluster::mesh::detect(&router, &client, &ns, &stable).await?;
    let mesh_flavour = mesh.as_ref().map(|m| m.flavour);
    if let Some(m) = &mesh
        && schedule.metrics.is_none()
        && router.metrics_flavour(mesh_flavour) == m.flavour
        && router.metrics_flavour(None) != m.flavour
    {
        eprintln!(
            "note: metrics: {} ({}); `--schedule-override metrics=generic` reads the application's own",
            m.flavour.name(),
            m.why
        );
    }

    for note in router.check_layout(&client, &target).await? {
        eprintln!("note: {note}");
    }

    // The record a new rollout starts from, built once: the dry run saves the same one.
    let record = (!resuming).then(|| RolloutRecord {
        namespace: ns.clone(),
        service: service.clone(),
        stable: (stable_name != service).then(|| stable_name.clone()),
        canary: (canary_name != format!("{service}-canary")).then(|| canary_name.clone()),
        mesh: mesh_flavour,
        images: images.clone(),
        previous_images: workloads::container_images(&stable),
        provider: router.name().to_string(),
        route: target.route.clone(),
        policy: PolicyRef {
            name: args.policy.policy.clone(),
            path: policy.path.clone(),
            sha256: policy.sha256.clone(),
            source,
        },
        params: args.policy.params.clone(),
        schedule_overrides: args.schedule_overrides.clone(),
        canary_replicas: replicas,
        started_by: sess.actor.clone(),
        delete_on_rollback: false,
        previous_template: serde_json::to_value(&stable.spec.template).ok(),
        scale_down_delay: Some(schedule.scale_down_delay),
        max_canary_replicas: schedule.max_canary_replicas,
        notify: sinks.clone(),
        rollout: Rollout::new(clock::now()),
    });

    if args.dry_run {
        // The real start's steps and plan against a copy-on-write view of the cluster: what
        // they would write is shown as a diff of every object created or changed.
        let (dry, writes) = crate::cluster::dryrun::client(client.clone());
        let dry_sess = Session {
            client: dry.clone(),
            watched: None,
            ..sess.clone()
        };
        let planned = async {
            if let Some(record) = record {
                let dry_store = Store::new(&dry, &ns, &service);
                save_new(&dry_store, &mut dry_store.load().await?, record).await?;
            }
            create_or_reimage_canary(&dry, &ns, &target, &canary, &images, start_replicas).await?;
            let mut l = driver::load(&dry_sess, &service).await?;
            let headers = l.router.header_routes(&schedule.header_routes).0.to_vec();
            let first = schedule.steps[0];
            route_first_weight(&mut l, headers, &sess.actor, start_replicas, first, true).await
        }
        .await;
        // The Event announcing the transition is left out: it changes no object (and has no
        // name until the API server generates one).
        let changes: Vec<_> = (writes.changes(&client).await.into_iter())
            .filter(|c| !c.object.starts_with("Event "))
            .collect();
        let (headers, _) = router.header_routes(&schedule.header_routes);
        let plan = serde_json::json!({
            "namespace": ns, "service": service, "stable": stable_name, "provider": router.name(), "route": target.route,
            "canary_deployment": target.canary_deployment, "replicas": replicas, "images": images,
            "previous_images": workloads::container_images(&stable),
            "first_weight": schedule.steps[0], "steps": schedule.steps,
            "policy": policy.path, "policy_sha256": policy.sha256,
            "header_routes": headers.iter().map(|h| format!("{}: {}", h.name, h.value)).collect::<Vec<_>>(),
            "changes": changes,
            "error": planned.as_ref().err().map(|e| e.to_string()),
        });
        if !output::structured(g.output, &plan)? {
            println!(
                "dry run: nothing changed. Stable {stable_name}, {} route {}, {}% to the canary first (steps {:?}); policy {} (sha256 {}); state in ConfigMap {ns}/{}.",
                router.name(),
                target.route,
                schedule.steps[0],
                schedule.steps,
                policy.path,
                &policy.sha256[..12.min(policy.sha256.len())],
                crate::cluster::state::configmap_name(&service)
            );
            println!(
                "It would write (after waiting up to {} for the canary to be ready):",
                args.timeout
            );
            for c in &changes {
                print!("{}", crate::cluster::dryrun::diff(c));
            }
        }
        planned?;
        return Ok(Exit::Ok);
    }

    if let Some(record) = record {
        // CAS: two concurrent starts cannot both win.
        save_new(&store, &mut stored, record).await?;
    }

    create_or_reimage_canary(&client, &ns, &target, &canary, &images, start_replicas).await?;
    let ready = workloads::wait_rolled_out(
        &client,
        &ns,
        &target.canary_deployment,
        args.timeout.into(),
        &format!("canary {}", target.canary_deployment),
        true,
    )
    .await?;

    let mut l = driver::load(&sess, &service).await?;
    // Someone ended the rollout while we waited (`abort` or `rollback` scales the canary to
    // 0, which also reads as "rolled out"): never route to it, and leave their outcome.
    if l.rollout().phase != Phase::Initializing {
        return Err(Error::Cluster(format!(
            "the rollout of {ns}/{service} became {} while its canary was starting (by {}); no traffic was routed to the canary",
            l.rollout().phase,
            l.rollout()
                .history
                .last()
                .map(|t| t.actor.as_str())
                .unwrap_or("someone")
        )));
    }
    match ready {
        Err(why) => {
            // No traffic was ever routed (weight stays 0): roll back and say why.
            roll_back_unrouted(&mut l, &sess.actor, format!("canary not ready: {why}")).await?;
            eprintln!("rolled back: {why}");
            eprintln!(
                "canary {ns}/{} scaled to 0; no traffic was sent to it.",
                target.canary_deployment
            );
            Ok(Exit::RolledBack)
        }
        Ok(()) => {
            let first = schedule.steps[0];
            let (headers, note) = l.router.header_routes(&schedule.header_routes);
            if let Some(note) = note {
                eprintln!("note: {note}");
            }
            let headers = headers.to_vec();
            let routed =
                route_first_weight(&mut l, headers, &sess.actor, start_replicas, first, false);
            if let Err(e) = routed.await {
                return Err(Error::Cluster(format!(
                    "{e}\nno traffic stays on the canary (the rollout is {})",
                    l.rollout().phase
                )));
            }
            if let Some(t) = l.rollout().history.last().cloned() {
                notify::send_and_warn(&client, l.record(), std::slice::from_ref(&t)).await;
            }
            if !output::structured(g.output, l.record())? {
                println!(
                    "started canary {ns}/{} with {:?}: {first}% of traffic via {} {} (steps {:?}, every {})",
                    target.canary_deployment,
                    images,
                    l.router.name(),
                    l.target.route,
                    schedule.steps,
                    humantime::format_duration(schedule.interval)
                );
                println!("next: `kubectl canary run {service} -n {ns}` (or `step` from CI)");
            }
            if let Some(config) = args.prometheus.config() {
                warn_without_stable_data(config, &l, &schedule).await;
            }
            Ok(Exit::Ok)
        }
    }
}

/// Archives the previous rollout and saves `record` as the current one, compare-and-swap
/// over `stored`.
async fn save_new(store: &Store, stored: &mut Stored, record: RolloutRecord) -> Result<()> {
    stored.doc.archive_current();
    stored.doc.current = Some(record);
    store.save(stored).await
}

/// Prepare, the first weight and its commit, as the core plans them (the write is fenced: an
/// abort that won meanwhile is never undone). `dry_run`: the copy-on-write view, whose canary
/// has no pods, counts it as ready.
async fn route_first_weight(
    l: &mut driver::Loaded,
    headers: Vec<HeaderRoute>,
    actor: &str,
    start_replicas: u32,
    first: u32,
    dry_run: bool,
) -> Result<()> {
    let cause = Cause::new(
        actor.to_string(),
        format!("canary ready ({start_replicas}/{start_replicas}); {first}% of traffic"),
    );
    let mut world = ClusterWorld::new(l, false)
        .with_headers(headers)
        .assuming_canary_ready(dry_run);
    lifecycle::start_traffic(&mut world, first, cause).await
}

/// Creates (or converges) our canary; a canary Deployment the user keeps (seed 002) is
/// re-imaged and scaled instead of replaced.
async fn create_or_reimage_canary(
    client: &kube::Client,
    ns: &str,
    target: &Target,
    ours: &k8s_openapi::api::apps::v1::Deployment,
    images: &std::collections::BTreeMap<String, String>,
    replicas: u32,
) -> Result<k8s_openapi::api::apps::v1::Deployment> {
    let existing = workloads::deployments(client, ns)
        .get_opt(&target.canary_deployment)
        .await?;
    match existing {
        Some(d) if !workloads::is_ours(&d) => {
            workloads::reimage_user_canary(client, ns, &target.canary_deployment, images, replicas)
                .await
        }
        _ => workloads::apply_canary(client, ns, ours).await,
    }
}

/// Rolls back a rollout whose canary never received traffic: record, persist, announce,
/// then scale the canary down.
async fn roll_back_unrouted(l: &mut driver::Loaded, actor: &str, reason: String) -> Result<()> {
    lifecycle::apply(
        &mut ClusterWorld::new(l, false),
        Event::BeginRollback,
        Cause::new(actor, reason),
    )
    .await?;
    Ok(())
}

/// A stable track without data makes every evaluation hold, for hours if nobody looks: say
/// so now, with why (see `check-metrics`). Only a warning: the data may still arrive.
async fn warn_without_stable_data(
    config: crate::metrics::prometheus::PrometheusConfig,
    l: &driver::Loaded,
    schedule: &crate::core::schedule::Schedule,
) {
    let window = config.window.as_secs().max(1);
    let client = match crate::metrics::prometheus::PrometheusClient::new(config) {
        Ok(c) => c,
        Err(e) => return eprintln!("warning: cannot check the stable track's metrics: {e}"),
    };
    let req = driver::metrics_request(l, schedule, crate::cluster::clock::now(), false);
    let checks = match crate::metrics::diagnose::check(&client, &req, window).await {
        Ok(c) => c,
        Err(e) => return eprintln!("warning: cannot check the stable track's metrics: {e}"),
    };
    let missing: Vec<_> = checks
        .iter()
        .filter(|c| c.track == "stable" && c.value.is_none())
        .collect();
    for c in &missing {
        eprintln!(
            "warning: stable {}: no data: {}",
            c.name,
            c.why.as_deref().unwrap_or("")
        );
    }
    if !missing.is_empty() {
        eprintln!(
            "warning: the policy holds while stable has no data; `kubectl canary check-metrics {} -n {}` checks again",
            req.service, req.namespace
        );
    }
}
