//! `wal preflight`: checks that a server can feed a WAL stream, before streaming.
//!
//! Works for a role that has only `REPLICATION` and `LOGIN`: settings come from `SHOW`
//! over the replication connection; slot and sender counts come from a normal SQL
//! connection (`pg_replication_slots`, `pg_stat_replication`, `pg_roles`) when the server
//! admits one, and an `info` finding says what could not be checked when it does not.

use hs_base::code;
use hs_proto::{ConnConfig, ReplicationClient};

use crate::error::{Error, ErrorKind, Result};
use crate::names::validate_deployment;
use crate::stream::slot_name_for;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Streaming cannot work (or cannot be safe) until this is fixed.
    Fatal,
    /// Streaming works, but something may bite later.
    Warning,
    /// For information (e.g. what the role was not allowed to see).
    Info,
}

impl Severity {
    /// `"fatal"`, `"warning"` or `"info"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Fatal => "fatal",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// One result of a preflight check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Dotted code, e.g. `preflight.wal_level.too_low`.
    pub code: &'static str,
    /// How serious it is.
    pub severity: Severity,
    /// What was found.
    pub message: String,
    /// The concrete fix (an `ALTER SYSTEM` / `ALTER ROLE` command and what else to do).
    pub suggestion: Option<String>,
}

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckState {
    /// Fine for streaming.
    Pass,
    /// Streaming cannot work until it is fixed (a fatal finding).
    Fail,
    /// Streaming works, but this may bite later (a warning finding).
    Warn,
    /// The role could not see it, or the server version has no such setting.
    Unknown,
}

impl CheckState {
    /// `"pass"`, `"fail"`, `"warn"` or `"unknown"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckState::Pass => "pass",
            CheckState::Fail => "fail",
            CheckState::Warn => "warn",
            CheckState::Unknown => "unknown",
        }
    }
}

/// One check [`preflight`] made, with the value it saw: what `wal preflight` prints as
/// one line (`✓ wal_level: replica`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked: `server version`, `wal_level`, `WAL senders`, `replication
    /// slots`, `role`, `max_slot_wal_keep_size`, `idle_replication_slot_timeout`,
    /// `summarize_wal`.
    pub name: &'static str,
    /// What was seen, e.g. `replica`, `1 of 10 in use, 9 free`, `hs_repl (LOGIN, REPLICATION)`.
    pub value: String,
    /// How it came out.
    pub state: CheckState,
    /// The finding behind a state other than pass, if any.
    pub code: Option<&'static str>,
    /// The fix, when the state is not pass.
    pub suggestion: Option<String>,
}

/// Everything [`preflight`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreflightReport {
    /// The deployment checked.
    pub deployment: String,
    /// The replication slot the deployment's stream uses (empty: streaming without one).
    pub slot: String,
    /// Server version (e.g. 150004), when a connection succeeded.
    pub server_version_num: Option<u32>,
    /// Settings that were read, `(name, value)` in the order checked.
    pub settings: Vec<(String, String)>,
    /// Findings, most serious first.
    pub findings: Vec<Finding>,
    /// Every check made, in a fixed order, with the value it saw.
    pub checks: Vec<Check>,
}

impl PreflightReport {
    /// Whether any finding is fatal.
    pub fn has_fatal(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Fatal)
    }

    /// The first fatal finding as an error (code = the finding's code, exit 4), if any.
    pub fn to_error(&self) -> Option<Error> {
        let fatal: Vec<&Finding> = self
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Fatal)
            .collect();
        let first = fatal.first()?;
        let mut msg = first.message.clone();
        if fatal.len() > 1 {
            msg.push_str(&format!(
                " (and {} more fatal preflight finding(s); run `wal preflight`)",
                fatal.len() - 1
            ));
        }
        let mut e = Error::of_kind(ErrorKind::Preflight, first.code, msg);
        if let Some(s) = &first.suggestion {
            e = e.with_suggestion(s.clone());
        }
        Some(e)
    }

    /// The value of a setting that was read.
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn finding(
    code: &'static str,
    severity: Severity,
    message: impl Into<String>,
    suggestion: Option<String>,
) -> Finding {
    Finding {
        code,
        severity,
        message: message.into(),
        suggestion,
    }
}

