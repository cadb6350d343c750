//! One function per route: parse the request, call the library, shape the answer. Nothing
//! here holds logic a library user would need; that lives in hs-repo, hs-pitr, hs-backup.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use hs_base::code;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{Error, ErrorKind, HttpError, Result};
use crate::routes::{Route, RouteId};
use crate::server::{Reply, State};

pub(crate) async fn dispatch(
    state: &Arc<State>,
    route: &Route,
    params: &[String],
    body: &Bytes,
) -> Reply {
    let p = |i: usize| params.get(i).map(String::as_str).unwrap_or("");
    let r = match route.id {
        RouteId::Healthz => Ok(ok(json!({
            "status": "ok",
            "uptime_seconds": state.started.elapsed().as_secs(),
        }))),
        RouteId::Readyz => return readyz(state).await,
        RouteId::Version => Ok(ok(json!({
            "version": state.version.version,
            "git_sha": state.version.git_sha,
            "built": state.version.built,
        }))),
        RouteId::OpenApi => Ok(Reply::Raw(
            "application/json",
            Bytes::from_static(crate::OPENAPI_JSON.as_bytes()),
        )),
        RouteId::Metrics => Ok(Reply::Raw(
            "text/plain; version=0.0.4; charset=utf-8",
            Bytes::from(metrics(state)),
        )),
        RouteId::Deployments => Ok(ok(json!({
            "deployments": state.deployments.values().map(|d| json!({
                "name": d.name,
                "repo": hs_repo::redact_url(&d.repo),
                "pg_connection_configured": d.pg_connection.is_some(),
            })).collect::<Vec<_>>(),
        }))),
        RouteId::BackupsList => backups_list(state, p(0)).await,
        RouteId::BackupShow => backup_show(state, p(0), p(1)).await,
        RouteId::BackupsTrigger => backup_trigger(state, p(0), body).await,
        RouteId::BackupVerify => verify_trigger(state, p(0), p(1), body).await,
        RouteId::JobsList => state.jobs.list().map(|j| ok(json!({ "jobs": j }))),
        RouteId::JobShow => state.jobs.get(p(0)).map(ok),
        RouteId::RestorePreview => restore_preview(state, p(0), body).await,
        RouteId::WalStatus => wal_status(state, p(0)).await,
        RouteId::Doctor => doctor(state, p(0)).await,
    };
    r.unwrap_or_else(Reply::from)
}

fn ok(v: Value) -> Reply {
    Reply::Json(StatusCode::OK, v)
}

/// Parses a JSON request body into `T`; an empty body is `T::default()`.
fn parse_body<T: for<'de> Deserialize<'de> + Default>(body: &Bytes) -> Result<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        Error::of_kind(
            ErrorKind::Usage,
            code::USAGE_REQUEST_INVALID,
            format!("the request body is not what this route takes: {e}"),
        )
        .with_suggestion("GET /v1/openapi.json describes each route's request body")
    })
}

async fn readyz(state: &State) -> Reply {
    let mut urls: Vec<&str> = state
        .deployments
        .values()
        .map(|d| d.repo.as_str())
        .collect();
    urls.sort_unstable();
    urls.dedup();
    let mut repos = Vec::new();
    let mut first_err = None;
    for url in urls {
        // A fresh open each time: readiness means the repository answers now.
        match hs_repo::Repository::open(url, &state.keyring).await {
            Ok(_) => repos.push(json!({"url": hs_repo::redact_url(url), "ok": true})),
            Err(e) => {
                repos.push(
                    json!({"url": hs_repo::redact_url(url), "ok": false, "error": e.to_json()}),
                );
                first_err.get_or_insert(e);
            }
        }
    }
    let result = json!({"ready": first_err.is_none(), "repositories": repos});
    match first_err {
        None => ok(result),
        Some(e) => {
            let e = Error::of_kind(
                ErrorKind::Library,
                code::UNREACHABLE_REPOSITORY,
                format!("a repository is not usable: {e} ({})", e.code()),
            )
            .with_suggestion(
                e.suggestion()
                    .unwrap_or("check the repository URL, the network and the keyring")
                    .to_owned(),
            );
            Reply::Error(e, Some(result))
        }
    }
}

fn manifest_row(m: &hs_repo::BackupManifest) -> Value {
    let s = &m.stats;
    json!({
        "backup_id": m.backup_id,
        "start_time": m.start_time,
        "stop_time": m.stop_time,
        "timeline": m.timeline,
        "start_lsn": m.start_lsn,
        "stop_lsn": m.stop_lsn,
        "pg_version": m.pg_version,
        "logical_bytes": s.logical_bytes,
        "stored_bytes": s.stored_bytes,
        "files": s.files,
        "type": if m.incremental.is_some() { "incremental" } else { "full" },
        "incremental_from": m.incremental.as_ref().map(|i| &i.parent_backup_id),
        "sent_bytes": s.sent_bytes,
    })
}

