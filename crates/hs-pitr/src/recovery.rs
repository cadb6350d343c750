//! Recovery configuration of a restored data directory: `recovery.signal`
//! and a managed block at the end of `postgresql.auto.conf`.
//!
//! ```text
//! # BEGIN pg_hardstorage managed block (do not edit; replaced on every restore)
//! restore_command = '...'
//! recovery_target_timeline = 'latest'
//! # END pg_hardstorage managed block
//! ```
//!
//! Writing the block again replaces it (never duplicates it); every other
//! line is kept, except that recovery settings outside the block
//! (`restore_command`, `recovery_end_command`, `recovery_target*`, for
//! example left by an earlier point-in-time recovery of the backed-up
//! cluster) are commented out, since PostgreSQL refuses to start with two
//! recovery targets and the block must be the only source of them.
//!
//! A restored cluster is independent: a backup taken from a standby holds the
//! standby's `standby.signal` and its `primary_conninfo` (often with a
//! password) and `primary_slot_name`. [`remove_standby_config`] deletes the
//! signal file and replaces those lines with a comment that keeps the setting's
//! name but not its value, and the block sets both to `''` as well (the last
//! setting of a name in the configuration files wins, and the block comes last).

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use hs_base::code;

use crate::error::{Error, ErrorKind, Result};

/// First line of the managed block.
pub const BLOCK_BEGIN: &str =
    "# BEGIN pg_hardstorage managed block (do not edit; replaced on every restore)";
/// Last line of the managed block.
pub const BLOCK_END: &str = "# END pg_hardstorage managed block";
const DISABLED_PREFIX: &str = "# disabled by pg_hardstorage: ";
/// What replaces a standby setting's value in a disabled line.
const STANDBY_VALUE_REMOVED: &str =
    " (value removed: a restored cluster is not a standby of the backed-up server's primary)";

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecoveryTarget {
    /// Replay all WAL that is available (no `recovery_target*` setting).
    Latest,
    /// Stop as soon as the backup is consistent (`recovery_target = 'immediate'`).
    Immediate,
    /// `recovery_target_time` (a timestamp PostgreSQL accepts, e.g. RFC 3339).
    Time(String),
    /// `recovery_target_lsn` (`X/Y`).
    Lsn(String),
    /// `recovery_target_name` (a `pg_create_restore_point` name).
    Name(String),
}

/// What the server does when it reaches the target (`recovery_target_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryTargetAction {
    /// End recovery and accept connections (PostgreSQL's default is `pause`).
    Promote,
    /// Pause; `pg_wal_replay_resume()` continues.
    Pause,
    /// Shut down.
    Shutdown,
}

impl RecoveryTargetAction {
    fn as_str(self) -> &'static str {
        match self {
            RecoveryTargetAction::Promote => "promote",
            RecoveryTargetAction::Pause => "pause",
            RecoveryTargetAction::Shutdown => "shutdown",
        }
    }
}

/// Recovery settings written into a restored data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// The complete `restore_command` (with `%f` and `%p`), as given; it is
    /// quoted for the configuration file here.
    pub restore_command: String,
    /// Where recovery stops.
    pub target: RecoveryTarget,
    /// `recovery_target_action`, if set.
    pub target_action: Option<RecoveryTargetAction>,
    /// `recovery_target_timeline`; `None` writes `'latest'`.
    pub target_timeline: Option<String>,
    /// `recovery_target_inclusive` (only written with a time, LSN target).
    pub target_inclusive: Option<bool>,
    /// `recovery_end_command`, if set (for example to remove the WAL spool).
    pub recovery_end_command: Option<String>,
}

impl RecoveryConfig {
    /// Replay everything archived with `restore_command`, on the latest timeline.
    pub fn latest(restore_command: impl Into<String>) -> RecoveryConfig {
        RecoveryConfig {
            restore_command: restore_command.into(),
            target: RecoveryTarget::Latest,
            target_action: None,
            target_timeline: None,
            target_inclusive: None,
            recovery_end_command: None,
        }
    }
}

