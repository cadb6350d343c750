//! The crate's one public error type: an opaque [`Error`] with a dotted code.

use std::fmt;

/// What went wrong, coarsely; match on this (or on [`Error::code`]) to react.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A sealed object failed authentication: corrupt, truncated, modified,
    /// opened with the wrong key or the wrong [`crate::Domain`].
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
    /// A wrapped secret is not a well-formed age file, or was modified.
    WrappedSecretCorrupt,
    /// An age recipient string is malformed, or none was given.
    RecipientInvalid,
    /// An ed25519 signature does not verify, or is malformed.
    SignatureInvalid,
    /// A hex-encoded ed25519 verifying key is malformed.
    VerifyingKeyInvalid,
    /// A failure that should not happen (an invariant of a dependency broke).
    Internal,
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The error of every fallible hs-crypt operation.
///
/// Carries a dotted [`code`](Error::code) whose first segment decides the CLI
/// exit code, a one-line cause ([`Display`](fmt::Display)), an optional
/// [`suggestion`](Error::suggestion) and whether a retry may help. Messages
/// never contain key material.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    code: &'static str,
    message: String,
    suggestion: Option<String>,
    temporary: bool,
    source: Option<BoxError>,
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
            source: None,
        }
    }

    pub(crate) fn with_suggestion(mut self, suggestion: impl Into<String>) -> Error {
        self.suggestion = Some(suggestion.into());
        self
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Error {
        self.source = Some(source.into());
        self
    }

    /// An I/O failure on the keyring; temporary if the OS says a retry may help.
    pub(crate) fn keyring_io(code: &'static str, what: String, err: std::io::Error) -> Error {
        use std::io::ErrorKind as K;
        let temporary = matches!(err.kind(), K::Interrupted | K::TimedOut | K::WouldBlock);
        let mut e =
            Error::new(ErrorKind::KeyringIo, code, format!("{what}: {err}")).with_source(err);
        e.temporary = temporary;
        e
    }

    /// The tamper/corruption error of [`crate::MasterKey::open`].
    pub(crate) fn auth_tag_mismatch(message: impl Into<String>) -> Error {
        Error::new(
            ErrorKind::AuthTagMismatch,
            "verify.auth_tag_mismatch",
            message,
        )
        .with_suggestion("the object is corrupt or was modified; run `pg_hardstorage repo verify`")
    }

    /// Dotted error code, e.g. `"verify.auth_tag_mismatch"`; the first segment
    /// is the namespace that selects the CLI exit code.
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

    /// The coarse kind of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_temporary_only_when_retry_helps() {
        let e = Error::keyring_io(
            "io.keyring_read_failed",
            "x".into(),
            std::io::Error::from(std::io::ErrorKind::Interrupted),
        );
        assert!(e.is_temporary());
        assert!(std::error::Error::source(&e).is_some());
        let e = Error::keyring_io(
            "io.keyring_read_failed",
            "x".into(),
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        assert!(!e.is_temporary());
        assert_eq!(e.kind(), ErrorKind::KeyringIo);
    }

    #[test]
    fn auth_tag_mismatch_has_code_and_suggestion() {
        let e = Error::auth_tag_mismatch("bad");
        assert_eq!(e.code(), "verify.auth_tag_mismatch");
        assert_eq!(e.to_string(), "bad");
        assert!(e.suggestion().is_some_and(|s| s.contains("repo verify")));
    }
}
