//! The crate's one public error type: a dotted code, a one-line cause, an optional suggestion.

use std::fmt;

/// Broad category of an [`Error`]; the dotted [`Error::code`] is the precise one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller gave us something unusable (bad conninfo, bad option).
    Usage,
    /// Authentication or TLS policy failed (wrong password, hba rejection, TLS required).
    Auth,
    /// The server could not be reached or refused to take the connection.
    Unreachable,
    /// The server sent bytes that do not follow the protocol (or a tar stream is corrupt).
    Protocol,
    /// The server reported an error (ErrorResponse) that is not one of the above.
    Server,
    /// Something the server named does not exist (database, slot, ...).
    NotFound,
    /// Local I/O failure after the connection was established.
    Io,
    /// The thing to create already exists, or is in use by someone else (e.g. a slot).
    Conflict,
}

/// The error type of hs-proto.
///
/// Carries a dotted code (its first segment is the namespace that decides the CLI exit
/// code), a one-line cause, an optional suggestion, whether a retry may help, and, when
/// the server sent an ErrorResponse, its SQLSTATE.
pub struct Error {
    kind: ErrorKind,
    code: &'static str,
    message: String,
    suggestion: Option<String>,
    temporary: bool,
    sqlstate: Option<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Error {
        Error {
            kind,
            code,
            message: message.into(),
            suggestion: None,
            temporary: false,
            sqlstate: None,
            source: None,
        }
    }

    pub(crate) fn with_suggestion(mut self, s: impl Into<String>) -> Error {
        self.suggestion = Some(s.into());
        self
    }

    pub(crate) fn temporary(mut self) -> Error {
        self.temporary = true;
        self
    }

    pub(crate) fn with_source(
        mut self,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        self.source = Some(Box::new(e));
        self
    }

    pub(crate) fn with_sqlstate(mut self, s: impl Into<String>) -> Error {
        self.sqlstate = Some(s.into());
        self
    }

    /// The same error under another kind and code (keeps message, SQLSTATE and source).
    pub(crate) fn recode(mut self, kind: ErrorKind, code: &'static str) -> Error {
        self.kind = kind;
        self.code = code;
        self
    }

    pub(crate) fn usage(code: &'static str, message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Usage, code, message)
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Protocol, "protocol.unexpected_message", message)
    }

    pub(crate) fn invalid_message(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Protocol, "protocol.invalid_message", message)
    }

    pub(crate) fn io(context: &str, e: std::io::Error) -> Error {
        use std::io::ErrorKind as K;
        let (kind, code, temp) = match e.kind() {
            K::ConnectionRefused => (
                ErrorKind::Unreachable,
                "unreachable.connection_refused",
                true,
            ),
            K::TimedOut => (ErrorKind::Unreachable, "unreachable.timeout", true),
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                (ErrorKind::Unreachable, "unreachable.connection_lost", true)
            }
            K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable => {
                (ErrorKind::Unreachable, "unreachable.network", true)
            }
            _ => (ErrorKind::Io, "io.failed", false),
        };
        let mut err = Error::new(kind, code, format!("{context}: {e}")).with_source(e);
        err.temporary = temp;
        err
    }

    /// The dotted error code, e.g. `"auth.password_failed"`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// A one-line suggested fix for a human, if there is one.
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

    /// The SQLSTATE the server reported, when this error came from an ErrorResponse.
    pub fn sqlstate(&self) -> Option<&str> {
        self.sqlstate.as_deref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("code", &self.code)
            .field("message", &self.message)
            .field("temporary", &self.temporary);
        if let Some(s) = &self.sqlstate {
            d.field("sqlstate", s);
        }
        if let Some(s) = &self.suggestion {
            d.field("suggestion", s);
        }
        if let Some(s) = &self.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e.as_ref() as &(dyn std::error::Error + 'static))
    }
}
