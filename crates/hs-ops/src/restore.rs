//! The restore orchestration: plan (and check the archived WAL) -> recovery settings ->
//! restore -> pg_verifybackup -> a run of restore_command as the server's user.
//! `pg_hardstorage restore` runs [`restore`]; the API's restore preview runs the same
//! planning ([`PlanRequest`], [`plan_restore`]).

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hs_base::code;
use hs_pitr::{
    BackupSelector, PitrTarget, RecoveryTargetAction, RestoreOptions, RestorePlan, RestoreProgress,
    RestoreSummary, ServerUser, TimelineChoice, VerifyMode,
};

use crate::error::{Error, Result};
use crate::settings::Settings;

/// Which backup and how far: the planning inputs of a restore, as text the way a user
/// gives them (`--to`, `--to-lsn`, `--to-name`, `--to-timeline`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRequest {
    /// `latest` or a backup id.
    pub backup: String,
    /// A recovery target time.
    pub to_time: Option<String>,
    /// A recovery target LSN.
    pub to_lsn: Option<String>,
    /// A restore point name.
    pub to_name: Option<String>,
    /// `latest`, `current` or a timeline number; `None` is `latest`.
    pub to_timeline: Option<String>,
}

impl Default for PlanRequest {
    fn default() -> PlanRequest {
        PlanRequest {
            backup: "latest".to_owned(),
            to_time: None,
            to_lsn: None,
            to_name: None,
            to_timeline: None,
        }
    }
}

impl PlanRequest {
    /// The target: the time, else the LSN, else the restore point, else the end of WAL
    /// (a time is read relative to now, in UTC unless it says otherwise).
    pub fn target(&self) -> Result<PitrTarget> {
        Ok(if let Some(t) = &self.to_time {
            PitrTarget::Time(hs_pitr::parse_target_time(
                t,
                time::OffsetDateTime::now_utc(),
            )?)
        } else if let Some(l) = &self.to_lsn {
            PitrTarget::Lsn(hs_pitr::parse_target_lsn(l)?)
        } else if let Some(n) = &self.to_name {
            PitrTarget::Name(hs_pitr::parse_target_name(n)?)
        } else {
            PitrTarget::Latest
        })
    }

    /// The timeline as given, checked: `usage.timeline_invalid` unless `latest`,
    /// `current` or a positive number.
    pub fn timeline(&self) -> Result<Option<String>> {
        let Some(v) = self.to_timeline.as_deref() else {
            return Ok(None);
        };
        let ok = v == "latest" || v == "current" || v.parse::<u32>().is_ok_and(|n| n > 0);
        if !ok {
            return Err(Error::new(
                code::USAGE_TIMELINE_INVALID,
                format!("--to-timeline {v:?} is not `latest`, `current` or a timeline number"),
            )
            .with_suggestion("pass --to-timeline latest, current, or a number such as 2"));
        }
        Ok(Some(v.to_owned()))
    }

    /// The backup selector.
    pub fn selector(&self) -> BackupSelector {
        match self.backup.parse() {
            Ok(s) => s,
            Err(never) => match never {},
        }
    }
}

/// Plans a restore of `deployment` to `target` along `timeline` (`None`: the latest),
/// checking that the WAL it needs is archived. The CLI's restore and the API's restore
/// preview both plan through here.
pub async fn plan_restore(
    repo: &hs_repo::Repository,
    deployment: &str,
    selector: &BackupSelector,
    target: &PitrTarget,
    timeline: Option<&str>,
) -> Result<RestorePlan> {
    let choice: TimelineChoice = timeline.unwrap_or("latest").parse()?;
    hs_pitr::plan_restore_on(repo, deployment, selector, target, choice).await
}

/// Everything `pg_hardstorage restore` takes.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    /// Deployment name.
    pub deployment: String,
    /// The repository URL given by flag (or environment), if any; else the config's.
    pub repo: Option<String>,
    /// Backup and target.
    pub plan: PlanRequest,
    /// The data directory to create.
    pub data_dir: PathBuf,
    /// Only plan (and check WAL); write nothing.
    pub preview: bool,
    /// Restore the backup alone: no recovery settings, no WAL needed.
    pub no_recovery: bool,
    /// Configure recovery to the end of the archived WAL even when none is archived yet.
    pub to_latest: bool,
    /// What the server does at a target other than the latest.
    pub to_action: RecoveryTargetAction,
    /// Read every planned WAL segment from the repository before restoring.
    pub verify_wal: bool,
    /// Run pg_verifybackup on the restored directory.
    pub verify: VerifyMode,
    /// Where pg_verifybackup lives.
    pub pg_bin_dir: Option<PathBuf>,
    /// Complete an existing directory instead of writing an empty one.
    pub delta: bool,
    /// `OLDDIR=NEWDIR` tablespace mappings.
    pub tablespace_mapping: Vec<String>,
    /// The keyring restore_command passes (default: the one of these settings).
    pub restore_keyring: Option<PathBuf>,
    /// The OS user the server will run as (from root: the directories are handed over).
    pub restore_user: Option<String>,
    /// The program restore_command runs (default: the running executable).
    pub program: Option<PathBuf>,
}

