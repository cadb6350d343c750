//! [`Settings`]: the loaded config file plus the keyring, and the one place where a
//! deployment's repository URL, connection string and keyring are resolved
//! (flag > `PG_HARDSTORAGE_*` env > the deployment's entry > the file's top level).

use std::path::{Path, PathBuf};

use crate::config::{resolve_pg_connection, resolve_repo, Config, ConfigFile, DeploymentConfig};
use crate::config::{Overrides, Resolved};
use crate::error::Result;

/// What a command or the API server resolves its settings from: the config file (if
/// any) and the keyring given by flag or environment.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The config file that was loaded, if any.
    pub file: Option<ConfigFile>,
    /// The keyring given by flag or environment, else the config's `keyring:` (a
    /// relative path there is relative to the file).
    keyring: Option<PathBuf>,
}

impl Settings {
    /// Settings from an already loaded file (or none) and the keyring flag.
    pub fn new(file: Option<ConfigFile>, keyring_flag: Option<PathBuf>) -> Settings {
        let keyring = keyring_flag.or_else(|| {
            let f = file.as_ref()?;
            f.config.keyring.as_ref().map(|k| f.relative(k))
        });
        Settings { file, keyring }
    }

    /// Finds and loads the config ([`ConfigFile::discover`]: `config` from `--config` or
    /// `PG_HARDSTORAGE_CONFIG` must exist, else the search path) and takes the keyring
    /// from it when `keyring_flag` is `None`.
    pub fn load(config: Option<&Path>, keyring_flag: Option<PathBuf>) -> Result<Settings> {
        Ok(Settings::new(ConfigFile::discover(config)?, keyring_flag))
    }

    /// The loaded config, if any.
    pub fn config(&self) -> Option<&Config> {
        self.file.as_ref().map(|f| &f.config)
    }

    /// The deployment's entry in the config, if any.
    pub fn deployment(&self, name: &str) -> Option<&DeploymentConfig> {
        self.config().and_then(|c| c.deployment(name))
    }

    /// `named` alone, else every deployment of the config (in name order).
    pub fn deployment_names(&self, named: Option<&str>) -> Vec<String> {
        match named {
            Some(d) => vec![d.to_owned()],
            None => self
                .config()
                .map(|c| c.deployments.keys().cloned().collect())
                .unwrap_or_default(),
        }
    }

    /// The notification sinks of `deployment` (its own list, else the top level; `None`:
    /// the top level), relative `*_file` paths read relative to the config file.
    pub fn notifier(&self, deployment: Option<&str>) -> crate::notify::Notifier {
        let Some(f) = &self.file else {
            return crate::notify::Notifier::default();
        };
        crate::notify::Notifier::new(
            f.config.notifications_for(deployment).to_vec(),
            f.path.parent().map(Path::to_path_buf),
        )
    }

    /// The stall and lag limits of `deployment`'s stream notifications
    /// (`wal_stall_after`, `wal_max_age`; defaults without an entry).
    pub fn stream_thresholds(&self, deployment: &str) -> crate::notify::StreamThresholds {
        let d = self.deployment(deployment).cloned().unwrap_or_default();
        crate::notify::StreamThresholds {
            stall_after: d.wal_stall_after(),
            max_lag: d.wal_max_age(),
        }
    }

    /// The keyring file: flag or environment, else the config's, else
    /// [`hs_crypt::Keyring::default_path`].
    pub fn keyring_path(&self) -> PathBuf {
        self.keyring
            .clone()
            .unwrap_or_else(hs_crypt::Keyring::default_path)
    }

    /// `repo_flag` and `pg_connection_flag` plus the process environment
    /// (`PG_HARDSTORAGE_REPO`, `PG_HARDSTORAGE_PG_CONNECTION`); empty counts as unset.
    pub fn overrides(repo_flag: Option<&str>, pg_connection_flag: Option<&str>) -> Overrides {
        Overrides::new(repo_flag, pg_connection_flag, &|k| std::env::var(k).ok())
    }

    /// The repository URL of `deployment` (or the top-level one without a deployment)
    /// and where it came from; `usage.repo_missing` when nothing gives one.
    pub fn resolve_repo(&self, deployment: Option<&str>, flag: Option<&str>) -> Result<Resolved> {
        resolve_repo(self.config(), deployment, &Settings::overrides(flag, None))
    }

    /// The repository URL (see [`Settings::resolve_repo`]).
    pub fn repo_url(&self, deployment: Option<&str>, flag: Option<&str>) -> Result<String> {
        Ok(self.resolve_repo(deployment, flag)?.value)
    }

