//! `pg_hardstorage.yaml`: the config file's shape, where it is found, and how flags,
//! `PG_HARDSTORAGE_*` environment variables and the file combine.
//!
//! Precedence for a deployment's repository URL and connection string:
//! flag > environment variable > the deployment's entry > the file's top level.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hs_base::code;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::notify::{SinkConfig, DEFAULT_WAL_STALL_AFTER, EVENT_NAMES};
use hs_backup::validate_deployment;

/// The file name looked for in each search directory.
pub const CONFIG_FILE_NAME: &str = "pg_hardstorage.yaml";

/// Default for [`DeploymentConfig::backup_max_age`]: a daily backup plus two hours' slack.
pub const DEFAULT_BACKUP_MAX_AGE: Duration = Duration::from_secs(26 * 3600);

/// Default for [`DeploymentConfig::wal_max_age`].
pub const DEFAULT_WAL_MAX_AGE: Duration = Duration::from_secs(10 * 60);

/// The whole config file. Unknown keys are an error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Default repository URL for every deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// Keyring file (default: `~/.config/pg_hardstorage/keyring`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyring: Option<PathBuf>,
    /// Notification sinks for every deployment without its own `notifications:` list
    /// (and for `repo verify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<Vec<SinkConfig>>,
    /// Deployments by name.
    #[serde(default)]
    pub deployments: BTreeMap<String, DeploymentConfig>,
}

/// One deployment's entry under `deployments:`.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    /// libpq connection string or URL of a role with the REPLICATION attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_connection: Option<String>,
    /// Repository URL for this deployment (overrides the top-level `repo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// `wal stream --partial-interval`, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_interval: Option<f64>,
    /// `doctor` flags the newest backup when it is older than this (e.g. `26h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_max_age: Option<String>,
    /// `doctor` flags the newest archived WAL when it is older than this (e.g. `10m`)
    /// while the server has WAL the repository lacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_max_age: Option<String>,
    /// `wal stream` notifies a stall when no WAL became durable for this long (e.g.
    /// `5m`) while the server has more or while it is not connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_stall_after: Option<String>,
    /// This deployment's notification sinks; they replace the top-level list (`[]`:
    /// none for this deployment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<Vec<SinkConfig>>,
}

impl fmt::Debug for DeploymentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The connection string may hold a password: never print it.
        f.debug_struct("DeploymentConfig")
            .field(
                "pg_connection",
                &self.pg_connection.as_ref().map(|_| "<redacted>"),
            )
            .field("repo", &self.repo)
            .field("partial_interval", &self.partial_interval)
            .field("backup_max_age", &self.backup_max_age)
            .field("wal_max_age", &self.wal_max_age)
            .field("wal_stall_after", &self.wal_stall_after)
            .field("notifications", &self.notifications)
            .finish()
    }
}

impl DeploymentConfig {
    /// [`DeploymentConfig::backup_max_age`] parsed, or [`DEFAULT_BACKUP_MAX_AGE`].
    pub fn backup_max_age(&self) -> Duration {
        self.backup_max_age
            .as_deref()
            .and_then(|s| humantime::parse_duration(s).ok())
            .unwrap_or(DEFAULT_BACKUP_MAX_AGE)
    }

    /// [`DeploymentConfig::wal_max_age`] parsed, or [`DEFAULT_WAL_MAX_AGE`].
    pub fn wal_max_age(&self) -> Duration {
        self.wal_max_age
            .as_deref()
            .and_then(|s| humantime::parse_duration(s).ok())
            .unwrap_or(DEFAULT_WAL_MAX_AGE)
    }

    /// [`DeploymentConfig::wal_stall_after`] parsed, or [`DEFAULT_WAL_STALL_AFTER`].
    pub fn wal_stall_after(&self) -> Duration {
        self.wal_stall_after
            .as_deref()
            .and_then(|s| humantime::parse_duration(s).ok())
            .unwrap_or(DEFAULT_WAL_STALL_AFTER)
    }

    /// Whether the connection string carries a password of its own, or a notification
    /// sink a secret written into the file.
    pub fn has_password(&self) -> bool {
        self.pg_connection
            .as_deref()
            .is_some_and(conninfo_has_password)
            || has_inline_secret(&self.notifications)
    }
}

fn has_inline_secret(sinks: &Option<Vec<SinkConfig>>) -> bool {
    sinks.iter().flatten().any(SinkConfig::has_inline_secret)
}

