//! hs-pitr: restore planning and execution for pg_hardstorage.
//!
//! [`restore`] lays a data directory down from a base backup in the repository:
//! chunks are fetched and decrypted in parallel, every file is synced once at the end,
//! `global/pg_control` is written last (so a failed restore leaves a directory that
//! PostgreSQL refuses to start), PostgreSQL's own `backup_manifest` is put back, and
//! `pg_verifybackup` checks the result before success is reported. With
//! [`RestoreOptions::recovery`] set it then writes `recovery.signal` and a managed
//! block in `postgresql.auto.conf` ([`write_recovery_config`]).
//! [`RestoreOptions::delta`] restores over an existing data directory, fetching only
//! the chunks whose keyed ids differ from what is on disk;
//! [`RestoreOptions::tablespace_mapping`] ([`TablespaceMapping`]) sends tablespaces
//! elsewhere.
//!
//! [`plan_restore`] decides, before anything is written, which backup and
//! which archived WAL a point-in-time target ([`PitrTarget`], parsed by
//! [`parse_target_time`], [`parse_target_lsn`], [`parse_target_name`])
//! needs, and fails with `conflict.target_*` when the WAL is not there.
//!
//! [`wal_fetch`] is PostgreSQL's `restore_command` (verified, atomic, spool-backed
//! prefetch with [`wal_prefetch`], serving the newest `.partial` at the end of WAL);
//! [`wal_gaps`] finds missing WAL in a [`hs_repo::WalListing`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use hs_pitr::{restore, BackupSelector, NoRestoreProgress, RestoreOptions};
//! let keyring = hs_crypt::Keyring::load(&hs_crypt::Keyring::default_path())?;
//! let repo = hs_repo::Repository::open("file:///var/lib/pg_hardstorage/repo", &keyring).await?;
//! let opts = RestoreOptions::new("main", BackupSelector::Latest, "/srv/restore".into());
//! let done = restore(&repo, &opts, &NoRestoreProgress).await?;
//! println!("restored {} into {}", done.backup_id, done.target.display());
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod error;
mod listed;
mod plan;
mod probe;
mod recovery;
mod restore;
mod target;
mod wal;

pub use error::{Error, ErrorKind, Result};
pub use listed::wal_segment_size;
pub use plan::{
    plan_restore, plan_restore_on, PlannedBackup, RestorePlan, TimelineChoice, TimelineSwitch,
};
pub use probe::{hand_over, probe_restore_command, verify_plan_wal, ServerUser};
pub use recovery::{
    apply_managed_block, disable_standby_settings, quote_conf_value, remove_standby_config,
    render_block, restore_command, shell_quote_for_command, write_recovery_config, RecoveryConfig,
    RecoveryTarget, RecoveryTargetAction, StandbyConfigRemoved, BLOCK_BEGIN, BLOCK_END,
};
pub use restore::{
    find_pg_program, restore, restore_until, select_backup, BackupSelector, NoRestoreProgress,
    RestoreOptions, RestoreProgress, RestoreSummary, TablespaceMapping, VerifyMode,
};
pub use target::{
    format_recovery_target_time, format_utc, from_unix_micros, parse_target_lsn, parse_target_name,
    parse_target_time, unix_micros, PitrTarget,
};
pub use wal::{
    clean_spool, default_spool_dir, spawn_detached, wal_fetch, wal_gaps, wal_prefetch,
    FetchOptions, FetchOutcome, FetchSource, PrefetchOutcome, SPOOL_DIR_NAME,
};
