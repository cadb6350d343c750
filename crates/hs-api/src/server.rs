//! The listening socket, HTTP/1.1 connections (hyper), bearer-token authentication, the
//! JSON envelope and request metrics. Handlers live in handlers.rs.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hs_base::code;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::error::{Error, ErrorKind, HttpError, Result};
use crate::jobs::Jobs;
use crate::routes::{match_route, Matched, Route};
use crate::SCHEMA;

/// A deployment the API serves (defined in hs-ops, where `serve` resolves it).
pub use hs_ops::Deployment;

/// The environment variable `pg_hardstorage serve` reads the bearer token from.
pub const ENV_API_TOKEN: &str = "PG_HARDSTORAGE_API_TOKEN";
/// Shortest token accepted, in bytes.
pub const MIN_TOKEN_LEN: usize = 16;
/// Largest request body accepted (POST bodies are small JSON objects).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// Time allowed for a client to send a request head.
pub const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The bearer token clients must send (`Authorization: Bearer <token>`). Never printed:
/// its `Debug` shows only `ApiToken(..)`.
#[derive(Clone)]
pub struct ApiToken(Vec<u8>);

impl ApiToken {
    /// A token; shorter than [`MIN_TOKEN_LEN`] bytes, or with whitespace or control
    /// characters, is `usage.api_token_weak`.
    pub fn new(token: String) -> Result<ApiToken> {
        let t = token.trim();
        if t.len() < MIN_TOKEN_LEN
            || t.bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(Error::of_kind(
                ErrorKind::Usage,
                code::USAGE_API_TOKEN_WEAK,
                format!("the API token must be at least {MIN_TOKEN_LEN} characters without spaces"),
            )
            .with_suggestion(format!(
                "generate one, e.g. `openssl rand -hex 32`, and set it in {ENV_API_TOKEN}"
            )));
        }
        Ok(ApiToken(t.as_bytes().to_vec()))
    }

    /// Whether `presented` is this token, in time independent of where they differ
    /// (both are hashed first, so not even the length leaks).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let a = Sha256::digest(&self.0);
        let b = Sha256::digest(presented);
        let diff = a
            .iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y));
        std::hint::black_box(diff) == 0
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(..)")
    }
}

/// What `/v1/version` reports.
#[derive(Debug, Clone)]
pub struct VersionInfo {
    /// The package version.
    pub version: String,
    /// The git commit the binary was built from, if known.
    pub git_sha: Option<String>,
    /// The build time (RFC 3339), if known.
    pub built: Option<String>,
}

impl VersionInfo {
    /// Just a version.
    pub fn new(version: impl Into<String>) -> VersionInfo {
        VersionInfo {
            version: version.into(),
            git_sha: None,
            built: None,
        }
    }
}

/// Everything the server needs.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The deployments served, each with its repository.
    pub deployments: Vec<Deployment>,
    /// The keyring that opens the repositories.
    pub keyring: PathBuf,
    /// The bearer token; `None` allows only loopback listen addresses.
    pub token: Option<ApiToken>,
    /// What `/v1/version` reports.
    pub version: VersionInfo,
}

/// State shared by every connection.
pub(crate) struct State {
    pub(crate) deployments: BTreeMap<String, Deployment>,
    pub(crate) keyring: hs_crypt::Keyring,
    pub(crate) token: Option<ApiToken>,
    pub(crate) version: VersionInfo,
    pub(crate) repos: tokio::sync::Mutex<HashMap<String, hs_repo::Repository>>,
    pub(crate) jobs: Jobs,
    pub(crate) started: Instant,
    /// (method, route path, status) -> count.
    pub(crate) requests: Mutex<BTreeMap<(String, String, u16), u64>>,
}

impl State {
    /// The configured deployment `name`, or `notfound.deployment`.
    pub(crate) fn deployment(&self, name: &str) -> Result<&Deployment> {
        self.deployments.get(name).ok_or_else(|| {
            Error::of_kind(
                ErrorKind::NotFound,
                code::NOTFOUND_DEPLOYMENT,
                format!("deployment {name:?} is not configured on this server"),
            )
            .with_suggestion("GET /v1/deployments lists the deployments this server serves")
        })
    }