/// Quotes a value for postgresql.conf: single quotes, `'` doubled and `\`
/// doubled (PostgreSQL reads backslash escapes inside quoted values).
/// Line breaks and NUL cannot be represented and are refused.
pub fn quote_conf_value(v: &str) -> Result<String> {
    if v.contains(['\n', '\r', '\0']) {
        return Err(Error::of_kind(
            ErrorKind::Usage,
            code::USAGE_RECOVERY_SETTING_INVALID,
            format!("{v:?} contains a line break or NUL, which postgresql.conf cannot hold"),
        )
        .with_suggestion("use paths and names without line breaks"));
    }
    let mut s = String::with_capacity(v.len() + 2);
    s.push('\'');
    for c in v.chars() {
        match c {
            '\'' => s.push_str("''"),
            '\\' => s.push_str("\\\\"),
            c => s.push(c),
        }
    }
    s.push('\'');
    Ok(s)
}

/// Quotes one word for `/bin/sh` (PostgreSQL runs `restore_command` with
/// the shell) inside a `restore_command`: single quotes, `'` as `'\''`, and
/// `%` doubled (PostgreSQL expands `%f`, `%p`, `%r` and `%%` first).
pub fn shell_quote_for_command(word: &str) -> String {
    let mut s = String::with_capacity(word.len() + 2);
    s.push('\'');
    for c in word.chars() {
        match c {
            '\'' => s.push_str(r"'\''"),
            '%' => s.push_str("%%"),
            c => s.push(c),
        }
    }
    s.push('\'');
    s
}

/// The `restore_command` for this tool:
/// `'<program>' wal fetch '<deployment>' %f %p --repo '<url>' --keyring '<keyring>'`,
/// every word quoted with [`shell_quote_for_command`]. `program` and
/// `keyring` should be absolute (PostgreSQL runs the command in the data
/// directory as its own OS user).
pub fn restore_command(
    program: &Path,
    deployment: &str,
    repo_url: &str,
    keyring: &Path,
) -> Result<String> {
    let text = |p: &Path| {
        p.to_str().map(str::to_owned).ok_or_else(|| {
            Error::of_kind(
                ErrorKind::Usage,
                code::USAGE_RECOVERY_SETTING_INVALID,
                format!("{} is not valid UTF-8", p.display()),
            )
        })
    };
    let q = shell_quote_for_command;
    Ok(format!(
        "{} wal fetch {} %f %p --repo {} --keyring {}",
        q(&text(program)?),
        q(deployment),
        q(repo_url),
        q(&text(keyring)?)
    ))
}

/// The managed block for `cfg`, with its BEGIN and END lines and a final newline.
pub fn render_block(cfg: &RecoveryConfig) -> Result<String> {
    let mut lines = vec![BLOCK_BEGIN.to_string()];
    let mut set = |k: &str, v: &str| -> Result<()> {
        lines.push(format!("{k} = {}", quote_conf_value(v)?));
        Ok(())
    };
    if cfg.restore_command.trim().is_empty() {
        return Err(Error::of_kind(
            ErrorKind::Usage,
            code::USAGE_RECOVERY_SETTING_INVALID,
            "restore_command is empty",
        ));
    }
    set("restore_command", &cfg.restore_command)?;
    if let Some(c) = &cfg.recovery_end_command {
        set("recovery_end_command", c)?;
    }
    set(
        "recovery_target_timeline",
        cfg.target_timeline.as_deref().unwrap_or("latest"),
    )?;
    let mut inclusive_applies = false;
    match &cfg.target {
        RecoveryTarget::Latest => {}
        RecoveryTarget::Immediate => set("recovery_target", "immediate")?,
        RecoveryTarget::Time(t) => {
            set("recovery_target_time", t)?;
            inclusive_applies = true;
        }
        RecoveryTarget::Lsn(l) => {
            set("recovery_target_lsn", l)?;
            inclusive_applies = true;
        }
        RecoveryTarget::Name(n) => set("recovery_target_name", n)?,
    }
    if let (true, Some(i)) = (inclusive_applies, cfg.target_inclusive) {
        set("recovery_target_inclusive", if i { "on" } else { "off" })?;
    }
    if let Some(a) = cfg.target_action {
        set("recovery_target_action", a.as_str())?;
    }
    // Not a standby of whatever server the backup came from.
    set("primary_conninfo", "")?;
    set("primary_slot_name", "")?;
    lines.push(BLOCK_END.to_string());
    let mut out = lines.join("\n");
    out.push('\n');
    Ok(out)
}

