//! Backup manifest types (serialised as JSON inside a sealed, signed object).

use hs_base::code;
use hs_chunk::ChunkId;
use hs_pg::Lsn;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::repo::Repository;

/// The current manifest format number ([`BackupManifest::format`]): 3, whose
/// chunk ids are 16 bytes (32 hex digits) and whose list chunks are version 3.
/// Format 2 (references name the pack that holds each chunk; 32-byte ids) and
/// format 1 (no packs in references) manifests are still read.
pub const MANIFEST_FORMAT: u32 = 3;

/// The id of a pack: its object name is `data/<first two hex digits>/<64 hex digits>`.
/// Serialised as the 64 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId(pub [u8; 32]);

impl PackId {
    /// The pack's object name.
    pub fn object_name(&self) -> String {
        crate::repo::pack_name(&self.0)
    }

    /// The id in a pack object name `data/xx/<64 hex digits>`; `None` for other names.
    pub fn from_object_name(name: &str) -> Option<PackId> {
        let hex_id = name.strip_prefix("data/")?.get(3..)?;
        let mut id = [0u8; 32];
        hex::decode_to_slice(hex_id, &mut id).ok()?;
        (PackId(id).object_name() == name).then_some(PackId(id))
    }
}

impl std::fmt::Display for PackId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl Serialize for PackId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for PackId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut id = [0u8; 32];
        hex::decode_to_slice(&s, &mut id)
            .map_err(|_| serde::de::Error::custom("a pack id must be 64 hex digits"))?;
        Ok(PackId(id))
    }
}

/// A reference to one stored chunk: its id, its plaintext length and, in
/// references written by format 2, the pack that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRef {
    /// Keyed BLAKE3 of the chunk's plaintext.
    pub id: ChunkId,
    /// Plaintext length in bytes.
    pub len: u32,
    /// The pack that holds the chunk, so a reader finds it from the pack's
    /// header without the repository index. `None` in format 1 references:
    /// readers then look the chunk up in the index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack: Option<PackId>,
}

impl ChunkRef {
    /// A reference without a pack (readers look it up in the index).
    pub fn unplaced(id: ChunkId, len: u32) -> ChunkRef {
        ChunkRef {
            id,
            len,
            pack: None,
        }
    }
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
    /// Start LSN (stored as its `X/Y` text form).
    pub start_lsn: Lsn,
    /// Stop LSN (stored as its `X/Y` text form).
    pub stop_lsn: Lsn,
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
    /// PostgreSQL's `backup_manifest`: verbatim for a full backup; for an incremental
    /// one, the manifest of the full files the backup restores to (each changed
    /// relation file with its whole size and CRC-32C, `backup_label` without its
    /// `INCREMENTAL FROM` lines), as `pg_combinebackup` would write it.
    pub pg_backup_manifest: String,
    /// Sizes and counts.
    pub stats: BackupStats,
    /// Set when the server sent only what changed since a parent backup (PostgreSQL
    /// 17+ incremental `BASE_BACKUP`). The backup is still complete on its own: the
    /// unchanged blocks are references to the parent's chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<IncrementalFrom>,
}

/// How an incremental backup was taken.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct IncrementalFrom {
    /// The backup whose `backup_manifest` was uploaded to the server (`UPLOAD_MANIFEST`).
    pub parent_backup_id: String,
    /// Relation files the server sent as changed blocks only (`INCREMENTAL.*` members).
    pub incremental_files: u64,
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

impl ArchiveEntry {
    /// The path PostgreSQL's `backup_manifest` gives the archive member `path`:
    /// relative to the data directory, `pg_tblspc/<oid>/...` for a tablespace's files.
    pub fn pg_path(&self, path: &str) -> String {
        match self.tablespace_oid {
            Some(oid) => format!("pg_tblspc/{oid}/{path}"),
            None => path.to_string(),
        }
    }
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
    /// Bytes of file content the server sent: `logical_bytes` for a full backup, the
    /// changed blocks (and the other files) for an incremental one. 0 in manifests
    /// written before this was recorded (and then not written back, so such a manifest
    /// serializes as it was).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sent_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Fuzzing entry point: parses `data` as a manifest body the way loading one does after
/// the signature check (zstd-compressed JSON; plain JSON is accepted too, so a fuzzer can
/// reach the JSON parser) and returns how many file entries it holds. Never panics.
#[cfg(feature = "fuzz")]
pub fn fuzz_manifest(data: &[u8]) -> usize {
    let json = hs_chunk::decompress(data, 16 << 20).unwrap_or_else(|_| data.to_vec());
    serde_json::from_slice::<BackupManifest>(&json)
        .map(|m| m.archives.iter().map(|a| a.files.len()).sum())
        .unwrap_or(0)
}

/// A backup whose manifest exists but does not open or verify (see
/// [`Repository::list_backups_checked`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DamagedBackup {
    /// The backup's id (the manifest object's last name part).
    pub backup_id: String,
    /// The manifest object, `deployments/<deployment>/backups/<id>`.
    pub object: String,
    /// The error code loading it gave, e.g. `verify.auth_tag_mismatch`.
    pub code: &'static str,
    /// The error message (names the object).
    pub message: String,
}