    /// The repository at `url`, opened once and then reused.
    pub(crate) async fn repo(&self, url: &str) -> Result<hs_repo::Repository> {
        let mut repos = self.repos.lock().await;
        if let Some(r) = repos.get(url) {
            return Ok(r.clone());
        }
        let repo = hs_repo::Repository::open(url, &self.keyring).await?;
        repos.insert(url.to_owned(), repo.clone());
        Ok(repo)
    }
}

/// A bound, not yet serving, API server.
pub struct ApiServer {
    listener: TcpListener,
    state: Arc<State>,
}

impl ApiServer {
    /// Checks the configuration, loads the keyring and binds `addr`.
    ///
    /// Without a token only a loopback address is accepted (`usage.api_token_required`);
    /// a deployment name that is invalid or listed twice is `usage.deployment_invalid`;
    /// an address that cannot be bound is `usage.api_listen_failed`.
    pub async fn bind(addr: SocketAddr, config: ApiConfig) -> Result<ApiServer> {
        if config.token.is_none() && !addr.ip().is_loopback() {
            return Err(Error::of_kind(
                ErrorKind::Usage,
                code::USAGE_API_TOKEN_REQUIRED,
                format!("refusing to listen on {addr} without an API token"),
            )
            .with_suggestion(format!(
                "set {ENV_API_TOKEN} (at least {MIN_TOKEN_LEN} characters), or listen on a \
                 loopback address such as 127.0.0.1:7480"
            )));
        }
        let mut deployments = BTreeMap::new();
        for d in config.deployments {
            hs_backup::validate_deployment(&d.name)?;
            let name = d.name.clone();
            if deployments.insert(name.clone(), d).is_some() {
                return Err(Error::of_kind(
                    ErrorKind::Usage,
                    code::USAGE_DEPLOYMENT_INVALID,
                    format!("deployment {name:?} is configured twice"),
                ));
            }
        }
        let keyring = hs_crypt::Keyring::load(&config.keyring)?;
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            Error::of_kind(
                ErrorKind::Usage,
                code::USAGE_API_LISTEN_FAILED,
                format!("cannot listen on {addr}: {e}"),
            )
            .with_suggestion("choose a free port, or stop the process that holds this one")
        })?;
        Ok(ApiServer {
            listener,
            state: Arc::new(State {
                deployments,
                keyring,
                token: config.token,
                version: config.version,
                repos: tokio::sync::Mutex::new(HashMap::new()),
                jobs: Jobs::default(),
                started: Instant::now(),
                requests: Mutex::new(BTreeMap::new()),
            }),
        })
    }

    /// The bound address (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves until `shutdown` completes, then stops accepting connections and returns.
    /// Requests in flight finish on their own tasks; background jobs still running when
    /// the process exits are abandoned (a backup that did not write its manifest is never
    /// listed, so nothing half-done becomes visible).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let state = self.state;
        hs_ops::serve_connections(
            self.listener,
            MAX_CONNECTIONS,
            "api",
            shutdown,
            move |stream, peer| {
                let state = state.clone();
                async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(state, req).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(REQUEST_HEAD_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service);
                    if let Err(e) = conn.await {
                        tracing::debug!("api: connection from {peer}: {e}");
                    }
                }
            },
        )
        .await;
        Ok(())
    }
}

