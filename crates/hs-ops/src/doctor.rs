//! `doctor`: health checks of one deployment — config, PostgreSQL, the replication
//! slot, backup and WAL freshness, the repository and the keyring. Each check ends as
//! ok, an issue (with a suggested fix) or skipped (an earlier check failed).

use std::path::{Path, PathBuf};
use std::time::Duration;

use hs_base::code;
use hs_proto::{ConnConfig, Lsn, ReplicationClient};

use hs_backup::slot_name_for;

use crate::config::{DEFAULT_BACKUP_MAX_AGE, DEFAULT_WAL_MAX_AGE};
use crate::error::{Error, ErrorKind};

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckState {
    /// Healthy.
    Ok,
    /// Something is wrong; see [`Check::fix`].
    Issue,
    /// Not checked, because something it needs failed (see [`Check::detail`]).
    Skipped,
}

impl CheckState {
    /// `"ok"`, `"issue"` or `"skipped"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckState::Ok => "ok",
            CheckState::Issue => "issue",
            CheckState::Skipped => "skipped",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Short stable name, e.g. `pg_reachable`.
    pub name: &'static str,
    /// The outcome.
    pub state: CheckState,
    /// What was found (one line).
    pub detail: String,
    /// For an issue: what to do about it (may span lines).
    pub fix: Option<String>,
    /// What was measured, as numbers (`doctor -o json`): e.g. `lag_bytes`,
    /// `age_seconds`, `limit_seconds`. Empty when nothing was measured.
    pub values: Vec<(&'static str, u64)>,
}

impl Check {
    /// [`values`](Check::values) by name, for JSON.
    pub fn values_map(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.values.iter().copied().collect()
    }

    /// Adds a measured value.
    fn with(mut self, name: &'static str, value: u64) -> Check {
        self.values.push((name, value));
        self
    }
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            state: CheckState::Ok,
            detail: detail.into(),
            fix: None,
            values: Vec::new(),
        }
    }
    fn issue(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            state: CheckState::Issue,
            detail: detail.into(),
            fix: Some(fix.into()),
            values: Vec::new(),
        }
    }
    fn skipped(name: &'static str, why: impl Into<String>) -> Check {
        Check {
            name,
            state: CheckState::Skipped,
            detail: why.into(),
            fix: None,
            values: Vec::new(),
        }
    }
}

/// What to check for one deployment: settings already resolved from flags, env and config.
#[derive(Clone)]
pub struct DoctorTarget {
    /// Deployment name.
    pub deployment: String,
    /// Repository URL, or why there is none (the resolution error's message and fix).
    pub repo: Result<String, (String, String)>,
    /// Connection string, or why there is none.
    pub pg_connection: Result<String, (String, String)>,
    /// Keyring file.
    pub keyring: PathBuf,
    /// The config file the deployment came from, if any.
    pub config_path: Option<PathBuf>,
    /// A problem with the config itself (message, fix), if any.
    pub config_problem: Option<(String, String)>,
    /// The newest backup is an issue when older than this.
    pub backup_max_age: Duration,
    /// The newest archived WAL is an issue when older than this while the server has
    /// WAL the stream has not confirmed.
    pub wal_max_age: Duration,
    /// Limit for each PostgreSQL connection attempt and query.
    pub timeout: Duration,
    /// Where systemd units are installed, for the `schedule` check ([`crate::systemd_dir`]).
    pub systemd_dir: PathBuf,
    /// The deployment's notification sinks, for the `notifications` check (nothing is
    /// sent: only their secrets are read).
    pub notifier: crate::notify::Notifier,
}

impl std::fmt::Debug for DoctorTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoctorTarget")
            .field("deployment", &self.deployment)
            .field("repo", &self.repo.as_ref().map(|u| hs_repo::redact_url(u)))
            .field("keyring", &self.keyring)
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

impl DoctorTarget {
    /// A target with the default thresholds and a 10 s PostgreSQL timeout.
    pub fn new(deployment: &str, repo: &str, pg_connection: &str, keyring: &Path) -> DoctorTarget {
        DoctorTarget {
            deployment: deployment.to_owned(),
            repo: Ok(repo.to_owned()),
            pg_connection: Ok(pg_connection.to_owned()),
            keyring: keyring.to_path_buf(),
            config_path: None,
            config_problem: None,
            backup_max_age: DEFAULT_BACKUP_MAX_AGE,
            wal_max_age: DEFAULT_WAL_MAX_AGE,
            timeout: Duration::from_secs(10),
            systemd_dir: crate::systemd_dir(),
            notifier: crate::notify::Notifier::default(),
        }
    }
}