    /// The connection string of `deployment` and where it came from;
    /// `usage.pg_connection_missing` when nothing gives one.
    pub fn resolve_pg_connection(&self, deployment: &str, flag: Option<&str>) -> Result<Resolved> {
        resolve_pg_connection(
            self.config(),
            Some(deployment),
            &Settings::overrides(None, flag),
        )
    }

    /// The connection string (see [`Settings::resolve_pg_connection`]).
    pub fn pg_connection(&self, deployment: &str, flag: Option<&str>) -> Result<String> {
        Ok(self.resolve_pg_connection(deployment, flag)?.value)
    }

    /// The connection string parsed (see [`Settings::resolve_pg_connection`]).
    pub fn conn_config(
        &self,
        deployment: &str,
        flag: Option<&str>,
    ) -> Result<hs_proto::ConnConfig> {
        hs_proto::ConnConfig::parse(&self.pg_connection(deployment, flag)?)
    }

    /// Loads the keyring ([`Settings::keyring_path`]).
    pub fn load_keyring(&self) -> Result<hs_crypt::Keyring> {
        hs_crypt::Keyring::load(&self.keyring_path())
    }

    /// Opens the repository of `deployment` ([`Settings::repo_url`]) with the keyring.
    pub async fn open_repo(
        &self,
        deployment: Option<&str>,
        flag: Option<&str>,
    ) -> Result<hs_repo::Repository> {
        self.open_url(&self.repo_url(deployment, flag)?).await
    }

    /// Opens the repository at `url` (already resolved) with the keyring.
    pub async fn open_url(&self, url: &str) -> Result<hs_repo::Repository> {
        let keyring = self.load_keyring()?;
        hs_repo::Repository::open(url, &keyring).await
    }
}

/// A deployment with its settings resolved, as the API server serves it: its name,
/// repository URL and (for backup triggers) the libpq connection string of a
/// REPLICATION role. `Debug` hides the connection string.
#[derive(Clone)]
pub struct Deployment {
    /// Deployment name.
    pub name: String,
    /// Repository URL.
    pub repo: String,
    /// libpq connection string or URL; `None` means backups cannot be triggered.
    pub pg_connection: Option<String>,
    /// Where the outcome of a backup or verify job is sent ([`Settings::notifier`]).
    pub notifier: crate::notify::Notifier,
}

impl Deployment {
    /// A deployment without a connection string.
    pub fn new(name: impl Into<String>, repo: impl Into<String>) -> Deployment {
        Deployment {
            name: name.into(),
            repo: repo.into(),
            pg_connection: None,
            notifier: crate::notify::Notifier::default(),
        }
    }
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("name", &self.name)
            .field("repo", &hs_repo::redact_url(&self.repo))
            .field(
                "pg_connection",
                &self.pg_connection.as_ref().map(|_| "<redacted>"),
            )
            .field("notifier", &self.notifier)
            .finish()
    }
}

impl Settings {
    /// The deployments of the config plus `extra`, in name order, each with its
    /// repository URL ([`Settings::repo_url`]) and its own connection string, which
    /// `PG_HARDSTORAGE_PG_CONNECTION` only fills in where the config has none.
    pub fn deployments(
        &self,
        extra: &[String],
        repo_flag: Option<&str>,
    ) -> Result<Vec<Deployment>> {
        let mut names: std::collections::BTreeSet<String> = self
            .config()
            .map(|c| c.deployments.keys().cloned().collect())
            .unwrap_or_default();
        names.extend(extra.iter().cloned());
        let env_conn = std::env::var(crate::config::ENV_PG_CONNECTION)
            .ok()
            .filter(|v| !v.is_empty());
        let mut deployments = Vec::new();
        for name in &names {
            hs_backup::validate_deployment(name)?;
            let repo = self.repo_url(Some(name), repo_flag)?;
            let pg_connection = self
                .deployment(name)
                .and_then(|d| d.pg_connection.clone())
                .or_else(|| env_conn.clone());
            deployments.push(Deployment {
                name: name.clone(),
                repo,
                pg_connection,
                notifier: self.notifier(Some(name)),
            });
        }
        Ok(deployments)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyring_flag_beats_the_config_whose_relative_path_is_relative_to_it() {
        let file = ConfigFile {
            path: PathBuf::from("/etc/pg_hardstorage/pg_hardstorage.yaml"),
            config: Config {
                keyring: Some(PathBuf::from("keyring")),
                ..Config::default()
            },
        };
        let s = Settings::new(Some(file.clone()), None);
        assert_eq!(
            s.keyring_path(),
            PathBuf::from("/etc/pg_hardstorage/keyring")
        );
        let s = Settings::new(Some(file), Some(PathBuf::from("/k")));
        assert_eq!(s.keyring_path(), PathBuf::from("/k"));
        let s = Settings::new(None, None);
        assert_eq!(s.keyring_path(), hs_crypt::Keyring::default_path());
    }
}
