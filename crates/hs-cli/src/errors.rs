//! Turning any error into a dotted code, a message, a suggestion and an exit code.

use std::fmt;

/// An error as the CLI reports it.
#[derive(Debug, Clone)]
pub struct CliError {
    pub code: String,
    pub message: String,
    pub suggestion: Option<String>,
}

impl CliError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        CliError {
            code: code.to_owned(),
            message: message.into(),
            suggestion: None,
        }
    }

    pub fn with_suggestion(mut self, s: impl Into<String>) -> Self {
        self.suggestion = Some(s.into());
        self
    }

    /// The process exit code, decided by the code's namespace (docs/exit-codes.md).
    pub fn exit_code(&self) -> u8 {
        exit_code_for(&self.code)
    }
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

macro_rules! try_lib {
    ($err:expr, $($ty:ty),+) => {
        $(
            if let Some(e) = $err.downcast_ref::<$ty>() {
                return CliError {
                    code: e.code().to_owned(),
                    message: e.to_string(),
                    suggestion: e.suggestion().map(str::to_owned),
                };
            }
        )+
    };
}

/// Finds the most specific error in the chain that carries a code.
pub fn classify(err: &anyhow::Error) -> CliError {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<CliError>() {
            return e.clone();
        }
        try_lib!(
            cause,
            hs_backup::Error,
            hs_pitr::Error,
            hs_repo::Error,
            hs_crypt::Error,
            hs_proto::Error,
            hs_chunk::Error,
            hs_api::Error
        );
    }
    CliError::new("internal.unexpected", format!("{err:#}")).with_suggestion(
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
    fn classify_finds_a_coded_error_under_context() {
        let inner = CliError::new("notfound.backup", "no such backup");
        let err = anyhow::Error::new(inner).context("while restoring");
        let c = classify(&err);
        assert_eq!(c.code, "notfound.backup");
        assert_eq!(c.exit_code(), 6);
    }
}