/// Checks a `notifications:` list; `at` is where it is (`notifications`,
/// `deployments.main.notifications`).
fn check_sinks(
    sinks: &Option<Vec<SinkConfig>>,
    at: &str,
    origin: &Path,
    line: Option<usize>,
) -> Result<()> {
    for (i, sink) in sinks.iter().flatten().enumerate() {
        if let Err(e) = sink.check(&EVENT_NAMES) {
            return Err(invalid(origin, line, format!("{at}[{i}].{e}")));
        }
    }
    Ok(())
}

/// Whether a connection string spells out a password (environment and password files
/// are not consulted).
pub fn conninfo_has_password(conninfo: &str) -> bool {
    hs_proto::ConnConfig::parse_with_env(conninfo, &|_| None)
        .map(|c| c.password().is_some())
        // Unparseable: assume the worst, so the file is written 0600.
        .unwrap_or(true)
}

/// What `partial_interval` (and `wal stream --partial-interval`) accepts, as messages
/// say it.
pub const PARTIAL_INTERVAL_RULE: &str =
    "more than 0 and at most 3600 seconds (for example 0.5, 5 or 60)";

/// Whether `secs` is a valid partial interval ([`PARTIAL_INTERVAL_RULE`]).
pub fn partial_interval_ok(secs: f64) -> bool {
    secs.is_finite() && secs > 0.0 && secs <= 3600.0
}

fn invalid(path: &Path, line: Option<usize>, what: impl fmt::Display) -> Error {
    let at = match line {
        Some(l) => format!("{}:{l}", path.display()),
        None => path.display().to_string(),
    };
    Error::new(
        code::USAGE_CONFIG_INVALID,
        // A repository URL or conninfo quoted in `what` goes without its secrets.
        format!(
            "invalid config file {at}: {}",
            hs_repo::redact_text(&what.to_string())
        ),
    )
    .with_suggestion(format!(
        "fix {} (see docs/configuration.md for the keys), or point --config at another file",
        path.display()
    ))
}

/// The 1-based line of the first line whose trimmed text starts with `key:`.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let needle = format!("{key}:");
    text.lines()
        .position(|l| l.trim_start().starts_with(&needle))
        .map(|i| i + 1)
}

fn is_blank_yaml(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---"
    })
}

impl Config {
    /// Parses and checks a config file's text; `origin` names the file in errors,
    /// which carry the line and the field (`usage.config_invalid`).
    pub fn from_yaml(text: &str, origin: &Path) -> Result<Config> {
        if is_blank_yaml(text) {
            return Ok(Config::default());
        }
        let config: Config = serde_norway::from_str(text).map_err(|e| {
            let line = e.location().map(|l| l.line());
            // serde_norway appends " at line L column C"; the path already says where.
            let msg = e.to_string();
            let msg = match msg.rfind(" at line ") {
                Some(i) if line.is_some() => msg[..i].to_owned(),
                _ => msg,
            };
            // The one number field, partial_interval, in words rather than Rust's type.
            let msg = msg.replace("expected f64", "expected a number of seconds");
            invalid(origin, line, msg)
        })?;
        config.check(text, origin)?;
        Ok(config)
    }

