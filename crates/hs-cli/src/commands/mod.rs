//! One function per command: parse nothing, decide nothing a library user would need,
//! call the library and shape its answer for output.

use anyhow::Result;
use serde_json::json;

use crate::cli::{Cli, Command, GlobalArgs, RepoCommand, TargetActionArg, VerifyArg, WalCommand};
use crate::output::{human_bytes, Output};
use crate::progress::Bar;

pub(crate) use retention::{parse_duration, parse_max_unused};

mod doctor;
pub(crate) mod gendocs;
mod init;
mod key;
mod list;
mod notify;
mod retention;
mod serve;
mod status;
mod stream;
mod verify;
mod wal;

pub async fn run(mut cli: Cli) -> Result<Output> {
    // pg_hardstorage.yaml: not for `version`; `init` and `doctor` read it themselves
    // (init may create it, doctor reports a broken one as a finding); not for
    // `wal fetch` (restore_command passes everything it needs).
    let skip_config = matches!(
        cli.command,
        Command::Version
            | Command::Init(_)
            | Command::Doctor(_)
            | Command::Wal(WalCommand::Fetch(_))
    );
    let keyring = cli.global.keyring.clone();
    cli.global.settings = if skip_config {
        hs_ops::Settings::new(None, keyring)
    } else {
        hs_ops::Settings::load(cli.global.config.as_deref(), keyring)?
    };
    let g = &cli.global;
    // The commands whose outcome is a notification (`wal stream` sends its own).
    let target = match &cli.command {
        Command::Backup(a) => Some(notify::Target {
            events: ("backup.succeeded", "backup.failed"),
            deployment: Some(a.deployment.clone()),
            summary_last: false,
        }),
        Command::Verify(a) => Some(notify::Target {
            events: ("backup_verify.succeeded", "backup_verify.failed"),
            deployment: Some(a.deployment.clone()),
            summary_last: true,
        }),
        Command::Repo(RepoCommand::Verify(_)) => Some(notify::Target {
            events: ("repo_verify.succeeded", "repo_verify.failed"),
            deployment: None,
            summary_last: true,
        }),
        _ => None,
    };
    let result = dispatch(g, cli.command).await;
    match target {
        Some(t) => notify::after(g, &t, result).await,
        None => result,
    }
}

async fn dispatch(g: &GlobalArgs, command: Command) -> Result<Output> {
    match command {
        Command::Version => Ok(version()),
        Command::Repo(RepoCommand::Init(a)) => repo_init(g, &a.url).await,
        Command::Repo(RepoCommand::Verify(a)) => verify::verify_repo(g, a).await,
        Command::Repo(RepoCommand::Gc(a)) => retention::gc(g, a).await,
        Command::Rotate(a) => retention::rotate(g, a).await,
        Command::Verify(a) => verify::verify_backup(g, a).await,
        Command::Key(crate::cli::KeyCommand::Add(a)) => key::add(g, a).await,
        Command::Key(crate::cli::KeyCommand::List(a)) => key::list(g, a).await,
        Command::Key(crate::cli::KeyCommand::Generate(a)) => key::generate(g, &a.path),
        Command::Key(crate::cli::KeyCommand::Rotate(a)) => key::rotate(g, a).await,
        Command::Backup(a) => backup(g, a).await,
        Command::List(a) => list::list(g, &a.deployment, &a.repo.repo, a.check).await,
        Command::Restore(a) => restore(g, a).await,
        Command::Wal(WalCommand::Preflight(a)) => stream::preflight(g, a).await,
        Command::Wal(WalCommand::Stream(a)) => stream::stream(g, a).await,
        Command::Wal(WalCommand::Fetch(a)) => wal::fetch(g, a).await,
        Command::Wal(WalCommand::List(a)) => wal::list(g, a).await,
        Command::Init(a) => init::init(g, a).await,
        Command::Doctor(a) => doctor::doctor(g, a).await,
        Command::Status(a) => status::status(g, a).await,
        Command::Serve(a) => serve::serve(g, a).await,
    }
}

