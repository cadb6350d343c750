//! The coded error type shared by every library crate.

use std::fmt;
use std::sync::Arc;

use crate::code::{self, Code};

/// What went wrong, broadly; [`Error::code`] is the precise reason.
///
/// [`Error::new`] derives the kind from the code's namespace (the first row of variants);
/// a crate that needs a finer distinction sets one of the others with
/// [`Error::of_kind`] or [`Error::with_kind`]. More variants may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    // ---- derived from the namespace by `Error::new`
    /// A bad argument, URL, name or option from the caller (`usage.*`, `preflight.*`).
    Usage,
    /// Credentials or keys do not match (`auth.*`).
    Auth,
    /// Something does not exist (`notfound.*`).
    NotFound,
    /// Something already exists or is in use (`conflict.*`).
    Conflict,
    /// Data read back is corrupt or was tampered with (`verify.*`).
    Verify,
    /// Local or storage I/O failed (`io.*`, `unreachable.*`).
    Io,
    /// Stopped before completion: a signal, a failed worker (`aborted.*`).
    Aborted,
    /// Any other namespace.
    Other,

    // ---- set explicitly where a caller needs the distinction
    /// A precondition is not met (server settings, a missing program).
    Preflight,
    /// A server or store could not be reached or dropped the connection.
    Unreachable,
    /// A peer's bytes do not follow the protocol (or a stream is malformed).
    Protocol,
    /// The server reported an error that fits no other kind.
    Server,
    /// Talking to PostgreSQL failed.
    Postgres,
    /// The repository refused or failed an operation.
    Repository,
    /// A restore target is not usable (not empty, not writable).
    Target,
    /// The failure of a library call, passed on by a caller (the API).
    Library,
    /// The one "not there" a caller may treat as an answer rather than a failure (see
    /// [`Error::is_absent`]).
    Absent,
    /// An invalid argument to a pure function (a bad hex id, a bad configuration).
    InvalidInput,
    /// Bytes read back are corrupt (a bad trailer, an undecodable header or frame).
    Corrupt,
    /// A size limit was exceeded.
    TooLarge,
    /// A failure that should not happen (an invariant of a dependency broke).
    Internal,
    /// A sealed object failed authentication: corrupt, modified or the wrong key.
    AuthTagMismatch,
    /// Bytes that should be a master key are not one.
    MasterKeyInvalid,
    /// The keyring file is readable by group or others.
    KeyringPermissions,
    /// The keyring file does not exist.
    KeyringNotFound,
    /// The keyring file exists but cannot be parsed.
    KeyringInvalid,
    /// A keyring file already exists where one was to be created.
    KeyringExists,
    /// Reading or writing the keyring file failed at the I/O level.
    KeyringIo,
    /// None of the keyring's identities can unwrap a wrapped secret.
    NoMatchingIdentity,
    /// A wrapped secret is malformed or was modified.
    WrappedSecretCorrupt,
    /// A recipient string is malformed, or none was given.
    RecipientInvalid,
    /// A signature does not verify, or is malformed.
    SignatureInvalid,
    /// A verifying key is malformed.
    VerifyingKeyInvalid,
}

impl ErrorKind {
    /// The kind [`Error::new`] gives a code: decided by its namespace.
    pub fn of_code(code: &str) -> ErrorKind {
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
}

type Source = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// The error of every fallible function of the library crates.
///
/// It carries a dotted code (its first segment, the namespace, decides the CLI exit
/// code), a one-line cause (its `Display`), an optional suggested fix for a human,
/// whether retrying may help, and the error it came from ([`std::error::Error::source`]).
/// A crate passing on a lower crate's error passes the same value on: code, message,
/// suggestion and source are kept.
#[derive(Clone)]
pub struct Error {
    kind: ErrorKind,
    code: Code,
    message: String,
    suggestion: Option<String>,
    temporary: bool,
    source: Option<Source>,
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with `code` and the one-line cause `message`; its kind follows the code's
    /// namespace ([`ErrorKind::of_code`]). Not temporary, no suggestion, no source.
    pub fn new(code: impl Into<Code>, message: impl Into<String>) -> Error {
        let code = code.into();
        Error {
            kind: ErrorKind::of_code(code.as_str()),
            code,
            message: message.into(),
            suggestion: None,
            temporary: false,
            source: None,
        }
    }

