//! hs-ops: the operations both faces of pg_hardstorage run — the `pg_hardstorage` CLI
//! and the REST API of `pg_hardstorage serve` (hs-api).
//!
//! - [`ConfigFile`] finds and reads `pg_hardstorage.yaml`; [`Settings`] resolves a
//!   deployment's repository URL, connection string and keyring from flags,
//!   `PG_HARDSTORAGE_*` variables and the file, in one place.
//! - [`diagnose`] (doctor) and [`deployment_status`] (status) report on a deployment.
//! - [`restore`] runs a restore end to end (plan, recovery settings, restore, verify,
//!   a restore_command probe); the API's restore preview plans with [`plan_restore`].
//! - [`notify`] sends events (backup, verify, WAL stream) to the webhook, Slack and
//!   e-mail sinks configured under `notifications:`.
//! - [`add_init_entry`] and [`init_repository`] are `init`'s work once its questions are
//!   answered: the config entry, preflight, keyring and repository.
//!
//! The invariant: the CLI and the API call the same functions here; the CLI only parses
//! arguments and prints, the API only routes requests and shapes JSON.
//!
//! ```no_run
//! # async fn demo() -> hs_ops::Result<()> {
//! let settings = hs_ops::Settings::load(None, None)?;
//! let repo = settings.open_repo(Some("main"), None).await?;
//! let status = hs_ops::deployment_status(&repo, "main", None, std::time::Duration::from_secs(5)).await?;
//! println!("{} backups", status.backups);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod config;
mod doctor;
mod error;
mod init;
mod listen;
mod metrics;
mod names;
pub mod notify;
mod restore;
mod schedule;
mod settings;
mod space;
mod status;

pub use config::{
    conninfo_has_password, resolve_pg_connection, resolve_repo, search_paths, Config, ConfigFile,
    DeploymentConfig, Overrides, Resolved, Source, CONFIG_FILE_NAME, DEFAULT_BACKUP_MAX_AGE,
    DEFAULT_WAL_MAX_AGE, ENV_CONFIG, ENV_PG_CONNECTION, ENV_REPO,
};
pub use config::{partial_interval_ok, PARTIAL_INTERVAL_RULE};
pub use doctor::{
    diagnose, doctor, format_age, human_bytes, probe_slot, Check, CheckState, DeploymentReport,
    DoctorRequest, DoctorTarget, ServerInfo, SlotProbe,
};
pub use error::{Error, ErrorKind, Result};
pub use init::{
    add_init_entry, config_to_write, existing_config, init_repository, InitEntry, InitSetup,
};
pub use listen::{serve_connections, until_true};
pub use metrics::{
    bind_metrics, serve_metrics, MAX_CONNECTIONS, MAX_REQUEST_HEAD, REQUEST_TIMEOUT,
};
pub use names::{check_deployment_name, near_miss, NameUse};
pub use restore::{plan_restore, restore, PlanRequest, RestoreOutcome, RestoreRequest, Restored};
pub use schedule::{backup_schedule, systemd_dir, Schedule};
pub use settings::{Deployment, Settings};
pub use space::{check_space, restore_space, SpaceNeed};
pub use status::{
    deployment_status, repo_usage, status, DeploymentStatus, LastBackup, RepoUsage,
    RepositoryStatus, StatusReport, StatusRequest, StreamPosition,
};