/// Every backup of a deployment: the intact ones and the damaged ones.
#[derive(Clone, Debug, Default)]
pub struct BackupListing {
    /// Manifests that opened and verified, sorted by start time (then id).
    pub backups: Vec<BackupManifest>,
    /// Manifests that did not, sorted by id.
    pub damaged: Vec<DamagedBackup>,
}

impl BackupListing {
    /// The damaged backups newer than the newest intact one (ids sort by start time),
    /// newest last: the ones a `latest` would have meant.
    pub fn damaged_newer_than_intact(&self) -> Vec<&DamagedBackup> {
        let newest = self.backups.iter().map(|m| m.backup_id.as_str()).max();
        self.damaged
            .iter()
            .filter(|d| newest.is_none_or(|n| d.backup_id.as_str() > n))
            .collect()
    }

    /// The backup `latest` means: the newest one, if its manifest is intact.
    /// `notfound.backup` if the deployment has none; `verify.latest_backup_damaged`
    /// (naming the damaged manifest and the newest intact backup) if the newest is
    /// damaged: `latest` never falls back to an older backup silently.
    pub fn latest(&self, deployment: &str) -> Result<&BackupManifest> {
        self.check_latest(deployment)?;
        self.backups.last().ok_or_else(|| {
            Error::new(
                code::NOTFOUND_BACKUP,
                format!("deployment {deployment} has no backups in this repository"),
            )
            .with_suggestion(format!(
                "take one with `pg_hardstorage backup {deployment}`, or check --repo"
            ))
        })
    }

    /// `Ok` unless the newest backup is damaged (`verify.latest_backup_damaged`).
    pub fn check_latest(&self, deployment: &str) -> Result<()> {
        let newer = self.damaged_newer_than_intact();
        let Some(d) = newer.last() else {
            return Ok(());
        };
        let more = match newer.len() {
            1 => String::new(),
            n => format!(
                " ({} more damaged backup(s) are newer than every intact one)",
                n - 1
            ),
        };
        let suggestion = match self.backups.last() {
            Some(m) => format!(
                "name a backup explicitly, e.g. the newest intact one: `{id}` \
                 (`pg_hardstorage restore {deployment} {id} ...`, `pg_hardstorage verify \
                 {deployment} {id}`); `pg_hardstorage list --check {deployment}` shows which are \
                 damaged; see runbook 4 in docs/runbooks.md",
                id = m.backup_id
            ),
            None => format!(
                "no intact backup of {deployment} is left in this repository: restore \
                 from another copy of the repository, and take a new backup now \
                 (`pg_hardstorage backup {deployment}`); see runbook 4 in docs/runbooks.md"
            ),
        };
        Err(Error::new(
            code::VERIFY_LATEST_BACKUP_DAMAGED,
            format!(
                "the newest backup of deployment {deployment}, {}, is damaged: its manifest \
                 {} does not open ({}){more}; `latest` does not fall back to an older backup",
                d.backup_id, d.object, d.code
            ),
        )
        .with_suggestion(suggestion))
    }
}

/// The error loading manifest `object` gave, naming the object (a `verify.*` error from
/// opening it names only the kind of object otherwise).
pub(crate) fn name_manifest_error(
    deployment: &str,
    backup_id: &str,
    object: &str,
    e: Error,
) -> Error {
    if !e.code().starts_with("verify.") {
        return e;
    }
    let message = if e.to_string().contains(object) {
        e.to_string()
    } else {
        format!("manifest {object} of backup {backup_id} does not open: {e}")
    };
    Error::new(e.code(), message)
        .with_suggestion(format!(
            "this backup cannot be used: restore another one (`pg_hardstorage list \
             --check {deployment}` shows which are damaged) and see runbook 4 in docs/runbooks.md"
        ))
        .with_source(e)
}

