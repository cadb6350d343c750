//! The one public error type of hs-backup: a dotted code, a cause and a suggested fix.

use std::fmt;

/// What went wrong, broadly. Match on [`Error::code`] for the precise reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller passed something invalid (a deployment name, an option).
    Usage,
    /// Talking to PostgreSQL failed (connection, authentication, protocol).
    Postgres,
    /// The repository refused or failed an operation.
    Repository,
    /// The backup stream from the server did not have the expected shape.
    Protocol,
    /// The operation was stopped before it completed.
    Aborted,
    /// The server is not configured for what was asked (preflight findings).
    Preflight,
    /// The repository's state conflicts with the request (e.g. another cluster's WAL).
    Conflict,
}

/// An error from a backup or stream operation.
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

    pub(crate) fn temporary(mut self) -> Self {
        self.temporary = true;
        self
    }

    /// The dotted error code, for example `usage.deployment_invalid`.
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

macro_rules! wrap {
    ($ty:ty, $kind:expr) => {
        impl From<$ty> for Error {
            fn from(e: $ty) -> Self {
                Error {
                    kind: $kind,
                    code: e.code(),
                    message: e.to_string(),
                    suggestion: e.suggestion().map(str::to_owned),
                    temporary: e.is_temporary(),
                    source: Some(Box::new(e)),
                }
            }
        }
    };
}

wrap!(hs_proto::Error, ErrorKind::Postgres);
wrap!(hs_repo::Error, ErrorKind::Repository);
wrap!(hs_crypt::Error, ErrorKind::Repository);
wrap!(hs_chunk::Error, ErrorKind::Repository);