    /// An error of an explicit `kind` (see [`ErrorKind`]).
    pub fn of_kind(kind: ErrorKind, code: impl Into<Code>, message: impl Into<String>) -> Error {
        Error::new(code, message).with_kind(kind)
    }

    /// The same error with a suggested fix for a human (one line).
    pub fn with_suggestion(mut self, suggestion: impl Into<String>) -> Error {
        self.suggestion = Some(suggestion.into());
        self
    }

    /// The same error, caused by `source`.
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Error {
        self.source = Some(Arc::from(source.into()));
        self
    }

    /// The same error, marked as one a retry may clear (or not).
    pub fn temporary(mut self, temporary: bool) -> Error {
        self.temporary = temporary;
        self
    }

    /// The same error under another kind.
    pub fn with_kind(mut self, kind: ErrorKind) -> Error {
        self.kind = kind;
        self
    }

    /// The same error under another kind and code (message, suggestion and source kept).
    pub fn recode(mut self, kind: ErrorKind, code: impl Into<Code>) -> Error {
        self.kind = kind;
        self.code = code.into();
        self
    }

    /// The dotted error code, e.g. `"conflict.repo_exists"`; compare it with a constant of
    /// [`code`](crate::code): `e.code() == code::CONFLICT_REPO_EXISTS`.
    pub fn code(&self) -> &'static str {
        self.code.as_str()
    }

    /// The one-line cause (the same text as `Display`).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// A one-line suggested fix for a human, if there is one.
    pub fn suggestion(&self) -> Option<&str> {
        self.suggestion.as_deref()
    }

    /// Whether retrying the same operation could succeed.
    pub fn is_temporary(&self) -> bool {
        self.temporary
    }

    /// The broad kind of the error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// True only for an error raised as [`ErrorKind::Absent`]: the thing asked for is not
    /// there, and the caller said that this is an answer, not a failure. Another
    /// `notfound.*` error is not absence.
    pub fn is_absent(&self) -> bool {
        self.kind == ErrorKind::Absent
    }

    /// A storage I/O error on object `what` (`write`: while writing it), classified by its
    /// [`std::io::ErrorKind`]: `notfound.object`, `io.permission_denied`, `io.no_space`
    /// (temporary), `io.read_only`, else `io.write_failed` / `io.read_failed`, temporary
    /// when the OS says a retry may help ([`io_is_temporary`]). Keeps `e` as the source.
    pub fn io(e: std::io::Error, write: bool, what: &str) -> Error {
        use std::io::ErrorKind as K;
        let (code, temporary) = match e.kind() {
            K::NotFound => (code::NOTFOUND_OBJECT, false),
            K::PermissionDenied => (code::IO_PERMISSION_DENIED, false),
            K::StorageFull => (code::IO_NO_SPACE, true),
            K::ReadOnlyFilesystem => (code::IO_READ_ONLY, false),
            k if write => (code::IO_WRITE_FAILED, io_is_temporary(k)),
            k => (code::IO_READ_FAILED, io_is_temporary(k)),
        };
        let (msg, suggestion) = match code {
            code::NOTFOUND_OBJECT => (format!("object {what} does not exist"), None),
            code::IO_PERMISSION_DENIED => (
                format!("permission denied on {what}"),
                Some("check the owner and mode of the repository directory"),
            ),
            code::IO_NO_SPACE => (
                format!("no space left while writing {what}"),
                Some("free space on the repository's filesystem and retry"),
            ),
            code::IO_READ_ONLY => (
                format!("cannot write {what}: the file system is read-only"),
                Some("remount the repository's file system read-write"),
            ),
            _ if write => (format!("writing {what} failed: {e}"), None),
            _ => (format!("reading {what} failed: {e}"), None),
        };
        let err = Error::new(code, msg).temporary(temporary).with_source(e);
        match suggestion {
            Some(s) => err.with_suggestion(s),
            None => err,
        }
    }
}

