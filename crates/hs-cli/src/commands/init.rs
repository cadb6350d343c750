//! `init`: one command from nothing to a first backup — probe PostgreSQL, create the
//! repository and keyring when absent, write pg_hardstorage.yaml, take a backup.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Result;
use hs_base::code;
use serde_json::json;

use crate::cli::{GlobalArgs, InitArgs, OutputFormat};
use crate::errors::CliError;
use crate::output::{human_bytes, Output};
use crate::progress::Bar;

/// The repository URL offered when nothing else gives one.
const DEFAULT_REPO: &str = "file:///var/lib/pg_hardstorage/repo";

/// Asks on stderr, reads a line from stdin; an empty answer takes the default.
fn ask(question: &str, default: Option<&str>) -> Result<String> {
    let mut err = std::io::stderr().lock();
    match default {
        // The default may be a repository URL or conninfo with a secret.
        Some(d) => write!(err, "{question} [{}]: ", hs_repo::redact_text(d))?,
        None => write!(err, "{question}: ")?,
    }
    err.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let answer = line.trim();
    match (answer.is_empty(), default) {
        (false, _) => Ok(answer.to_owned()),
        (true, Some(d)) => Ok(d.to_owned()),
        (true, None) => Err(CliError::new(
            code::USAGE_INIT_NEEDS_YES,
            format!("no answer for {question:?}"),
        )
        .with_suggestion("answer each question, or pass every value as a flag (see `pg_hardstorage init --help`)")
        .into()),
    }
}

/// A value from its flag, else (interactively) asked with `default`, else `default`.
fn value(
    interactive: bool,
    question: &str,
    given: Option<&str>,
    default: Option<&str>,
) -> Result<Option<String>> {
    if let Some(v) = given.filter(|v| !v.is_empty()) {
        return Ok(Some(v.to_owned()));
    }
    if interactive {
        return ask(question, default).map(Some);
    }
    Ok(default.map(str::to_owned))
}

pub async fn init(g: &GlobalArgs, a: InitArgs) -> Result<Output> {
    let tty = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let interactive = tty && !a.yes && g.output == OutputFormat::Human;
    let all_given = a.pg_connection.is_some() && a.repo.is_some() && a.deployment.is_some();
    if !a.yes && !interactive && !all_given {
        return Err(CliError::new(
            code::USAGE_INIT_NEEDS_YES,
            "init has no terminal to ask on and not every value was given",
        )
        .with_suggestion(
            "pass --yes to take the defaults, or give --pg-connection, --repo and --deployment",
        )
        .into());
    }
    let mut file = config_file(g, interactive)?;
    let (deployment, pg, url) = answers(&a, interactive, &file)?;

    // The config entry first: a clash stops init before it touches anything.
    let entry = hs_ops::add_init_entry::<anyhow::Error>(
        &mut file,
        &deployment,
        &pg,
        &url,
        g.keyring.clone(),
    )?;
    // PostgreSQL's preflight, then the keyring and the repository.
    let kpath = entry
        .keyring
        .clone()
        .unwrap_or_else(|| g.settings.keyring_path());
    let setup = hs_ops::init_repository(&pg, &deployment, &url, &kpath).await?;

    // The config file, now that the repository and keyring are in place.
    if entry.changed {
        file.save()?;
    }

    // The first backup.
    let backup = if a.no_backup {
        None
    } else {
        Some(first_backup(g, &setup, &deployment).await?)
    };
    Ok(render(
        &file,
        &deployment,
        &url,
        &kpath,
        &entry,
        &setup,
        backup,
    ))
}

/// The config file init writes to, as it is now (if it exists): `--config` (which may
/// not exist yet: init creates it), else the path asked for (or the default).
fn config_file(g: &GlobalArgs, interactive: bool) -> Result<hs_ops::ConfigFile> {
    let explicit = g.config.clone();
    let existing = hs_ops::existing_config(explicit.as_deref())?;
    let config_path: PathBuf = match (&explicit, interactive) {
        (Some(p), _) => p.clone(),
        (None, true) => PathBuf::from(ask("Write the config to", Some(hs_ops::CONFIG_FILE_NAME))?),
        (None, false) => PathBuf::from(hs_ops::CONFIG_FILE_NAME),
    };
    Ok(hs_ops::config_to_write(&config_path, existing.as_ref())?)
}