/// The setting name of a `name = value` / `name value` line, lower-cased.
fn setting_name(line: &str) -> Option<String> {
    let t = line.trim_start();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    let end = t
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(t.len());
    (end > 0).then(|| t[..end].to_ascii_lowercase())
}

fn is_recovery_setting(name: &str) -> bool {
    name == "restore_command"
        || name == "recovery_end_command"
        || name.starts_with("recovery_target")
}

/// Settings that make a server in standby mode follow another server.
fn is_standby_setting(name: &str) -> bool {
    name == "primary_conninfo" || name == "primary_slot_name"
}

/// The comment that replaces a stray recovery or standby setting's line (a
/// standby setting's value is dropped: `primary_conninfo` may hold a password).
fn disabled_line(name: &str, line: &str) -> Option<String> {
    if is_standby_setting(name) {
        Some(format!("{DISABLED_PREFIX}{name}{STANDBY_VALUE_REMOVED}"))
    } else if is_recovery_setting(name) {
        Some(format!("{DISABLED_PREFIX}{line}"))
    } else {
        None
    }
}

/// `existing` (the contents of `postgresql.auto.conf`) with every managed
/// block removed, stray recovery settings commented out, and the block for
/// `cfg` appended. Applying it twice gives the same text as applying it once.
pub fn apply_managed_block(existing: &str, cfg: &RecoveryConfig) -> Result<String> {
    let block = render_block(cfg)?;
    let mut kept: Vec<String> = Vec::new();
    let mut in_block = false;
    for line in existing.lines() {
        let t = line.trim_end();
        if t == BLOCK_BEGIN {
            in_block = true;
            continue;
        }
        if t == BLOCK_END {
            in_block = false;
            continue;
        }
        let name = setting_name(line);
        let disabled = name.as_deref().and_then(|n| disabled_line(n, line));
        if in_block {
            if name.is_none() || disabled.is_some() {
                continue; // our settings, comments and blank lines inside the block
            }
            // Someone else's setting: the block was not terminated (hand
            // edit); keep it and everything after it.
            in_block = false;
        }
        kept.push(disabled.unwrap_or_else(|| line.to_string()));
    }
    while kept.last().is_some_and(|l| l.trim().is_empty()) {
        kept.pop();
    }
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(&block);
    Ok(out)
}

/// What [`remove_standby_config`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StandbyConfigRemoved {
    /// `standby.signal` was there and is deleted.
    pub signal: bool,
    /// `primary_conninfo` / `primary_slot_name` lines of `postgresql.auto.conf`
    /// outside the managed block, now comments without their values.
    pub settings: usize,
}

impl StandbyConfigRemoved {
    /// Whether anything was removed.
    pub fn any(&self) -> bool {
        self.signal || self.settings > 0
    }
}

/// `existing` with every `primary_conninfo` / `primary_slot_name` line outside
/// the managed block replaced by a comment without its value, and how many.
pub fn disable_standby_settings(existing: &str) -> (String, usize) {
    let mut n = 0;
    let mut in_block = false;
    let mut out = String::with_capacity(existing.len());
    for line in existing.split_inclusive('\n') {
        let t = line.trim_end();
        if t == BLOCK_BEGIN || t == BLOCK_END {
            in_block = t == BLOCK_BEGIN;
        }
        match setting_name(line).filter(|n| !in_block && is_standby_setting(n)) {
            Some(name) => {
                n += 1;
                out.push_str(&format!("{DISABLED_PREFIX}{name}{STANDBY_VALUE_REMOVED}"));
                if line.ends_with('\n') {
                    out.push('\n');
                }
            }
            None => out.push_str(line),
        }
    }
    (out, n)
}

