//! CLI glue for `pg_hardstorage.yaml`: find and load it once, then fill in the
//! repository URL, connection string and keyring that flags left out
//! (flag > `PG_HARDSTORAGE_*` env > the deployment's entry > the file's top level).

use std::path::PathBuf;

use anyhow::Result;

use crate::cli::GlobalArgs;

/// Loads the config (`--config` / `PG_HARDSTORAGE_CONFIG`, else the search path) into
/// `g.file`, and takes the keyring from it when neither `--keyring` nor
/// `PG_HARDSTORAGE_KEYRING` gave one. A relative keyring path is relative to the file.
pub fn load(g: &mut GlobalArgs) -> Result<()> {
    let file = hs_backup::ConfigFile::discover(g.config.as_deref())?;
    g.keyring = keyring_from(g, file.as_ref());
    g.file = file;
    Ok(())
}

/// `--keyring` / `PG_HARDSTORAGE_KEYRING`, else the config's `keyring:`.
pub fn keyring_from(g: &GlobalArgs, file: Option<&hs_backup::ConfigFile>) -> Option<PathBuf> {
    g.keyring.clone().or_else(|| {
        let f = file?;
        f.config.keyring.as_ref().map(|k| relative_to_file(f, k))
    })
}

fn relative_to_file(f: &hs_backup::ConfigFile, p: &std::path::Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    match f.path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.join(p),
        _ => p.to_path_buf(),
    }
}

pub fn overrides(repo: Option<&str>, pg_connection: Option<&str>) -> hs_backup::Overrides {
    hs_backup::Overrides::new(repo, pg_connection, &|k| std::env::var(k).ok())
}

/// The repository URL: `given` (the flag, already merged with PG_HARDSTORAGE_REPO by
/// clap) unless empty, then the config.
pub fn repo(g: &GlobalArgs, deployment: Option<&str>, given: &str) -> Result<String> {
    let o = overrides(Some(given), None);
    let config = g.file.as_ref().map(|f| &f.config);
    Ok(hs_backup::resolve_repo(config, deployment, &o)?.value)
}

/// The connection string: `given` (flag or PG_HARDSTORAGE_PG_CONNECTION), then the config.
pub fn pg_connection(g: &GlobalArgs, deployment: &str, given: Option<&str>) -> Result<String> {
    let o = overrides(None, given);
    let config = g.file.as_ref().map(|f| &f.config);
    Ok(hs_backup::resolve_pg_connection(config, Some(deployment), &o)?.value)
}

/// The deployment's entry in the config, if any.
pub fn deployment<'a>(g: &'a GlobalArgs, name: &str) -> Option<&'a hs_backup::DeploymentConfig> {
    g.file.as_ref().and_then(|f| f.config.deployment(name))
}
