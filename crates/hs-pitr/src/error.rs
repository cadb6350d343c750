//! The one public error type of hs-pitr: a dotted code, a cause and a suggested fix.

use std::fmt;

/// What went wrong, broadly. Match on [`Error::code`] for the precise reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The restore target is not usable (not empty, not writable).
    Target,
    /// The backup asked for does not exist.
    NotFound,
    /// The repository failed or returned data that did not verify.
    Repository,
    /// `pg_verifybackup` rejected the restored data directory.
    Verify,
    /// A needed external program is missing.
    Preflight,
    /// Local file system I/O failed.
    Io,
    /// A bad argument from the caller.
    Usage,
    /// Stopped before completion (a signal).
    Aborted,
    /// `wal fetch`: the repository does not hold the WAL file asked for. This is
    /// the only failure that `restore_command` may report to PostgreSQL as "not
    /// in the archive"; see [`Error::is_absent`].
    Absent,
}

/// An error from planning or running a restore.
pub struct Error {
    kind: ErrorKind,
    code: &'static str,
    message: String,
    suggestion: Option<String>,
    temporary: bool,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Error {
            kind,
            code,
            message: message.into(),
            suggestion: None,
            temporary: false,
            source: None,
        }
    }

    pub(crate) fn with_suggestion(mut self, s: impl Into<String>) -> Self {
        self.suggestion = Some(s.into());
        self
    }

    pub(crate) fn io(what: String, e: std::io::Error) -> Self {
        let mut err = Error::new(
            ErrorKind::Io,
            "io.restore_write_failed",
            format!("{what}: {e}"),
        )
        .with_suggestion("check free space and permissions on the restore target");
        err.source = Some(Box::new(e));
        err
    }

    /// The dotted error code, for example `conflict.target_not_empty`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// A one-line suggested fix for a human, when there is one.
    pub fn suggestion(&self) -> Option<&str> {
        self.suggestion.as_deref()
    }

    /// Whether retrying the same operation later may succeed.
    pub fn is_temporary(&self) -> bool {
        self.temporary
    }

    /// The broad category of the error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// True only when [`crate::wal_fetch`] found that the repository holds no
    /// such WAL file (and no usable `.partial` for it). Every other failure,
    /// even another `notfound.*` (repository, keyring), is not absence: a
    /// `restore_command` must then make PostgreSQL stop recovery instead of
    /// ending it (docs/exit-codes.md, "wal fetch").
    pub fn is_absent(&self) -> bool {
        self.kind == ErrorKind::Absent
    }

    /// `e` (a `notfound.wal_segment` for the very file asked for) as absence.
    pub(crate) fn absent(e: hs_repo::Error) -> Self {
        let mut err = Error::from(e);
        err.kind = ErrorKind::Absent;
        err
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("code", &self.code)
            .field("message", &self.message)
            .field("suggestion", &self.suggestion)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<hs_repo::Error> for Error {
    fn from(e: hs_repo::Error) -> Self {
        let kind = if e.code().starts_with("notfound.") {
            ErrorKind::NotFound
        } else {
            ErrorKind::Repository
        };
        Error {
            kind,
            code: e.code(),
            message: e.to_string(),
            suggestion: e.suggestion().map(str::to_owned),
            temporary: e.is_temporary(),
            source: Some(Box::new(e)),
        }
    }
}