/// Makes a restored data directory independent of the server its backup came
/// from: deletes `standby.signal` and disables `primary_conninfo` and
/// `primary_slot_name` in `postgresql.auto.conf` (see the module docs). Changes
/// nothing, and writes nothing, when neither is there.
pub fn remove_standby_config(data_dir: &Path) -> Result<StandbyConfigRemoved> {
    let mut removed = StandbyConfigRemoved::default();
    let auto = data_dir.join("postgresql.auto.conf");
    if let Some(existing) = read_auto_conf(&auto)? {
        let (text, n) = disable_standby_settings(&existing);
        if n > 0 {
            write_auto_conf(data_dir, &auto, &text)?;
            removed.settings = n;
        }
    }
    let signal = data_dir.join("standby.signal");
    match std::fs::remove_file(&signal) {
        Ok(()) => removed.signal = true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(crate::error::io(format!("remove {}", signal.display()), e)),
    }
    if removed.any() {
        hs_base::fs::sync_dir(data_dir)
            .map_err(|e| crate::error::io(format!("sync {}", data_dir.display()), e))?;
    }
    Ok(removed)
}

/// The text of `postgresql.auto.conf`, `None` if there is none.
fn read_auto_conf(auto: &Path) -> Result<Option<String>> {
    match std::fs::read(auto) {
        Ok(b) => String::from_utf8(b).map(Some).map_err(|_| {
            Error::of_kind(
                ErrorKind::Target,
                code::USAGE_AUTO_CONF_NOT_UTF8,
                format!("{} is not UTF-8 text", auto.display()),
            )
            .with_suggestion("fix or remove postgresql.auto.conf in the restored directory")
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(crate::error::io(format!("read {}", auto.display()), e)),
    }
}

/// Replaces `postgresql.auto.conf` atomically (0600, fsynced).
fn write_auto_conf(data_dir: &Path, auto: &Path, text: &str) -> Result<()> {
    // A fixed temporary name: one left by a crash is replaced by the next write.
    let tmp = data_dir.join(".postgresql.auto.conf.hs-tmp");
    let _ = std::fs::remove_file(&tmp);
    hs_base::fs::AtomicFile::new(auto, &tmp)
        .mode(0o600)
        .write(text.as_bytes())
        .map_err(|e| crate::error::io(format!("write {}", auto.display()), e))?;
    Ok(())
}

/// Writes `recovery.signal` (empty, 0600, kept if present) and the managed
/// block in `postgresql.auto.conf` (atomically replaced, 0600) in `data_dir`,
/// both fsynced, then the directory.
pub fn write_recovery_config(data_dir: &Path, cfg: &RecoveryConfig) -> Result<()> {
    let auto = data_dir.join("postgresql.auto.conf");
    let existing = read_auto_conf(&auto)?.unwrap_or_default();
    let text = apply_managed_block(&existing, cfg)?;
    write_auto_conf(data_dir, &auto, &text)?;
    let signal = data_dir.join("recovery.signal");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&signal)
        .map_err(|e| crate::error::io(format!("create {}", signal.display()), e))?;
    f.sync_all()
        .map_err(|e| crate::error::io(format!("sync {}", signal.display()), e))?;
    hs_base::fs::sync_dir(data_dir)
        .map_err(|e| crate::error::io(format!("sync {}", data_dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RecoveryConfig {
        RecoveryConfig::latest(
            "'/usr/bin/pg_hardstorage' wal fetch main %f %p --repo file:///srv/r --keyring '/var/lib/postgresql/kr'",
        )
    }

    #[test]
    fn restore_command_quotes_for_shell_and_percent() {
        let c = restore_command(
            Path::new("/opt/it's/pg_hardstorage"),
            "main",
            "file:///srv/100%/r",
            Path::new("/var/lib/postgresql/keyring"),
        )
        .unwrap();
        assert_eq!(
            c,
            r"'/opt/it'\''s/pg_hardstorage' wal fetch 'main' %f %p --repo 'file:///srv/100%%/r' --keyring '/var/lib/postgresql/keyring'"
        );
        // In the conf file: ' doubled, \ doubled.
        let block = render_block(&RecoveryConfig::latest(c)).unwrap();
        assert!(
            block.contains(r"restore_command = '''/opt/it''\\''''s/pg_hardstorage'' wal fetch"),
            "{block}"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_conf_value("a").unwrap(), "'a'");
        assert_eq!(quote_conf_value("it's").unwrap(), "'it''s'");
        assert_eq!(quote_conf_value(r"C:\x").unwrap(), r"'C:\\x'");
        assert_eq!(
            quote_conf_value("a\nb").unwrap_err().code(),
            "usage.recovery_setting_invalid"
        );
    }

    #[test]
    fn block_on_empty_and_idempotent() {
        let once = apply_managed_block("", &cfg()).unwrap();
        assert_eq!(
            once,
            format!(
                "{BLOCK_BEGIN}\nrestore_command = '''/usr/bin/pg_hardstorage'' wal fetch main %f %p --repo file:///srv/r --keyring ''/var/lib/postgresql/kr'''\nrecovery_target_timeline = 'latest'\nprimary_conninfo = ''\nprimary_slot_name = ''\n{BLOCK_END}\n"
            )
        );
        assert_eq!(apply_managed_block(&once, &cfg()).unwrap(), once);
    }

    /// What `pg_basebackup -R` leaves in a standby's postgresql.auto.conf.
    const STANDBY_AUTO_CONF: &str = "work_mem = '8MB'\nprimary_conninfo = 'user=repl \
        password=s3cret-pw host=10.0.0.1 port=5432'\nPrimary_Slot_Name = 'standby1'\n";

    #[test]
    fn standby_settings_are_disabled_without_their_values() {
        let (text, n) = disable_standby_settings(STANDBY_AUTO_CONF);
        assert_eq!(n, 2);
        assert!(!text.contains("s3cret-pw"), "{text}");
        assert!(!text.contains("standby1"), "{text}");
        assert!(text.starts_with("work_mem = '8MB'\n"));
        assert!(text.contains(&format!(
            "{DISABLED_PREFIX}primary_conninfo{STANDBY_VALUE_REMOVED}\n"
        )));
        assert!(text.contains(&format!(
            "{DISABLED_PREFIX}primary_slot_name{STANDBY_VALUE_REMOVED}\n"
        )));
        assert_eq!(disable_standby_settings(&text), (text.clone(), 0));
        // The block's own empty settings are not touched; nor is a final line without newline.
        let with_block = apply_managed_block(STANDBY_AUTO_CONF, &cfg()).unwrap();
        assert!(!with_block.contains("s3cret-pw"), "{with_block}");
        assert_eq!(
            disable_standby_settings(&with_block),
            (with_block.clone(), 0)
        );
        assert_eq!(
            disable_standby_settings("primary_slot_name = 'x'"),
            (
                format!("{DISABLED_PREFIX}primary_slot_name{STANDBY_VALUE_REMOVED}"),
                1
            )
        );
    }

    #[test]
    fn standby_config_is_removed_from_a_restored_directory() {
        let d = tempfile::tempdir().unwrap();
        let auto = d.path().join("postgresql.auto.conf");
        std::fs::write(&auto, STANDBY_AUTO_CONF).unwrap();
        std::fs::write(d.path().join("standby.signal"), "").unwrap();
        let removed = remove_standby_config(d.path()).unwrap();
        assert_eq!(
            removed,
            StandbyConfigRemoved {
                signal: true,
                settings: 2
            }
        );
        assert!(!d.path().join("standby.signal").exists());
        let text = std::fs::read_to_string(&auto).unwrap();
        assert!(!text.contains("s3cret-pw"), "{text}");
        // Nothing left to remove; a directory without either is left alone.
        assert!(!remove_standby_config(d.path()).unwrap().any());
        let plain = tempfile::tempdir().unwrap();
        std::fs::write(plain.path().join("postgresql.auto.conf"), "port = '5433'\n").unwrap();
        assert!(!remove_standby_config(plain.path()).unwrap().any());
        assert_eq!(
            std::fs::read_to_string(plain.path().join("postgresql.auto.conf")).unwrap(),
            "port = '5433'\n"
        );
    }

    #[test]
    fn other_settings_kept_block_replaced_not_duplicated() {
        let existing = "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\nwork_mem = '64MB'\nshared_buffers = '1GB'\n";
        let first = apply_managed_block(existing, &cfg()).unwrap();
        assert!(first.starts_with(existing));
        let mut c2 = cfg();
        c2.restore_command = "other %f %p".into();
        c2.target = RecoveryTarget::Time("2026-11-26 03:00:00+00".into());
        c2.target_action = Some(RecoveryTargetAction::Promote);
        c2.target_inclusive = Some(false);
        // Someone added a setting after our block, e.g. ALTER SYSTEM later.
        let edited = format!("{first}max_connections = '50'\n");
        let second = apply_managed_block(&edited, &c2).unwrap();
        assert_eq!(second.matches(BLOCK_BEGIN).count(), 1);
        assert_eq!(second.matches(BLOCK_END).count(), 1);
        assert_eq!(second.matches("restore_command").count(), 1);
        assert!(second.contains("work_mem = '64MB'\n"));
        assert!(second.contains("max_connections = '50'\n"));
        assert!(second.contains("restore_command = 'other %f %p'\n"));
        assert!(second.contains("recovery_target_time = '2026-11-26 03:00:00+00'\n"));
        assert!(second.contains("recovery_target_inclusive = 'off'\n"));
        assert!(second.contains("recovery_target_action = 'promote'\n"));
        assert!(second.ends_with(&format!("{BLOCK_END}\n")));
        assert_eq!(apply_managed_block(&second, &c2).unwrap(), second);
    }

    #[test]
    fn stray_recovery_settings_are_disabled() {
        // Left as plain lines by ALTER SYSTEM on the source cluster after an earlier PITR.
        let existing = "work_mem = '4MB'\nrestore_command = 'cp /old/%f %p'\nrecovery_target_time = '2020-01-01'\nRecovery_Target_Name 'x'\n";
        let out = apply_managed_block(existing, &cfg()).unwrap();
        assert!(out.contains("work_mem = '4MB'\n"));
        assert!(out.contains(&format!(
            "{DISABLED_PREFIX}restore_command = 'cp /old/%f %p'\n"
        )));
        assert!(out.contains(&format!(
            "{DISABLED_PREFIX}recovery_target_time = '2020-01-01'\n"
        )));
        assert!(out.contains(&format!("{DISABLED_PREFIX}Recovery_Target_Name 'x'\n")));
        let live: Vec<_> = out
            .lines()
            .filter(|l| setting_name(l).as_deref().is_some_and(is_recovery_setting))
            .collect();
        assert_eq!(live.len(), 2, "{out}");
        assert_eq!(apply_managed_block(&out, &cfg()).unwrap(), out);
    }

    #[test]
    fn unterminated_block_keeps_foreign_lines() {
        let existing = format!("a = '1'\n{BLOCK_BEGIN}\nrestore_command = 'x'\nrecovery_target_timeline = 'latest'\nb = '2'\n");
        let out = apply_managed_block(&existing, &cfg()).unwrap();
        assert!(out.starts_with("a = '1'\nb = '2'\n"), "{out}");
        assert_eq!(out.matches(BLOCK_BEGIN).count(), 1);
        assert_eq!(out.matches("restore_command").count(), 1);
    }

    #[test]
    fn writes_signal_and_conf() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("postgresql.auto.conf"), "port = '5433'\n").unwrap();
        write_recovery_config(d.path(), &cfg()).unwrap();
        write_recovery_config(d.path(), &cfg()).unwrap();
        let text = std::fs::read_to_string(d.path().join("postgresql.auto.conf")).unwrap();
        assert!(text.starts_with("port = '5433'\n"));
        assert_eq!(text.matches(BLOCK_BEGIN).count(), 1);
        assert!(d.path().join("recovery.signal").is_file());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join("postgresql.auto.conf"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers = std::fs::read_dir(d.path()).unwrap().count();
        assert_eq!(leftovers, 2);
    }
}