/// Whether an I/O error of this kind may clear on retry (interrupted, timed out, would
/// block).
pub fn io_is_temporary(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind as K;
    matches!(kind, K::Interrupted | K::TimedOut | K::WouldBlock)
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
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
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind as K;

    #[test]
    fn new_derives_the_kind_from_the_namespace() {
        let cases = [
            (code::USAGE_INVALID_URL, ErrorKind::Usage),
            (code::AUTH_STORAGE_DENIED, ErrorKind::Auth),
            (code::NOTFOUND_BACKUP, ErrorKind::NotFound),
            (code::CONFLICT_REPO_EXISTS, ErrorKind::Conflict),
            (code::VERIFY_AUTH_TAG_MISMATCH, ErrorKind::Verify),
            (code::IO_READ_ONLY, ErrorKind::Io),
            (code::UNREACHABLE_STORAGE, ErrorKind::Io),
            (code::ABORTED_SIGNAL, ErrorKind::Aborted),
            (code::PROTOCOL_INVALID_MESSAGE, ErrorKind::Other),
        ];
        for (c, kind) in cases {
            assert_eq!(Error::new(c, "x").kind(), kind, "{c}");
        }
        let e = Error::of_kind(ErrorKind::Absent, code::NOTFOUND_WAL_SEGMENT, "x");
        assert!(e.is_absent());
        assert!(!Error::new(code::NOTFOUND_WAL_SEGMENT, "x").is_absent());
    }

    #[test]
    fn builders_keep_every_field() {
        let e = Error::new(code::IO_WRITE_FAILED, "cause")
            .with_suggestion("fix")
            .temporary(true)
            .with_source(std::io::Error::from(K::Other));
        assert_eq!(e.code(), code::IO_WRITE_FAILED);
        assert_eq!(e.to_string(), "cause");
        assert_eq!(e.message(), "cause");
        assert_eq!(e.suggestion(), Some("fix"));
        assert!(e.is_temporary());
        assert!(std::error::Error::source(&e).is_some());
        let r = e
            .clone()
            .recode(ErrorKind::Conflict, code::CONFLICT_SLOT_EXISTS);
        assert_eq!(r.code(), "conflict.slot_exists");
        assert_eq!(r.kind(), ErrorKind::Conflict);
        assert_eq!(r.suggestion(), Some("fix"));
        assert!(std::error::Error::source(&r).is_some());
    }

    #[test]
    fn storage_io_errors_are_classified() {
        let e = Error::io(std::io::Error::from(K::ReadOnlyFilesystem), true, "x");
        assert_eq!(e.code(), code::IO_READ_ONLY);
        assert!(!e.is_temporary());
        assert!(e.suggestion().is_some());
        let e = Error::io(std::io::Error::from(K::StorageFull), true, "x");
        assert_eq!(e.code(), code::IO_NO_SPACE);
        assert!(e.is_temporary());
        let e = Error::io(std::io::Error::from(K::TimedOut), false, "x");
        assert_eq!(e.code(), code::IO_READ_FAILED);
        assert!(e.is_temporary());
        let e = Error::io(std::io::Error::from(K::NotFound), false, "x");
        assert_eq!(e.code(), code::NOTFOUND_OBJECT);
        assert_eq!(e.to_string(), "object x does not exist");
        assert_eq!(e.suggestion(), None);
        let e = Error::io(std::io::Error::from(K::Other), true, "x");
        assert_eq!(e.code(), code::IO_WRITE_FAILED);
        assert!(!e.is_temporary());
    }
}