/// Whether an error loading a listed manifest means the backup is damaged (its manifest
/// does not open or verify: a `verify.*` or `usage.*` error), not that the storage or the
/// keys failed.
fn is_damaged_manifest_error(e: &Error) -> bool {
    e.code().starts_with("verify.") || e.code().starts_with("usage.")
}

/// How a listing of backups takes the error `e` loading the manifest `object` of backup
/// `backup_id`: a manifest deleted since the listing (retention) is no backup any more
/// (`Ok(None)`); a damaged one (see [`is_damaged_manifest_error`]) is a damaged backup;
/// any other error (storage, keys) fails the listing.
pub(crate) fn classify_manifest_error(
    object: String,
    backup_id: String,
    e: Error,
) -> Result<Option<DamagedBackup>> {
    if e.code() == code::NOTFOUND_BACKUP {
        return Ok(None);
    }
    if !is_damaged_manifest_error(&e) {
        return Err(e);
    }
    Ok(Some(DamagedBackup {
        backup_id,
        object,
        code: e.code(),
        message: e.to_string(),
    }))
}

/// Sort key of a backup id: its time part, then its `-N` suffix as a number (a plain id
/// is 1), then the id itself.
pub(crate) fn backup_id_order(id: &str) -> (&str, u64, &str) {
    match id.rsplit_once('-') {
        Some((base, n)) if n.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty() => {
            (base, n.parse().unwrap_or(u64::MAX), id)
        }
        _ => (id, 1, id),
    }
}

impl Repository {
    /// Every backup of a deployment: the manifests that open and verify, and those that
    /// do not (a `verify.*` or `usage.*` error loading them), each named. Errors of the
    /// storage or the keys (`io.*`, `unreachable.*`, `auth.*`) still fail the call.
    pub async fn list_backups_checked(&self, deployment: &str) -> Result<BackupListing> {
        self.list_backups_inner(deployment, false, false).await
    }

    /// [`list_backups_checked`](Self::list_backups_checked), but each intact backup is a
    /// summary: its manifest without `archives` and `pg_backup_manifest` (which hold
    /// every file, and are most of a manifest's memory). Memory then grows by about a
    /// kilobyte per backup, not by a manifest per backup. For listing and planning;
    /// load one backup's manifest with [`Repository::load_manifest`].
    pub async fn list_backup_summaries_checked(&self, deployment: &str) -> Result<BackupListing> {
        self.list_backups_inner(deployment, true, false).await
    }

    /// [`list_backups`](Self::list_backups) (a damaged manifest fails the call), as
    /// summaries (see [`list_backup_summaries_checked`](Self::list_backup_summaries_checked)).
    pub async fn list_backup_summaries(&self, deployment: &str) -> Result<Vec<BackupManifest>> {
        Ok(self
            .list_backups_inner(deployment, true, true)
            .await?
            .backups)
    }

    async fn list_backups_inner(
        &self,
        deployment: &str,
        summaries: bool,
        strict: bool,
    ) -> Result<BackupListing> {
        let mut out = BackupListing::default();
        for (object, id) in self.listed_backups(deployment).await? {
            match self.load_manifest(deployment, &id).await {
                Ok(mut m) => {
                    if summaries {
                        m.archives = Vec::new();
                        m.pg_backup_manifest = String::new();
                    }
                    out.backups.push(m)
                }
                Err(e) if strict => return Err(e),
                Err(e) => out.damaged.extend(classify_manifest_error(object, id, e)?),
            }
        }
        crate::repo::sort_backups(&mut out.backups);
        out.damaged.sort_by(|a, b| a.backup_id.cmp(&b.backup_id));
        Ok(out)
    }

    /// The backup `latest` means: see [`BackupListing::latest`]. One listing of the
    /// deployment's manifests and one read of the newest, however many backups there
    /// are; only when the newest is damaged are the others read (to name the newest
    /// intact one in the error).
    pub async fn latest_backup(&self, deployment: &str) -> Result<BackupManifest> {
        for (_, id) in self.listed_backups_newest_first(deployment).await? {
            match self.load_manifest(deployment, &id).await {
                Ok(m) => return Ok(m),
                // Deleted since the listing (retention): the next one is the newest.
                Err(e) if e.code() == code::NOTFOUND_BACKUP => continue,
                Err(e) if is_damaged_manifest_error(&e) => break,
                Err(e) => return Err(e),
            }
        }
        let l = self.list_backups_checked(deployment).await?;
        l.latest(deployment).cloned()
    }