/// All checks of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentReport {
    /// Deployment name.
    pub deployment: String,
    /// Checks in a fixed order.
    pub checks: Vec<Check>,
    /// The server, when it answered: for the report's header.
    pub server: Option<ServerInfo>,
}

/// Who answered for a deployment (`doctor`'s header: `main — PG 17.2 — primary @ host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// `server_version` as reported.
    pub version: String,
    /// `primary`, `standby`, or `unknown` (a server before 14 does not say).
    pub role: &'static str,
    /// Host and port connected to.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl DeploymentReport {
    /// No check found an issue.
    pub fn healthy(&self) -> bool {
        self.checks.iter().all(|c| c.state != CheckState::Issue)
    }
}

/// "3m 12s", "2h 5m", "4d 3h": an age for humans.
pub fn format_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

pub(crate) fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Seconds since an RFC 3339 time (0 if it is in the future or does not parse).
pub(crate) fn age_of(rfc3339: &str) -> Option<Duration> {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()?;
    Some(Duration::from_secs(
        u64::try_from(now_unix() - t.unix_timestamp()).unwrap_or(0),
    ))
}

/// What PostgreSQL said about the deployment's slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotProbe {
    /// `server_version` as the server reports it.
    pub server_version: String,
    /// The server's timeline.
    pub timeline: u32,
    /// The server's current WAL position (IDENTIFY_SYSTEM).
    pub server_lsn: Lsn,
    /// The slot, when it exists: its restart LSN (what the stream confirmed durable).
    pub slot_restart_lsn: Option<Option<Lsn>>,
    /// Whether a stream holds the slot; `None` when a SQL connection was refused.
    pub slot_active: Option<bool>,
    /// The server's `in_hot_standby` (reported at connect, PostgreSQL 14+): whether it
    /// is a standby; `None` when it did not say.
    pub in_hot_standby: Option<bool>,
    /// The host and port that answered (of a multi-host string, the one chosen).
    pub server: (String, u16),
}

impl SlotProbe {
    /// Bytes of WAL the server has that the stream has not confirmed, when the slot
    /// exists and reserves WAL.
    pub fn lag_bytes(&self) -> Option<u64> {
        match self.slot_restart_lsn {
            Some(Some(r)) => Some(self.server_lsn.0.saturating_sub(r.0)),
            _ => None,
        }
    }
}

/// Connects over replication (IDENTIFY_SYSTEM, READ_REPLICATION_SLOT) and, when the
/// role may, over SQL (`pg_replication_slots.active`). Each step is bounded by `timeout`.
pub async fn probe_slot(
    conn: &ConnConfig,
    deployment: &str,
    timeout: Duration,
) -> crate::Result<SlotProbe> {
    let slot = slot_name_for(deployment);
    let timed_out = || {
        Error::of_kind(
            ErrorKind::Postgres,
            code::UNREACHABLE_TIMEOUT,
            format!(
                "PostgreSQL at {}:{} did not answer within {}s",
                conn.host(),
                conn.port(),
                timeout.as_secs()
            ),
        )
        .with_suggestion("check that the server is up and that nothing blocks the port")
        .temporary(true)
    };
    let mut c = tokio::time::timeout(timeout, ReplicationClient::connect(conn))
        .await
        .map_err(|_| timed_out())??;
    let ident = tokio::time::timeout(timeout, c.identify_system())
        .await
        .map_err(|_| timed_out())??;
    let server_version = c.parameter("server_version").unwrap_or("?").to_owned();
    let in_hot_standby = c.parameter("in_hot_standby").map(|v| v == "on");
    let server = (c.server().0.to_owned(), c.server().1);
    let read = tokio::time::timeout(timeout, c.read_replication_slot(&slot))
        .await
        .map_err(|_| timed_out())??;
    let _ = c.close().await;
    let mut probe = SlotProbe {
        server_version,
        timeline: ident.timeline.0,
        server_lsn: ident.xlogpos,
        slot_restart_lsn: read.map(|r| r.restart_lsn),
        slot_active: None,
        in_hot_standby,
        server,
    };
    if probe.slot_restart_lsn.is_some() {
        let sql = async {
            let mut s = ReplicationClient::connect_sql(conn).await?;
            let rows = s
                .simple_query(&format!(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'"
                ))
                .await?;
            let _ = s.close().await;
            Ok::<_, hs_proto::Error>(rows)
        };
        match tokio::time::timeout(timeout, sql).await {
            Ok(Ok(rows)) => {
                probe.slot_active = rows
                    .first()
                    .and_then(|r| r.first().cloned().flatten())
                    .map(|v| v == "t");
            }
            Ok(Err(e)) => tracing::debug!("SQL connection for slot activity refused: {e}"),
            Err(_) => tracing::debug!("SQL connection for slot activity timed out"),
        }
    }
    Ok(probe)
}

