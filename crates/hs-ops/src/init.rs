//! `init`'s work once its questions are answered: the deployment's entry in the config
//! file, then PostgreSQL's preflight, the keyring and the repository (created when
//! absent), then the config file written. The first backup and the questions stay with
//! the caller.

use std::path::{Path, PathBuf};

use hs_base::code;

use crate::config::{Config, ConfigFile, DeploymentConfig};
use crate::error::{Error, Result};

/// The config file `init` writes to, as it is now: `path`, read when it exists (`found`
/// is the file discovery found, reused when it is the same path), else an empty config.
pub fn config_to_write(path: &Path, found: Option<&ConfigFile>) -> Result<ConfigFile> {
    if !path.exists() {
        return Ok(ConfigFile {
            path: path.to_path_buf(),
            config: Config::default(),
        });
    }
    match found {
        Some(f) if f.path == path => Ok(f.clone()),
        _ => ConfigFile::load(path),
    }
}

/// The config file `init` starts from: an explicit `--config` (which may not exist yet:
/// init creates it), else the one discovery finds.
pub fn existing_config(explicit: Option<&Path>) -> Result<Option<ConfigFile>> {
    match explicit {
        Some(p) if !p.exists() => Ok(None),
        Some(p) => ConfigFile::load(p).map(Some),
        None => ConfigFile::discover(None),
    }
}

/// The deployment's entry added to `file` (not yet written).
#[derive(Debug, Clone)]
pub struct InitEntry {
    /// The keyring given by flag or the file, if any (else the caller's default).
    pub keyring: Option<PathBuf>,
    /// The file did not exist: it is created with `repo:` (and `keyring:`) at top level.
    pub new_file: bool,
    /// Whether the config changed (and is to be written).
    pub changed: bool,
}

/// Adds `deployment` (connection `pg`, repository `url`) to `file`: a new file gets
/// the URL (and the keyring given by `keyring_flag`, made absolute) at its top level;
/// the entry names the URL only when it differs from the top level's. A clash with a
/// different entry of the same name is `conflict.config_deployment_exists`, before
/// anything else is touched; an I/O error making the keyring path absolute comes back
/// as the caller's `E`.
pub fn add_init_entry<E>(
    file: &mut ConfigFile,
    deployment: &str,
    pg: &str,
    url: &str,
    keyring_flag: Option<PathBuf>,
) -> std::result::Result<InitEntry, E>
where
    E: From<Error> + From<std::io::Error>,
{
    let known = file.config.deployment(deployment).cloned();
    let keyring = keyring_flag.or_else(|| file.config.keyring.as_ref().map(|k| file.relative(k)));
    let new_file = !file.path.exists();
    if new_file {
        file.config.repo = Some(url.to_owned());
        if let Some(k) = &keyring {
            file.config.keyring = Some(std::path::absolute(k)?);
        }
    }
    let entry = DeploymentConfig {
        pg_connection: Some(pg.to_owned()),
        repo: (file.config.repo.as_deref() != Some(url)).then(|| url.to_owned()),
        ..known.unwrap_or_default()
    };
    let changed = file.add_deployment(deployment, entry)?;
    Ok(InitEntry {
        keyring,
        new_file,
        changed,
    })
}

/// What [`init_repository`] found and made.
#[derive(Debug)]
pub struct InitSetup {
    /// The connection.
    pub conn: hs_proto::ConnConfig,
    /// PostgreSQL's preflight (no fatal findings).
    pub preflight: hs_backup::PreflightReport,
    /// The preflight's warnings, `message [code]`.
    pub warnings: Vec<String>,
    /// The repository, opened.
    pub repo: hs_repo::Repository,
    /// Whether it was created now.
    pub repo_created: bool,
    /// Whether the keyring was created now.
    pub keyring_created: bool,
}

/// PostgreSQL's preflight for `deployment` over `pg` (fatal findings are the error),
/// then the keyring at `keyring` and the repository at `url`, each created when absent.
pub async fn init_repository(
    pg: &str,
    deployment: &str,
    url: &str,
    keyring: &Path,
) -> Result<InitSetup> {
    // 1. PostgreSQL: version, settings, role (fatal findings stop here, exit 4).
    let conn = hs_proto::ConnConfig::parse(pg)?;
    let preflight = hs_backup::preflight(&conn, deployment).await?;
    if let Some(e) = preflight.to_error() {
        return Err(e);
    }
    let warnings: Vec<String> = preflight
        .findings
        .iter()
        .filter(|f| f.severity == hs_backup::Severity::Warning)
        .map(|f| format!("{} [{}]", f.message, f.code))
        .collect();

    // 2. Keyring and repository: create what is absent, open what is there.
    let (keyring, keyring_created) = hs_crypt::Keyring::load_or_create(keyring)?;
    let (repo, repo_created) = match hs_repo::Repository::open(url, &keyring).await {
        Ok(r) => (r, false),
        Err(e) if e.code() == code::NOTFOUND_REPO => {
            (hs_repo::Repository::init(url, &keyring).await?, true)
        }
        Err(e) => return Err(e),
    };
    Ok(InitSetup {
        conn,
        preflight,
        warnings,
        repo,
        repo_created,
        keyring_created,
    })
}