impl RestoreRequest {
    /// A request with the defaults of `pg_hardstorage restore DEPLOYMENT latest --target DIR`.
    pub fn new(deployment: &str, data_dir: impl Into<PathBuf>) -> RestoreRequest {
        RestoreRequest {
            deployment: deployment.to_owned(),
            repo: None,
            plan: PlanRequest::default(),
            data_dir: data_dir.into(),
            preview: false,
            no_recovery: false,
            to_latest: false,
            to_action: RecoveryTargetAction::Promote,
            verify_wal: false,
            verify: VerifyMode::Run,
            pg_bin_dir: None,
            delta: false,
            tablespace_mapping: Vec::new(),
            restore_keyring: None,
            restore_user: None,
            program: None,
        }
    }
}

/// What [`restore`] did.
// Made once per restore and moved once: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum RestoreOutcome {
    /// `preview`: the plan; nothing was written.
    Preview {
        /// The plan.
        plan: Option<RestorePlan>,
        /// The space the restore needs and what is free, per file system (the data
        /// directory's first).
        space: Vec<crate::SpaceNeed>,
    },
    /// The restore ran.
    Restored(Restored),
}

/// A completed restore.
#[derive(Debug)]
pub struct Restored {
    /// What hs-pitr reports.
    pub summary: RestoreSummary,
    /// The plan, unless recovery was off.
    pub plan: Option<RestorePlan>,
    /// The target asked for.
    pub target: PitrTarget,
    /// WAL segments read back by `verify_wal`.
    pub wal_segments_verified: Option<u64>,
    /// The OS user restore_command was checked as.
    pub restore_command_checked_as: Option<String>,
    /// Why restore_command could not be checked.
    pub warnings: Vec<String>,
    /// From the start of the restore to the end of the checks.
    pub elapsed: Duration,
}