fn fix_or(e: &Error, default: &str) -> String {
    e.suggestion()
        .map_or_else(|| default.to_owned(), str::to_owned)
}

/// The deployment's newest WAL object (segment or partial segment) with its
/// modification time (Unix seconds), and how many complete segments there are.
///
/// Newest is furthest in WAL order: highest timeline, then segment, and a complete
/// segment after its own `.partial`; not the latest modification time. Objects written
/// in the same second (a streamer catching up, a backup storing its own WAL) tied on
/// time, and the first listed (the lowest) won: `status` said "last segment ...04;
/// newest ...01" (issue 19).
pub(crate) async fn newest_wal(
    backend: &dyn hs_repo::Backend,
    deployment: &str,
) -> hs_repo::Result<(Option<(String, i64)>, usize)> {
    let prefix = format!("deployments/{deployment}/wal/");
    type Position = ((u32, u32, u32), bool);
    let mut newest: Option<(Position, String, i64)> = None;
    let mut segments = 0;
    for o in backend.list(&prefix).await? {
        let rel = &o.name[prefix.len()..];
        let Some((dir, file)) = rel.split_once('/') else {
            continue;
        };
        if matches!(dir, "history" | "gaps" | "summaries") || file.contains('/') {
            continue;
        }
        let complete = !file.ends_with(".partial");
        let seg = file.strip_suffix(".partial").unwrap_or(file);
        let Some(at) = hs_repo::parse_wal_segment_name(seg) else {
            continue;
        };
        if complete {
            segments += 1;
        }
        if let Some(m) = o.modified {
            let position = (at, complete);
            if newest.as_ref().is_none_or(|(p, _, _)| position > *p) {
                newest = Some((position, file.to_owned(), m));
            }
        }
    }
    Ok((newest.map(|(_, name, m)| (name, m)), segments))
}

/// Runs every check for one deployment. Never fails: what goes wrong is a check's issue.
pub async fn diagnose(t: &DoctorTarget) -> DeploymentReport {
    let dep = t.deployment.as_str();
    let mut checks = Vec::new();

    // 1. config
    checks.push(match (&t.config_problem, &t.repo, &t.pg_connection) {
        (Some((m, f)), _, _) => Check::issue("config", m.clone(), f.clone()),
        (None, Err((m, f)), _) | (None, _, Err((m, f))) => {
            Check::issue("config", m.clone(), f.clone())
        }
        (None, Ok(_), Ok(_)) => Check::ok(
            "config",
            match &t.config_path {
                Some(p) => format!("{} is valid", p.display()),
                None => "no config file; settings from flags and environment".to_owned(),
            },
        ),
    });

    // 2. PostgreSQL and the slot
    let slot = slot_name_for(dep);
    let mut probe = None;
    let mut server = None;
    match &t.pg_connection {
        Err(_) => {
            checks.push(Check::skipped(
                "pg_reachable",
                "no connection string (see config)",
            ));
            checks.push(Check::skipped("slot", "no connection string (see config)"));
        }
        Ok(pg) => match ConnConfig::parse(pg) {
            Err(e) => {
                checks.push(Check::issue(
                    "pg_reachable",
                    format!("the connection string is invalid: {e}"),
                    fix_or(
                        &e,
                        "fix pg_connection (libpq key=value or postgresql:// URL)",
                    ),
                ));
                checks.push(Check::skipped("slot", "PostgreSQL not reachable"));
            }
            Ok(conn) => match probe_slot(&conn, dep, t.timeout).await {
                Err(e) => {
                    checks.push(Check::issue(
                        "pg_reachable",
                        format!(
                            "cannot reach PostgreSQL at {}:{} as {} [{}]: {e}",
                            conn.host(),
                            conn.port(),
                            conn.user(),
                            e.code()
                        ),
                        format!(
                            "{}\nthen check again with `pg_hardstorage doctor {dep}`",
                            fix_or(
                                &e,
                                "start PostgreSQL, or fix host/port/user in pg_connection"
                            )
                        ),
                    ));
                    checks.push(Check::skipped("slot", "PostgreSQL not reachable"));
                }
                Ok(p) => {
                    checks.push(
                        Check::ok(
                            "pg_reachable",
                            format!(
                                "PostgreSQL {} at {}:{}, timeline {}, WAL at {}",
                                p.server_version, p.server.0, p.server.1, p.timeline, p.server_lsn
                            ),
                        )
                        .with("timeline", u64::from(p.timeline))
                        .with("wal_lsn", p.server_lsn.0),
                    );
                    checks.push(slot_check(dep, &slot, &p));
                    server = Some(ServerInfo {
                        version: p.server_version.clone(),
                        role: match p.in_hot_standby {
                            Some(true) => "standby",
                            Some(false) => "primary",
                            None => "unknown",
                        },
                        host: p.server.0.clone(),
                        port: p.server.1,
                    });
                    probe = Some(p);
                }
            },
        },
    }

    // 3. The repository: backups, WAL, writability, keyring.
    let keyring = load_keyring(&t.keyring);
    let (backup, wal, writable, key) = match &t.repo {
        Err(_) => {
            let s = |n| Check::skipped(n, "no repository URL (see config)");
            let key = match &keyring {
                Ok(_) => Check::ok("keyring", format!("{} (0600) loads", t.keyring.display())),
                Err(c) => c.clone(),
            };
            (s("last_backup"), s("last_wal"), s("repo_writable"), key)
        }
        Ok(url) => repo_checks(t, url, keyring, probe.as_ref()).await,
    };
    checks.extend([
        backup,
        wal,
        writable,
        key,
        schedule_check(t),
        notifications_check(t),
    ]);
    DeploymentReport {
        deployment: dep.to_owned(),
        checks,
        server,
    }
}