const RESTART: &str = "then restart PostgreSQL (this setting needs a restart)";
const RELOAD: &str = "SELECT pg_reload_conf();";

/// Checks the server at `conn` for deployment `deployment` (and its default slot
/// `pg_hardstorage_<deployment>`). Returns `Err` only when the server cannot be reached
/// or authentication fails; misconfigurations are findings.
pub async fn preflight(conn: &ConnConfig, deployment: &str) -> Result<PreflightReport> {
    preflight_for_slot(conn, deployment, Some(&slot_name_for(deployment))).await
}

/// [`preflight`] for a stream that uses slot `slot` (`None`: no slot, so free slots do
/// not matter).
pub(crate) async fn preflight_for_slot(
    conn: &ConnConfig,
    deployment: &str,
    slot_name: Option<&str>,
) -> Result<PreflightReport> {
    validate_deployment(deployment)?;
    let slot = slot_name.unwrap_or("").to_string();
    let user = conn.user().to_string();
    let mut report = PreflightReport {
        deployment: deployment.to_string(),
        slot: slot.clone(),
        server_version_num: None,
        settings: Vec::new(),
        findings: Vec::new(),
        checks: Vec::new(),
    };
    // 1. The replication connection: SHOW settings, our slot.
    let mut seen = replication_connection(conn, slot_name, &mut report).await?;
    // 2. The SQL connection: counts and role attributes, if the server lets us in.
    let mut sql = sql_connection(conn, seen.settings_from_repl, &mut report).await?;
    let version = report.server_version_num.unwrap_or(0);

    // wal_level
    if let Some(level) = report.setting("wal_level") {
        if level != "replica" && level != "logical" {
            report.findings.push(finding(
                "preflight.wal_level.too_low",
                Severity::Fatal,
                format!("wal_level is {level:?}; WAL streaming needs \"replica\" or \"logical\""),
                Some(format!("ALTER SYSTEM SET wal_level = 'replica'; {RESTART}")),
            ));
        }
    }

    let mut counts = Counts {
        senders_used: check_senders(sql.as_mut(), seen.senders_refused, &mut report).await,
        ..Counts::default()
    };
    counts.slots_used =
        check_slots(sql.as_mut(), slot_name, &mut seen.slot_exists, &mut report).await;
    // The role, seen from SQL (a superuser may replicate without the attribute).
    if !seen.role_refused {
        if let Some(c) = sql.as_mut() {
            counts.role_attributes = check_role(c, &user, &mut report).await;
        }
    }
    warnings(version, &mut report);
    if let Some(c) = sql {
        let _ = c.close().await;
    }
    report.findings.sort_by_key(|f| f.severity);
    report.checks = checks(&report, &counts, &seen, &user);
    Ok(report)
}

/// What the SQL connection counted, for [`checks`] (`None`: not visible).
#[derive(Default)]
struct Counts {
    senders_used: Option<u64>,
    slots_used: Option<u64>,
    /// `LOGIN, REPLICATION`, ... of the role.
    role_attributes: Option<String>,
}

/// `"170002"` as `17.2` (`15.4`, ...).
fn version_text(v: u32) -> String {
    format!("{}.{}", v / 10000, v % 10000)
}

/// `used of max in use, free free`, or what is known of it.
fn usage_text(max: Option<&str>, used: Option<u64>, setting: &str) -> String {
    let max_n = max.and_then(|m| m.parse::<u64>().ok());
    match (max_n, used) {
        (Some(m), Some(u)) => format!(
            "{u} of {m} in use, {} free ({setting} = {m})",
            m.saturating_sub(u)
        ),
        (Some(m), None) => format!("{setting} = {m}; usage not visible to this role"),
        _ => "not visible to this role".to_owned(),
    }
}

