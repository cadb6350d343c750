//! hs-pg: PostgreSQL values for pg_hardstorage, with no network and no storage I/O.
//!
//! - [`Lsn`], [`TimelineId`]: typed WAL positions and timelines (an [`Lsn`] serializes as
//!   PostgreSQL's `"X/Y"` text, the form backup manifests store).
//! - [`SegmentName`] and the segment math: WAL file names, segment number <-> LSN,
//!   [`DEFAULT_WAL_SEGMENT_SIZE`] and the allowed range, the `wal_segment_size` setting
//!   ([`parse_wal_segment_size`]), timeline history files ([`parse_timeline_history`]).
//! - [`SegmentDecoder`] / [`decode_segment`]: a sans-IO WAL segment decoder (PostgreSQL
//!   15-18) summarising commits, commit times and restore points per segment
//!   ([`SegmentSummary`]) for point-in-time recovery.
//! - CRC-32C arithmetic ([`crc32c_shift`], [`crc32c_combine`], [`crc32c_raw`]): a file's
//!   manifest checksum derived from its parts' checksums (incremental backups).
//! - [`DeploymentName`]: the one rule for deployment names (and the repository's laxer
//!   check, [`is_repository_name`]); backup ids ([`backup_id_for`]).
//!
//! Invariant: this crate reads bytes it is given and nothing else. It opens no socket and
//! no file, depends on no other crate of the workspace but hs-base, and so can sit under
//! every other one of them (hs-pitr plans restores with it without depending on the
//! replication protocol).
//!
//! Errors are the workspace's one coded error, [`hs_base::Error`] (re-exported as [`Error`]):
//! a dotted code (`usage.lsn_invalid`, `usage.wal_segment_invalid`, ...), a message and a
//! suggestion. Nothing here is temporary: the same input fails the same way again.
//!
//! ```
//! use hs_pg::{Lsn, SegmentName, TimelineId, DEFAULT_WAL_SEGMENT_SIZE};
//!
//! let lsn: Lsn = "0/3000028".parse()?;
//! let seg = SegmentName::from_lsn(TimelineId(1), lsn, DEFAULT_WAL_SEGMENT_SIZE)?;
//! assert_eq!(seg.to_string(), "000000010000000000000003");
//! assert_eq!(seg.start_lsn(DEFAULT_WAL_SEGMENT_SIZE), Lsn(0x300_0000));
//! # Ok::<(), hs_pg::Error>(())
//! ```
#![deny(missing_docs)]

mod backup_manifest;
mod crc32c;
mod lsn;
mod names;
mod wal;
mod waldecode;

pub use backup_manifest::{backup_manifest_files, crc32c_hex, ManifestFile};
pub use crc32c::{
    crc32c, crc32c_combine, crc32c_from_raw, crc32c_raw, crc32c_shift, crc32c_to_raw, crc32c_update,
};
pub use hs_base::{Error, Result};
pub use lsn::{Lsn, TimelineId};
pub use names::{
    backup_id_for, is_repository_name, rfc3339, DeploymentName, MAX_DEPLOYMENT_LEN,
    MAX_REPOSITORY_NAME_LEN,
};
pub use wal::{
    is_valid_wal_segment_size, parse_timeline_history, parse_timeline_history_name,
    parse_wal_segment_name, parse_wal_segment_size, segs_per_xlogid, timeline_history_name,
    wal_segment_name, SegmentName, TimelineHistoryEntry, DEFAULT_WAL_SEGMENT_SIZE,
    MAX_WAL_SEGMENT_SIZE, MIN_WAL_SEGMENT_SIZE,
};
#[cfg(feature = "fuzz")]
pub use waldecode::fuzz_decode;
pub use waldecode::{
    decode_segment, pg_time_to_unix_micros, segment_system_identifier, RestorePoint,
    SegmentDecoder, SegmentEnd, SegmentSummary, PG_EPOCH_OFFSET_MICROS,
};