/// `notifications`: the sinks and whether each one's URL and secrets can be read now
/// (nothing is sent). None configured is not an issue.
fn notifications_check(t: &DoctorTarget) -> Check {
    let sinks = t.notifier.sinks();
    if sinks.is_empty() {
        return Check::skipped(
            "notifications",
            "no notification sinks configured (notifications: in pg_hardstorage.yaml)",
        );
    }
    let problems: Vec<String> = t
        .notifier
        .check_secrets()
        .into_iter()
        .filter_map(|(label, r)| r.err().map(|e| format!("{label}: {e}")))
        .collect();
    let count = sinks.len() as u64;
    if !problems.is_empty() {
        return Check::issue(
            "notifications",
            problems.join("; "),
            "make each *_file readable by the user pg_hardstorage runs as (and 0600), or set \
             each *_env variable in its environment (systemd: Environment= or \
             LoadCredential=)",
        )
        .with("sinks", count);
    }
    let list: Vec<String> = sinks
        .iter()
        .map(|s| format!("{} (on {})", s.label(), s.on_text()))
        .collect();
    Check::ok("notifications", list.join(", ")).with("sinks", count)
}

/// `schedule`: the enabled backup timer and when it fires (never an issue: cron works too).
fn schedule_check(t: &DoctorTarget) -> Check {
    match crate::backup_schedule(&t.systemd_dir, &t.deployment) {
        crate::Schedule::NotInstalled { unit } => Check::skipped(
            "schedule",
            format!(
                "no {unit} enabled in {}; backups scheduled by cron are not seen here",
                t.systemd_dir.display()
            ),
        ),
        crate::Schedule::Enabled {
            unit,
            calendar,
            delay,
            next,
        } => {
            let when = match &next {
                Some(n) => format!("next at {n}"),
                None => "next run not known (systemd is not running here)".to_owned(),
            };
            let delay = delay.map(|d| format!(" + up to {d}")).unwrap_or_default();
            Check::ok(
                "schedule",
                format!(
                    "{when}; {unit} OnCalendar={}{delay}",
                    if calendar.is_empty() {
                        "(none)".to_owned()
                    } else {
                        calendar.join(", ")
                    }
                ),
            )
        }
    }
}

fn slot_check(dep: &str, slot: &str, p: &SlotProbe) -> Check {
    let c = slot_state_check(dep, slot, p);
    match p.lag_bytes() {
        Some(l) => c.with("lag_bytes", l),
        None => c,
    }
}