/// The build's time as RFC 3339 (`unknown` when the build script recorded none).
fn built() -> String {
    let epoch: i64 = env!("HS_BUILD_EPOCH").parse().unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(epoch)
        .map(hs_backup::rfc3339)
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// What follows `pg_hardstorage ` in the `version` command's line and in `--version`:
/// `vX.Y.Z (<git sha>, built <time>)`.
pub(crate) fn version_line() -> String {
    let (version, sha) = (env!("CARGO_PKG_VERSION"), env!("HS_GIT_SHA"));
    format!("v{version} ({sha}, built {})", built())
}

fn version() -> Output {
    let (version, sha) = (env!("CARGO_PKG_VERSION"), env!("HS_GIT_SHA"));
    Output::new(
        json!({"version": version, "git_sha": sha, "built": built()}),
        format!("pg_hardstorage {}\n", version_line()),
    )
}

async fn repo_init(g: &GlobalArgs, url: &str) -> Result<Output> {
    let path = g.settings.keyring_path();
    let started = std::time::Instant::now();
    let (keyring, created) = hs_crypt::Keyring::load_or_create(&path)?;
    let repo = hs_repo::Repository::init(url, &keyring).await?;
    let secs = started.elapsed().as_secs_f64();
    let mut human = format!(
        "Initialized repository {} at {} in {}\n",
        repo.id(),
        repo.url(),
        list::human_duration(secs)
    );
    if created {
        human.push_str(&format!(
            "Created keyring {} (0600). Back it up: without it the repository cannot be read.\n",
            path.display()
        ));
    } else {
        human.push_str(&format!("Using keyring {}\n", path.display()));
    }
    for w in repo.init_warnings() {
        human.push_str(&format!("Warning: {w}\n"));
    }
    Ok(Output {
        failure: None,
        json: json!({
            "repo_id": repo.id(),
            "url": repo.url(),
            "keyring": path.display().to_string(),
            "keyring_created": created,
            "warnings": repo.init_warnings(),
            "seconds": secs,
        }),
        human,
    })
}

async fn backup(g: &GlobalArgs, a: crate::cli::BackupArgs) -> Result<Output> {
    hs_backup::validate_deployment(&a.deployment)?;
    let conn = g
        .settings
        .conn_config(&a.deployment, a.pg_connection.as_deref())?;
    let repo = g
        .settings
        .open_repo(Some(&a.deployment), Some(&a.repo.repo))
        .await?;
    let name_use = hs_ops::NameUse::Backup {
        new_deployment: a.new_deployment,
    };
    hs_ops::check_deployment_name(&g.settings, &repo, &a.deployment, name_use).await?;
    let mut opts = hs_backup::BackupOptions::new(&a.deployment);
    opts.fast_checkpoint = !a.spread_checkpoint;
    opts.max_rate_kbps = a.max_rate;
    opts.allow_system_id_change = a.allow_system_id_change;
    opts.full = a.full;
    // SIGTERM / SIGINT: stop at once, release the lease, record nothing (aborted.signal).
    // Installed before the backup starts, so a signal at any point is ours to handle.
    let stop = stop_signal()?;
    let bar = Bar::new(g, "backup");
    let started = std::time::Instant::now();
    let done = hs_backup::run_backup_until(&conn, &repo, &opts, &bar, stop).await;
    if done.is_err() {
        hs_backup::Progress::finish(&bar);
    }
    let done = done?;
    let (m, files_checked) = (done.manifest, done.files_checked);
    let secs = started.elapsed().as_secs_f64();
    let s = &m.stats;
    let kind = match &m.incremental {
        Some(i) => format!(
            "incremental from {}: {} changed files, {} sent by the server",
            i.parent_backup_id,
            i.incremental_files,
            human_bytes(s.sent_bytes)
        ),
        None => "full".to_owned(),
    };
    let human = format!(
        "Backup {id} of {dep} done in {took} ({kind})\n  start LSN {start}, stop LSN {stop}, timeline {tli}\n  {files} files, {logical} read at {rate}, {stored} new in the repository ({reused} of its chunks reused)\n  {files_checked} files checked as received against the server's backup_manifest\n",
        id = m.backup_id,
        dep = m.deployment,
        took = list::human_duration(secs),
        start = m.start_lsn,
        stop = m.stop_lsn,
        tli = m.timeline,
        files = s.files,
        logical = human_bytes(s.logical_bytes),
        rate = list::human_rate(s.logical_bytes, secs),
        stored = human_bytes(s.stored_bytes),
        reused = list::reused_text(s.chunks, s.new_chunks),
    );
    Ok(Output {
        failure: None,
        json: json!({
            "backup_id": m.backup_id,
            "deployment": m.deployment,
            "system_identifier": m.system_identifier,
            "timeline": m.timeline,
            "start_lsn": m.start_lsn,
            "stop_lsn": m.stop_lsn,
            "start_time": m.start_time,
            "stop_time": m.stop_time,
            "pg_version": m.pg_version,
            "files": s.files,
            "logical_bytes": s.logical_bytes,
            "stored_bytes": s.stored_bytes,
            "chunks": s.chunks,
            "new_chunks": s.new_chunks,
            "sent_bytes": s.sent_bytes,
            "files_checked": files_checked,
            "incremental_from": m.incremental.as_ref().map(|i| &i.parent_backup_id),
            "incremental_files": m.incremental.as_ref().map(|i| i.incremental_files),
            "reused_percent": list::reused_percent(s.chunks, s.new_chunks),
            "seconds": secs,
            "bytes_per_second": per_second(s.logical_bytes, secs),
        }),
        human,
    })
}

/// Bytes per second, whole; `None` when no time passed.
fn per_second(bytes: u64, secs: f64) -> Option<u64> {
    (secs > 0.0).then(|| (bytes as f64 / secs) as u64)
}

/// Resolves to the name of the first SIGTERM or SIGINT received from now on.
fn stop_signal() -> Result<impl std::future::Future<Output = String>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM".to_owned(),
            _ = int.recv() => "SIGINT".to_owned(),
        }
    })
}