/// The checks of `report`, each with its value; a check's state and fix come from the
/// finding of its code.
fn checks(
    report: &PreflightReport,
    counts: &Counts,
    seen: &ReplicationSeen,
    user: &str,
) -> Vec<Check> {
    let version = report.server_version_num.unwrap_or(0);
    let setting = |n: &str| report.setting(n).map(str::to_owned);
    let mut out = Vec::new();
    let mut push = |name: &'static str, value: Option<String>, codes: &[&'static str]| {
        let hit = report.findings.iter().find(|f| codes.contains(&f.code));
        let state = match (hit.map(|f| f.severity), &value) {
            (Some(Severity::Fatal), _) => CheckState::Fail,
            (Some(Severity::Warning), _) => CheckState::Warn,
            (_, None) => CheckState::Unknown,
            _ => CheckState::Pass,
        };
        out.push(Check {
            name,
            value: value.unwrap_or_else(|| "not visible to this role".to_owned()),
            state,
            code: hit.map(|f| f.code),
            suggestion: hit.and_then(|f| f.suggestion.clone()),
        });
    };
    push(
        "server version",
        report.server_version_num.map(version_text),
        &["preflight.pg_version_unsupported"],
    );
    push(
        "wal_level",
        setting("wal_level"),
        &["preflight.wal_level.too_low"],
    );
    let senders = usage_text(
        report.setting("max_wal_senders"),
        counts.senders_used,
        "max_wal_senders",
    );
    let senders = if seen.senders_refused {
        format!("{senders}; the server refused a replication connection")
    } else {
        senders
    };
    push(
        "WAL senders",
        Some(senders),
        &["preflight.max_wal_senders.saturated"],
    );
    let slots = usage_text(
        report.setting("max_replication_slots"),
        counts.slots_used,
        "max_replication_slots",
    );
    let slots = match (report.slot.as_str(), seen.slot_exists) {
        ("", _) => format!("{slots}; none needed (streaming without a slot)"),
        (s, Some(true)) => format!("{slots}; slot {s} exists"),
        (s, _) => format!("{slots}; slot {s} will be created"),
    };
    push(
        "replication slots",
        Some(slots),
        &["preflight.max_replication_slots.full"],
    );
    let role = match (&counts.role_attributes, seen.role_refused) {
        (_, true) => Some(format!(
            "{user} (no REPLICATION: replication connection refused)"
        )),
        (Some(a), _) => Some(format!("{user} ({a})")),
        (None, _) => None,
    };
    push("role", role, &["preflight.role.no_replication"]);
    push(
        "max_slot_wal_keep_size",
        setting("max_slot_wal_keep_size").map(|v| {
            if v == "-1" {
                "-1 (unlimited)".to_owned()
            } else {
                v
            }
        }),
        &["preflight.max_slot_wal_keep_size.set"],
    );
    if version >= 180_000 {
        push(
            "idle_replication_slot_timeout",
            setting("idle_replication_slot_timeout"),
            &["preflight.idle_replication_slot_timeout.set"],
        );
    }
    if version >= 170_000 {
        push("summarize_wal", setting("summarize_wal"), &[]);
    }
    out
}

/// What the replication connection showed besides settings.
#[derive(Default)]
struct ReplicationSeen {
    /// The server refused it: all WAL senders are in use.
    senders_refused: bool,
    /// The role may not replicate.
    role_refused: bool,
    /// Whether our slot exists (`None`: not known yet).
    slot_exists: Option<bool>,
    /// The settings were read over it.
    settings_from_repl: bool,
}