    fn check(&self, text: &str, origin: &Path) -> Result<()> {
        if let Some(r) = &self.repo {
            check_url(r, origin, line_of(text, "repo"), "repo")?;
        }
        if self
            .keyring
            .as_ref()
            .is_some_and(|k| k.as_os_str().is_empty())
        {
            return Err(invalid(
                origin,
                line_of(text, "keyring"),
                "keyring: is empty",
            ));
        }
        check_sinks(
            &self.notifications,
            "notifications",
            origin,
            line_of(text, "notifications"),
        )?;
        for (name, d) in &self.deployments {
            let line = line_of(text, name);
            if validate_deployment(name).is_err() {
                return Err(invalid(
                    origin,
                    line,
                    format!(
                        "deployments.{name}: invalid deployment name (use 1 to 48 of a-z, 0-9, _)"
                    ),
                ));
            }
            let field = |f: &str| -> Option<usize> {
                let start = line.unwrap_or(1);
                text.lines()
                    .enumerate()
                    .skip(start)
                    .find(|(_, l)| l.trim_start().starts_with(&format!("{f}:")))
                    .map(|(i, _)| i + 1)
            };
            if let Some(r) = &d.repo {
                check_url(
                    r,
                    origin,
                    field("repo"),
                    &format!("deployments.{name}.repo"),
                )?;
            }
            if let Some(c) = &d.pg_connection {
                if let Err(e) = hs_proto::ConnConfig::parse_with_env(c, &|_| None) {
                    return Err(invalid(
                        origin,
                        field("pg_connection"),
                        format!("deployments.{name}.pg_connection: {e}"),
                    ));
                }
            }
            if let Some(p) = d.partial_interval.filter(|p| !partial_interval_ok(*p)) {
                return Err(invalid(
                    origin,
                    field("partial_interval"),
                    format!(
                        "deployments.{name}.partial_interval: {p} is out of range: it must be \
                         {PARTIAL_INTERVAL_RULE}"
                    ),
                ));
            }
            check_sinks(
                &d.notifications,
                &format!("deployments.{name}.notifications"),
                origin,
                field("notifications"),
            )?;
            for (key, v) in [
                ("backup_max_age", &d.backup_max_age),
                ("wal_max_age", &d.wal_max_age),
                ("wal_stall_after", &d.wal_stall_after),
            ] {
                if let Some(v) = v {
                    if humantime::parse_duration(v).is_err() {
                        return Err(invalid(
                            origin,
                            field(key),
                            format!(
                                "deployments.{name}.{key}: {v:?} is not a duration (write e.g. 26h, 90m, 1d)"
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The file's text as [`ConfigFile::save`] writes it.
    pub fn to_yaml(&self) -> Result<String> {
        let body = serde_norway::to_string(self).map_err(|e| {
            Error::new(
                code::INTERNAL_CONFIG_ENCODE_FAILED,
                format!("cannot encode the config: {e}"),
            )
        })?;
        Ok(format!(
            "# pg_hardstorage configuration (docs/configuration.md)\n{body}"
        ))
    }

    /// Whether any deployment's connection string holds a password, or a notification
    /// sink a secret written into the file (then the file is saved 0600).
    pub fn has_password(&self) -> bool {
        has_inline_secret(&self.notifications)
            || self
                .deployments
                .values()
                .any(DeploymentConfig::has_password)
    }

    /// The notification sinks of `deployment`: its own list when it has one, else the
    /// top-level list (also what `None`, e.g. `repo verify`, gets).
    pub fn notifications_for(&self, deployment: Option<&str>) -> &[SinkConfig] {
        deployment
            .and_then(|d| self.deployments.get(d))
            .and_then(|d| d.notifications.as_deref())
            .or(self.notifications.as_deref())
            .unwrap_or(&[])
    }

    /// The deployment's entry, if the file has one.
    pub fn deployment(&self, name: &str) -> Option<&DeploymentConfig> {
        self.deployments.get(name)
    }
}

fn check_url(url: &str, origin: &Path, line: Option<usize>, field: &str) -> Result<()> {
    if url.is_empty() || !url.contains("://") {
        return Err(invalid(
            origin,
            line,
            format!(
                "{field}: {:?} is not a repository URL (e.g. file:///var/lib/pg_hardstorage/repo)",
                hs_repo::redact_url(url)
            ),
        ));
    }
    Ok(())
}

/// A config file and where it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigFile {
    /// The file's path.
    pub path: PathBuf,
    /// Its contents.
    pub config: Config,
}

impl ConfigFile {
    /// Reads and checks the file at `path`: `notfound.config` if it does not exist,
    /// `io.config_read_failed` if it cannot be read, `usage.config_invalid` if it is
    /// not a valid config.
    pub fn load(path: &Path) -> Result<ConfigFile> {
        let text = match std::fs::read(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(e) => {
                    return Err(Error::new(
                        code::USAGE_CONFIG_INVALID,
                        format!(
                            "config file {} is not UTF-8 text (invalid byte at offset {})",
                            path.display(),
                            e.utf8_error().valid_up_to()
                        ),
                    )
                    .with_suggestion(
                        "pg_hardstorage.yaml is YAML in UTF-8; re-save it as UTF-8 or regenerate it with `pg_hardstorage init`",
                    ))
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::new(
                    code::NOTFOUND_CONFIG,
                    format!("config file {} does not exist", path.display()),
                )
                .with_suggestion(
                    "check the --config path (or PG_HARDSTORAGE_CONFIG), or create the file with `pg_hardstorage init`",
                ))
            }
            Err(e) => {
                return Err(Error::new(
                    code::IO_CONFIG_READ_FAILED,
                    format!("cannot read config file {}: {e}", path.display()),
                )
                .with_suggestion("check the file's permissions"))
            }
        };
        Ok(ConfigFile {
            path: path.to_path_buf(),
            config: Config::from_yaml(&text, path)?,
        })
    }

    /// Finds the config: `explicit` (from `--config` or `PG_HARDSTORAGE_CONFIG`) must
    /// exist; otherwise the first of [`search_paths`] that exists is read, and `None`
    /// means there is no config file.
    pub fn discover(explicit: Option<&Path>) -> Result<Option<ConfigFile>> {
        if let Some(p) = explicit {
            return ConfigFile::load(p).map(Some);
        }
        let paths = search_paths(
            std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from),
            std::env::var_os("HOME").map(PathBuf::from),
        );
        for p in paths {
            if p.is_file() {
                return ConfigFile::load(&p).map(Some);
            }
        }
        Ok(None)
    }

    /// Writes the file atomically (temporary file, fsync, rename, directory fsync:
    /// [`hs_base::fs::AtomicFile`]): mode 0600 when a connection string holds a
    /// password, else 0644.
    pub fn save(&self) -> Result<()> {
        let text = self.config.to_yaml()?;
        let mode = if self.config.has_password() {
            0o600
        } else {
            0o644
        };
        let fail = |what: &str, e: std::io::Error| {
            Error::new(
                code::IO_CONFIG_WRITE_FAILED,
                format!("cannot {what} {}: {e}", self.path.display()),
            )
            .with_suggestion(
                "check that the directory exists and is writable, or pass --config PATH",
            )
        };
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(|e| fail("create the directory of", e))?;
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| CONFIG_FILE_NAME.to_owned());
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        // One left by a crashed run with the same process id is replaced.
        let _ = std::fs::remove_file(&tmp);
        hs_base::fs::AtomicFile::new(&self.path, &tmp)
            .mode(mode)
            .write(text.as_bytes())
            .map_err(|e| fail("write", e))?;
        Ok(())
    }

    /// `p` as given when absolute, else relative to the file's directory (how a
    /// relative `keyring:` is read).
    pub fn relative(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            return p.to_path_buf();
        }
        match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.join(p),
            _ => p.to_path_buf(),
        }
    }

    /// Adds (or confirms) a deployment: an entry of the same name that differs is
    /// `conflict.config_deployment_exists`. Returns whether the config changed.
    pub fn add_deployment(&mut self, name: &str, entry: DeploymentConfig) -> Result<bool> {
        validate_deployment(name)?;
        match self.config.deployments.get(name) {
            Some(existing) if *existing == entry => Ok(false),
            Some(_) => Err(Error::new(
                code::CONFLICT_CONFIG_DEPLOYMENT_EXISTS,
                format!(
                    "{} already has a different entry for deployment {name}",
                    self.path.display()
                ),
            )
            .with_suggestion(format!(
                "edit deployments.{name} in {} by hand, or choose another deployment name",
                self.path.display()
            ))),
            None => {
                self.config.deployments.insert(name.to_owned(), entry);
                Ok(true)
            }
        }
    }
}

/// Where the config is looked for, in order: `./pg_hardstorage.yaml`,
/// `$XDG_CONFIG_HOME/pg_hardstorage/` (else `~/.config/pg_hardstorage/`), then
/// `/etc/pg_hardstorage/`.
pub fn search_paths(xdg_config_home: Option<PathBuf>, home: Option<PathBuf>) -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from(CONFIG_FILE_NAME)];
    let user = xdg_config_home
        .filter(|p| p.is_absolute())
        .or_else(|| home.map(|h| h.join(".config")));
    if let Some(u) = user {
        out.push(u.join("pg_hardstorage").join(CONFIG_FILE_NAME));
    }
    out.push(Path::new("/etc/pg_hardstorage").join(CONFIG_FILE_NAME));
    out
}

