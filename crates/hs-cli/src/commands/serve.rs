//! `pg_hardstorage serve --listen ADDR`: the REST API (hs-api) until SIGTERM or Ctrl-C.
//! Maps the config file, flags and environment onto [`hs_api::ApiConfig`]; nothing more.

use anyhow::Result;
use hs_base::code;
use serde_json::json;

use crate::cli::{GlobalArgs, ServeArgs};
use crate::errors::CliError;
use crate::output::Output;

pub async fn serve(g: &GlobalArgs, a: ServeArgs) -> Result<Output> {
    let token = token(&a)?;
    let deployments = g.settings.deployments(&a.deployment, a.repo.as_deref())?;
    if deployments.is_empty() {
        tracing::warn!(
            "serving no deployments: add them to pg_hardstorage.yaml or pass --deployment NAME"
        );
    }
    let built = env!("HS_BUILD_EPOCH")
        .parse::<i64>()
        .ok()
        .and_then(|e| time::OffsetDateTime::from_unix_timestamp(e).ok())
        .map(hs_backup::rfc3339);
    let config = hs_api::ApiConfig {
        deployments,
        keyring: g.settings.keyring_path(),
        token,
        version: hs_api::VersionInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            git_sha: Some(env!("HS_GIT_SHA").to_owned()),
            built,
        },
    };
    let count = config.deployments.len();
    let server = hs_api::ApiServer::bind(a.listen, config).await?;
    let addr = server.local_addr();
    // The address goes to stderr at once (stdout gets the result when the server stops).
    eprintln!("pg_hardstorage serve: listening on http://{addr} ({count} deployment(s))");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    server
        .run(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("stop requested: no longer accepting connections");
        })
        .await?;
    Ok(Output::new(
        json!({"listen": addr.to_string(), "deployments": count, "stopped": true}),
        format!("pg_hardstorage serve on {addr} stopped\n"),
    ))
}

/// The bearer token: `--token-file` (first line) or `PG_HARDSTORAGE_API_TOKEN`.
fn token(a: &ServeArgs) -> Result<Option<hs_api::ApiToken>> {
    let raw = match &a.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| {
                    CliError::new(
                        code::IO_READ_FAILED,
                        format!("cannot read the token file {}: {e}", path.display()),
                    )
                    .with_suggestion("check --token-file and the file's permissions")
                })?
                .lines()
                .next()
                .unwrap_or("")
                .to_owned(),
        ),
        None => std::env::var(hs_api::ENV_API_TOKEN)
            .ok()
            .filter(|v| !v.is_empty()),
    };
    Ok(raw.map(hs_api::ApiToken::new).transpose()?)
}
