//! The crate's one public error type, following the workspace error convention.

use std::fmt;
use std::sync::Arc;

/// What went wrong, broadly. More variants may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Bad argument or URL from the caller (`usage.*`).
    Usage,
    /// Keys do not match (`auth.*`).
    Auth,
    /// Something does not exist (`notfound.*`).
    NotFound,
    /// Something already exists (`conflict.*`).
    Conflict,
    /// Data read back is corrupt or was tampered with (`verify.*`).
    Verify,
    /// The storage failed (`io.*`, `unreachable.*`).
    Io,
    /// A background worker failed or the writer was already broken.
    Aborted,
    /// An error from a lower crate whose namespace has no closer match.
    Other,
}

/// The error returned by every fallible function of this crate.
///
/// Carries a dotted code (its first segment decides the CLI exit code), a
/// one-line cause (`Display`), an optional suggestion, and whether a retry
/// could help. Errors from hs-chunk and hs-crypt keep their codes.
#[derive(Clone)]
pub struct Error {
    kind: ErrorKind,
    code: &'static str,
    message: String,
    suggestion: Option<String>,
    temporary: bool,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

fn kind_of(code: &str) -> ErrorKind {
    match code.split('.').next().unwrap_or("") {
        "usage" | "preflight" => ErrorKind::Usage,
        "auth" => ErrorKind::Auth,
        "notfound" => ErrorKind::NotFound,
        "conflict" => ErrorKind::Conflict,
        "verify" => ErrorKind::Verify,
        "io" | "unreachable" => ErrorKind::Io,
        "aborted" => ErrorKind::Aborted,
        _ => ErrorKind::Other,
    }
}

impl Error {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Error {
        Error {
            kind: kind_of(code),
            code,
            message: message.into(),
            suggestion: None,
            temporary: false,
            source: None,
        }
    }

    pub(crate) fn with_suggestion(mut self, s: impl Into<String>) -> Error {
        self.suggestion = Some(s.into());
        self
    }

    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        self.source = Some(Arc::new(source));
        self
    }

    pub(crate) fn temporary(mut self, t: bool) -> Error {
        self.temporary = t;
        self
    }

    /// The dotted error code, e.g. `"conflict.repo_exists"`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// A one-line suggested fix for a human, if there is one.
    pub fn suggestion(&self) -> Option<&str> {
        self.suggestion.as_deref()
    }

    /// Whether retrying the same operation could succeed.
    pub fn is_temporary(&self) -> bool {
        self.temporary
    }

    /// The broad kind of error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// An I/O error on object `what`, classified by its `io::ErrorKind`.
    pub(crate) fn io(e: std::io::Error, write: bool, what: &str) -> Error {
        use std::io::ErrorKind as K;
        let (code, temporary) = match e.kind() {
            K::NotFound => ("notfound.object", false),
            K::PermissionDenied => ("io.permission_denied", false),
            K::StorageFull => ("io.no_space", true),
            K::ReadOnlyFilesystem => ("io.read_only", false),
            K::Interrupted | K::TimedOut | K::WouldBlock => {
                if write {
                    ("io.write_failed", true)
                } else {
                    ("io.read_failed", true)
                }
            }
            _ if write => ("io.write_failed", false),
            _ => ("io.read_failed", false),
        };
        let msg = match code {
            "notfound.object" => format!("object {what} does not exist"),
            "io.permission_denied" => format!("permission denied on {what}"),
            "io.no_space" => format!("no space left while writing {what}"),
            "io.read_only" => format!("cannot write {what}: the file system is read-only"),
            _ if write => format!("writing {what} failed: {e}"),
            _ => format!("reading {what} failed: {e}"),
        };
        let mut err = Error::new(code, msg).temporary(temporary).with_source(e);
        if code == "io.permission_denied" {
            err = err.with_suggestion("check the owner and mode of the repository directory");
        } else if code == "io.read_only" {
            err = err.with_suggestion("remount the repository's file system read-write");
        } else if code == "io.no_space" {
            err = err.with_suggestion("free space on the repository's filesystem and retry");
        }
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
            .field("temporary", &self.temporary)
            .field("source", &self.source)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

impl From<hs_chunk::Error> for Error {
    fn from(e: hs_chunk::Error) -> Error {
        Error {
            kind: kind_of(e.code()),
            code: e.code(),
            message: e.to_string(),
            suggestion: e.suggestion().map(str::to_string),
            temporary: e.is_temporary(),
            source: Some(Arc::new(e)),
        }
    }
}

impl From<hs_crypt::Error> for Error {
    fn from(e: hs_crypt::Error) -> Error {
        Error {
            kind: kind_of(e.code()),
            code: e.code(),
            message: e.to_string(),
            suggestion: e.suggestion().map(str::to_string),
            temporary: e.is_temporary(),
            source: Some(Arc::new(e)),
        }
    }
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