async fn backups_list(state: &State, deployment: &str) -> Result<Reply> {
    let d = state.deployment(deployment)?;
    let repo = state.repo(&d.repo).await?;
    let backups = repo.backup_summaries_cataloged(deployment).await?;
    Ok(ok(json!({
        "deployment": deployment,
        "backups": backups.iter().map(manifest_row).collect::<Vec<_>>(),
    })))
}

/// The manifest of `backup_id` (or the newest, for `latest`).
async fn load_backup(
    repo: &hs_repo::Repository,
    deployment: &str,
    backup_id: &str,
) -> Result<hs_repo::BackupManifest> {
    let sel: hs_pitr::BackupSelector = match backup_id.parse() {
        Ok(s) => s,
        Err(never) => match never {},
    };
    hs_pitr::select_backup(repo, deployment, &sel).await
}

async fn backup_show(state: &State, deployment: &str, backup_id: &str) -> Result<Reply> {
    let d = state.deployment(deployment)?;
    let repo = state.repo(&d.repo).await?;
    let m = load_backup(&repo, deployment, backup_id).await?;
    let mut v = manifest_row(&m);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("deployment".to_owned(), json!(m.deployment));
        obj.insert("system_identifier".to_owned(), json!(m.system_identifier));
        obj.insert("label".to_owned(), json!(m.label));
        obj.insert("chunks".to_owned(), json!(m.stats.chunks));
        obj.insert("new_chunks".to_owned(), json!(m.stats.new_chunks));
        obj.insert(
            "archives".to_owned(),
            json!(m
                .archives
                .iter()
                .map(|a| json!({
                    "name": a.name,
                    "tablespace_oid": a.tablespace_oid,
                    "tablespace_location": a.tablespace_location,
                    "files": a.files.len(),
                }))
                .collect::<Vec<_>>()),
        );
    }
    Ok(ok(v))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupRequest {
    #[serde(default)]
    spread_checkpoint: bool,
    #[serde(default)]
    max_rate_kbps: Option<u32>,
    /// Accept a server whose system identifier differs from the deployment's.
    #[serde(default)]
    allow_system_id_change: bool,
    /// Take a full backup even where an incremental one is possible.
    #[serde(default)]
    full: bool,
}