/// The deployment name, the connection string and the repository URL: flags, else
/// answers (interactively), else the defaults (the file's entry, then built-in).
fn answers(
    a: &InitArgs,
    interactive: bool,
    file: &hs_ops::ConfigFile,
) -> Result<(String, String, String)> {
    let deployment = value(
        interactive,
        "Deployment name",
        a.deployment.as_deref(),
        Some("main"),
    )?
    .unwrap_or_else(|| "main".to_owned());
    hs_backup::validate_deployment(&deployment)?;
    let known = file.config.deployment(&deployment);
    let pg = value(
        interactive,
        "PostgreSQL connection (a role with REPLICATION)",
        a.pg_connection.as_deref(),
        known.and_then(|d| d.pg_connection.as_deref()),
    )?
    .ok_or_else(|| {
        CliError::new(
            code::USAGE_PG_CONNECTION_MISSING,
            "init needs a PostgreSQL connection string",
        )
        .with_suggestion(format!(
            "pass --pg-connection CONN, set {}, or answer the question on a terminal",
            hs_ops::ENV_PG_CONNECTION
        ))
    })?;
    let default_repo = known
        .and_then(|d| d.repo.clone())
        .or_else(|| file.config.repo.clone())
        .unwrap_or_else(|| DEFAULT_REPO.to_owned());
    let url = value(
        interactive,
        "Repository URL",
        a.repo.as_deref(),
        Some(&default_repo),
    )?
    .unwrap_or(default_repo);
    Ok((deployment, pg, url))
}

/// The first backup, as `backup` takes it; its (JSON, human) lines.
async fn first_backup(
    g: &GlobalArgs,
    setup: &hs_ops::InitSetup,
    deployment: &str,
) -> Result<(serde_json::Value, String)> {
    let opts = hs_backup::BackupOptions::new(deployment);
    let bar = Bar::new(g, "backup");
    // SIGTERM / SIGINT: as `backup` (exit 5, lease released, nothing recorded).
    let done =
        hs_backup::run_backup_until(&setup.conn, &setup.repo, &opts, &bar, super::stop_signal()?)
            .await;
    if done.is_err() {
        hs_backup::Progress::finish(&bar);
    }
    let m = done?.manifest;
    let human = format!(
        "First backup {} done: {} read, {} new in the repository\n",
        m.backup_id,
        human_bytes(m.stats.logical_bytes),
        human_bytes(m.stats.stored_bytes)
    );
    let json = json!({
        "backup_id": m.backup_id,
        "start_lsn": m.start_lsn,
        "stop_lsn": m.stop_lsn,
        "logical_bytes": m.stats.logical_bytes,
        "stored_bytes": m.stats.stored_bytes,
    });
    Ok((json, human))
}

fn render(
    file: &hs_ops::ConfigFile,
    deployment: &str,
    url: &str,
    kpath: &Path,
    entry: &hs_ops::InitEntry,
    setup: &hs_ops::InitSetup,
    backup: Option<(serde_json::Value, String)>,
) -> Output {
    let (backup_json, backup_human) = backup.unwrap_or((serde_json::Value::Null, String::new()));
    let config_path = &file.path;
    let (report, warnings, repo) = (&setup.preflight, &setup.warnings, &setup.repo);
    let mut human = format!(
        "PostgreSQL {} reachable as {}: preflight passed{}\n",
        report
            .server_version_num
            .map_or("?".to_owned(), |v| format!("{}.{}", v / 10000, v % 10000)),
        setup.conn.user(),
        if warnings.is_empty() {
            String::new()
        } else {
            format!(" with {} warning(s)", warnings.len())
        }
    );
    for w in warnings {
        human.push_str(&format!("  ! {w}\n"));
    }
    human.push_str(&format!(
        "{} repository {} at {url}\n",
        if setup.repo_created {
            "Created"
        } else {
            "Using"
        },
        repo.id()
    ));
    if setup.keyring_created {
        human.push_str(&format!(
            "Created keyring {} (0600). Back it up: without it the repository cannot be read.\n",
            kpath.display()
        ));
    } else {
        human.push_str(&format!("Using keyring {}\n", kpath.display()));
    }
    human.push_str(&format!(
        "{} {} (deployment {deployment})\n",
        match (entry.changed, entry.new_file) {
            (true, true) => "Wrote",
            (true, false) => "Added to",
            (false, _) => "Unchanged:",
        },
        config_path.display()
    ));
    human.push_str(&backup_human);
    human.push_str(&format!(
        "Next: keep `pg_hardstorage wal stream {deployment}` running, schedule `pg_hardstorage backup {deployment}`, check with `pg_hardstorage doctor`.\n"
    ));
    Output::new(
        json!({
            "deployment": deployment,
            "repo": url,
            "repo_id": repo.id(),
            "repo_created": setup.repo_created,
            "keyring": kpath.display().to_string(),
            "keyring_created": setup.keyring_created,
            "config": config_path.display().to_string(),
            "config_changed": entry.changed,
            "server_version_num": report.server_version_num,
            "warnings": warnings,
            "backup": backup_json,
        }),
        human,
    )
}
