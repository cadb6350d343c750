//! hs-backup: backup and WAL stream orchestration for pg_hardstorage.
//!
//! This crate composes the layers: [`hs_proto`] reads a `BASE_BACKUP` stream from
//! PostgreSQL, [`hs_chunk`] cuts each file into chunks, and [`hs_repo`] deduplicates,
//! seals and stores them, writing the backup manifest last. It holds the logic a
//! library user needs, so the `pg_hardstorage` CLI stays a thin layer over it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let keyring = hs_crypt::Keyring::load(&hs_crypt::Keyring::default_path())?;
//! let repo = hs_repo::Repository::open("file:///var/lib/pg_hardstorage/repo", &keyring).await?;
//! let conn = hs_proto::ConnConfig::parse("postgresql://hs_repl@db1/postgres")?;
//! let done = hs_backup::run_backup(&conn, &repo, &hs_backup::BackupOptions::new("main"), &hs_backup::NoProgress).await?;
//! println!("backup {} done", done.manifest.backup_id);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod backup;
mod error;
mod incremental;
mod metrics;
mod names;
mod preflight;
mod sent;
mod stream;

pub use backup::{
    run_backup, run_backup_until, BackupOptions, BackupSummary, NoProgress, Progress,
};
pub use error::{Error, ErrorKind, Result};
pub use metrics::{StreamMetrics, Tee};
pub use names::{backup_id_for, rfc3339, validate_deployment, MAX_DEPLOYMENT_LEN};
pub use preflight::{preflight, Check, CheckState, Finding, PreflightReport, Severity};
pub use stream::{
    lag_bytes, slot_name_for, wal_stream, NoObserver, SlotMode, StreamExit, StreamObserver,
    StreamOptions,
};