async fn backup_trigger(state: &Arc<State>, deployment: &str, body: &Bytes) -> Result<Reply> {
    let d = state.deployment(deployment)?;
    let req: BackupRequest = parse_body(body)?;
    if let Some(r) = req.max_rate_kbps {
        if !(32..=1_048_576).contains(&r) {
            return Err(Error::of_kind(
                ErrorKind::Usage,
                code::USAGE_MAX_RATE_INVALID,
                format!("max_rate_kbps {r} is outside 32..1048576"),
            ));
        }
    }
    let conninfo = d.pg_connection.as_deref().ok_or_else(|| {
        Error::of_kind(
            ErrorKind::Usage,
            code::USAGE_PG_CONNECTION_MISSING,
            format!("deployment {deployment} has no pg_connection on this server"),
        )
        .with_suggestion(
            "add pg_connection to the deployment in pg_hardstorage.yaml and restart the server",
        )
    })?;
    let conn = hs_proto::ConnConfig::parse(conninfo)?;
    let repo = state.repo(&d.repo).await?;
    let mut opts = hs_backup::BackupOptions::new(deployment);
    opts.fast_checkpoint = !req.spread_checkpoint;
    opts.max_rate_kbps = req.max_rate_kbps;
    opts.allow_system_id_change = req.allow_system_id_change;
    opts.full = req.full;
    let (id, progress) = state.jobs.start("backup", deployment, None)?;
    let notify = JobNotify {
        notifier: d.notifier.clone(),
        events: ("backup.succeeded", "backup.failed"),
        deployment: deployment.to_owned(),
    };
    let task = tokio::spawn(async move {
        match hs_backup::run_backup(&conn, &repo, &opts, &*progress).await {
            Ok(done) => {
                let m = done.manifest;
                let mut row = manifest_row(&m);
                if let Some(o) = row.as_object_mut() {
                    o.insert("chunks".to_owned(), json!(m.stats.chunks));
                    o.insert("new_chunks".to_owned(), json!(m.stats.new_chunks));
                }
                (Some(row), None)
            }
            Err(e) => (None, Some(e)),
        }
    });
    watch_job(state, &id, task, notify);
    let job = state.jobs.get(&id)?;
    Ok(Reply::Accepted(format!("/v1/jobs/{id}"), job))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyRequest {}

async fn verify_trigger(
    state: &Arc<State>,
    deployment: &str,
    backup_id: &str,
    body: &Bytes,
) -> Result<Reply> {
    let d = state.deployment(deployment)?;
    let _: VerifyRequest = parse_body(body)?;
    let repo = state.repo(&d.repo).await?;
    let m = load_backup(&repo, deployment, backup_id).await?;
    let backup_id = m.backup_id;
    let (id, _progress) = state
        .jobs
        .start("verify", deployment, Some(backup_id.clone()))?;
    let dep = deployment.to_owned();
    let notify = JobNotify {
        notifier: d.notifier.clone(),
        events: ("backup_verify.succeeded", "backup_verify.failed"),
        deployment: dep.clone(),
    };
    let task = tokio::spawn(async move {
        match repo.verify_backup(&dep, &backup_id).await {
            Ok(report) => (serde_json::to_value(&report).ok(), report.to_error()),
            Err(e) => (None, Some(e)),
        }
    });
    watch_job(state, &id, task, notify);
    let job = state.jobs.get(&id)?;
    Ok(Reply::Accepted(format!("/v1/jobs/{id}"), job))
}

/// Where a job's outcome is sent, as the CLI's `backup` and `verify` send theirs.
struct JobNotify {
    notifier: hs_ops::notify::Notifier,
    /// The `.succeeded` / `.failed` event names.
    events: (&'static str, &'static str),
    deployment: String,
}

impl JobNotify {
    /// The event of a finished job: failed with the error, else succeeded; the result's
    /// numbers and ids as figures.
    fn event(
        &self,
        job: &str,
        result: Option<&Value>,
        error: Option<&Error>,
    ) -> hs_ops::notify::Event {
        let dep = Some(self.deployment.as_str());
        let mut e =
            match error {
                Some(err) => hs_ops::notify::Event::new(self.events.1, dep, err.message())
                    .with_error(err.code(), err.message(), err.suggestion()),
                None => hs_ops::notify::Event::new(
                    self.events.0,
                    dep,
                    format!(
                        "API job {job} ({}) of {} succeeded",
                        self.events.0, self.deployment
                    ),
                ),
            };
        if let Some(Value::Object(m)) = result {
            for (k, v) in m {
                if !(v.is_object() || v.is_array() || v.is_null()) {
                    e.figures.insert(k.clone(), v.clone());
                }
            }
        }
        e.figures.insert("job".to_owned(), json!(job));
        e
    }
}

/// What a job's task ends with: a result, an error, or (a verify with problems) both.
type JobOutcome = (Option<Value>, Option<Error>);

/// Waits for a job's task, records its outcome (a panic fails the job), then sends it to
/// the deployment's notification sinks.
fn watch_job(
    state: &Arc<State>,
    id: &str,
    task: tokio::task::JoinHandle<JobOutcome>,
    notify: JobNotify,
) {
    let state = state.clone();
    let id = id.to_owned();
    tokio::spawn(async move {
        let (result, error) = match task.await {
            Ok(outcome) => outcome,
            Err(join) => (None, Some(task_died(&join))),
        };
        let event = notify.event(&id, result.as_ref(), error.as_ref());
        state.jobs.finish(&id, result, error);
        if !notify.notifier.is_empty() {
            notify.notifier.send(&event).await;
        }
    });
}

fn task_died(join: &tokio::task::JoinError) -> Error {
    Error::of_kind(
        ErrorKind::Library,
        code::INTERNAL_JOB_PANICKED,
        format!("the job's task ended abnormally: {join}"),
    )
    .with_suggestion("this is a bug in pg_hardstorage; please report it with the server's log")
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewRequest {
    #[serde(default)]
    backup: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    to_lsn: Option<String>,
    #[serde(default)]
    to_name: Option<String>,
}

async fn restore_preview(state: &State, deployment: &str, body: &Bytes) -> Result<Reply> {
    let d = state.deployment(deployment)?;
    let req: PreviewRequest = parse_body(body)?;
    let given = [&req.to, &req.to_lsn, &req.to_name]
        .iter()
        .filter(|v| v.is_some())
        .count();
    if given > 1 {
        return Err(Error::of_kind(
            ErrorKind::Usage,
            code::USAGE_REQUEST_INVALID,
            "give at most one of `to`, `to_lsn` and `to_name`",
        ));
    }
    // The same planning as `pg_hardstorage restore --preview` (the latest timeline).
    let plan = hs_ops::PlanRequest {
        backup: req.backup.unwrap_or_else(|| "latest".to_owned()),
        to_time: req.to,
        to_lsn: req.to_lsn,
        to_name: req.to_name,
        to_timeline: None,
    };
    let target = plan.target()?;
    let sel = plan.selector();
    let repo = state.repo(&d.repo).await?;
    let p = hs_ops::plan_restore(&repo, deployment, &sel, &target, None).await?;
    Ok(ok(json!({
        "preview": true,
        "deployment": deployment,
        "plan": p.to_json(),
    })))
}

/// The `doctor` checks of one deployment (the same as `pg_hardstorage doctor`), with the
/// default age thresholds. Issues are findings, not errors: the reply is 200 either way.
async fn doctor(state: &State, deployment: &str) -> Result<Reply> {
    let d = state.deployment(deployment)?;
    let target = hs_ops::DoctorTarget {
        deployment: d.name.clone(),
        repo: Ok(d.repo.clone()),
        pg_connection: d.pg_connection.clone().ok_or_else(|| {
            (
                "no pg_connection is configured for this deployment".to_owned(),
                "add pg_connection to the deployment in pg_hardstorage.yaml".to_owned(),
            )
        }),
        keyring: state.keyring.path().to_path_buf(),
        config_path: None,
        config_problem: None,
        backup_max_age: hs_ops::DEFAULT_BACKUP_MAX_AGE,
        wal_max_age: hs_ops::DEFAULT_WAL_MAX_AGE,
        timeout: std::time::Duration::from_secs(5),
        systemd_dir: hs_ops::systemd_dir(),
        notifier: d.notifier.clone(),
    };
    let report = hs_ops::diagnose(&target).await;
    let checks: Vec<Value> = report
        .checks
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "state": c.state.as_str(),
                "ok": c.state != hs_ops::CheckState::Issue,
                "detail": c.detail,
                "fix": c.fix,
                "values": c.values_map(),
            })
        })
        .collect();
    Ok(ok(json!({
        "deployment": report.deployment,
        "healthy": report.healthy(),
        "checks": checks,
    })))
}

