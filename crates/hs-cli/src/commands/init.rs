//! `init`: one command from nothing to a first backup — probe PostgreSQL, create the
//! repository and keyring when absent, write pg_hardstorage.yaml, take a backup.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::json;

use crate::cli::{GlobalArgs, InitArgs, OutputFormat};
use crate::commands::keyring_path;
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
            "usage.init_needs_yes",
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
            "usage.init_needs_yes",
            "init has no terminal to ask on and not every value was given",
        )
        .with_suggestion(
            "pass --yes to take the defaults, or give --pg-connection, --repo and --deployment",
        )
        .into());
    }

    // An explicit --config may not exist yet: init creates it.
    let explicit = g.config.clone();
    let existing = match &explicit {
        Some(p) if !p.exists() => None,
        Some(p) => Some(hs_backup::ConfigFile::load(p)?),
        None => hs_backup::ConfigFile::discover(None)?,
    };
    let config_path: PathBuf = match (&explicit, interactive) {
        (Some(p), _) => p.clone(),
        (None, true) => PathBuf::from(ask(
            "Write the config to",
            Some(hs_backup::CONFIG_FILE_NAME),
        )?),
        (None, false) => PathBuf::from(hs_backup::CONFIG_FILE_NAME),
    };
    // The file init writes to, as it is now (if it exists).
    let mut file = if config_path.exists() {
        match &existing {
            Some(f) if f.path == config_path => f.clone(),
            _ => hs_backup::ConfigFile::load(&config_path)?,
        }
    } else {
        hs_backup::ConfigFile {
            path: config_path.clone(),
            config: hs_backup::Config::default(),
        }
    };

    let deployment = value(
        interactive,
        "Deployment name",
        a.deployment.as_deref(),
        Some("main"),
    )?
    .unwrap_or_else(|| "main".to_owned());
    hs_backup::validate_deployment(&deployment)?;
    let known = file.config.deployment(&deployment).cloned();
    let pg = value(
        interactive,
        "PostgreSQL connection (a role with REPLICATION)",
        a.pg_connection.as_deref(),
        known.as_ref().and_then(|d| d.pg_connection.as_deref()),
    )?
    .ok_or_else(|| {
        CliError::new(
            "usage.pg_connection_missing",
            "init needs a PostgreSQL connection string",
        )
        .with_suggestion(format!(
            "pass --pg-connection CONN, set {}, or answer the question on a terminal",
            hs_backup::ENV_PG_CONNECTION
        ))
    })?;
    let default_repo = known
        .as_ref()
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

    // The config entry first: a clash stops init before it touches anything.
    let keyring_explicit = g.keyring.clone().or_else(|| {
        file.config
            .keyring
            .as_ref()
            .map(|k| relative_to(&config_path, k))
    });
    let new_file = !config_path.exists();
    if new_file {
        file.config.repo = Some(url.clone());
        if let Some(k) = &keyring_explicit {
            file.config.keyring = Some(std::path::absolute(k)?);
        }
    }
    let entry = hs_backup::DeploymentConfig {
        pg_connection: Some(pg.clone()),
        repo: (file.config.repo.as_deref() != Some(url.as_str())).then(|| url.clone()),
        ..known.clone().unwrap_or_default()
    };
    let changed = file.add_deployment(&deployment, entry)?;

    // 1. PostgreSQL: version, settings, role (fatal findings stop here, exit 4).
    let conn = hs_proto::ConnConfig::parse(&pg)?;
    let report = hs_backup::preflight(&conn, &deployment).await?;
    if let Some(e) = report.to_error() {
        return Err(e.into());
    }
    let warnings: Vec<String> = report
        .findings
        .iter()
        .filter(|f| f.severity == hs_backup::Severity::Warning)
        .map(|f| format!("{} [{}]", f.message, f.code))
        .collect();

    // 2. Keyring and repository: create what is absent, open what is there.
    let kpath = keyring_explicit.clone().unwrap_or_else(|| keyring_path(g));
    let (keyring, keyring_created) = hs_crypt::Keyring::load_or_create(&kpath)?;
    let (repo, repo_created) = match hs_repo::Repository::open(&url, &keyring).await {
        Ok(r) => (r, false),
        Err(e) if e.code() == "notfound.repo" => {
            (hs_repo::Repository::init(&url, &keyring).await?, true)
        }
        Err(e) => return Err(e.into()),
    };

    // 3. The config file, now that the repository and keyring are in place.
    if changed {
        file.save()?;
    }

    // 4. The first backup.
    let mut backup_json = serde_json::Value::Null;
    let mut backup_human = String::new();
    if !a.no_backup {
        let opts = hs_backup::BackupOptions::new(&deployment);
        let bar = Bar::new(g.output == OutputFormat::Human);
        // SIGTERM / SIGINT: as `backup` (exit 5, lease released, nothing recorded).
        let done =
            hs_backup::run_backup_until(&conn, &repo, &opts, &bar, super::stop_signal()?).await;
        if done.is_err() {
            hs_backup::Progress::finish(&bar);
        }
        let m = done?.manifest;
        backup_human = format!(
            "First backup {} done: {} read, {} new in the repository\n",
            m.backup_id,
            human_bytes(m.stats.logical_bytes),
            human_bytes(m.stats.stored_bytes)
        );
        backup_json = json!({
            "backup_id": m.backup_id,
            "start_lsn": m.start_lsn,
            "stop_lsn": m.stop_lsn,
            "logical_bytes": m.stats.logical_bytes,
            "stored_bytes": m.stats.stored_bytes,
        });
    }

    let mut human = format!(
        "PostgreSQL {} reachable as {}: preflight passed{}\n",
        report
            .server_version_num
            .map_or("?".to_owned(), |v| format!("{}.{}", v / 10000, v % 10000)),
        conn.user(),
        if warnings.is_empty() {
            String::new()
        } else {
            format!(" with {} warning(s)", warnings.len())
        }
    );
    for w in &warnings {
        human.push_str(&format!("  ! {w}\n"));
    }
    human.push_str(&format!(
        "{} repository {} at {url}\n",
        if repo_created { "Created" } else { "Using" },
        repo.id()
    ));
    if keyring_created {
        human.push_str(&format!(
            "Created keyring {} (0600). Back it up: without it the repository cannot be read.\n",
            kpath.display()
        ));
    } else {
        human.push_str(&format!("Using keyring {}\n", kpath.display()));
    }
    human.push_str(&format!(
        "{} {} (deployment {deployment})\n",
        match (changed, new_file) {
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
    Ok(Output::new(
        json!({
            "deployment": deployment,
            "repo": url,
            "repo_id": repo.id(),
            "repo_created": repo_created,
            "keyring": kpath.display().to_string(),
            "keyring_created": keyring_created,
            "config": config_path.display().to_string(),
            "config_changed": changed,
            "server_version_num": report.server_version_num,
            "warnings": warnings,
            "backup": backup_json,
        }),
        human,
    ))
}

fn relative_to(config: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    match config.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.join(p),
        _ => p.to_path_buf(),
    }
}
