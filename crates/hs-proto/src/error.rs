//! The crate's error type is the workspace's one coded error, [`hs_base::Error`]: a dotted
//! code (its first segment is the namespace that decides the CLI exit code), a one-line
//! cause, an optional suggestion, whether a retry may help, and its source. When the
//! server sent an ErrorResponse, its SQLSTATE is kept too: read it with
//! [`SqlState::sqlstate`].

pub use hs_base::{Error, ErrorKind, Result};

use std::fmt;

use hs_base::{code, Code};

/// The SQLSTATE of a server's ErrorResponse, kept as the [`source`] of the error that
/// reports it.
///
/// [`source`]: std::error::Error::source
#[derive(Debug)]
struct ServerState(String);

impl fmt::Display for ServerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SQLSTATE {}", self.0)
    }
}

impl std::error::Error for ServerState {}

/// The SQLSTATE the server reported, when an error came from an ErrorResponse.
pub trait SqlState {
    /// The five-character SQLSTATE, e.g. `"28P01"`.
    fn sqlstate(&self) -> Option<&str>;
}

impl SqlState for Error {
    fn sqlstate(&self) -> Option<&str> {
        std::error::Error::source(self)
            .and_then(|s| s.downcast_ref::<ServerState>())
            .map(|s| s.0.as_str())
    }
}

/// `e`, reporting the server's SQLSTATE `s`.
pub(crate) fn with_sqlstate(e: Error, s: impl Into<String>) -> Error {
    e.with_source(ServerState(s.into()))
}

pub(crate) fn usage(code: impl Into<Code>, message: impl Into<String>) -> Error {
    Error::of_kind(ErrorKind::Usage, code, message)
}

pub(crate) fn protocol(message: impl Into<String>) -> Error {
    Error::of_kind(
        ErrorKind::Protocol,
        code::PROTOCOL_UNEXPECTED_MESSAGE,
        message,
    )
}

pub(crate) fn invalid_message(message: impl Into<String>) -> Error {
    Error::of_kind(ErrorKind::Protocol, code::PROTOCOL_INVALID_MESSAGE, message)
}

/// A network I/O error during `context`, classified: refused, timed out, lost or no route
/// are `unreachable.*` and temporary; anything else is `io.failed`.
pub(crate) fn io(context: &str, e: std::io::Error) -> Error {
    use std::io::ErrorKind as K;
    let (kind, code, temp) = match e.kind() {
        K::ConnectionRefused => (
            ErrorKind::Unreachable,
            code::UNREACHABLE_CONNECTION_REFUSED,
            true,
        ),
        K::TimedOut => (ErrorKind::Unreachable, code::UNREACHABLE_TIMEOUT, true),
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => (
            ErrorKind::Unreachable,
            code::UNREACHABLE_CONNECTION_LOST,
            true,
        ),
        K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable => {
            (ErrorKind::Unreachable, code::UNREACHABLE_NETWORK, true)
        }
        _ => (ErrorKind::Io, code::IO_FAILED, false),
    };
    Error::of_kind(kind, code, format!("{context}: {e}"))
        .with_source(e)
        .temporary(temp)
}