fn slot_state_check(dep: &str, slot: &str, p: &SlotProbe) -> Check {
    let start = format!(
        "start `pg_hardstorage wal stream {dep}` and keep it running (systemd, k8s); it creates the slot if absent"
    );
    match (&p.slot_restart_lsn, p.slot_active) {
        (None, _) => Check::issue(
            "slot",
            format!(
                "replication slot {slot} does not exist: WAL is not being kept for this deployment"
            ),
            start,
        ),
        (Some(_), Some(false)) => Check::issue(
            "slot",
            format!(
                "replication slot {slot} exists but no stream is connected{}",
                p.lag_bytes()
                    .map(|l| format!(" ({} of WAL retained on the server)", human_bytes(l)))
                    .unwrap_or_default()
            ),
            start,
        ),
        (Some(_), active) => {
            let lag = p
                .lag_bytes()
                .map_or("lag unknown (slot reserves no WAL yet)".to_owned(), |l| {
                    format!("lag {}", human_bytes(l))
                });
            let act = match active {
                Some(_) => "active",
                None => "exists (activity not visible: the role may not open a SQL session)",
            };
            Check::ok("slot", format!("{slot} {act}, {lag}"))
        }
    }
}

/// `1.5 MiB`-style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn load_keyring(path: &Path) -> Result<hs_crypt::Keyring, Check> {
    hs_crypt::Keyring::load(path).map_err(|e| {
        let fix = if e.code() == code::PREFLIGHT_KEYRING_PERMISSIONS {
            format!(
                "chmod 600 {p} (and chown it to the user that runs pg_hardstorage)",
                p = path.display()
            )
        } else if e.code() == code::NOTFOUND_KEYRING {
            format!(
                "restore the keyring from your backup copy to {p}, or pass --keyring PATH; without it the repository cannot be read",
                p = path.display()
            )
        } else {
            fix_or(&e, "restore the keyring file from your backup copy")
        };
        Check::issue("keyring", format!("{} [{}]: {e}", path.display(), e.code()), fix)
    })
}

async fn repo_checks(
    t: &DoctorTarget,
    url: &str,
    keyring: Result<hs_crypt::Keyring, Check>,
    probe: Option<&SlotProbe>,
) -> (Check, Check, Check, Check) {
    let dep = t.deployment.as_str();
    // Messages name the repository without credentials.
    let shown = hs_repo::redact_url(url);
    let backend = match hs_repo::open_backend(url) {
        Ok(b) => b,
        Err(e) => {
            let c = Check::issue(
                "repo_writable",
                format!("{shown}: {e}"),
                fix_or(&e, "fix the repository URL"),
            );
            let s = |n| Check::skipped(n, "repository URL invalid");
            let key = keyring.err().unwrap_or_else(|| s("keyring"));
            return (s("last_backup"), s("last_wal"), c, key);
        }
    };
    let writable = writable_check(backend.as_ref(), &shown, dep).await;
    let wal = wal_check(t, backend.as_ref(), &shown, probe).await;
    let (key, backup) = keyring_checks(t, url, &shown, keyring).await;
    (backup, wal, writable, key)
}

/// Writable: the marker is there, and a probe object can be created and removed.
async fn writable_check(backend: &dyn hs_repo::Backend, shown: &str, dep: &str) -> Check {
    match backend.stat(hs_repo::MARKER_NAME).await {
        Ok(None) => Check::issue(
            "repo_writable",
            format!("no pg_hardstorage repository at {shown}"),
            format!("create it with `pg_hardstorage repo init {shown}` (or `pg_hardstorage init`)"),
        ),
        Err(e) => Check::issue(
            "repo_writable",
            format!("cannot read {shown} [{}]: {e}", e.code()),
            fix_or(
                &e,
                "check that the storage is reachable and the path is right",
            ),
        ),
        Ok(Some(_)) => {
            let name = format!(
                "doctor/probe-{}-{}",
                dep,
                hex::encode(rand::random::<[u8; 8]>())
            );
            let put = backend
                .put_if_absent(
                    &name,
                    bytes::Bytes::from_static(b"pg_hardstorage doctor probe\n"),
                )
                .await;
            let del = backend.delete(&name).await;
            match (put, del) {
                (Ok(true), Ok(())) => Check::ok(
                    "repo_writable",
                    format!("{shown} accepts writes (probe object created and removed)"),
                ),
                (Ok(false), _) => Check::issue(
                    "repo_writable",
                    format!("probe object {name} already existed in {shown}"),
                    "run doctor again; if this repeats, remove the doctor/ prefix in the repository",
                ),
                (Err(e), _) | (_, Err(e)) => Check::issue(
                    "repo_writable",
                    format!("cannot write to {shown} [{}]: {e}", e.code()),
                    fix_or(
                        &e,
                        "give the user running pg_hardstorage write access to the repository",
                    ),
                ),
            }
        }
    }
}