/// A handler's answer before it becomes an HTTP response.
pub(crate) enum Reply {
    /// `200` (or another status) with `{"ok":true,"result":..}`.
    Json(StatusCode, Value),
    /// A non-JSON body with its content type.
    Raw(&'static str, Bytes),
    /// An error, optionally with a result that explains it (readiness).
    Error(Error, Option<Value>),
    /// `202 Accepted` for a job, with its `Location`.
    Accepted(String, Value),
}

impl From<Error> for Reply {
    fn from(e: Error) -> Self {
        Reply::Error(e, None)
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let (route_path, response) = match match_route(&method, &path) {
        Matched::NotFound => (
            "unmatched",
            error_response(
                &Error::of_kind(
                    ErrorKind::NotFound,
                    code::NOTFOUND_ROUTE,
                    format!("no route {method} {path}"),
                )
                .with_suggestion("GET /v1/openapi.json describes every route"),
                None,
            ),
        ),
        Matched::WrongMethod(allowed) => {
            let mut r = error_response(
                &Error::of_kind(
                    ErrorKind::Usage,
                    code::USAGE_METHOD_NOT_ALLOWED,
                    format!("{path} does not take {method}"),
                )
                .with_suggestion(format!("use {}", allowed.join(" or "))),
                None,
            );
            if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
                r.headers_mut().insert(ALLOW, v);
            }
            ("unmatched", r)
        }
        Matched::Route(route, params) => {
            let r = match authorize(&state, route, &req) {
                Err(e) => {
                    let mut r = error_response(&e, None);
                    r.headers_mut()
                        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                    r
                }
                Ok(()) => match read_body(req).await {
                    Err(e) => error_response(&e, None),
                    Ok(body) => {
                        let reply = crate::handlers::dispatch(&state, route, &params, &body).await;
                        to_response(reply)
                    }
                },
            };
            (route.path, r)
        }
    };
    if let Ok(mut m) = state.requests.lock() {
        *m.entry((method, route_path.to_owned(), response.status().as_u16()))
            .or_insert(0) += 1;
    }
    response
}

fn authorize(state: &State, route: &Route, req: &Request<Incoming>) -> Result<()> {
    let Some(token) = &state.token else {
        return Ok(());
    };
    if !route.auth {
        return Ok(());
    }
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match presented {
        None => Err(Error::of_kind(
            ErrorKind::Auth,
            code::AUTH_API_TOKEN_MISSING,
            "this route needs an `Authorization: Bearer <token>` header",
        )
        .with_suggestion(format!(
            "send the token the server was started with ({ENV_API_TOKEN})"
        ))),
        Some(t) if token.matches(t.as_bytes()) => Ok(()),
        Some(_) => Err(Error::of_kind(
            ErrorKind::Auth,
            code::AUTH_API_TOKEN_INVALID,
            "the bearer token is not the one this server was started with",
        )
        .with_suggestion(format!(
            "send the token the server was started with ({ENV_API_TOKEN})"
        ))),
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes> {
    match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Error::of_kind(
            ErrorKind::Usage,
            code::USAGE_REQUEST_TOO_LARGE,
            format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
        )),
        Err(e) => Err(Error::of_kind(
            ErrorKind::Usage,
            code::USAGE_REQUEST_INVALID,
            format!("cannot read the request body: {e}"),
        )),
    }
}

fn to_response(reply: Reply) -> Response<Full<Bytes>> {
    match reply {
        Reply::Json(status, result) => json_response(
            status,
            &json!({"schema": SCHEMA, "ok": true, "result": result}),
        ),
        Reply::Raw(content_type, body) => {
            let mut r = Response::new(Full::new(body));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            r
        }
        Reply::Error(e, result) => error_response(&e, result),
        Reply::Accepted(location, result) => {
            let mut r = json_response(
                StatusCode::ACCEPTED,
                &json!({"schema": SCHEMA, "ok": true, "result": result}),
            );
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(hyper::header::LOCATION, v);
            }
            r
        }
    }
}

fn error_response(e: &Error, result: Option<Value>) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut doc = json!({"schema": SCHEMA, "ok": false, "error": e.to_json()});
    if let (Some(r), Some(obj)) = (result, doc.as_object_mut()) {
        obj.insert("result".to_owned(), r);
    }
    json_response(status, &doc)
}

fn json_response(status: StatusCode, doc: &Value) -> Response<Full<Bytes>> {
    let mut body = doc.to_string();
    body.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_and_never_print() {
        let t = ApiToken::new("0123456789abcdef-secret".to_owned()).expect("token");
        assert!(t.matches(b"0123456789abcdef-secret"));
        assert!(!t.matches(b"0123456789abcdef-secreT"));
        assert!(!t.matches(b""));
        assert_eq!(format!("{t:?}"), "ApiToken(..)");
        assert_eq!(
            ApiToken::new("short".to_owned()).unwrap_err().code(),
            "usage.api_token_weak"
        );
        assert!(ApiToken::new("has a space in the middle".to_owned()).is_err());
    }

    #[test]
    fn deployment_debug_hides_the_connection_string() {
        let mut d = Deployment::new("main", "file:///r");
        d.pg_connection = Some("postgresql://u:hunter2@h/db".to_owned());
        assert!(!format!("{d:?}").contains("hunter2"));
    }
}
