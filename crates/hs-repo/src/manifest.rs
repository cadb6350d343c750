//! Backup manifest types (serialised as JSON inside a sealed, signed object).

use hs_chunk::ChunkId;
use serde::{Deserialize, Serialize};

/// The current manifest format number ([`BackupManifest::format`]).
pub const MANIFEST_FORMAT: u32 = 1;

/// A reference to one stored chunk: its id and its plaintext length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRef {
    /// Keyed BLAKE3 of the chunk's plaintext.
    pub id: ChunkId,
    /// Plaintext length in bytes.
    pub len: u32,
}

/// Everything needed to restore one base backup, written last.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BackupManifest {
    /// Manifest format number, [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The backup's id, unique within the deployment (also its object name).
    pub backup_id: String,
    /// The deployment (one PostgreSQL cluster) the backup belongs to.
    pub deployment: String,
    /// `IDENTIFY_SYSTEM`'s system identifier, decimal.
    pub system_identifier: String,
    /// Timeline the backup started on.
    pub timeline: u32,
    /// Start LSN, `X/Y` text form.
    pub start_lsn: String,
    /// Stop LSN, `X/Y` text form.
    pub stop_lsn: String,
    /// Start time, RFC 3339 UTC.
    pub start_time: String,
    /// Stop time, RFC 3339 UTC.
    pub stop_time: String,
    /// `server_version_num`, e.g. 150004.
    pub pg_version: u32,
    /// The backup label passed to `BASE_BACKUP`.
    pub label: String,
    /// `"base"` plus one archive per tablespace.
    pub archives: Vec<ArchiveEntry>,
    /// PostgreSQL's `backup_manifest`, verbatim.
    pub pg_backup_manifest: String,
    /// Sizes and counts.
    pub stats: BackupStats,
}

/// One tar archive of a base backup (the base directory or a tablespace).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ArchiveEntry {
    /// `"base"` or the tablespace's name in the backup stream.
    pub name: String,
    /// The tablespace OID, `None` for the base archive.
    pub tablespace_oid: Option<u32>,
    /// The tablespace's location on the server, `None` for the base archive.
    pub tablespace_location: Option<String>,
    /// Entries in archive order.
    pub files: Vec<FileEntry>,
}

/// One entry of an archive.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Path inside the archive, `/`-separated, relative.
    pub path: String,
    /// File, directory or symlink.
    pub kind: FileKind,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Size in bytes (0 for directories and symlinks).
    pub size: u64,
    /// The file's content, in order; empty for non-files and for files whose
    /// references live in `chunk_lists`.
    pub chunks: Vec<ChunkRef>,
    /// For long files: list chunks that hold the content references, in order
    /// (see `ChunkReader::file_chunks`). Empty when `chunks` is used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunk_lists: Vec<ChunkRef>,
}

/// The type of an archive entry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink {
        /// The link's target.
        target: String,
    },
}

/// Sizes and counts of one backup.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackupStats {
    /// Bytes of file content in the backup.
    pub logical_bytes: u64,
    /// Bytes this backup added to the repository (packs and index).
    pub stored_bytes: u64,
    /// Chunks referenced.
    pub chunks: u64,
    /// Chunks that were not in the repository before.
    pub new_chunks: u64,
    /// Number of regular files.
    pub files: u64,
}

/// Fuzzing entry point: parses `data` as a manifest body the way loading one does after
/// the signature check (zstd-compressed JSON; plain JSON is accepted too, so a fuzzer can
/// reach the JSON parser) and returns how many file entries it holds. Never panics.
pub fn fuzz_manifest(data: &[u8]) -> usize {
    let json = hs_chunk::decompress(data, 16 << 20).unwrap_or_else(|_| data.to_vec());
    serde_json::from_slice::<BackupManifest>(&json)
        .map(|m| m.archives.iter().map(|a| a.files.len()).sum())
        .unwrap_or(0)
}
