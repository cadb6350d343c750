//! The repository: marker, key objects, index loading and manifests.

use std::sync::Arc;

use bytes::Bytes;
use hs_base::code;
use hs_chunk::{ChunkId, ChunkerConfig, PackEntry, PackHeader, PACK_TRAILER_LEN};
use hs_crypt::{Domain, Keyring, MasterKey, Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::index::{self, Index};
use crate::manifest::BackupManifest;
use crate::manifest::PackId;
use crate::reader::ChunkReader;
use crate::writer::ChunkWriter;
use crate::writer::Dedup;

/// Name of the plaintext marker object.
pub const MARKER_NAME: &str = "config";
/// Value of the marker's `format` field.
pub const MARKER_FORMAT: &str = "pg_hardstorage";
/// The repository format version this build writes into new repositories (3:
/// 16-byte chunk ids; 2: references name their packs). It reads every version
/// from [`MIN_REPO_VERSION`] up, and writes format 3 objects into version 1 and
/// 2 repositories too (see docs/repository-format.md, "Changes").
pub const REPO_VERSION: u32 = 3;
/// The oldest repository format version this build reads.
pub const MIN_REPO_VERSION: u32 = 1;
/// Default target size of a pack.
pub const DEFAULT_PACK_TARGET_SIZE: u64 = 16 * 1024 * 1024;
/// Largest manifest plaintext accepted when loading (after decompression).
const MAX_MANIFEST_LEN: usize = 1 << 30;
const MANIFEST_OBJECT_VERSION: u8 = 1;
const MANIFEST_SIG_CONTEXT: &[u8] = b"pg_hardstorage manifest v1\0";

pub(crate) fn pack_name(id: &[u8; 32]) -> String {
    let h = hex::encode(id);
    format!("data/{}/{}", &h[..2], h)
}

/// A version 2 or 3 pack header names its pack; it must be the object it was read from.
pub(crate) fn check_pack_binding(pack: &str, header: &PackHeader) -> Result<()> {
    match header.pack_id {
        Some(id) if pack_name(&id) != pack => Err(Error::new(
            code::VERIFY_PACK_CORRUPT,
            format!(
                "pack {pack} holds the header of another pack ({})",
                hex::encode(id)
            ),
        )
        .with_suggestion(
            "the object was copied or renamed in storage; run `pg_hardstorage repo verify`",
        )),
        _ => Ok(()),
    }
}

pub(crate) fn index_name(hex_id: &str) -> String {
    format!("index/{hex_id}")
}

pub(crate) fn manifest_prefix(deployment: &str) -> String {
    format!("deployments/{deployment}/backups/")
}

/// Checks a deployment name or backup id: 1 to 128 of `[A-Za-z0-9._-]`,
/// not starting with `.`.
pub(crate) fn check_ident(s: &str, code: &'static str, what: &str) -> Result<()> {
    // The repository's own (laxer) rule, not the one for names users type: see
    // hs_pg::DeploymentName.
    if hs_pg::is_repository_name(s) {
        Ok(())
    } else {
        Err(
            Error::new(code, format!("{s:?} is not a valid {what}")).with_suggestion(
                "use 1 to 128 letters, digits, '.', '_' or '-', not starting with '.'",
            ),
        )
    }
}

/// Checks a deployment name (`usage.invalid_deployment_name`).
pub(crate) fn check_deployment(s: &str) -> Result<()> {
    check_ident(s, "usage.invalid_deployment_name", "deployment name")
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The plaintext marker object (`config`).
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Marker {
    format: String,
    version: u32,
    repo_id: String,
    created: String,
    chunker: ChunkerConfig,
    pack_target_size: u64,
    #[serde(default = "default_zstd_level")]
    zstd_level: i32,
}

fn default_zstd_level() -> i32 {
    hs_chunk::DEFAULT_LEVEL
}

/// The plaintext of a key object (before age wrapping).
#[derive(Serialize, Deserialize)]
pub(crate) struct KeyPayload {
    pub(crate) version: u32,
    pub(crate) repo_id: String,
    pub(crate) master_key: String,
    pub(crate) verifying_key: String,
    pub(crate) created: String,
    /// BLAKE3 (hex) of the plaintext marker as `init` wrote it: the marker cannot be
    /// sealed (it is read before any key), so its integrity is anchored here.
    /// Absent in key objects written before this field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) marker_blake3: Option<String>,
}

pub(crate) struct Inner {
    pub(crate) backend: Arc<dyn Backend>,
    url: String,
    marker: Marker,
    pub(crate) master: MasterKey,
    id_key: [u8; 32],
    pub(crate) verifying: VerifyingKey,
    pub(crate) signer: Keyring,
    init_warnings: Vec<String>,
    /// BLAKE3 (hex) of the marker bytes read at open (or written by init).
    pub(crate) marker_digest: String,
    /// The marker digest sealed in the key object that opened the repository.
    pub(crate) marker_sealed: Option<String>,
}

/// An opened repository: marker read, master key unwrapped. Cheap to clone.
#[derive(Clone)]
pub struct Repository {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("url", &crate::redact_url(&self.inner.url))
            .field("id", &self.inner.marker.repo_id)
            .finish_non_exhaustive()
    }
}

/// `SigningKey` is deliberately not `Clone`; the repository keeps its own
/// copy of the keyring (re-read from the same file) to sign manifests later.
fn own_keyring(keyring: &Keyring) -> Result<Keyring> {
    Keyring::load(keyring.path())
}

/// The marker damaged (its digest no longer matches the one sealed at init).
fn marker_damaged(url: &str, what: &str) -> Error {
    Error::new(
        code::VERIFY_MARKER_INVALID,
        format!(
            "the marker object {MARKER_NAME} at {url} is damaged: {what}, and it differs from \
             the digest sealed in the key objects at init"
        ),
    )
    .with_suggestion(format!(
        "restore {MARKER_NAME} from a copy of the repository; it is plaintext JSON (format, \
         version, repo_id, created, chunker, pack_target_size, zstd_level) and never changes \
         after `repo init` (docs/repository-format.md shows the layout)"
    ))
}

/// Parses and checks the marker. `sealed_differs`: `None` when no key object was
/// opened, else whether the marker's digest differs from the one sealed at init; when it
/// does, any fault is reported as damage to the marker (`verify.marker_invalid`).
fn check_marker(raw: &[u8], url: &str, sealed_differs: Option<bool>) -> Result<Marker> {
    let damaged = sealed_differs == Some(true);
    let marker: Marker = match serde_json::from_slice(raw) {
        Ok(m) => m,
        Err(e) => {
            return Err(Error::new(
                code::VERIFY_MARKER_INVALID,
                format!(
                    "the marker object {MARKER_NAME} at {url} is damaged: not valid JSON of \
                     this format"
                ),
            )
            .with_suggestion(format!(
                "restore {MARKER_NAME} from a copy of the repository; it is plaintext JSON \
                 (format, version, repo_id, chunker) and never changes after `repo init`"
            ))
            .with_source(e))
        }
    };
    // A fault of a marker that differs from the sealed digest is damage to it.
    let refuse = |what: &str, e: Error| {
        if damaged {
            marker_damaged(url, what)
        } else {
            e
        }
    };
    if marker.format != MARKER_FORMAT {
        return Err(refuse(
            "its format field changed",
            Error::new(
                code::VERIFY_MARKER_INVALID,
                format!(
                    "{url} holds a {:?} marker in {MARKER_NAME}, not pg_hardstorage",
                    marker.format
                ),
            )
            .with_suggestion("check the URL: it names another tool's repository"),
        ));
    }
    if !(MIN_REPO_VERSION..=REPO_VERSION).contains(&marker.version) {
        return Err(refuse(
            "its version field changed",
            Error::new(
                code::USAGE_UNSUPPORTED_REPO_VERSION,
                format!(
                    "the repository has format version {}, this build reads versions \
                     {MIN_REPO_VERSION} to {REPO_VERSION}",
                    marker.version
                ),
            )
            .with_suggestion("use a pg_hardstorage release that supports this format version"),
        ));
    }
    if let Err(e) = marker.chunker.validate() {
        return Err(refuse(
            &format!("its chunker settings are invalid ({e})"),
            e,
        ));
    }
    Ok(marker)
}

/// Unwraps the first key object this keyring opens; a damaged key object is named.
async fn open_key_payload(
    backend: &dyn Backend,
    keys: &[crate::ObjectInfo],
    keyring: &Keyring,
) -> Result<(String, KeyPayload)> {
    let mut last_err = None;
    let mut damaged = None;
    for k in keys {
        let wrapped = backend.get(&k.name).await?;
        match hs_crypt::unwrap_secret(&wrapped, keyring) {
            Ok(plain) => {
                let p: KeyPayload = serde_json::from_slice(&plain).map_err(|e| {
                    Error::new(
                        code::VERIFY_KEY_OBJECT_INVALID,
                        format!("key object {} is malformed", k.name),
                    )
                    .with_source(e)
                })?;
                return Ok((k.name.clone(), p));
            }
            Err(e) => {
                // A damaged key object (its name is the BLAKE3 of its content) is
                // reported by name: it may have been ours.
                let intact = blake3::hash(&wrapped).to_hex().as_str()
                    == k.name.strip_prefix("keys/").unwrap_or(&k.name);
                let corrupt = !intact || e.code() == code::VERIFY_WRAPPED_SECRET_CORRUPT;
                if corrupt && damaged.is_none() {
                    damaged = Some(
                        Error::new(
                            code::VERIFY_KEY_OBJECT_INVALID,
                            format!(
                                "key object {} is damaged or was modified, and no other key \
                                 object opens with this keyring",
                                k.name
                            ),
                        )
                        .with_suggestion(
                            "open the repository with another registered keyring and \
                             `pg_hardstorage key add` this one again, or restore the object \
                             from a copy of the repository",
                        )
                        .with_source(e),
                    );
                } else {
                    last_err = Some(e);
                }
            }
        }
    }
    Err(match (damaged, last_err) {
        (Some(d), _) => d,
        (None, Some(e)) => e,
        (None, None) => Error::new(
            code::AUTH_KEYRING_NO_MATCHING_IDENTITY,
            "no key object matches the keyring",
        ),
    })
}

impl Repository {
    /// Creates a repository at `url` with the default chunker settings and
    /// pack target size: `Repository::builder(url).init(keyring)` (see
    /// [`RepositoryBuilder::init`](crate::RepositoryBuilder::init)).
    pub async fn init(url: &str, keyring: &Keyring) -> Result<Repository> {
        Self::builder(url).init(keyring).await
    }

    /// [`RepositoryBuilder::init`](crate::RepositoryBuilder::init) on the
    /// backend it opened or was given.
    pub(crate) async fn init_on(
        opts: crate::RepositoryBuilder,
        backend: Arc<dyn Backend>,
        keyring: &Keyring,
    ) -> Result<Repository> {
        let crate::RepositoryBuilder {
            url: raw_url,
            chunker,
            pack_target_size,
            ..
        } = opts;
        // Messages name the URL without its credentials; the handle keeps it whole.
        let raw_url = raw_url.as_str();
        let url = &*crate::redact_url(raw_url);
        chunker.validate()?;
        if !(1 << 20..=1 << 30).contains(&pack_target_size) {
            return Err(Error::new(
                code::USAGE_INVALID_PACK_SIZE,
                format!("pack target size {pack_target_size} is outside 1 MiB to 1 GiB"),
            ));
        }
        if backend.stat(MARKER_NAME).await?.is_some() {
            return Err(exists(url));
        }
        let init_warnings: Vec<String> = crate::backend::probe_conditional_writes(&*backend)
            .await?
            .into_iter()
            .collect();
        let master = MasterKey::generate();
        let signer = own_keyring(keyring)?;
        let verifying = signer.signing_key().verifying_key();
        let mut rid = [0u8; 16];
        rand::Rng::fill(&mut rand::thread_rng(), &mut rid);
        let created = now_rfc3339();
        let marker = Marker {
            format: MARKER_FORMAT.to_string(),
            version: REPO_VERSION,
            repo_id: hex::encode(rid),
            created: created.clone(),
            chunker,
            pack_target_size,
            zstd_level: hs_chunk::DEFAULT_LEVEL,
        };
        let marker_json = serde_json::to_vec_pretty(&marker).map_err(|e| {
            Error::new(code::IO_ENCODE_FAILED, "could not encode marker").with_source(e)
        })?;
        let marker_digest = blake3::hash(&marker_json).to_hex().to_string();
        let payload = KeyPayload {
            version: 1,
            repo_id: marker.repo_id.clone(),
            master_key: hex::encode(master.to_bytes()),
            verifying_key: verifying.to_hex(),
            created,
            marker_blake3: Some(marker_digest.clone()),
        };
        let key_name =
            crate::keys::put_key_object(&*backend, &master, &payload, &keyring.recipient()).await?;
        if !backend
            .put_if_absent(MARKER_NAME, Bytes::from(marker_json))
            .await?
        {
            // Someone else initialised it first; our key object is useless.
            let _ = backend.delete(&key_name).await;
            let _ = backend.delete(&crate::keys::key_info_name(&key_name)).await;
            return Err(exists(url));
        }
        let id_key = master.chunk_id_key();
        Ok(Repository {
            inner: Arc::new(Inner {
                backend,
                url: raw_url.to_string(),
                marker,
                master,
                id_key,
                verifying,
                signer,
                init_warnings,
                marker_sealed: Some(marker_digest.clone()),
                marker_digest,
            }),
        })
    }

    /// Opens the existing repository at `url`:
    /// `Repository::builder(url).open(keyring)` (see
    /// [`RepositoryBuilder::open`](crate::RepositoryBuilder::open)).
    pub async fn open(url: &str, keyring: &Keyring) -> Result<Repository> {
        Self::builder(url).open(keyring).await
    }

    /// [`RepositoryBuilder::open`](crate::RepositoryBuilder::open) on the
    /// backend it opened or was given; `url` is only used in messages.
    pub(crate) async fn open_on(
        backend: Arc<dyn Backend>,
        url: &str,
        keyring: &Keyring,
    ) -> Result<Repository> {
        // Messages name the URL without its credentials; the handle keeps it whole.
        let raw_url = url;
        let url = &*crate::redact_url(raw_url);
        let raw = match backend.get(MARKER_NAME).await {
            Ok(b) => b,
            Err(e) if e.code() == code::NOTFOUND_OBJECT => {
                return Err(Error::new(
                    code::NOTFOUND_REPO,
                    format!("no pg_hardstorage repository at {url}"),
                )
                .with_suggestion(format!(
                    "check the URL, or create one with `pg_hardstorage repo init {url}`"
                )))
            }
            Err(e) => return Err(e),
        };
        let digest = blake3::hash(&raw).to_hex().to_string();
        let keys = backend.list("keys/").await?;
        if keys.is_empty() {
            // Not a repository of ours, or a damaged one: judge the marker alone.
            check_marker(&raw, url, None)?;
            return Err(Error::new(
                code::NOTFOUND_REPO_KEY,
                format!("the repository at {url} has no key objects"),
            )
            .with_suggestion("the repository is damaged or was not fully initialised"));
        }
        // The key objects do not depend on the marker, and the one this keyring opens
        // holds the marker's digest as init wrote it: with it, a marker that changed is
        // known to be damage rather than another tool's or a newer format.
        let (key_name, p) = open_key_payload(&*backend, &keys, keyring).await?;
        let sealed_differs = p.marker_blake3.as_deref().is_some_and(|d| d != digest);
        let marker = check_marker(&raw, url, Some(sealed_differs))?;
        if p.repo_id != marker.repo_id {
            return Err(if sealed_differs {
                marker_damaged(url, "its repo_id no longer matches the key objects")
            } else {
                Error::new(
                    code::VERIFY_KEY_OBJECT_INVALID,
                    format!("key object {key_name} belongs to another repository"),
                )
            });
        }
        let mk = hex::decode(&p.master_key).map_err(|e| {
            Error::new(
                code::VERIFY_KEY_OBJECT_INVALID,
                format!("key object {key_name} is malformed"),
            )
            .with_source(e)
        })?;
        let master = MasterKey::from_bytes(&mk)?;
        let verifying = VerifyingKey::from_hex(&p.verifying_key)?;
        let id_key = master.chunk_id_key();
        Ok(Repository {
            inner: Arc::new(Inner {
                backend,
                url: raw_url.to_string(),
                marker,
                master,
                id_key,
                verifying,
                signer: own_keyring(keyring)?,
                init_warnings: Vec::new(),
                marker_digest: digest,
                marker_sealed: p.marker_blake3.clone(),
            }),
        })
    }

    /// The repository id (32 hex digits, from the marker).
    pub fn id(&self) -> &str {
        &self.inner.marker.repo_id
    }

    /// Warnings found while creating the repository (empty after `open`):
    /// today, a store that ignores conditional writes.
    pub fn init_warnings(&self) -> &[String] {
        &self.inner.init_warnings
    }

    /// The URL the repository was opened with, as given. For messages use
    /// [`shown_url`](Repository::shown_url).
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The URL for messages, logs and JSON: [`url`](Repository::url) through
    /// [`redact_url`](crate::redact_url).
    pub fn shown_url(&self) -> String {
        crate::redact_url(&self.inner.url)
    }

    /// Chunking parameters every writer of this repository uses.
    pub fn chunker_config(&self) -> &ChunkerConfig {
        &self.inner.marker.chunker
    }

    /// Target size of packs written to this repository.
    pub fn pack_target_size(&self) -> u64 {
        self.inner.marker.pack_target_size
    }

    /// zstd level used for chunks.
    pub fn compression_level(&self) -> i32 {
        self.inner.marker.zstd_level
    }

    /// The storage backend (for layers above that store their own objects).
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// An object a listing named; `None` when it is gone since (deleted by gc,
    /// retention or a release meanwhile), which is not an error of the listing.
    pub(crate) async fn get_listed(&self, name: &str) -> Result<Option<Bytes>> {
        match self.inner.backend.get(name).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.code() == code::NOTFOUND_OBJECT => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The keyed id of `data` in this repository.
    pub fn chunk_id(&self, data: &[u8]) -> ChunkId {
        ChunkId::compute(&self.inner.id_key, data)
    }

    /// A writer with no parent backup: it deduplicates against the chunks of the
    /// newest index objects (at most [`RECENT_INDEX_CHUNKS`](crate::RECENT_INDEX_CHUNKS))
    /// and its own session, never against packs that garbage collection condemned or
    /// that are quarantined. Take a lease first (see gc.rs).
    pub async fn writer(&self) -> Result<ChunkWriter> {
        self.writer_for(None).await
    }

    /// A writer for a backup whose parent (the deployment's newest backup) is
    /// `parent`; pass the parent's references to
    /// [`ChunkWriter::add_hinted`]. Besides the hints it deduplicates against the
    /// index objects written since the parent ended (an interrupted backup's
    /// uploads), at most [`RECENT_INDEX_CHUNKS`](crate::RECENT_INDEX_CHUNKS) chunks.
    /// A format 1 parent has no packs in its references, so the first backup
    /// after it loads the whole index once (as every backup did before format 2).
    pub async fn writer_for(&self, parent: Option<&BackupManifest>) -> Result<ChunkWriter> {
        let mut excluded: std::collections::HashSet<PackId> = self
            .condemned_or_quarantined()
            .await?
            .iter()
            .filter_map(|n| PackId::from_object_name(n))
            .collect();
        // A hint may name a pack gc repacked and deleted: readers follow its moved
        // record, so it must not lead to a pack that is condemned now.
        let moves = self.moved_map().await?;
        let through: Vec<PackId> = moves
            .keys()
            .filter(|p| crate::gc::leads_to(&moves, **p, &excluded))
            .copied()
            .collect();
        drop(moves);
        excluded.extend(through);
        let mut dedup = Dedup::default();
        dedup.excluded = excluded;
        match parent {
            Some(m) if m.format < 2 => self.load_recent_index(&mut dedup, None, usize::MAX).await?,
            Some(m) => {
                let since = time::OffsetDateTime::parse(
                    &m.stop_time,
                    &time::format_description::well_known::Rfc3339,
                )
                .map(|t| t.unix_timestamp())
                .ok();
                self.load_recent_index(&mut dedup, since, crate::writer::RECENT_INDEX_CHUNKS)
                    .await?
            }
            None => {
                self.load_recent_index(&mut dedup, None, crate::writer::RECENT_INDEX_CHUNKS)
                    .await?
            }
        }
        Ok(ChunkWriter::new(self.clone(), dedup))
    }

    /// Loads index objects modified at or after `since` (all when `None`), newest
    /// first, into `dedup.known` until it holds `cap` chunks; packs in
    /// `dedup.excluded` are skipped. An object gc deleted since the listing is skipped.
    async fn load_recent_index(
        &self,
        dedup: &mut Dedup,
        since: Option<i64>,
        cap: usize,
    ) -> Result<()> {
        let mut objects: Vec<_> = self
            .inner
            .backend
            .list("index/")
            .await?
            .into_iter()
            .filter(|o| match (since, o.modified) {
                // Strictly after: the parent's own index objects are written before
                // its stop time is taken, often in the same second.
                (Some(s), Some(m)) => m > s,
                _ => true,
            })
            .collect();
        objects.sort_by(|a, b| b.modified.cmp(&a.modified).then(a.name.cmp(&b.name)));
        let mut skipped = 0usize;
        for o in objects {
            if dedup.known.len() >= cap {
                skipped += 1;
                continue;
            }
            let Some(sealed) = self.get_listed(&o.name).await? else {
                continue;
            };
            let plain = self.inner.master.open(Domain::Index, &sealed)?;
            dedup.learn(&index::decode(&plain)?, cap);
        }
        dedup.seal_known();
        if skipped > 0 {
            tracing::info!(
                skipped,
                chunks = dedup.known.len(),
                "deduplicating against the newest index objects only (memory bound); \
                 chunks only in older ones are stored again unless the parent backup has them"
            );
        }
        Ok(())
    }

    /// A reader. It finds chunks through the packs their references name and
    /// loads the repository index only for references that name none (see
    /// [`ChunkReader`]).
    pub async fn reader(&self) -> Result<ChunkReader> {
        self.reader_with_frame_cache(crate::reader::DEFAULT_FRAME_CACHE_BYTES)
            .await
    }

    /// A reader whose cache of decoded frames holds at most `bytes` bytes
    /// (0 disables caching).
    pub async fn reader_with_frame_cache(&self, bytes: usize) -> Result<ChunkReader> {
        Ok(ChunkReader::lazy(self.clone(), bytes))
    }

    pub(crate) async fn load_index(&self) -> Result<Index> {
        // `repo gc` replaces index objects (new one first, then deletes the
        // old): one that vanishes between list and get means "list again".
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.load_index_once().await {
                Err(e) if e.code() == code::NOTFOUND_OBJECT && attempt < 5 => continue,
                other => return other,
            }
        }
    }

    /// The names of the index objects, as listed.
    pub(crate) async fn index_object_names(&self) -> Result<Vec<String>> {
        Ok(self
            .inner
            .backend
            .list("index/")
            .await?
            .into_iter()
            .map(|o| o.name)
            .collect())
    }

    async fn load_index_once(&self) -> Result<Index> {
        const PARALLEL_GETS: usize = 8;
        let names = self.index_object_names().await?;
        let mut idx = Index::default();
        // Packs condemned by gc or quarantined as damaged are merged last, so a
        // chunk that also lives in another pack is read from there (gc may delete
        // the condemned copy; the quarantined one may be damaged).
        let condemned = self.condemned_or_quarantined().await?;
        let mut late = Vec::new();
        // Fetch and open up to PARALLEL_GETS index objects at a time; merge
        // in name order so the result does not depend on timing.
        for batch in names.chunks(PARALLEL_GETS) {
            let mut set = tokio::task::JoinSet::new();
            for (i, name) in batch.iter().enumerate() {
                let repo = self.clone();
                let name = name.clone();
                set.spawn(async move {
                    let sealed = repo.inner.backend.get(&name).await?;
                    let plain = repo.inner.master.open(Domain::Index, &sealed)?;
                    Ok::<_, Error>((i, index::decode(&plain)?))
                });
            }
            let mut got = Vec::with_capacity(batch.len());
            while let Some(r) = set.join_next().await {
                let r = r.map_err(|e| {
                    Error::new(code::ABORTED_TASK_FAILED, "loading an index object failed")
                        .with_source(e)
                })?;
                got.push(r?);
            }
            got.sort_by_key(|(i, _)| *i);
            for (_, packs) in got {
                for p in packs {
                    let name = pack_name(&p.id);
                    if condemned.contains(&name) {
                        late.push((name, p.entries));
                    } else {
                        idx.add(name, &p.entries);
                    }
                }
            }
        }
        for (name, entries) in late {
            idx.add(name, &entries);
        }
        Ok(idx)
    }

    /// Names and sizes of all packs (`data/`), including unreferenced ones.
    pub async fn list_packs(&self) -> Result<Vec<crate::ObjectInfo>> {
        self.inner.backend.list("data/").await
    }

    /// Reads and opens the header at the end of a pack: the list of its
    /// chunks with their frames. This is what makes the index rebuildable from packs alone.
    pub async fn read_pack_header(&self, pack: &str) -> Result<Vec<PackEntry>> {
        Ok(self.read_pack_header_full(pack).await?.entries)
    }

    /// [`read_pack_header`](Self::read_pack_header) of the pack `id`.
    pub(crate) async fn read_pack_header_of(
        &self,
        id: crate::manifest::PackId,
    ) -> Result<Vec<PackEntry>> {
        self.read_pack_header(&id.object_name()).await
    }

    /// The whole header of a pack. Its version must be the trailer's, and a version 2
    /// or 3 header must name the pack it is in (`verify.pack_corrupt` otherwise: a pack
    /// altered, or copied to another name).
    pub(crate) async fn read_pack_header_full(&self, pack: &str) -> Result<PackHeader> {
        let b = &self.inner.backend;
        let Some(info) = b.stat(pack).await? else {
            return Err(Error::new(
                code::NOTFOUND_OBJECT,
                format!("object {pack} does not exist"),
            ));
        };
        let trailer_len = PACK_TRAILER_LEN as u64;
        if info.size < trailer_len {
            return Err(Error::new(
                code::VERIFY_PACK_CORRUPT,
                format!("pack {pack} is too short to hold a trailer"),
            ));
        }
        let trailer = b
            .get_range(pack, info.size - trailer_len, trailer_len)
            .await?;
        let (off, len) = hs_chunk::parse_trailer(info.size, &trailer)?;
        let sealed = b.get_range(pack, off, u64::from(len)).await?;
        let plain = self.inner.master.open(Domain::PackHeader, &sealed)?;
        let header = PackHeader::decode(&plain, off)?;
        header.check_magic(&trailer[4..])?;
        check_pack_binding(pack, &header)?;
        Ok(header)
    }

    fn manifest_message(&self, deployment: &str, backup_id: &str, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(MANIFEST_SIG_CONTEXT.len() + 100 + body.len());
        m.extend_from_slice(MANIFEST_SIG_CONTEXT);
        for part in [self.id(), deployment, backup_id] {
            m.extend_from_slice(part.as_bytes());
            m.push(0);
        }
        m.extend_from_slice(body);
        m
    }

    /// Stores a backup manifest: JSON, zstd, signed with the keyring's
    /// ed25519 key, sealed, written create-if-absent to
    /// `deployments/<deployment>/backups/<backup_id>`. Call it only after
    /// every chunk it references was written by a finished [`ChunkWriter`].
    /// An existing backup of that id is `conflict.backup_exists`.
    pub async fn put_manifest(&self, m: &BackupManifest) -> Result<()> {
        check_ident(
            &m.deployment,
            "usage.invalid_deployment_name",
            "deployment name",
        )?;
        check_ident(&m.backup_id, "usage.invalid_backup_id", "backup id")?;
        if self.inner.signer.signing_key().verifying_key() != self.inner.verifying {
            return Err(Error::new(
                code::AUTH_SIGNING_KEY_MISMATCH,
                "the keyring's signing key is not the one recorded in the repository's key object",
            )
            .with_suggestion("use the keyring the repository was initialised with"));
        }
        // version, signature (filled in below), then the compressed JSON, encoded as
        // it is compressed: a manifest's JSON is never held whole.
        let mut head = Vec::with_capacity(64 << 10);
        head.push(MANIFEST_OBJECT_VERSION);
        head.extend_from_slice(&[0u8; 64]);
        let mut plain = hs_chunk::compress_streamed(self.compression_level(), head, |w| {
            serde_json::to_writer(w, m).map_err(std::io::Error::other)
        })
        .map_err(|e| {
            Error::new(code::IO_ENCODE_FAILED, "could not encode manifest").with_source(e)
        })?;
        let sig = self.inner.signer.signing_key().sign(&self.manifest_message(
            &m.deployment,
            &m.backup_id,
            &plain[65..],
        ));
        plain[1..65].copy_from_slice(&sig.to_bytes());
        let sealed = self.inner.master.seal(Domain::Manifest, &plain);
        drop(plain);
        let sealed_len = sealed.len() as u64;
        let name = format!("{}{}", manifest_prefix(&m.deployment), m.backup_id);
        if !self
            .inner
            .backend
            .put_if_absent(&name, Bytes::from(sealed))
            .await?
        {
            return Err(Error::new(
                code::CONFLICT_BACKUP_EXISTS,
                format!(
                    "backup {} of deployment {} already exists",
                    m.backup_id, m.deployment
                ),
            )
            .with_suggestion("backup ids are never reused; pick a new id"));
        }
        // The backup exists now; the catalog is a cache that readers repair from the
        // manifests, so failing to update it fails nothing.
        if let Err(e) = self.catalog_add(m, sealed_len).await {
            tracing::warn!(
                code = e.code(),
                "could not add backup {} to the backup catalog (listings read its manifest \
                 until the catalog is updated): {e}",
                m.backup_id
            );
        }
        Ok(())
    }

    /// Loads and verifies one manifest (`notfound.backup` if absent,
    /// `verify.*` if it was tampered with).
    pub async fn load_manifest(&self, deployment: &str, backup_id: &str) -> Result<BackupManifest> {
        check_ident(
            deployment,
            "usage.invalid_deployment_name",
            "deployment name",
        )?;
        check_ident(backup_id, "usage.invalid_backup_id", "backup id")?;
        let name = format!("{}{}", manifest_prefix(deployment), backup_id);
        let sealed = match self.inner.backend.get(&name).await {
            Ok(b) => b,
            Err(e) if e.code() == code::NOTFOUND_OBJECT => {
                return Err(Error::new(
                    code::NOTFOUND_BACKUP,
                    format!("deployment {deployment} has no backup {backup_id}"),
                )
                .with_suggestion("list the deployment's backups to see which exist"))
            }
            Err(e) => return Err(e),
        };
        self.open_manifest(deployment, backup_id, &name, &sealed)
            .map_err(|e| crate::manifest::name_manifest_error(deployment, backup_id, &name, e))
    }

    fn open_manifest(
        &self,
        deployment: &str,
        backup_id: &str,
        name: &str,
        sealed: &[u8],
    ) -> Result<BackupManifest> {
        let plain = self.inner.master.open(Domain::Manifest, sealed)?;
        if plain.len() < 65 || plain[0] != MANIFEST_OBJECT_VERSION {
            return Err(Error::new(
                code::VERIFY_MANIFEST_INVALID,
                format!("manifest {name} has an unknown layout"),
            ));
        }
        let sig = Signature::from_bytes(&plain[1..65])?;
        let body = &plain[65..];
        self.inner
            .verifying
            .verify(&self.manifest_message(deployment, backup_id, body), &sig)?;
        // Decoded as it is decompressed: the JSON is never held whole.
        let json = std::io::BufReader::with_capacity(
            64 << 10,
            hs_chunk::decompress_reader(body, MAX_MANIFEST_LEN)?,
        );
        let m: BackupManifest = serde_json::from_reader(json).map_err(|e| {
            let (c, what) = if e.is_io() {
                (code::VERIFY_DECOMPRESS_FAILED, "could not be decompressed")
            } else {
                (code::VERIFY_MANIFEST_INVALID, "is not valid JSON")
            };
            Error::new(c, format!("manifest {name} {what}"))
                .with_source(e)
                .with_suggestion(
                    "run `pg_hardstorage repo verify`, then restore another backup; \
                     the manifest is signed, so its writer produced it this way",
                )
        })?;
        if m.deployment != deployment || m.backup_id != backup_id {
            return Err(Error::new(
                code::VERIFY_MANIFEST_INVALID,
                format!("manifest {name} names another deployment or backup id"),
            ));
        }
        Ok(m)
    }

    /// Whether the repository holds anything of `deployment`: a backup manifest, a
    /// backup catalog or WAL. Lists `backups/` first (a few objects), so for a deployment
    /// with backups it costs one small listing; only a deployment without backups has
    /// its WAL listed.
    pub async fn has_deployment(&self, deployment: &str) -> Result<bool> {
        check_deployment(deployment)?;
        for part in ["backups/", "catalog/", "wal/"] {
            let prefix = format!("deployments/{deployment}/{part}");
            if !self.inner.backend.list(&prefix).await?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The names of the deployments the repository holds anything of, sorted. It lists
    /// every object under `deployments/` (the store has no cheaper way to name them), so
    /// it is for error paths and rare checks, not for every command.
    pub async fn deployment_names(&self) -> Result<Vec<String>> {
        let mut names = std::collections::BTreeSet::new();
        for o in self.inner.backend.list("deployments/").await? {
            if let Some(name) = o.name.split('/').nth(1) {
                if !names.contains(name) {
                    names.insert(name.to_owned());
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    /// All backups of a deployment, verified, sorted by start time (then id).
    pub async fn list_backups(&self, deployment: &str) -> Result<Vec<BackupManifest>> {
        let mut out = Vec::new();
        for (_, id) in self.listed_backups(deployment).await? {
            out.push(self.load_manifest(deployment, &id).await?);
        }
        sort_backups(&mut out);
        Ok(out)
    }

    /// The manifests listed for a deployment (the name checked first): (object name,
    /// backup id) in listing order.
    pub(crate) async fn listed_backups(&self, deployment: &str) -> Result<Vec<(String, String)>> {
        check_ident(
            deployment,
            "usage.invalid_deployment_name",
            "deployment name",
        )?;
        let prefix = manifest_prefix(deployment);
        Ok(self
            .inner
            .backend
            .list(&prefix)
            .await?
            .into_iter()
            .filter_map(|o| {
                let id = o.name[prefix.len()..].to_string();
                (!id.contains('/')).then_some((o.name, id))
            })
            .collect())
    }

    /// Total size of all objects in the repository.
    pub async fn stored_bytes(&self) -> Result<u64> {
        Ok(self
            .inner
            .backend
            .list("")
            .await?
            .iter()
            .map(|o| o.size)
            .sum())
    }
}

fn exists(url: &str) -> Error {
    Error::new(
        code::CONFLICT_REPO_EXISTS,
        format!("a pg_hardstorage repository already exists at {url}"),
    )
    .with_suggestion(
        "use the existing repository as it is, or choose an empty location for a new one",
    )
}

/// Backups in their order: by start time, then id.
pub(crate) fn sort_backups(backups: &mut [BackupManifest]) {
    backups.sort_by(|a, b| {
        (a.start_time.as_str(), a.backup_id.as_str())
            .cmp(&(b.start_time.as_str(), b.backup_id.as_str()))
    });
}
