//! The crate's error type is the workspace's one coded error, [`hs_base::Error`] (a dotted
//! code, a cause and a suggested fix); [`HttpError`] adds the HTTP status an error is
//! answered with and its JSON form. A library error reaches a handler unchanged.

pub use hs_base::{Error, ErrorKind, Result};

/// How the API answers an [`Error`].
pub trait HttpError {
    /// The HTTP status this error is answered with. The code's namespace decides, as it
    /// decides the CLI's exit code: `usage` 400 (405 for `usage.method_not_allowed`, 413
    /// for `usage.request_too_large`), `auth.api_*` 401, `notfound` 404,
    /// `conflict` 409, `verify` 422, `preflight` 412, `unreachable` 503, everything else
    /// (including a PostgreSQL or keyring `auth.*` failure, which is the server's problem
    /// and not the client's) 500.
    fn http_status(&self) -> u16;

    /// The error part of the JSON envelope: `{"code","message","suggestion"}`.
    fn to_json(&self) -> serde_json::Value;
}

impl HttpError for Error {
    fn http_status(&self) -> u16 {
        let code = self.code();
        if code == hs_base::code::USAGE_METHOD_NOT_ALLOWED {
            return 405;
        }
        if code == hs_base::code::USAGE_REQUEST_TOO_LARGE {
            return 413;
        }
        let ns = code.split('.').next().unwrap_or("");
        match ns {
            "usage" => 400,
            // The client's own credentials (`auth` + `.api_*`), not the server's.
            "auth" if code[ns.len()..].starts_with(".api_") => 401,
            "notfound" => 404,
            "conflict" => 409,
            "preflight" => 412,
            "verify" => 422,
            "unreachable" => 503,
            _ => 500,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "code": self.code(),
            "message": self.message(),
            "suggestion": self.suggestion(),
        })
    }
}

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
                Error::of_kind(ErrorKind::Usage, code, "x").http_status(),
                status,
                "{code}"
            );
        }
    }
}