/// Where a resolved setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// A `PG_HARDSTORAGE_*` environment variable.
    Env,
    /// The deployment's entry in the config file.
    Deployment,
    /// The config file's top level.
    TopLevel,
}

impl Source {
    /// `"flag"`, `"env"`, `"deployment"` or `"top_level"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Env => "env",
            Source::Deployment => "deployment",
            Source::TopLevel => "top_level",
        }
    }
}

/// Values given outside the config file: flags and environment variables.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--repo`.
    pub repo_flag: Option<String>,
    /// `PG_HARDSTORAGE_REPO`.
    pub repo_env: Option<String>,
    /// `--pg-connection`.
    pub pg_connection_flag: Option<String>,
    /// `PG_HARDSTORAGE_PG_CONNECTION`.
    pub pg_connection_env: Option<String>,
}

impl fmt::Debug for Overrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hide = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("Overrides")
            .field("repo_flag", &self.repo_flag)
            .field("repo_env", &self.repo_env)
            .field("pg_connection_flag", &hide(&self.pg_connection_flag))
            .field("pg_connection_env", &hide(&self.pg_connection_env))
            .finish()
    }
}

/// The repository URL environment variable.
pub const ENV_REPO: &str = "PG_HARDSTORAGE_REPO";
/// The connection string environment variable.
pub const ENV_PG_CONNECTION: &str = "PG_HARDSTORAGE_PG_CONNECTION";
/// The config file environment variable (same as `--config`).
pub const ENV_CONFIG: &str = "PG_HARDSTORAGE_CONFIG";

