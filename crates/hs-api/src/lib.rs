//! hs-api: the pg_hardstorage REST API, an HTTP/1.1 server (hyper) over the library
//! crates, which `pg_hardstorage serve --listen ADDR` runs.
//!
//! - Routes live under `/v1` ([`ROUTES`] is the whole table): health and readiness,
//!   version, the configured deployments, backups (list, show, trigger as a background
//!   job), jobs, restore preview (a plan; nothing is written), WAL status, backup verify
//!   (a job), plus `/metrics` in the Prometheus text format and the OpenAPI 3.1 document
//!   at `/v1/openapi.json` ([`OPENAPI_JSON`], the committed `crates/hs-api/openapi.json`,
//!   inside the crate so that it is packaged with it).
//! - Every answer is JSON in the CLI's envelope: `{"schema":"pg_hardstorage.v1","ok":true,
//!   "result":..}` or `{"schema":..,"ok":false,"error":{"code","message","suggestion"}}`,
//!   with the HTTP status decided by the error code's namespace ([`HttpError::http_status`]).
//! - Authentication is a bearer token ([`ApiToken`], compared in constant time). Every
//!   route but `/v1/healthz` and `/v1/openapi.json` requires it when one is set; without a
//!   token, [`ApiServer::bind`] refuses any non-loopback address
//!   (`usage.api_token_required`).
//!
//! ```no_run
//! # async fn demo() -> hs_api::Result<()> {
//! use hs_api::{ApiConfig, ApiServer, ApiToken, Deployment, VersionInfo};
//! let config = ApiConfig {
//!     deployments: vec![Deployment::new("main", "file:///var/lib/pg_hardstorage/repo")],
//!     keyring: "/etc/pg_hardstorage/keyring".into(),
//!     token: Some(ApiToken::new("a long random secret token".to_owned())?),
//!     version: VersionInfo::new(env!("CARGO_PKG_VERSION")),
//! };
//! let server = ApiServer::bind("127.0.0.1:7480".parse().unwrap(), config).await?;
//! println!("listening on {}", server.local_addr());
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
#![deny(missing_docs)]

mod error;
mod handlers;
mod jobs;
mod routes;
mod server;

pub use error::{Error, ErrorKind, HttpError, Result};
pub use routes::{Route, ROUTES};
pub use server::{
    ApiConfig, ApiServer, ApiToken, Deployment, VersionInfo, ENV_API_TOKEN, MAX_BODY_BYTES,
    MAX_CONNECTIONS, MIN_TOKEN_LEN, REQUEST_HEAD_TIMEOUT,
};

/// The OpenAPI 3.1 document of this API (the committed `crates/hs-api/openapi.json`,
/// inside the crate so that it is packaged with it), served at `/v1/openapi.json`. A test checks that it lists exactly the routes of [`ROUTES`].
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// The `schema` of every JSON envelope, the same as the CLI's `-o json` output.
pub const SCHEMA: &str = "pg_hardstorage.v1";