/// Opens the replication connection: server version, settings, whether our slot exists.
async fn replication_connection(
    conn: &ConnConfig,
    slot_name: Option<&str>,
    report: &mut PreflightReport,
) -> Result<ReplicationSeen> {
    let user = conn.user();
    let mut seen = ReplicationSeen::default();
    match ReplicationClient::connect(conn).await {
        Ok(mut c) => {
            report.server_version_num = Some(c.server_version_num());
            read_settings(&mut c, report).await?;
            seen.settings_from_repl = true;
            if let Some(slot) = slot_name.filter(|_| c.server_version_num() >= 150_000) {
                seen.slot_exists = Some(c.read_replication_slot(slot).await?.is_some());
            }
            // Close it before counting senders: it occupies one itself.
            let _ = c.close().await;
        }
        Err(e) if e.code() == code::AUTH_REPLICATION_NOT_PERMITTED => {
            seen.role_refused = true;
            report.findings.push(finding(
                "preflight.role.no_replication",
                Severity::Fatal,
                format!("role {user:?} may not open replication connections: {e}"),
                Some(no_replication_fix(user)),
            ));
        }
        Err(e) if e.code() == code::UNREACHABLE_TOO_MANY_CONNECTIONS => {
            seen.senders_refused = true;
            tracing::debug!("replication connection refused: {e}");
        }
        Err(e) => return Err(e),
    }

    Ok(seen)
}

/// Opens a normal SQL connection if the server admits one (an `info` finding when it
/// does not); reads the settings over it when the replication connection could not.
async fn sql_connection(
    conn: &ConnConfig,
    settings_from_repl: bool,
    report: &mut PreflightReport,
) -> Result<Option<ReplicationClient>> {
    let user = conn.user();
    let mut sql = match ReplicationClient::connect_sql(conn).await {
        Ok(c) => Some(c),
        Err(e) => {
            report.findings.push(finding(
                "preflight.visibility.sql_refused",
                Severity::Info,
                format!(
                    "a normal SQL connection as {user:?} was refused ({e}); replication slot and WAL sender usage{} could not be checked",
                    if settings_from_repl { "" } else { ", and the server settings," }
                ),
                Some(format!(
                    "to let preflight see more, allow `host {} {user} <client-ip>/32 scram-sha-256` in pg_hba.conf (needs only LOGIN)",
                    conn.dbname().unwrap_or("postgres")
                )),
            ));
            None
        }
    };
    if let Some(c) = sql.as_mut() {
        if report.server_version_num.is_none() {
            report.server_version_num = Some(c.server_version_num());
        }
        if !settings_from_repl {
            read_settings(c, report).await?;
        }
    }
    Ok(sql)
}

/// max_wal_senders against the senders in use.
async fn check_senders(
    sql: Option<&mut ReplicationClient>,
    senders_refused: bool,
    report: &mut PreflightReport,
) -> Option<u64> {
    let max_senders = report
        .setting("max_wal_senders")
        .and_then(|v| v.parse::<u64>().ok());
    let mut senders_used: Option<u64> = None;
    if let Some(c) = sql {
        match count(c, "SELECT count(*) FROM pg_stat_replication").await {
            Ok(n) => senders_used = Some(n),
            Err(e) => report.findings.push(cannot_see("pg_stat_replication", &e)),
        }
    }
    match (max_senders, senders_used) {
        (Some(0), _) => report.findings.push(finding(
            "preflight.max_wal_senders.saturated",
            Severity::Fatal,
            "max_wal_senders is 0: the server accepts no replication connections",
            Some(format!("ALTER SYSTEM SET max_wal_senders = 10; {RESTART}")),
        )),
        (Some(max), Some(used)) if used >= max => report.findings.push(finding(
            "preflight.max_wal_senders.saturated",
            Severity::Fatal,
            format!("all {max} WAL senders (max_wal_senders) are in use"),
            Some(format!(
                "ALTER SYSTEM SET max_wal_senders = {}; {RESTART}; or stop an unused replication client",
                max + 5
            )),
        )),
        _ if senders_refused => report.findings.push(finding(
            "preflight.max_wal_senders.saturated",
            Severity::Fatal,
            "the server refused a replication connection: all WAL senders (max_wal_senders) are in use",
            Some(format!(
                "ALTER SYSTEM SET max_wal_senders = {}; {RESTART}",
                max_senders.map_or(10, |m| m + 5)
            )),
        )),
        _ => {}
    }
    senders_used
}

