//! hs-proto: the PostgreSQL replication protocol for pg_hardstorage.
//!
//! - [`ConnConfig`]: libpq connection strings (URLs and `key=value`), environment
//!   fallbacks (`PGHOST`, `PGPASSWORD`, ...), `.pgpass`, `sslmode`.
//! - [`ReplicationClient`]: a physical replication connection (`replication=true`) with
//!   trust / cleartext / md5 / SCRAM-SHA-256(-PLUS) authentication and TLS via rustls (ring).
//! - [`ReplicationClient::base_backup`]: `BASE_BACKUP` (PostgreSQL 15+) as a pull-based
//!   stream of [`BackupEvent`]s; the tar archives are parsed incrementally, so file content
//!   arrives as [`BackupEvent::Data`] pieces without buffering whole files.
//! - [`ReplicationClient::start_physical`]: `START_REPLICATION ... PHYSICAL` as a
//!   cancel-safe pull stream of [`StreamMessage`]s ([`PhysicalStream`]), plus slot commands
//!   (`CREATE_REPLICATION_SLOT`, `READ_REPLICATION_SLOT`, `DROP_REPLICATION_SLOT`) and
//!   `TIMELINE_HISTORY`.
//! - Re-exported from [`hs_pg`] (PostgreSQL values with no network, defined there once):
//!   [`Lsn`], [`TimelineId`], [`SegmentName`] and the segment math,
//!   [`parse_timeline_history`], and the sans-IO WAL segment decoder ([`SegmentDecoder`],
//!   [`decode_segment`], [`SegmentSummary`]). Their errors are this crate's [`Error`].
//!
//! The message codec ([`BackendMessage::parse`], [`frontend`]) and the tar parser
//! ([`TarParser`]) do no I/O; one thin tokio layer moves bytes between them and the socket.
//!
//! ```no_run
//! use hs_proto::{BackupEvent, BaseBackupOptions, ConnConfig, ReplicationClient};
//!
//! # async fn demo() -> hs_proto::Result<()> {
//! let cfg = ConnConfig::parse("postgresql://hs_repl@db1:5432/postgres?sslmode=verify-full")?;
//! let mut client = ReplicationClient::connect(&cfg).await?;
//! let id = client.identify_system().await?;
//! println!("system {} on timeline {} at {}", id.system_id, id.timeline, id.xlogpos);
//! let mut stream = client.base_backup(&BaseBackupOptions::default()).await?;
//! while let Some(ev) = stream.next().await? {
//!     match ev {
//!         BackupEvent::Entry(h) => println!("{}", h.path),
//!         BackupEvent::Data(bytes) => { /* chunk, compress, store */ let _ = bytes; }
//!         BackupEvent::Finished { end_lsn, .. } => println!("done at {end_lsn}"),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Errors are one type, [`Error`], with a dotted [`Error::code`] (`auth.password_failed`,
//! `unreachable.connection_refused`, `usage.conninfo_invalid`, ...), a suggestion, whether
//! a retry may help, and the server's SQLSTATE when there is one.
#![deny(missing_docs)]

mod client;
mod codec;
mod conn;
mod conninfo;
mod error;
#[cfg(any(test, feature = "fuzz"))]
mod fuzz;
mod lsn;
mod lz4;
mod stream;
mod tar;
mod tls;

pub use client::{
    BackupEvent, BaseBackupOptions, BaseBackupStream, ReplicationClient, ServerCompression,
    SystemIdentity, TablespaceInfo,
};
pub use codec::{
    frontend, pg_now_micros, AuthRequest, BackendMessage, FieldDescription, ServerMessage,
    StandbyStatusUpdate, StreamMessage, MAX_MESSAGE_LEN, PG_EPOCH_OFFSET_MICROS,
};
pub use conninfo::{ChannelBindingMode, ConnConfig, SslMode, TargetSessionAttrs};
pub use error::{Error, ErrorKind, Result, SqlState};
/// The fuzz targets' entry point (feature `fuzz`, for fuzz/ and the corpus replay test).
#[cfg(feature = "fuzz")]
pub use fuzz::fuzz_input;
pub use hs_pg::{
    crc32c_update, decode_segment, parse_timeline_history, parse_wal_segment_size,
    pg_time_to_unix_micros, segment_system_identifier, RestorePoint, SegmentDecoder, SegmentEnd,
    SegmentName, SegmentSummary, TimelineHistoryEntry, DEFAULT_WAL_SEGMENT_SIZE,
};
pub use lsn::{Lsn, TimelineId};
pub use stream::{PhysicalStream, ReadSlot, SlotInfo, TimelineSwitch};
pub use tar::{EntryKind, TarEntryHeader, TarEvent, TarParser};
