//! Turning any error into a dotted code, a message, a suggestion and an exit code.

use std::fmt;

use hs_base::code;

/// An error as the CLI reports it.
#[derive(Debug, Clone)]
pub struct CliError {
    pub code: String,
    pub message: String,
    pub suggestion: Option<String>,
    /// Set for `wal fetch` run as PostgreSQL's `restore_command` (see
    /// [`CliError::for_restore_command`]); `None` means the namespace decides.
    pub exit_override: Option<u8>,
}

impl CliError {
    pub fn new(code: impl AsRef<str>, message: impl Into<String>) -> Self {
        CliError {
            code: code.as_ref().to_owned(),
            message: message.into(),
            suggestion: None,
            exit_override: None,
        }
    }

    pub fn with_suggestion(mut self, s: impl Into<String>) -> Self {
        self.suggestion = Some(s.into());
        self
    }

    /// The process exit code, decided by the code's namespace (docs/exit-codes.md).
    pub fn exit_code(&self) -> u8 {
        self.exit_override
            .unwrap_or_else(|| exit_code_for(&self.code))
    }

    /// The exit code PostgreSQL must see from `restore_command`. It reads any
    /// exit status from 1 to 125 as "file not in the archive" and then ends
    /// recovery (promoting, at the end of an unbounded recovery); a status
    /// above 125, or death by a signal, makes the startup process fail with
    /// FATAL, so the server stops instead (PostgreSQL 15: xlogarchive.c,
    /// 16 to 18: shell_restore.c, `wait_result_is_any_signal(rc, true)`).
    /// So only real absence keeps its usual exit code (6); every other
    /// failure exits [`RESTORE_COMMAND_FATAL_BASE`] plus its usual code.
    pub fn for_restore_command(mut self, absent: bool) -> Self {
        if !absent {
            self.exit_override = Some(RESTORE_COMMAND_FATAL_BASE + exit_code_for(&self.code));
        }
        self
    }
}

/// `wal fetch` adds this to the exit code of any failure other than "the file
/// is not in the repository", so PostgreSQL stops recovery (any status above
/// 125 does) and the usual code can still be read from the status (201 for
/// `io.*`, 209 for `verify.*`, ...).
pub const RESTORE_COMMAND_FATAL_BASE: u8 = 200;

/// Whether `args` (the process arguments) run `wal fetch` for PostgreSQL, so
/// that even a command line clap refuses, a failed runtime or a panic exits
/// with a status that stops recovery. The hidden prefetcher (`--prefetch-only`)
/// is not PostgreSQL's command and keeps the usual codes.
pub fn is_restore_command(args: &[std::ffi::OsString]) -> bool {
    let words: Vec<&str> = args.iter().skip(1).filter_map(|a| a.to_str()).collect();
    let fetch = words.windows(2).any(|w| w == ["wal", "fetch"]);
    fetch && !words.contains(&"--prefetch-only")
}

/// Whether `err` is the one failure `restore_command` may report as absence:
/// the repository does not hold the WAL file asked for.
pub fn is_absent(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|c| c.downcast_ref::<hs_base::Error>())
        .any(hs_base::Error::is_absent)
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Exit code for a dotted error code: its first segment decides.
pub fn exit_code_for(code: &str) -> u8 {
    match code.split('.').next().unwrap_or("") {
        "usage" => 2,
        "auth" => 3,
        "preflight" => 4,
        "aborted" => 5,
        "notfound" => 6,
        "conflict" => 7,
        "unreachable" => 8,
        "verify" => 9,
        "doctor" => 10,
        _ => 1,
    }
}

/// The library error as the CLI reports it: same code, message and suggestion.
impl From<&hs_base::Error> for CliError {
    fn from(e: &hs_base::Error) -> Self {
        CliError {
            code: e.code().to_owned(),
            message: e.message().to_owned(),
            suggestion: e.suggestion().map(str::to_owned),
            exit_override: None,
        }
    }
}

/// Finds the most specific error in the chain that carries a code.
pub fn classify(err: &anyhow::Error) -> CliError {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<CliError>() {
            return e.clone();
        }
        if let Some(e) = cause.downcast_ref::<hs_base::Error>() {
            return CliError::from(e);
        }
    }
    CliError::new(code::INTERNAL_UNEXPECTED, format!("{err:#}")).with_suggestion(
        "this is a bug in pg_hardstorage; please report it with the command you ran",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_map_to_documented_exit_codes() {
        let table = [
            ("usage.x", 2),
            ("auth.password_failed", 3),
            ("preflight.wal_level.too_low", 4),
            ("aborted.signal", 5),
            ("notfound.backup", 6),
            ("conflict.repo_exists", 7),
            ("unreachable.connection_refused", 8),
            ("verify.checksum_mismatch", 9),
            ("doctor.issues", 10),
            ("io.write_failed", 1),
            ("internal.unexpected", 1),
        ];
        for (code, exit) in table {
            assert_eq!(exit_code_for(code), exit, "{code}");
        }
    }

    #[test]
    fn restore_command_exits_above_125_unless_the_file_is_absent() {
        let absent =
            CliError::new("notfound.wal_segment", "no such file").for_restore_command(true);
        assert_eq!(absent.exit_code(), 6);
        let table = [
            ("notfound.wal_segment", 206),
            ("notfound.repository", 206),
            ("io.keyring_read_failed", 201),
            ("usage.invalid_arguments", 202),
            ("auth.keyring_mismatch", 203),
            ("unreachable.storage", 208),
            ("verify.wal_segment_invalid", 209),
        ];
        for (code, exit) in table {
            let e = CliError::new(code, "x").for_restore_command(false);
            assert_eq!(e.exit_code(), exit, "{code}");
            assert!(
                e.exit_code() > 125,
                "{code}: PostgreSQL must read it as fatal"
            );
        }
    }

    #[test]
    fn wal_fetch_is_recognised_as_the_restore_command() {
        let args = |s: &str| -> Vec<std::ffi::OsString> {
            s.split(' ').map(std::ffi::OsString::from).collect()
        };
        assert!(is_restore_command(&args(
            "pg_hardstorage wal fetch db1 X Y"
        )));
        assert!(is_restore_command(&args("pg_hardstorage -v wal fetch")));
        assert!(!is_restore_command(&args(
            "pg_hardstorage wal fetch db1 X Y --prefetch-only"
        )));
        assert!(!is_restore_command(&args("pg_hardstorage wal list db1")));
        assert!(!is_restore_command(&args(
            "pg_hardstorage restore db1 fetch"
        )));
    }

    #[test]
    fn classify_finds_a_coded_error_under_context() {
        let inner = CliError::new("notfound.backup", "no such backup");
        let err = anyhow::Error::new(inner).context("while restoring");
        let c = classify(&err);
        assert_eq!(c.code, "notfound.backup");
        assert_eq!(c.exit_code(), 6);
    }
}
