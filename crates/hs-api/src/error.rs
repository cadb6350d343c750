//! The one public error type of hs-api: a dotted code, a cause and a suggested fix, plus
//! the HTTP status an error is answered with.

use std::fmt;

/// What went wrong, broadly. Match on [`Error::code`] for the precise reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller (a flag, a request) asked for something invalid.
    Usage,
    /// The request carried no valid bearer token.
    Auth,
    /// A deployment, backup, job or route does not exist.
    NotFound,
    /// The request clashes with work in progress.
    Conflict,
    /// A library call failed; its code is kept.
    Library,
    /// Local I/O (the listening socket) failed.
    Io,
}

/// An error from the API server or one of its handlers.
pub struct Error {
    kind: ErrorKind,
    code: String,
    message: String,
    suggestion: Option<String>,
    temporary: bool,
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn new(kind: ErrorKind, code: &str, message: impl Into<String>) -> Self {
        Error {
            kind,
            code: code.to_owned(),
            message: message.into(),
            suggestion: None,
            temporary: false,
        }
    }

    pub(crate) fn with_suggestion(mut self, s: impl Into<String>) -> Self {
        self.suggestion = Some(s.into());
        self
    }

    /// The dotted error code, for example `auth.api_token_invalid`.
    pub fn code(&self) -> &str {
        &self.code
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

    /// The HTTP status this error is answered with. The code's namespace decides, as it
    /// decides the CLI's exit code: `usage` 400 (405 for `usage.method_not_allowed`, 413
    /// for `usage.request_too_large`), `auth.api_*` 401, `notfound` 404,
    /// `conflict` 409, `verify` 422, `preflight` 412, `unreachable` 503, everything else
    /// (including a PostgreSQL or keyring `auth.*` failure, which is the server's problem
    /// and not the client's) 500.
    pub fn http_status(&self) -> u16 {
        match self.code.as_str() {
            "usage.method_not_allowed" => return 405,
            "usage.request_too_large" => return 413,
            _ => {}
        }
        let ns = self.code.split('.').next().unwrap_or("");
        match ns {
            "usage" => 400,
            // The client's own credentials (`auth` + `.api_*`), not the server's.
            "auth" if self.code[ns.len()..].starts_with(".api_") => 401,
            "notfound" => 404,
            "conflict" => 409,
            "preflight" => 412,
            "verify" => 422,
            "unreachable" => 503,
            _ => 500,
        }
    }

    /// The error part of the JSON envelope: `{"code","message","suggestion"}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "code": self.code,
            "message": self.message,
            "suggestion": self.suggestion,
        })
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

impl std::error::Error for Error {}

macro_rules! from_library {
    ($($ty:ty),+) => {
        $(
            impl From<$ty> for Error {
                fn from(e: $ty) -> Self {
                    Error {
                        kind: ErrorKind::Library,
                        code: e.code().to_owned(),
                        message: e.to_string(),
                        suggestion: e.suggestion().map(str::to_owned),
                        temporary: e.is_temporary(),
                    }
                }
            }
        )+
    };
}

from_library!(
    hs_repo::Error,
    hs_pitr::Error,
    hs_backup::Error,
    hs_crypt::Error,
    hs_proto::Error
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_map_to_http_statuses() {
        let cases = [
            ("usage.request_invalid", 400),
            ("usage.method_not_allowed", 405),
            ("usage.request_too_large", 413),
            ("auth.api_token_missing", 401),
            ("auth.password_failed", 500),
            ("notfound.backup", 404),
            ("conflict.job_running", 409),
            ("verify.chunk_id_mismatch", 422),
            ("unreachable.connection_refused", 503),
            ("io.read_failed", 500),
        ];
        for (code, status) in cases {
            assert_eq!(
                Error::new(ErrorKind::Usage, code, "x").http_status(),
                status,
                "{code}"
            );
        }
    }
}