/// Last WAL: object modification times, no keyring needed.
async fn wal_check(
    t: &DoctorTarget,
    backend: &dyn hs_repo::Backend,
    shown: &str,
    probe: Option<&SlotProbe>,
) -> Check {
    let dep = t.deployment.as_str();
    match newest_wal(backend, dep).await {
        Err(e) => Check::issue(
            "last_wal",
            format!("cannot list WAL in {shown}: {e}"),
            fix_or(&e, "check that the repository is reachable"),
        ),
        Ok((None, _)) => Check::issue(
            "last_wal",
            format!("no WAL archived for {dep}"),
            format!("start `pg_hardstorage wal stream {dep}` and keep it running"),
        ),
        Ok((Some((name, at)), segments)) => {
            let age = Duration::from_secs(u64::try_from(now_unix() - at).unwrap_or(0));
            wal_age_check(t, probe, &name, age)
                .with("age_seconds", age.as_secs())
                .with("limit_seconds", t.wal_max_age.as_secs())
                .with("segments", segments as u64)
        }
    }
}

/// `last_wal` once the newest WAL object is known: `age` old.
fn wal_age_check(t: &DoctorTarget, probe: Option<&SlotProbe>, name: &str, age: Duration) -> Check {
    let dep = t.deployment.as_str();
    let idle = probe
        .and_then(|p| p.lag_bytes())
        .is_some_and(|l| l < hs_repo::DEFAULT_WAL_SEGMENT_SIZE)
        && probe.and_then(|p| p.slot_active) != Some(false);
    if age <= t.wal_max_age {
        Check::ok(
            "last_wal",
            format!("{name} archived {} ago", format_age(age)),
        )
    } else if idle {
        Check::ok(
            "last_wal",
            format!(
                "{name} archived {} ago; the stream has confirmed all but the server's newest WAL (server idle)",
                format_age(age)
            ),
        )
    } else {
        Check::issue(
            "last_wal",
            format!(
                "newest archived WAL {name} is {} old (limit {})",
                format_age(age),
                format_age(t.wal_max_age)
            ),
            format!(
                "check that `pg_hardstorage wal stream {dep}` is running and read its log (-v); raise wal_max_age in pg_hardstorage.yaml if this server is often idle"
            ),
        )
    }
}

/// Keyring: present, 0600, unwraps the repository key; then the backups.
/// Returns `(keyring, last_backup)`.
async fn keyring_checks(
    t: &DoctorTarget,
    url: &str,
    shown: &str,
    keyring: Result<hs_crypt::Keyring, Check>,
) -> (Check, Check) {
    let key_skip = |why: &str| Check::skipped("last_backup", why.to_owned());
    match keyring {
        Err(c) => (c, key_skip("needs the keyring")),
        Ok(k) => match hs_repo::Repository::open(url, &k).await {
            Err(e) if e.code() == code::NOTFOUND_REPO => (
                Check::ok(
                    "keyring",
                    format!(
                        "{} (0600) loads; no repository to unwrap yet",
                        t.keyring.display()
                    ),
                ),
                key_skip("no repository"),
            ),
            Err(e) => (
                Check::issue(
                    "keyring",
                    format!(
                        "{} cannot open the repository at {shown} [{}]: {e}",
                        t.keyring.display(),
                        e.code()
                    ),
                    fix_or(
                        &e,
                        "use the keyring the repository was created with (--keyring PATH)",
                    ),
                ),
                key_skip("needs the repository key"),
            ),
            Ok(repo) => {
                let key = Check::ok(
                    "keyring",
                    format!(
                        "{} (0600) unwraps the key of repository {}",
                        t.keyring.display(),
                        repo.id()
                    ),
                );
                (key, backup_check(t, &repo).await)
            }
        },
    }
}

