//! The crate's error type is the workspace's one coded error, [`hs_base::Error`]: a dotted
//! code (its first segment decides the CLI exit code), a one-line cause, an optional
//! suggestion, whether a retry may help, and its source. Messages never contain key
//! material. hs-crypt raises the keyring and sealing kinds of [`ErrorKind`]
//! (`AuthTagMismatch`, `KeyringNotFound`, ...).

pub use hs_base::{Error, ErrorKind, Result};

use hs_base::{code, Code};

/// An I/O failure on the keyring; temporary if the OS says a retry may help.
pub(crate) fn keyring_io(code: impl Into<Code>, what: String, err: std::io::Error) -> Error {
    let temporary = hs_base::io_is_temporary(err.kind());
    Error::of_kind(ErrorKind::KeyringIo, code, format!("{what}: {err}"))
        .with_source(err)
        .temporary(temporary)
}

/// The tamper/corruption error of [`crate::MasterKey::open`].
pub(crate) fn auth_tag_mismatch(message: impl Into<String>) -> Error {
    Error::of_kind(
        ErrorKind::AuthTagMismatch,
        code::VERIFY_AUTH_TAG_MISMATCH,
        message,
    )
    .with_suggestion("the object is corrupt or was modified; run `pg_hardstorage repo verify`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_temporary_only_when_retry_helps() {
        let e = keyring_io(
            "io.keyring_read_failed",
            "x".into(),
            std::io::Error::from(std::io::ErrorKind::Interrupted),
        );
        assert!(e.is_temporary());
        assert!(std::error::Error::source(&e).is_some());
        let e = keyring_io(
            "io.keyring_read_failed",
            "x".into(),
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        assert!(!e.is_temporary());
        assert_eq!(e.kind(), ErrorKind::KeyringIo);
    }

    #[test]
    fn auth_tag_mismatch_has_code_and_suggestion() {
        let e = auth_tag_mismatch("bad");
        assert_eq!(e.code(), "verify.auth_tag_mismatch");
        assert_eq!(e.to_string(), "bad");
        assert!(e.suggestion().is_some_and(|s| s.contains("repo verify")));
    }
}