/// Restores a backup: plans it (unless recovery is off and this is no preview), checks
/// the planned WAL when asked, configures recovery (restore_command, the target, the
/// planned timeline), then restores, and runs restore_command once as the server's
/// user. `begin` is called just before the restore starts (not for a preview): it makes
/// the progress display and the stop future (a signal handler installed then handles a
/// signal from that point on); the restore stops when the future resolves.
///
/// Errors of `begin` and of the local system (the running executable, the keyring's
/// absolute path) come back as the caller's `E`; the rest as [`Error`] converted.
pub async fn restore<E, B, P, F>(
    settings: &Settings,
    req: &RestoreRequest,
    begin: B,
) -> std::result::Result<RestoreOutcome, E>
where
    E: From<Error> + From<std::io::Error>,
    B: FnOnce() -> std::result::Result<(P, F), E>,
    P: RestoreProgress,
    F: Future<Output = String>,
{
    let url = settings.repo_url(Some(&req.deployment), req.repo.as_deref())?;
    hs_backup::validate_deployment(&req.deployment)?;
    let target = req.plan.target()?;
    let timeline = req.plan.timeline()?;
    let repo = settings.open_url(&url).await?;
    crate::check_deployment_name(settings, &repo, &req.deployment, crate::NameUse::Read).await?;
    let sel = req.plan.selector();
    // Plan (and check the archived WAL) unless recovery is off: then no WAL is needed.
    let plan = if req.no_recovery && !req.preview {
        None
    } else {
        Some(plan_restore(&repo, &req.deployment, &sel, &target, timeline.as_deref()).await?)
    };
    let wal_segments_verified = match (&plan, req.verify_wal) {
        (Some(p), true) => Some(hs_pitr::verify_plan_wal(&repo, p).await?),
        _ => None,
    };
    let sel = plan.as_ref().map_or(sel, |p| p.backup_selector());
    let tablespace_mapping: Vec<hs_pitr::TablespaceMapping> = req
        .tablespace_mapping
        .iter()
        .map(|m| m.parse())
        .collect::<std::result::Result<_, hs_pitr::Error>>()?;
    // Whether it fits, before anything is written (a delta restore keeps what matches,
    // so it needs at most this much; it is shown, not enforced).
    let manifest = hs_pitr::select_backup(&repo, &req.deployment, &sel).await?;
    let space = crate::space::restore_space(&manifest, &req.data_dir, &tablespace_mapping);
    drop(manifest);
    if !req.delta {
        crate::space::check_space(&space)?;
    }
    if req.preview {
        return Ok(RestoreOutcome::Preview { plan, space });
    }
    let mut opts = RestoreOptions::new(&req.deployment, sel, req.data_dir.clone());
    opts.verify = req.verify;
    opts.pg_bin_dir = req.pg_bin_dir.clone();
    opts.delta = req.delta;
    opts.tablespace_mapping = tablespace_mapping;
    // Any archived segment serves to check restore_command after the restore.
    let probe_file = repo
        .list_wal(&req.deployment)
        .await?
        .segments
        .last()
        .map(|s| s.name.clone());
    let is_latest = target == PitrTarget::Latest;
    if !is_latest || req.to_latest || (probe_file.is_some() && !req.no_recovery) {
        let exe = match &req.program {
            Some(p) => p.clone(),
            None => std::env::current_exe()?,
        };
        let keyring = req
            .restore_keyring
            .clone()
            .unwrap_or_else(|| settings.keyring_path());
        let keyring = std::path::absolute(&keyring)?;
        let cmd = hs_pitr::restore_command(&exe, &req.deployment, &url, &keyring)?;
        let mut rc = hs_pitr::RecoveryConfig::latest(cmd);
        rc.target = plan
            .as_ref()
            .map_or(hs_pitr::RecoveryTarget::Latest, |p| p.recovery_target());
        // The planned timeline, so recovery follows the path that was checked.
        rc.target_timeline = plan.as_ref().map(|p| p.timeline.to_string()).or(timeline);
        if !is_latest {
            rc.target_action = Some(req.to_action);
        }
        opts.recovery = Some(rc);
    }
    // SIGTERM / SIGINT (the caller's stop future): stop, release the lease, aborted.signal.
    let (progress, stop) = begin()?;
    let started = Instant::now();
    let done = hs_pitr::restore_until(&repo, &opts, &progress, stop).await;
    if done.is_err() {
        progress.finish();
    }
    let summary = done?;
    let (checked_as, warnings) =
        check_restore_command(req, &opts, &summary, probe_file.as_deref())?;
    Ok(RestoreOutcome::Restored(Restored {
        summary,
        plan,
        target,
        wal_segments_verified,
        restore_command_checked_as: checked_as,
        warnings,
        elapsed: started.elapsed(),
    }))
}

/// After a restore that configured recovery: gives the directories to
/// `restore_user` (as root), then runs restore_command once as the server's
/// user, so a keyring or repository it cannot read fails the restore now rather
/// than the server's recovery later. Returns the user it was checked as, and the
/// warnings when no check was possible.
fn check_restore_command(
    req: &RestoreRequest,
    opts: &RestoreOptions,
    r: &RestoreSummary,
    probe_file: Option<&str>,
) -> Result<(Option<String>, Vec<String>)> {
    let (Some(rc), true) = (&opts.recovery, r.recovery_configured) else {
        return Ok((None, Vec::new()));
    };
    let user = ServerUser::for_data_dir(&r.target, req.restore_user.as_deref())?;
    if let (ServerUser::Other(u), Some(_)) = (&user, &req.restore_user) {
        let mut dirs = vec![r.target.as_path()];
        dirs.extend(r.tablespaces.iter().map(|(_, d)| d.as_path()));
        hs_pitr::hand_over(&dirs, u)?;
    }
    if user == ServerUser::Undecided {
        return Ok((
            None,
            vec![format!(
                "restore ran as root and {} belongs to root, so restore_command could not be checked \
                 as the user the server will run as; if that user cannot read the keyring or the \
                 repository, recovery stops at its first WAL fetch: pass --restore-user USER",
                r.target.display()
            )],
        ));
    }
    let Some(file) = probe_file else {
        return Ok((None, Vec::new()));
    };
    hs_pitr::probe_restore_command(&rc.restore_command, &r.target, &user, file)?;
    Ok((Some(user.describe()), Vec::new()))
}