async fn backup_check(t: &DoctorTarget, repo: &hs_repo::Repository) -> Check {
    let dep = t.deployment.as_str();
    let run = format!(
        "run `pg_hardstorage backup {dep}` now, and schedule it (cron, systemd timer) at least every {}",
        format_age(t.backup_max_age)
    );
    match repo.backup_summaries_cataloged(dep).await {
        Err(e) => Check::issue(
            "last_backup",
            format!("cannot list backups [{}]: {e}", e.code()),
            fix_or(&e, "check the repository with `pg_hardstorage list`"),
        ),
        Ok(list) => match list.iter().max_by(|a, b| a.stop_time.cmp(&b.stop_time)) {
            None => Check::issue("last_backup", format!("no backups of {dep} yet"), run),
            Some(m) => {
                let age = age_of(&m.stop_time).unwrap_or(Duration::MAX);
                // A pack quarantined after the newest backup: until a new backup stores
                // fresh copies of its chunks, older backups may need the damaged copies.
                let finished = now_unix() - i64::try_from(age.as_secs()).unwrap_or(i64::MAX / 2);
                let unhealed = repo
                    .quarantined_packs()
                    .await
                    .map(|q| q.into_iter().filter(|r| r.recorded > finished).count())
                    .unwrap_or(0);
                if unhealed > 0 {
                    return Check::issue(
                        "last_backup",
                        format!(
                            "{unhealed} damaged pack(s) were quarantined after the newest backup {}",
                            m.backup_id
                        ),
                        format!(
                            "run `pg_hardstorage backup {dep}` now: it stores fresh copies of the \
                             quarantined chunks, which older backups then read"
                        ),
                    );
                }
                let c = if age <= t.backup_max_age {
                    Check::ok(
                        "last_backup",
                        format!("{} finished {} ago", m.backup_id, format_age(age)),
                    )
                } else {
                    Check::issue(
                        "last_backup",
                        format!(
                            "newest backup {} finished {} ago (limit {})",
                            m.backup_id,
                            format_age(age),
                            format_age(t.backup_max_age)
                        ),
                        run,
                    )
                };
                c.with("age_seconds", age.as_secs())
                    .with("limit_seconds", t.backup_max_age.as_secs())
            }
        },
    }
}

/// What `doctor` is asked: one deployment or every one of the config, with the
/// repository URL and connection string given by flag (or environment), if any.
#[derive(Debug, Clone, Default)]
pub struct DoctorRequest {
    /// The deployment to check; `None`: every deployment of the config file.
    pub deployment: Option<String>,
    /// `--repo`.
    pub repo: Option<String>,
    /// `--pg-connection`.
    pub pg_connection: Option<String>,
}

/// A resolution error as a finding: (`[code] message`, its fix).
fn problem(e: &Error) -> (String, String) {
    (
        format!("[{}] {e}", e.code()),
        e.suggestion()
            .unwrap_or("fix pg_hardstorage.yaml")
            .to_owned(),
    )
}

