//! hs-repo: the pg_hardstorage repository — storage backends, layout,
//! packs, index objects and backup manifests.
//!
//! - [`open_backend`] turns a URL into a [`Backend`]: [`FsBackend`] for
//!   `file://` (crash-safe via temp file + fsync + link/rename + dir fsync),
//!   [`ObjectBackend`] for `s3://`, `gcs://`, `azblob://`, and the `sftp://`
//!   and `scp://` stores; every store lives under `backend/`.
//! - [`Repository::builder`] ([`RepositoryBuilder`]) creates or opens a
//!   repository (the plaintext marker and the age-wrapped key object);
//!   [`Repository::init`] / [`Repository::open`] are its shortcuts.
//! - [`ChunkWriter`] deduplicates chunks one by one, compresses new chunks
//!   together in frames of up to [`FRAME_BYTES`] (one zstd frame, one sealed
//!   blob each) on worker threads into packs of ~16 MiB, and writes index
//!   objects only for packs that are already durable (every 32 packs and at
//!   `finish`).
//! - [`ChunkReader`] reads chunks back (decoding each frame once into a
//!   bounded shared cache) and checks their keyed ids.
//! - [`Repository::put_manifest`] stores a signed, sealed [`BackupManifest`],
//!   create-if-absent, and is meant to be the last write of a backup.
//! - WAL: [`Repository::put_wal_segment`], [`Repository::put_wal_partial`] (and their
//!   `_encoded` forms, fed by a [`WalSegmentEncoder`] as the segment arrives),
//!   [`Repository::put_timeline_history`], [`Repository::put_wal_gap`],
//!   [`Repository::get_wal`] and [`Repository::list_wal`] store and read
//!   sealed, compressed WAL objects under `deployments/<d>/wal/`.
//! - Verification: [`Repository::verify_backup`] and [`Repository::verify_repo`]
//!   read everything back and return a [`VerifyReport`] of problems.
//! - Keys: [`Repository::add_key`], [`Repository::list_keys`],
//!   [`Repository::rotate_keyring`] (re-wrap the master key, never re-encrypt).
//!
//! Nothing leaves this crate for the backend in plaintext except the marker
//! and object names. The format is described in docs/repository-format.md.
//!
//! ```no_run
//! # async fn demo(keyring: &hs_crypt::Keyring) -> hs_repo::Result<()> {
//! use hs_repo::Repository;
//! let repo = Repository::init("file:///var/backups/pg", keyring).await?;
//! let mut w = repo.writer().await?;
//! let r = w.add(bytes::Bytes::from_static(b"some chunk")).await?;
//! w.finish().await?;
//! let data = repo.reader().await?.read(&r).await?;
//! assert_eq!(&data[..], b"some chunk");
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod backend;
mod builder;
mod catalog;
mod chunklist;
mod error;
mod extsort;
mod gc;
mod index;
mod keys;
mod lock;
mod manifest;
mod quarantine;
mod reader;
mod redact;
mod repo;
mod retention;
mod verify;
mod wal;
mod writer;

pub use backend::{
    open_backend, probe_conditional_writes, Backend, FaultBackend, FaultConfig, FaultCounts,
    FsBackend, ObjectBackend, ObjectInfo, RetryBackend, RetryPolicy, MULTIPART_THRESHOLD,
    PROBE_NAME, REMOTE_READ_WINDOW,
};
pub use builder::RepositoryBuilder;
pub use chunklist::{
    decode_chunk_list, encode_chunk_list, ParentCursor, ParentFiles, CHUNK_LIST_GROUP,
    INLINE_CHUNK_LIMIT,
};
pub use error::{Error, ErrorKind, Result};
pub use gc::{
    GcKept, GcOptions, GcReport, GcWaiting, DEFAULT_GC_GRACE, DEFAULT_MAX_UNUSED_PERCENT,
};
pub use hs_chunk::{ChunkId, Chunker, ChunkerConfig, FileClass, PackEntry};
/// The keyring [`Repository::init`] and [`Repository::open`] take (from hs-crypt).
pub use hs_crypt::Keyring;
/// The LSN type of [`BackupManifest`]'s `start_lsn` and `stop_lsn` (hs-pg's).
pub use hs_pg::Lsn;
#[cfg(feature = "fuzz")]
pub use index::fuzz_index;
pub use keys::{KeyInfo, KeyRotation};
pub use lock::{Lease, LeaseInfo, LeaseKind, LeaseOptions, DEFAULT_LEASE_TTL};
#[cfg(feature = "fuzz")]
pub use manifest::fuzz_manifest;
pub use manifest::{
    ArchiveEntry, BackupListing, BackupManifest, BackupStats, BackupsNewestFirst, ChunkRef,
    DamagedBackup, FileEntry, FileKind, IncrementalFrom, PackId, MANIFEST_FORMAT,
};
pub use quarantine::QuarantineRecord;
pub use reader::{
    ChunkReader, ReadCursor, DEFAULT_FRAME_CACHE_BYTES, FRAME_ALIGN, HEADER_CACHE_PACKS,
};
pub use redact::{redact_text, redact_url, REDACTED};
pub use repo::{Repository, DEFAULT_PACK_TARGET_SIZE, MARKER_NAME, MIN_REPO_VERSION, REPO_VERSION};
pub use retention::{
    plan_retention, BackupDecision, BackupPoint, RetentionApplied, RetentionPlan, RetentionPolicy,
};
pub use verify::{VerifyCheck, VerifyProblem, VerifyReport, MAX_PROBLEMS};
pub use wal::{
    is_valid_wal_segment_size, parse_wal_segment_name, segs_per_xlogid, timeline_history_name,
    wal_segment_name, WalGap, WalListing, WalSegmentEncoder, WalSegmentInfo,
    DEFAULT_WAL_SEGMENT_SIZE, MAX_WAL_SEGMENT_SIZE, MIN_WAL_SEGMENT_SIZE, WAL_ZSTD_LEVEL,
};
pub use writer::{
    ChunkWriter, WriteStats, DEFAULT_INDEX_INTERVAL, FRAME_BYTES, MAX_CHUNK_LEN,
    RECENT_INDEX_CHUNKS, SESSION_MEMORY,
};