impl Overrides {
    /// Flags as given plus the environment read through `env`; empty values count as unset.
    pub fn new(
        repo_flag: Option<&str>,
        pg_connection_flag: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Overrides {
        let some = |s: Option<String>| s.filter(|v| !v.is_empty());
        Overrides {
            repo_flag: some(repo_flag.map(str::to_owned)),
            repo_env: some(env(ENV_REPO)),
            pg_connection_flag: some(pg_connection_flag.map(str::to_owned)),
            pg_connection_env: some(env(ENV_PG_CONNECTION)),
        }
    }
}

/// A setting and where it came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The value.
    pub value: String,
    /// Its source.
    pub source: Source,
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Used for connection strings too: show only where it came from.
        f.debug_struct("Resolved")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

fn pick(
    flag: &Option<String>,
    env: &Option<String>,
    dep: Option<&String>,
    top: Option<&String>,
) -> Option<Resolved> {
    let r = |v: &String, source| Resolved {
        value: v.clone(),
        source,
    };
    flag.as_ref()
        .map(|v| r(v, Source::Flag))
        .or_else(|| env.as_ref().map(|v| r(v, Source::Env)))
        .or_else(|| dep.map(|v| r(v, Source::Deployment)))
        .or_else(|| top.map(|v| r(v, Source::TopLevel)))
}

/// The repository URL for `deployment`: flag > env > deployment entry > top level;
/// `usage.repo_missing` when none gives one.
pub fn resolve_repo(
    config: Option<&Config>,
    deployment: Option<&str>,
    o: &Overrides,
) -> Result<Resolved> {
    let dep = config.and_then(|c| deployment.and_then(|d| c.deployments.get(d)));
    pick(
        &o.repo_flag,
        &o.repo_env,
        dep.and_then(|d| d.repo.as_ref()),
        config.and_then(|c| c.repo.as_ref()),
    )
    .ok_or_else(|| {
        let under = deployment.map_or("deployments.<name>".to_owned(), |d| format!("deployments.{d}"));
        Error::new(
            code::USAGE_REPO_MISSING,
            "no repository URL was given",
        )
        .with_suggestion(format!(
            "pass --repo URL, set {ENV_REPO}, or add `repo: URL` to pg_hardstorage.yaml (top level or under {under})"
        ))
    })
}

/// The connection string for `deployment`: flag > env > deployment entry;
/// `usage.pg_connection_missing` when none gives one.
pub fn resolve_pg_connection(
    config: Option<&Config>,
    deployment: Option<&str>,
    o: &Overrides,
) -> Result<Resolved> {
    let dep = config.and_then(|c| deployment.and_then(|d| c.deployments.get(d)));
    pick(
        &o.pg_connection_flag,
        &o.pg_connection_env,
        dep.and_then(|d| d.pg_connection.as_ref()),
        None,
    )
    .ok_or_else(|| {
        let under = deployment.map_or("deployments.<name>".to_owned(), |d| format!("deployments.{d}"));
        Error::new(
            code::USAGE_PG_CONNECTION_MISSING,
            "no PostgreSQL connection string was given",
        )
        .with_suggestion(format!(
            "pass --pg-connection CONN, set {ENV_PG_CONNECTION}, or add `pg_connection: CONN` under {under} in pg_hardstorage.yaml"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# comment
repo: file:///srv/top
keyring: /etc/pg_hardstorage/keyring
deployments:
  main:
    pg_connection: \"host=db1 user=hs_repl\"
    repo: file:///srv/main
    backup_max_age: 2h
  other:
    pg_connection: host=db2 user=hs_repl
";

    fn cfg() -> Config {
        Config::from_yaml(SAMPLE, Path::new("/x/pg_hardstorage.yaml")).unwrap()
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn parses_the_documented_shape() {
        let c = cfg();
        assert_eq!(c.repo.as_deref(), Some("file:///srv/top"));
        assert_eq!(c.deployments.len(), 2);
        let main = c.deployment("main").unwrap();
        assert_eq!(main.backup_max_age(), Duration::from_secs(7200));
        assert_eq!(main.wal_max_age(), DEFAULT_WAL_MAX_AGE);
        assert!(!c.has_password());
    }

    #[test]
    fn flag_beats_env_beats_deployment_beats_top_level() {
        let c = cfg();
        let env = env_of(&[
            (ENV_REPO, "file:///env"),
            (ENV_PG_CONNECTION, "host=envhost"),
        ]);
        let o = Overrides::new(Some("file:///flag"), Some("host=flaghost"), &env);
        let r = resolve_repo(Some(&c), Some("main"), &o).unwrap();
        assert_eq!((r.value.as_str(), r.source), ("file:///flag", Source::Flag));
        let p = resolve_pg_connection(Some(&c), Some("main"), &o).unwrap();
        assert_eq!(
            (p.value.as_str(), p.source),
            ("host=flaghost", Source::Flag)
        );

        let o = Overrides::new(None, None, &env);
        let r = resolve_repo(Some(&c), Some("main"), &o).unwrap();
        assert_eq!((r.value.as_str(), r.source), ("file:///env", Source::Env));
        let p = resolve_pg_connection(Some(&c), Some("main"), &o).unwrap();
        assert_eq!((p.value.as_str(), p.source), ("host=envhost", Source::Env));

        let o = Overrides::new(None, None, &env_of(&[]));
        let r = resolve_repo(Some(&c), Some("main"), &o).unwrap();
        assert_eq!(
            (r.value.as_str(), r.source),
            ("file:///srv/main", Source::Deployment)
        );
        let r = resolve_repo(Some(&c), Some("other"), &o).unwrap();
        assert_eq!(
            (r.value.as_str(), r.source),
            ("file:///srv/top", Source::TopLevel)
        );
        let p = resolve_pg_connection(Some(&c), Some("other"), &o).unwrap();
        assert_eq!(p.value, "host=db2 user=hs_repl");
        assert_eq!(p.source, Source::Deployment);
    }

    #[test]
    fn empty_values_count_as_unset() {
        let env = env_of(&[(ENV_REPO, "")]);
        let o = Overrides::new(Some(""), None, &env);
        assert_eq!(o, Overrides::default());
    }

    #[test]
    fn missing_values_name_every_way_to_give_them() {
        let o = Overrides::default();
        let e = resolve_repo(None, Some("main"), &o).unwrap_err();
        assert_eq!(e.code(), "usage.repo_missing");
        let s = e.suggestion().unwrap();
        assert!(s.contains("--repo") && s.contains(ENV_REPO) && s.contains("deployments.main"));
        let c = cfg();
        let e = resolve_pg_connection(Some(&c), Some("nosuch"), &o).unwrap_err();
        assert_eq!(e.code(), "usage.pg_connection_missing");
        let s = e.suggestion().unwrap();
        assert!(s.contains("--pg-connection") && s.contains(ENV_PG_CONNECTION));
    }

    #[test]
    fn unknown_keys_are_rejected_with_file_line_and_field() {
        let text = "repo: file:///r\ndeployments:\n  main:\n    pg_conection: host=x\n";
        let e = Config::from_yaml(text, Path::new("/etc/p.yaml")).unwrap_err();
        assert_eq!(e.code(), "usage.config_invalid");
        let m = e.to_string();
        assert!(m.contains("/etc/p.yaml:4"), "{m}");
        assert!(m.contains("pg_conection"), "{m}");
        let e = Config::from_yaml("repos: file:///r\n", Path::new("/p.yaml")).unwrap_err();
        assert!(e.to_string().contains("/p.yaml:1"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_line() {
        let text = "deployments:\n  main:\n    repo: file:///r\n    wal_max_age: soon\n";
        let e = Config::from_yaml(text, Path::new("/p.yaml")).unwrap_err();
        assert!(e.to_string().contains("/p.yaml:4"), "{e}");
        assert!(e.to_string().contains("wal_max_age"), "{e}");
        let text = "deployments:\n  Main:\n    repo: file:///r\n";
        let e = Config::from_yaml(text, Path::new("/p.yaml")).unwrap_err();
        assert!(e.to_string().contains("/p.yaml:2"), "{e}");
        let e = Config::from_yaml("repo: /no/scheme\n", Path::new("/p.yaml")).unwrap_err();
        assert_eq!(e.code(), "usage.config_invalid");
    }

    #[test]
    fn partial_interval_errors_say_what_is_allowed() {
        for bad in ["0", "-1", "3601", ".nan"] {
            let text = format!("deployments:\n  main:\n    partial_interval: {bad}\n");
            let e = Config::from_yaml(&text, Path::new("/p.yaml")).unwrap_err();
            let m = e.to_string();
            assert!(m.contains("/p.yaml:3"), "{m}");
            assert!(
                m.contains("must be more than 0 and at most 3600 seconds"),
                "{bad}: {m}"
            );
            assert!(!m.contains("between 0 and"), "{m}");
        }
        let text = "deployments:\n  main:\n    partial_interval: fast\n";
        let e = Config::from_yaml(text, Path::new("/p.yaml")).unwrap_err();
        assert!(
            e.to_string().contains("expected a number of seconds"),
            "{e}"
        );
        for good in ["0.01", "5", "3600"] {
            let text = format!("deployments:\n  main:\n    partial_interval: {good}\n");
            Config::from_yaml(&text, Path::new("/p.yaml")).unwrap();
        }
    }

    const SINKS: &str = "\
notifications:
  - type: webhook
    name: ops
    url: https://hooks.example.com/hs?token=UrlTokenZQX
    secret: HmacSecretZQX
    on: [failure, warning, backup.succeeded]
    timeout: 3s
  - type: email
    host: smtp.example.com
    from: hs@example.com
    to: [dba@example.com, oncall@example.com]
    username: hs
    password_file: smtp.password
deployments:
  main:
    repo: file:///r
    wal_stall_after: 2m
  quiet:
    repo: file:///r
    notifications: []
  own:
    repo: file:///r
    notifications:
      - type: slack
        url_env: HS_SLACK_URL
        on: [all]
";

    #[test]
    fn notification_sinks_parse_and_deployments_replace_the_top_level_list() {
        let c = Config::from_yaml(SINKS, Path::new("/etc/p.yaml")).unwrap();
        let top = c.notifications_for(None);
        assert_eq!(top.len(), 2);
        assert_eq!(c.notifications_for(Some("main")), top);
        assert_eq!(c.notifications_for(Some("nosuch")), top);
        assert!(c.notifications_for(Some("quiet")).is_empty());
        let own = c.notifications_for(Some("own"));
        assert_eq!(own.len(), 1);
        assert_eq!(own[0].kind(), crate::notify::SinkKind::Slack);
        use crate::notify::Severity;
        assert!(top[0].wants("backup.succeeded", Severity::Success));
        assert!(!top[0].wants("backup_verify.succeeded", Severity::Success));
        assert!(top[1].wants("backup.failed", Severity::Failure));
        assert!(!top[1].wants("backup.succeeded", Severity::Success));
        // The all-clear of a warning goes where the warning went.
        assert!(top[1].wants("wal_stream.recovered", Severity::Success));
        assert!(top[0].wants("wal_stream.recovered", Severity::Success));
        let failures_only = crate::notify::SinkConfig {
            on: Some(vec!["failure".into()]),
            ..top[0].clone()
        };
        assert!(!failures_only.wants("wal_stream.recovered", Severity::Success));
        assert!(!failures_only.wants("wal_stream.stalled", Severity::Warning));
        assert_eq!(top[0].timeout(), Duration::from_secs(3));
        assert_eq!(
            c.deployment("main").unwrap().wal_stall_after(),
            Duration::from_secs(120)
        );
        // Inline secrets make the file 0600, and never show in Debug.
        assert!(c.has_password());
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("UrlTokenZQX") && !dbg.contains("HmacSecretZQX"),
            "{dbg}"
        );
    }

    #[test]
    fn saving_keeps_the_sinks_and_an_inline_secret_makes_the_file_0600() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = ConfigFile {
            path: dir.path().join("pg_hardstorage.yaml"),
            config: Config::from_yaml(SINKS, Path::new("/etc/p.yaml")).unwrap(),
        };
        // What init does: add a deployment, save.
        let entry = DeploymentConfig {
            repo: Some("file:///other".into()),
            ..Default::default()
        };
        assert!(f.add_deployment("added", entry).unwrap());
        f.save().unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&f.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = ConfigFile::load(&f.path).unwrap();
        assert_eq!(back.config, f.config);
        assert_eq!(back.config.notifications_for(Some("added")).len(), 2);
        // Secrets only in *_file and *_env: 0644 as before.
        let text = "notifications:\n  - type: slack\n    url_file: /etc/slack.url\n";
        f.config = Config::from_yaml(text, Path::new("/p.yaml")).unwrap();
        f.save().unwrap();
        let mode = std::fs::metadata(&f.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }

    #[test]
    fn bad_sinks_name_the_key_and_never_the_secret() {
        let cases = [
            ("- type: webhook\n    url: ftp://x/TokenZQX1\n", "notifications[0].url: is not an http"),
            ("- type: webhook\n    url: https://x/\n    url_env: X\n", "only one of url, url_file and url_env"),
            ("- url: https://x/\n", "notifications[0].type: is missing"),
            ("- type: slack\n    url: https://x/\n    secret: TokenZQX1\n", "secret: is not a key of a slack sink"),
            ("- type: webhook\n    url: https://x/\n    to: [a@b]\n", "to: is not a key of a webhook sink"),
            ("- type: webhook\n    url: https://x/\n    on: [failures]\n", "\"failures\" is neither"),
            ("- type: webhook\n    url: https://x/\n    timeout: 2h\n", "at most 60s"),
            ("- type: email\n    host: h\n    from: a@b\n", "to: is missing"),
            ("- type: email\n    host: h\n    from: Alice <a@b>\n    to: [c@d]\n", "not an e-mail address"),
            (
                "- type: email\n    host: h\n    from: a@b\n    to: [c@d]\n    starttls: off\n    username: u\n    password: TokenZQX1\n",
                "never sent unencrypted",
            ),
            ("- type: email\n    host: h\n    from: a@b\n    to: [c@d]\n    password: TokenZQX1\n", "without username"),
            ("- type: email\n    host: h\n    from: a@b\n    to: [c@d]\n    starttls: maybe\n", "starttls"),
            ("- type: pager\n", "unknown variant"),
        ];
        for (sink, want) in cases {
            let text = format!("repo: file:///r\nnotifications:\n  {sink}");
            let e = Config::from_yaml(&text, Path::new("/p.yaml")).unwrap_err();
            assert_eq!(e.code(), "usage.config_invalid", "{sink}");
            let m = e.to_string();
            assert!(m.contains(want), "{sink}: {m}");
            assert!(m.contains("/p.yaml:"), "{m}");
            assert!(!m.contains("TokenZQX1"), "{m}");
        }
        let text = "deployments:\n  main:\n    notifications:\n      - type: slack\n";
        let e = Config::from_yaml(text, Path::new("/p.yaml")).unwrap_err();
        assert!(
            e.to_string()
                .contains("deployments.main.notifications[0].url: is missing"),
            "{e}"
        );
        let text = "deployments:\n  main:\n    wal_stall_after: never\n";
        let e = Config::from_yaml(text, Path::new("/p.yaml")).unwrap_err();
        assert!(e.to_string().contains("wal_stall_after"), "{e}");
    }

    #[test]
    fn blank_files_are_empty_configs() {
        for t in ["", "# nothing\n\n", "---\n"] {
            assert_eq!(
                Config::from_yaml(t, Path::new("/p")).unwrap(),
                Config::default()
            );
        }
    }

    #[test]
    fn round_trips_and_adds_deployments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pg_hardstorage.yaml");
        let mut f = ConfigFile {
            path: path.clone(),
            config: cfg(),
        };
        let entry = DeploymentConfig {
            pg_connection: Some("host=db3 password=s3cret".into()),
            ..Default::default()
        };
        assert!(f.add_deployment("third", entry.clone()).unwrap());
        assert!(!f.add_deployment("third", entry).unwrap());
        let clash = DeploymentConfig {
            pg_connection: Some("host=elsewhere".into()),
            ..Default::default()
        };
        let e = f.add_deployment("main", clash).unwrap_err();
        assert_eq!(e.code(), "conflict.config_deployment_exists");
        f.save().unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a password in the file makes it 0600");
        let back = ConfigFile::load(&path).unwrap();
        assert_eq!(back.config, f.config);
        let dbg = format!("{back:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
    }

    #[test]
    fn explicit_missing_file_is_notfound() {
        let e =
            ConfigFile::discover(Some(Path::new("/nonexistent/pg_hardstorage.yaml"))).unwrap_err();
        assert_eq!(e.code(), "notfound.config");
    }

    #[test]
    fn search_order() {
        let p = search_paths(None, Some(PathBuf::from("/home/u")));
        assert_eq!(
            p,
            vec![
                PathBuf::from("pg_hardstorage.yaml"),
                PathBuf::from("/home/u/.config/pg_hardstorage/pg_hardstorage.yaml"),
                PathBuf::from("/etc/pg_hardstorage/pg_hardstorage.yaml"),
            ]
        );
        let p = search_paths(Some(PathBuf::from("/xdg")), Some(PathBuf::from("/home/u")));
        assert_eq!(
            p[1],
            PathBuf::from("/xdg/pg_hardstorage/pg_hardstorage.yaml")
        );
    }
}