/// `doctor`: reads the config (`config`, else the search path) itself, so that a broken
/// one is a finding rather than the end of the run, resolves each deployment's settings
/// and runs [`diagnose`] on it. `usage.deployment_missing` when there is nothing to
/// check; an I/O error making the keyring path absolute comes back as the caller's `E`.
pub async fn doctor<E>(
    config: Option<&Path>,
    keyring_flag: Option<PathBuf>,
    req: &DoctorRequest,
) -> std::result::Result<Vec<DeploymentReport>, E>
where
    E: From<Error> + From<std::io::Error>,
{
    let (file, config_problem) = match crate::config::ConfigFile::discover(config) {
        Ok(f) => (f, None),
        Err(e) => (None, Some(problem(&e))),
    };
    let settings = crate::settings::Settings::new(file, keyring_flag);
    let keyring = std::path::absolute(settings.keyring_path())?;
    let names = settings.deployment_names(req.deployment.as_deref());
    if names.is_empty() && config_problem.is_none() {
        return Err(Error::new(
            code::USAGE_DEPLOYMENT_MISSING,
            "no deployment to check: none was named and the config lists none",
        )
        .with_suggestion(
            "name one (`pg_hardstorage doctor main --repo URL --pg-connection CONN`), or add deployments to pg_hardstorage.yaml (`pg_hardstorage init`)",
        )
        .into());
    }

    let mut reports = Vec::new();
    if names.is_empty() {
        // Only the broken config to report.
        if let Some((m, f)) = &config_problem {
            reports.push(DeploymentReport {
                deployment: "-".to_owned(),
                checks: vec![Check::issue("config", m.clone(), f.clone())],
                server: None,
            });
        }
    }
    for name in &names {
        hs_backup::validate_deployment(name)?;
        let entry = settings.deployment(name);
        let mut t = DoctorTarget::new(name, "", "", &keyring);
        t.repo = settings
            .repo_url(Some(name), req.repo.as_deref())
            .map_err(|e| problem(&e));
        t.pg_connection = settings
            .pg_connection(name, req.pg_connection.as_deref())
            .map_err(|e| problem(&e));
        t.config_path = settings.file.as_ref().map(|f| f.path.clone());
        t.config_problem = config_problem.clone();
        if let Some(e) = entry {
            t.backup_max_age = e.backup_max_age();
            t.wal_max_age = e.wal_max_age();
        }
        t.notifier = settings.notifier(Some(name));
        reports.push(diagnose(&t).await);
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_humane() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn ages_read_well() {
        assert_eq!(format_age(Duration::from_secs(5)), "5s");
        assert_eq!(format_age(Duration::from_secs(192)), "3m 12s");
        assert_eq!(format_age(Duration::from_secs(7500)), "2h 5m");
        assert_eq!(format_age(Duration::from_secs(97_200)), "1d 3h");
    }

    #[test]
    fn slot_states() {
        let mut p = SlotProbe {
            server_version: "15".into(),
            timeline: 1,
            server_lsn: Lsn(0x3000000),
            slot_restart_lsn: None,
            slot_active: None,
            in_hot_standby: Some(false),
            server: ("db1".into(), 5432),
        };
        assert_eq!(
            slot_check("d", "pg_hardstorage_d", &p).state,
            CheckState::Issue
        );
        p.slot_restart_lsn = Some(Some(Lsn(0x2000000)));
        p.slot_active = Some(false);
        let c = slot_check("d", "pg_hardstorage_d", &p);
        assert_eq!(c.state, CheckState::Issue);
        assert!(c.detail.contains("16.0 MiB"), "{}", c.detail);
        p.slot_active = Some(true);
        let c = slot_check("d", "pg_hardstorage_d", &p);
        assert_eq!(c.state, CheckState::Ok);
        assert!(c.detail.contains("lag 16.0 MiB"), "{}", c.detail);
        assert_eq!(c.values_map().get("lag_bytes"), Some(&(16 << 20)));
    }

    /// Regression (issue 19): the demo's `status` said "last segment ...04; newest ...01"
    /// because the segments were written in the same second.
    #[tokio::test]
    async fn newest_wal_is_the_furthest_in_wal_order_not_the_first_of_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let b = hs_repo::open_backend(&format!("file://{}", dir.path().display())).unwrap();
        let put = |name: &str| {
            let b = b.clone();
            let name = format!("deployments/d/wal/{}/{name}", &name[..8]);
            async move { b.put(&name, bytes::Bytes::from_static(b"x")).await.unwrap() }
        };
        for n in 1..=4 {
            put(&format!("0000000100000000000000{n:02}")).await;
        }
        let (newest, segments) = newest_wal(b.as_ref(), "d").await.unwrap();
        assert_eq!(newest.unwrap().0, "000000010000000000000004");
        assert_eq!(segments, 4);
        // The in-progress segment after them, then a newer timeline.
        put("000000010000000000000005.partial").await;
        let (newest, _) = newest_wal(b.as_ref(), "d").await.unwrap();
        assert_eq!(newest.unwrap().0, "000000010000000000000005.partial");
        put("000000020000000000000005").await;
        let (newest, segments) = newest_wal(b.as_ref(), "d").await.unwrap();
        assert_eq!(newest.unwrap().0, "000000020000000000000005");
        assert_eq!(segments, 5);
    }

    #[tokio::test]
    async fn missing_everything_is_reported_not_returned() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("repo").display());
        let mut t = DoctorTarget::new(
            "demo",
            &url,
            "host=127.0.0.1 port=1 user=x connect_timeout=2",
            &dir.path().join("kr"),
        );
        t.timeout = Duration::from_secs(5);
        let r = diagnose(&t).await;
        assert!(!r.healthy());
        let state = |n: &str| r.checks.iter().find(|c| c.name == n).unwrap().state;
        assert_eq!(state("config"), CheckState::Ok);
        assert_eq!(state("pg_reachable"), CheckState::Issue);
        assert_eq!(state("slot"), CheckState::Skipped);
        assert_eq!(state("repo_writable"), CheckState::Issue);
        assert_eq!(state("keyring"), CheckState::Issue);
        for c in &r.checks {
            assert_eq!(c.state == CheckState::Issue, c.fix.is_some(), "{c:?}");
        }
    }
}