/// max_replication_slots: a slot must be free when ours does not exist yet.
async fn check_slots(
    sql: Option<&mut ReplicationClient>,
    slot_name: Option<&str>,
    slot_exists: &mut Option<bool>,
    report: &mut PreflightReport,
) -> Option<u64> {
    let slot = slot_name.unwrap_or("");
    let max_slots = report
        .setting("max_replication_slots")
        .and_then(|v| v.parse::<u64>().ok());
    let mut slots_used: Option<u64> = None;
    if let Some(c) = sql {
        match count(c, "SELECT count(*) FROM pg_replication_slots").await {
            Ok(n) => slots_used = Some(n),
            Err(e) => report.findings.push(cannot_see("pg_replication_slots", &e)),
        }
        if slot_exists.is_none() && slot_name.is_some() {
            let q = format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'");
            if let Ok(n) = count(c, &q).await {
                *slot_exists = Some(n > 0);
            }
        }
    }
    if slot_name.is_some() && *slot_exists != Some(true) {
        let full = match (max_slots, slots_used) {
            (Some(0), _) => Some(0),
            (Some(max), Some(used)) if used >= max => Some(max),
            _ => None,
        };
        if let Some(max) = full {
            report.findings.push(finding(
                "preflight.max_replication_slots.full",
                Severity::Fatal,
                format!(
                    "slot {slot} does not exist and no replication slot is free (max_replication_slots = {max})"
                ),
                Some(format!(
                    "ALTER SYSTEM SET max_replication_slots = {}; {RESTART}; or drop an unused slot: SELECT pg_drop_replication_slot('<name>');",
                    max + 5
                )),
            ));
        }
    }
    slots_used
}

/// The fix for a role without REPLICATION, and where it cannot be applied.
fn no_replication_fix(user: &str) -> String {
    format!(
        "ALTER ROLE {} REPLICATION; (as a superuser). Managed services such as Amazon RDS \
         and Aurora do not grant this: their most privileged role is NOREPLICATION, and they \
         offer no physical replication to customers, so no tool of this kind can back them \
         up (docs/operator-guide.md, \"Managed PostgreSQL services\")",
        quote_ident(user)
    )
}

/// The role's REPLICATION attribute, seen from SQL; returns the role's attributes that
/// matter here (`LOGIN, REPLICATION`, `SUPERUSER`, ...) when visible.
async fn check_role(
    c: &mut ReplicationClient,
    user: &str,
    report: &mut PreflightReport,
) -> Option<String> {
    let q = format!(
        "SELECT (rolreplication OR rolsuper)::text, concat_ws(', ', \
         CASE WHEN rolcanlogin THEN 'LOGIN' END, CASE WHEN rolreplication THEN 'REPLICATION' END, \
         CASE WHEN rolsuper THEN 'SUPERUSER' END) FROM pg_roles WHERE rolname = '{}'",
        user.replace('\'', "''")
    );
    let rows = c.simple_query(&q).await.ok()?;
    let row = rows.first()?;
    let may = row.first().cloned().flatten();
    let attributes = row.get(1).cloned().flatten();
    if may.as_deref() == Some("false") {
        report.findings.push(finding(
            "preflight.role.no_replication",
            Severity::Fatal,
            format!("role {user:?} lacks the REPLICATION attribute"),
            Some(no_replication_fix(user)),
        ));
    }
    attributes.map(|a| {
        if a.is_empty() {
            "no LOGIN, no REPLICATION".to_owned()
        } else {
            a
        }
    })
}