fn plan_human(p: &hs_pitr::RestorePlan, asked: Option<&str>) -> String {
    let mut h = String::new();
    let target = match (&p.target, asked) {
        (hs_pitr::PitrTarget::Time(t), Some(a)) => {
            format!("time {} (UTC, from {a:?})", hs_pitr::format_utc(*t))
        }
        (t, _) => t.to_string(),
    };
    h.push_str(&format!(
        "Target:  {target}
"
    ));
    h.push_str(&format!(
        "Backup:  {} (timeline {}, ends at {}, LSN {})
",
        p.backup.backup_id, p.backup.timeline, p.backup.stop_time, p.backup.stop_lsn
    ));
    match (&p.wal_from, &p.wal_to) {
        (Some(f), Some(t)) => h.push_str(&format!(
            "WAL:     {f} .. {t}{} ({} segment{}, all archived)
",
            if p.wal_to_partial { ".partial" } else { "" },
            p.wal_segments,
            if p.wal_segments == 1 { "" } else { "s" }
        )),
        _ => h.push_str(
            "WAL:     none needed from the archive
",
        ),
    }
    if let hs_pitr::PitrTarget::Name(_) = p.target {
        if let (Some(l), Some(t)) = (p.resolved_lsn, p.resolved_time) {
            h.push_str(&format!(
                "         restore point at LSN {l}, created {}
",
                hs_pitr::format_utc(t)
            ));
        }
    }
    for n in &p.notes {
        h.push_str(&format!(
            "Note:    {n}
"
        ));
    }
    h
}