    /// The newest backup whose manifest opens and verifies, reading manifests newest
    /// first (one listing, then one read per manifest tried); damaged ones are skipped.
    /// `None` when the deployment has no intact backup. For callers that want a
    /// reference point (a backup's parent, the deployment's system identifier), not for
    /// `latest`, which must never pass over a damaged newest backup silently.
    pub async fn newest_intact_backup(&self, deployment: &str) -> Result<Option<BackupManifest>> {
        for (object, id) in self.listed_backups_newest_first(deployment).await? {
            match self.load_manifest(deployment, &id).await {
                Ok(m) => return Ok(Some(m)),
                Err(e) if e.code() == code::NOTFOUND_BACKUP => continue,
                Err(e) if is_damaged_manifest_error(&e) => {
                    tracing::warn!(
                        code = e.code(),
                        "skipping damaged backup manifest {object}: {e}"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// [`listed_backups`](Self::listed_backups), newest first: backup ids are their start
    /// time (`YYYYMMDDTHHMMSSZ`) with `-2`, `-3`, ... for later backups of the same second.
    async fn listed_backups_newest_first(&self, deployment: &str) -> Result<Vec<(String, String)>> {
        let mut listed = self.listed_backups(deployment).await?;
        listed.sort_by(|(_, a), (_, b)| backup_id_order(b).cmp(&backup_id_order(a)));
        Ok(listed)
    }

    /// The deployment's backups newest first (backup ids sort by start time), read one
    /// manifest at a time: one listing now, one manifest read per
    /// [`BackupsNewestFirst::next`]. For callers that want the newest backup that
    /// satisfies a condition (point-in-time planning) without reading every manifest.
    pub async fn backups_newest_first(&self, deployment: &str) -> Result<BackupsNewestFirst> {
        Ok(BackupsNewestFirst {
            deployment: deployment.to_owned(),
            listed: self.listed_backups_newest_first(deployment).await?,
            next: 0,
            read_one: false,
        })
    }

    /// The intact backups as summaries (see [`Repository::list_backup_summaries`]),
    /// sorted as [`Repository::list_backups`], for a caller that
    /// picks "the newest suitable" one (point-in-time planning with `latest`): a damaged
    /// older backup is left out, but a damaged newest one is refused
    /// (`verify.latest_backup_damaged`), never silently passed over. Empty if the
    /// deployment has no backups.
    pub async fn backups_for_latest(&self, deployment: &str) -> Result<Vec<BackupManifest>> {
        let l = self.list_backup_summaries_checked(deployment).await?;
        l.check_latest(deployment)?;
        Ok(l.backups)
    }
}

/// A deployment's backups newest first, read one manifest at a time (from
/// [`Repository::backups_newest_first`]).
///
/// The newest manifest is never passed over: when it is damaged, the first
/// [`next`](Self::next) fails with `verify.latest_backup_damaged` (as
/// [`BackupListing::latest`]); later damaged manifests, and any after a
/// [`skip`](Self::skip) (which passes over a backup unread), are skipped with a
/// warning, and manifests deleted since the listing are skipped silently.
#[derive(Debug, Clone)]
pub struct BackupsNewestFirst {
    deployment: String,
    /// (object, id), newest first.
    listed: Vec<(String, String)>,
    next: usize,
    /// Whether an intact backup was returned or one skipped unread (the newest was
    /// passed).
    read_one: bool,
}

impl BackupsNewestFirst {
    /// Whether the listing held no backup at all.
    pub fn is_empty(&self) -> bool {
        self.listed.is_empty()
    }

    /// The id [`next`](Self::next) reads first, without reading it.
    pub fn peek_id(&self) -> Option<&str> {
        self.listed.get(self.next).map(|(_, id)| id.as_str())
    }

    /// Passes over the next backup without reading its manifest.
    pub fn skip(&mut self) {
        self.next = (self.next + 1).min(self.listed.len());
        self.read_one = true;
    }

    /// The next intact backup as a summary (its manifest without `archives` and
    /// `pg_backup_manifest`), reading manifests until one opens; `None` at the end.
    pub async fn next(&mut self, repo: &Repository) -> Result<Option<BackupManifest>> {
        while let Some((object, id)) = self.listed.get(self.next).cloned() {
            self.next += 1;
            match repo.load_manifest(&self.deployment, &id).await {
                Ok(mut m) => {
                    m.archives = Vec::new();
                    m.pg_backup_manifest = String::new();
                    self.read_one = true;
                    return Ok(Some(m));
                }
                Err(e) if e.code() == code::NOTFOUND_BACKUP => {}
                Err(e) if is_damaged_manifest_error(&e) => {
                    if !self.read_one {
                        // The newest is damaged: the error `latest` gives, naming the
                        // newest intact backup (this reads the others).
                        return Err(repo
                            .list_backups_checked(&self.deployment)
                            .await?
                            .check_latest(&self.deployment)
                            .err()
                            .unwrap_or(e));
                    }
                    tracing::warn!(
                        code = e.code(),
                        "skipping damaged backup manifest {object}: {e}"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// The oldest intact backup as a summary, reading manifests from the oldest end
    /// (for messages about the start of the history); `None` if none is intact.
    pub async fn oldest(&self, repo: &Repository) -> Result<Option<BackupManifest>> {
        for (_, id) in self.listed.iter().rev() {
            match repo.load_manifest(&self.deployment, id).await {
                Ok(mut m) => {
                    m.archives = Vec::new();
                    m.pg_backup_manifest = String::new();
                    return Ok(Some(m));
                }
                Err(e) if e.code() == code::NOTFOUND_BACKUP => {}
                Err(e) if is_damaged_manifest_error(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_ids_order_by_time_then_numeric_suffix() {
        let mut ids = vec![
            "20260101T000000Z-10",
            "20260102T000000Z",
            "20260101T000000Z",
            "20260101T000000Z-2",
        ];
        ids.sort_by(|a, b| backup_id_order(b).cmp(&backup_id_order(a)));
        assert_eq!(
            ids,
            [
                "20260102T000000Z",
                "20260101T000000Z-10",
                "20260101T000000Z-2",
                "20260101T000000Z"
            ]
        );
    }

    /// A manifest body as the format has stored it since its first version, when the LSNs
    /// were plain strings: it must read back, and write back byte for byte but for its
    /// chunk ids, of which format 3 keeps the first 16 bytes (32 hex digits).
    const OLD_FORMAT: &str = concat!(
        r#"{"format":1,"backup_id":"20260102T030405Z","deployment":"main","#,
        r#""system_identifier":"7312345678901234567","timeline":2,"#,
        r#""start_lsn":"16/B374D848","stop_lsn":"16/B5000100","#,
        r#""start_time":"2026-01-02T03:04:05Z","stop_time":"2026-01-02T03:05:06Z","#,
        r#""pg_version":150004,"label":"pg_hardstorage","archives":[{"name":"base","#,
        r#""tablespace_oid":null,"tablespace_location":null,"files":[{"path":"PG_VERSION","#,
        r#""kind":{"type":"file"},"mode":384,"mtime":1767323045,"size":3,"chunks":[{"id":"#,
        r#""0000000000000000000000000000000000000000000000000000000000000000","len":3}]},"#,
        r#"{"path":"pg_tblspc/16384","kind":{"type":"symlink","target":"/ts"},"mode":511,"#,
        r#""mtime":0,"size":0,"chunks":[]}]}],"pg_backup_manifest":"{}","#,
        r#""stats":{"logical_bytes":3,"stored_bytes":90,"chunks":1,"new_chunks":1,"files":1}}"#
    );

    #[test]
    fn old_format_round_trips_byte_for_byte() {
        let m: BackupManifest = serde_json::from_str(OLD_FORMAT).unwrap();
        assert_eq!(m.start_lsn, Lsn(0x16_B374_D848));
        assert_eq!(m.stop_lsn, Lsn(0x16_B500_0100));
        assert_eq!(m.start_lsn.to_string(), "16/B374D848");
        let long_id = "0".repeat(64);
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            OLD_FORMAT.replace(&long_id, &long_id[..32])
        );
        // What the CLI and the API print of it (`json!` of the fields) is the text too.
        assert_eq!(
            serde_json::json!({ "stop_lsn": m.stop_lsn }).to_string(),
            r#"{"stop_lsn":"16/B5000100"}"#
        );
    }

    #[test]
    fn a_manifest_whose_lsn_is_not_an_lsn_does_not_load() {
        for bad in ["16", "x/1", "", "1/123456789"] {
            let json = OLD_FORMAT.replace("16/B374D848", bad);
            assert!(
                serde_json::from_str::<BackupManifest>(&json).is_err(),
                "{bad}"
            );
        }
    }
}
