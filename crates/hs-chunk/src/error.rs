//! The crate's one public error type, following the workspace error convention.

use std::fmt;
use std::sync::Arc;

/// What went wrong, broadly. More variants may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller passed an invalid argument (bad hex id, bad configuration).
    InvalidInput,
    /// Bytes read back are corrupt or were tampered with (bad pack trailer,
    /// undecodable header, zstd frame that does not decompress).
    Corrupt,
    /// A size limit was exceeded (pack too large for 32-bit offsets,
    /// decompressed data larger than allowed).
    TooLarge,
    /// The compression library failed for a reason unrelated to the input.
    Internal,
}

/// The error returned by every fallible function of this crate.
///
/// It carries a dotted code (the first segment decides the CLI exit code),
/// a one-line cause (its `Display`), an optional suggestion for a human and
/// whether a retry could help.
#[derive(Clone)]
pub struct Error {
    kind: ErrorKind,
    code: &'static str,
    message: String,
    suggestion: Option<String>,
    temporary: bool,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

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

    /// The dotted error code, e.g. `"verify.pack_trailer_invalid"`.
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

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