async fn restore(g: &GlobalArgs, a: crate::cli::RestoreArgs) -> Result<Output> {
    let req = restore_request(&a);
    // The progress bar, and SIGTERM / SIGINT: stop, release the lease, exit 5
    // (aborted.signal); both made just before the restore starts.
    let begin = || -> Result<_> {
        let bar = Bar::new(g, "restore");
        Ok((bar, stop_signal()?))
    };
    let outcome = hs_ops::restore(&g.settings, &req, begin).await?;
    let asked = a.to_time.as_deref();
    let r = match outcome {
        hs_ops::RestoreOutcome::Preview { plan, space } => {
            let plan_text = plan
                .as_ref()
                .map(|p| plan_human(p, asked))
                .unwrap_or_default();
            let (space_text, space_json) = space_preview(&space, a.delta);
            return Ok(Output {
                failure: None,
                json: json!({
                    "preview": true,
                    "deployment": a.deployment,
                    "plan": plan.as_ref().map(hs_pitr::RestorePlan::to_json),
                    "space": space_json,
                }),
                human: format!("Restore plan (nothing written):\n{plan_text}{space_text}"),
            });
        }
        hs_ops::RestoreOutcome::Restored(r) => r,
    };
    Ok(Output {
        failure: None,
        json: restored_json(&a, &r),
        human: restored_human(&a, &r, asked),
    })
}

/// The preview's space lines (`Space:   1.2 GiB needed at /x, 40.0 GiB free`) and JSON.
fn space_preview(space: &[hs_ops::SpaceNeed], delta: bool) -> (String, serde_json::Value) {
    let mut h = String::new();
    let mut rows = Vec::new();
    for n in space {
        let at = n.locations_text();
        let free = n.free.map_or("free space unknown".to_owned(), |f| {
            format!("{} free", human_bytes(f))
        });
        h.push_str(&format!(
            "Space:   {}{} needed at {at}, {free}\n",
            if delta { "up to " } else { "" },
            human_bytes(n.needed)
        ));
        rows.push(json!({
            "locations": n.locations.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "needed_bytes": n.needed,
            "free_bytes": n.free,
            "fits": !n.short(),
        }));
    }
    (h, serde_json::Value::Array(rows))
}

/// The `restore` flags as an [`hs_ops::RestoreRequest`].
fn restore_request(a: &crate::cli::RestoreArgs) -> hs_ops::RestoreRequest {
    let mut req = hs_ops::RestoreRequest::new(&a.deployment, a.target.clone());
    req.repo = Some(a.repo.repo.clone());
    req.plan = hs_ops::PlanRequest {
        backup: a.backup.clone(),
        to_time: a.to_time.clone(),
        to_lsn: a.to_lsn.clone(),
        to_name: a.to_name.clone(),
        to_timeline: a.to_timeline.clone(),
    };
    req.preview = a.preview;
    req.no_recovery = a.no_recovery;
    req.to_latest = a.to_latest;
    req.to_action = match a.to_action {
        TargetActionArg::Promote => hs_pitr::RecoveryTargetAction::Promote,
        TargetActionArg::Pause => hs_pitr::RecoveryTargetAction::Pause,
        TargetActionArg::Shutdown => hs_pitr::RecoveryTargetAction::Shutdown,
    };
    req.verify_wal = a.verify_wal;
    req.verify = match a.verify {
        VerifyArg::Run => hs_pitr::VerifyMode::Run,
        VerifyArg::Full => hs_pitr::VerifyMode::Full,
        VerifyArg::Skip => hs_pitr::VerifyMode::Skip,
    };
    req.pg_bin_dir = a.pg_bin_dir.clone();
    req.delta = a.delta;
    req.tablespace_mapping = a.tablespace_mapping.clone();
    req.restore_keyring = a.restore_keyring.clone();
    req.restore_user = a.restore_user.clone();
    req
}

/// The JSON of a completed restore.
fn restored_json(a: &crate::cli::RestoreArgs, restored: &hs_ops::Restored) -> serde_json::Value {
    let r = &restored.summary;
    let tablespaces: Vec<_> = r
        .tablespaces
        .iter()
        .map(|(oid, dir)| json!({"oid": oid, "directory": dir.display().to_string()}))
        .collect();
    json!({
        "backup_id": r.backup_id,
        "target": r.target.display().to_string(),
        "files": r.files,
        "bytes": r.bytes,
        "verified": r.verified,
        "checksums_checked": r.checksums_checked,
        "checksums_read_back": r.checksums_read_back,
        "recovery_configured": r.recovery_configured,
        "standby_config_removed": {
            "standby_signal": r.standby_config_removed.signal,
            "settings": r.standby_config_removed.settings,
        },
        "delta": a.delta,
        "files_kept": r.files_kept,
        "files_written": r.files_written,
        "removed": r.removed,
        "tablespaces": tablespaces,
        "plan": restored.plan.as_ref().map(hs_pitr::RestorePlan::to_json),
        "wal_segments_verified": restored.wal_segments_verified,
        "restore_command_checked_as": restored.restore_command_checked_as,
        "warnings": restored.warnings,
        "seconds": restored.elapsed.as_secs_f64(),
        "bytes_per_second": per_second(r.bytes, restored.elapsed.as_secs_f64()),
    })
}