async fn wal_status(state: &State, deployment: &str) -> Result<Reply> {
    let d = state.deployment(deployment)?;
    let repo = state.repo(&d.repo).await?;
    let w = repo.list_wal(deployment).await?;
    // Per timeline: first and last segment and how many; the listing is sorted.
    let mut timelines: Vec<Value> = Vec::new();
    let mut i = 0;
    while i < w.segments.len() {
        let tli = w.segments[i].timeline;
        let start = i;
        while i < w.segments.len() && w.segments[i].timeline == tli {
            i += 1;
        }
        timelines.push(json!({
            "timeline": tli,
            "first_segment": w.segments[start].name,
            "last_segment": w.segments[i - 1].name,
            "segments": i - start,
        }));
    }
    let stored: u64 = w
        .segments
        .iter()
        .chain(&w.partials)
        .map(|s| s.stored_bytes)
        .sum();
    Ok(ok(json!({
        "deployment": deployment,
        "segments": w.segments.len(),
        "stored_bytes": stored,
        "last_segment": w.segments.last().map(|s| &s.name),
        "partial": w.partials.last().map(|s| &s.name),
        "timelines": timelines,
        "histories": w.histories,
        "gaps": w.gaps.iter().map(|g| json!({
            "from_segment": g.from_segment,
            "to_segment": g.to_segment,
            "reason": g.reason,
            "recorded_at": g.recorded_at,
        })).collect::<Vec<_>>(),
    })))
}

/// `/metrics`: requests by route and status, jobs by kind and status, uptime, build info.
fn metrics(state: &State) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP pg_hardstorage_build_info The running pg_hardstorage version.\n\
         # TYPE pg_hardstorage_build_info gauge\n\
         pg_hardstorage_build_info{{version=\"{}\"}} 1",
        label(&state.version.version)
    );
    let _ = writeln!(
        out,
        "# HELP pg_hardstorage_api_uptime_seconds Seconds since the API server started.\n\
         # TYPE pg_hardstorage_api_uptime_seconds gauge\n\
         pg_hardstorage_api_uptime_seconds {:.3}",
        state.started.elapsed().as_secs_f64()
    );
    let _ = writeln!(
        out,
        "# HELP pg_hardstorage_api_deployments Deployments this server serves.\n\
         # TYPE pg_hardstorage_api_deployments gauge\n\
         pg_hardstorage_api_deployments {}",
        state.deployments.len()
    );
    let _ = writeln!(
        out,
        "# HELP pg_hardstorage_api_requests_total HTTP requests answered, by method, route and status.\n\
         # TYPE pg_hardstorage_api_requests_total counter"
    );
    if let Ok(m) = state.requests.lock() {
        for ((method, route, status), n) in m.iter() {
            let _ = writeln!(
                out,
                "pg_hardstorage_api_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                label(method),
                label(route)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP pg_hardstorage_api_jobs Jobs the server knows, by kind and status.\n\
         # TYPE pg_hardstorage_api_jobs gauge"
    );
    for ((kind, status), n) in state.jobs.counts() {
        let _ = writeln!(
            out,
            "pg_hardstorage_api_jobs{{kind=\"{kind}\",status=\"{status}\"}} {n}"
        );
    }
    out
}

/// A Prometheus label value with `\`, `"` and newlines escaped.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