/// Settings that let the server drop WAL the stream still needs, and the version.
fn warnings(version: u32, report: &mut PreflightReport) {
    if let Some(v) = report.setting("max_slot_wal_keep_size") {
        if v != "-1" {
            report.findings.push(finding(
                "preflight.max_slot_wal_keep_size.set",
                Severity::Warning,
                format!(
                    "max_slot_wal_keep_size is {v}: if the stream falls that far behind, the server invalidates the slot and WAL is lost (recorded as a gap)"
                ),
                Some(format!("ALTER SYSTEM SET max_slot_wal_keep_size = -1; {RELOAD}")),
            ));
        }
    }
    if version >= 180_000 {
        if let Some(v) = report.setting("idle_replication_slot_timeout") {
            if !v
                .trim_end_matches(|c: char| c.is_ascii_alphabetic())
                .bytes()
                .all(|b| b == b'0')
            {
                report.findings.push(finding(
                    "preflight.idle_replication_slot_timeout.set",
                    Severity::Warning,
                    format!(
                        "idle_replication_slot_timeout is {v}: if the streamer is down that long, the server invalidates the slot and WAL is lost"
                    ),
                    Some(format!("ALTER SYSTEM SET idle_replication_slot_timeout = 0; {RELOAD}")),
                ));
            }
        }
    }
    if version >= 170_000 {
        if let Some(v) = report.setting("summarize_wal") {
            report.findings.push(finding(
                "preflight.summarize_wal",
                Severity::Info,
                format!(
                    "summarize_wal is {v} (PostgreSQL 17+ WAL summaries, which the server's incremental backups need)"
                ),
                None,
            ));
        }
    }
    if version != 0 && version < 150_000 {
        report.findings.push(finding(
            "preflight.pg_version_unsupported",
            Severity::Fatal,
            format!("PostgreSQL server version {version} is not supported"),
            Some("pg_hardstorage needs PostgreSQL 15 or newer".into()),
        ));
    }
}

async fn read_settings(c: &mut ReplicationClient, report: &mut PreflightReport) -> Result<()> {
    let mut names = vec![
        "wal_level",
        "max_wal_senders",
        "max_replication_slots",
        "max_slot_wal_keep_size",
        "wal_segment_size",
    ];
    if c.server_version_num() >= 170_000 {
        names.push("summarize_wal");
    }
    if c.server_version_num() >= 180_000 {
        names.push("idle_replication_slot_timeout");
    }
    for n in names {
        let v = c.show(n).await?;
        report.settings.push((n.to_string(), v));
    }
    Ok(())
}

async fn count(c: &mut ReplicationClient, q: &str) -> Result<u64> {
    let rows = c.simple_query(q).await?;
    rows.first()
        .and_then(|r| r.first().cloned().flatten())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| {
            Error::of_kind(
                ErrorKind::Protocol,
                code::PROTOCOL_UNEXPECTED_RESULT,
                "count(*) returned no number",
            )
        })
}

fn cannot_see(what: &str, e: &Error) -> Finding {
    finding(
        "preflight.visibility.limited",
        Severity::Info,
        format!("could not read {what}: {e}"),
        Some(format!(
            "GRANT pg_monitor TO <role>; lets preflight read {what}"
        )),
    )
}

/// `"name"` quoting for identifiers that need it.
fn quote_ident(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
    {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_to_error_and_order() {
        let mut r = PreflightReport {
            deployment: "main".into(),
            slot: slot_name_for("main"),
            server_version_num: Some(150004),
            settings: vec![("wal_level".into(), "minimal".into())],
            findings: vec![finding("preflight.x.warn", Severity::Warning, "w", None)],
            checks: Vec::new(),
        };
        assert!(!r.has_fatal() && r.to_error().is_none());
        assert_eq!(r.setting("wal_level"), Some("minimal"));
        r.findings.push(finding(
            "preflight.wal_level.too_low",
            Severity::Fatal,
            "low",
            Some("ALTER SYSTEM SET wal_level = 'replica'".into()),
        ));
        r.findings.sort_by_key(|f| f.severity);
        assert_eq!(r.findings[0].severity, Severity::Fatal);
        let e = r.to_error().unwrap();
        assert_eq!(e.code(), "preflight.wal_level.too_low");
        assert!(e.suggestion().unwrap().contains("ALTER SYSTEM"));
        assert_eq!(quote_ident("hs_repl"), "hs_repl");
        assert_eq!(quote_ident("Bob"), "\"Bob\"");
    }
}