/// The line saying what standby configuration a restore removed (none: empty).
fn standby_removed_human(removed: &hs_pitr::StandbyConfigRemoved) -> String {
    let mut what = Vec::new();
    if removed.signal {
        what.push("standby.signal".to_owned());
    }
    if removed.settings > 0 {
        what.push(format!(
            "{} primary_conninfo/primary_slot_name line(s) of postgresql.auto.conf (now comments, \
             values dropped)",
            removed.settings
        ));
    }
    if what.is_empty() {
        return String::new();
    }
    format!(
        "The backup was taken from a standby: removed {}, so the restored cluster is \
         independent and does not follow the backed-up server's primary.\n",
        what.join(" and ")
    )
}

/// The human text of a completed restore; `asked` is `--to-time` as given.
fn restored_human(
    a: &crate::cli::RestoreArgs,
    restored: &hs_ops::Restored,
    asked: Option<&str>,
) -> String {
    let plan_text = restored
        .plan
        .as_ref()
        .map(|p| plan_human(p, asked))
        .unwrap_or_default();
    let is_latest = restored.target == hs_pitr::PitrTarget::Latest;
    let (checked_as, warnings) = (&restored.restore_command_checked_as, &restored.warnings);
    let secs = restored.elapsed.as_secs_f64();
    let target = &restored.target;
    let r = &restored.summary;
    let verified = match (r.verified, r.checksums_checked, r.checksums_read_back) {
        (false, _, _) => "NOT verified (--verify=skip)".to_string(),
        (true, 0, _) => "verified by pg_verifybackup".to_string(),
        (true, n, false) => format!(
            "verified ({n} files' CRC-32C checked against backup_manifest as written, then \
             pg_verifybackup --skip-checksums)"
        ),
        (true, n, true) => format!(
            "verified ({n} files' CRC-32C checked against backup_manifest as written, then \
             pg_verifybackup in full)"
        ),
    };
    let delta = if a.delta {
        format!(
            "; delta: {} kept, {} written, {} removed",
            r.files_kept, r.files_written, r.removed
        )
    } else {
        String::new()
    };
    let recovery = match (r.recovery_configured, is_latest) {
        (false, _) => String::new(),
        (true, true) => "\nRecovery is configured to replay all archived WAL (recovery.signal, restore_command = pg_hardstorage wal fetch).\n".to_owned(),
        (true, false) => format!(
            "\nRecovery is configured to stop at the {} and {} there (recovery.signal, restore_command = pg_hardstorage wal fetch).\n{plan_text}",
            target,
            match a.to_action {
                TargetActionArg::Promote => "promote",
                TargetActionArg::Pause => "pause",
                TargetActionArg::Shutdown => "shut down",
            }
        ),
    };
    let standby = standby_removed_human(&r.standby_config_removed);
    format!(
        "Restored backup {} into {} ({} files, {} fetched{delta}) in {}, {}, {verified}{recovery}{standby}{checked}{}\n",
        r.backup_id,
        r.target.display(),
        r.files,
        human_bytes(r.bytes),
        list::human_duration(secs),
        list::human_rate(r.bytes, secs),
        warnings.iter().map(|w| format!("Warning: {w}\n")).collect::<String>(),
        checked = checked_as
            .as_ref()
            .map(|u| format!("restore_command checked: it fetches WAL when run as {u}.\n"))
            .unwrap_or_default(),
    )
}
