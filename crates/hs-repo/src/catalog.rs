//! The per-deployment backup catalog: the summaries of a deployment's backups in one
//! small sealed object, so that listing them costs a few requests, not one manifest read
//! per backup (issue 15). See "Catalog" in docs/repository-format.md.
//!
//! The catalog is a cache, never the source of truth. The set of backups is always the
//! listing of `deployments/<name>/backups/`; a catalog entry is used for a listed backup
//! only when the listed manifest object still has the size the entry recorded, and every
//! other listed backup's manifest is read (and, if it opens, added to the catalog the next
//! time it is written). Entries of backups that are no longer listed are dropped. So a
//! missing, stale, damaged or concurrently replaced catalog costs manifest reads, never a
//! wrong answer about which backups exist.
//!
//! Objects are `deployments/<name>/catalog/<newest backup id>-<16 hex digits>`, created
//! with create-if-absent and never rewritten. A writer (a backup after its manifest, or a
//! listing that had to read manifests) writes a new object with every intact listed
//! backup, then deletes the catalog objects it read; a crash between the two leaves
//! several objects, which readers merge. What the catalog says about a backup cannot go
//! stale: backup ids are never reused and manifests never rewritten.

use std::collections::BTreeMap;

use bytes::Bytes;
use hs_base::code;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lock::{open_record, seal_record};
use crate::manifest::{classify_manifest_error, BackupListing, BackupManifest};
use crate::repo::{check_ident, manifest_prefix, Repository};

/// Magic of a catalog object's plaintext (sealed like leases and gc records).
const CATALOG_MAGIC: &[u8; 8] = b"HSCATLG1";
/// Version of the catalog JSON.
const CATALOG_VERSION: u32 = 1;
/// Bound of a catalog's decompressed JSON (about 2 million backups).
const CATALOG_MAX_BYTES: usize = 1 << 30;

/// `deployments/<name>/catalog/`.
pub(crate) fn catalog_prefix(deployment: &str) -> String {
    format!("deployments/{deployment}/catalog/")
}

/// One backup in a catalog.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Entry {
    /// Size of the sealed manifest object the summary was taken from.
    manifest_bytes: u64,
    /// The manifest without `archives` and `pg_backup_manifest`.
    summary: BackupManifest,
}

/// A catalog object's JSON.
#[derive(Serialize, Deserialize, Debug)]
struct Body {
    version: u32,
    deployment: String,
    backups: Vec<Entry>,
}

/// The summary of a manifest: without `archives` and `pg_backup_manifest`.
pub(crate) fn summary_of(m: &BackupManifest) -> BackupManifest {
    BackupManifest {
        archives: Vec::new(),
        pg_backup_manifest: String::new(),
        ..m.clone()
    }
}

/// What a refresh read and decided.
struct Refresh {
    listing: BackupListing,
    /// The catalog objects read (to delete once superseded).
    objects: Vec<String>,
    /// Whether a new catalog object should be written.
    rewrite: bool,
    /// The entries of the intact listed backups.
    entries: Vec<Entry>,
}

impl Repository {
    /// Every backup of a deployment, as [`list_backup_summaries_checked`]
    /// (intact ones as summaries, damaged ones named), from the deployment's catalog: one
    /// listing of the manifests, one of the catalog, one read per catalog object (one,
    /// normally), and a manifest read only for a backup the catalog does not hold or
    /// whose manifest object changed size. Unlike `list_backup_summaries_checked`, a
    /// manifest that was damaged in place without changing size is shown from its
    /// catalog entry: [`Repository::verify_backup`] and `repo verify` open every manifest.
    /// When it had to read manifests (or found several catalog objects), it writes an
    /// updated catalog, best-effort (a read-only repository only costs the reads again).
    ///
    /// [`list_backup_summaries_checked`]: Repository::list_backup_summaries_checked
    pub async fn list_backup_summaries_cataloged(&self, deployment: &str) -> Result<BackupListing> {
        let r = self.refresh_catalog(deployment, None).await?;
        if r.rewrite {
            if let Err(e) = self.write_catalog(deployment, &r.entries, &r.objects).await {
                tracing::debug!(code = e.code(), "could not update the backup catalog: {e}");
            }
        }
        Ok(r.listing)
    }

    /// [`list_backup_summaries`](Self::list_backup_summaries) from the catalog (see
    /// [`list_backup_summaries_cataloged`](Self::list_backup_summaries_cataloged)): a
    /// backup whose manifest does not open fails the call with that manifest's error.
    /// For `status`, `doctor` and the API, which run often and need only the summaries.
    pub async fn backup_summaries_cataloged(
        &self,
        deployment: &str,
    ) -> Result<Vec<BackupManifest>> {
        let listing = self.list_backup_summaries_cataloged(deployment).await?;
        if let Some(d) = listing.damaged.first() {
            return Err(
                Error::new(d.code, d.message.clone()).with_suggestion(format!(
                    "this backup cannot be used: `pg_hardstorage list --check {deployment}` shows \
                 every damaged backup; see runbook 4 in docs/runbooks.md"
                )),
            );
        }
        Ok(listing.backups)
    }

    /// Adds backup `m`, whose sealed manifest is `manifest_bytes` long and was just
    /// stored, to its deployment's catalog: reads the catalog and the listing (repairing
    /// what is missing from manifests), writes a new catalog object and deletes the ones
    /// it read.
    pub(crate) async fn catalog_add(&self, m: &BackupManifest, manifest_bytes: u64) -> Result<()> {
        let known = Entry {
            manifest_bytes,
            summary: summary_of(m),
        };
        let r = self.refresh_catalog(&m.deployment, Some(known)).await?;
        self.write_catalog(&m.deployment, &r.entries, &r.objects)
            .await
    }

    /// Reads the catalog objects and the manifest listing of `deployment`, reading the
    /// manifests the catalog cannot answer for; `known` is an entry to trust as is (a
    /// manifest just written).
    async fn refresh_catalog(&self, deployment: &str, known: Option<Entry>) -> Result<Refresh> {
        check_ident(
            deployment,
            "usage.invalid_deployment_name",
            "deployment name",
        )?;
        let prefix = manifest_prefix(deployment);
        let listed: Vec<(String, String, u64)> = self
            .inner
            .backend
            .list(&prefix)
            .await?
            .into_iter()
            .filter_map(|o| {
                let id = o.name[prefix.len()..].to_string();
                (!id.contains('/')).then_some((o.name, id, o.size))
            })
            .collect();
        let (objects, mut cataloged) = self.read_catalogs(deployment).await?;
        let several = objects.len() > 1;
        if let Some(k) = known {
            cataloged.insert(k.summary.backup_id.clone(), k);
        }
        let mut out = BackupListing::default();
        let mut entries = Vec::with_capacity(listed.len());
        let mut repaired = false;
        for (object, id, size) in listed {
            if let Some(e) = cataloged.remove(&id) {
                if e.manifest_bytes == size && e.summary.backup_id == id {
                    out.backups.push(e.summary.clone());
                    entries.push(e);
                    continue;
                }
            }
            repaired = true;
            match self.load_manifest(deployment, &id).await {
                Ok(m) => {
                    let summary = summary_of(&m);
                    out.backups.push(summary.clone());
                    entries.push(Entry {
                        manifest_bytes: size,
                        summary,
                    });
                }
                Err(e) => out.damaged.extend(classify_manifest_error(object, id, e)?),
            }
        }
        // Left over: entries of backups no longer listed (deleted by retention).
        let stale = !cataloged.is_empty();
        crate::repo::sort_backups(&mut out.backups);
        out.damaged.sort_by(|a, b| a.backup_id.cmp(&b.backup_id));
        let rewrite = !entries.is_empty() && (repaired || several || stale || objects.is_empty());
        Ok(Refresh {
            listing: out,
            objects,
            rewrite,
            entries,
        })
    }

    /// The catalog objects of `deployment` and their entries by backup id, merged. An
    /// object that does not open is skipped with a warning (and superseded by the next
    /// catalog written); one deleted since the listing is skipped.
    async fn read_catalogs(
        &self,
        deployment: &str,
    ) -> Result<(Vec<String>, BTreeMap<String, Entry>)> {
        let prefix = catalog_prefix(deployment);
        let mut objects = Vec::new();
        let mut entries = BTreeMap::new();
        for o in self.inner.backend.list(&prefix).await? {
            if o.name[prefix.len()..].contains('/') {
                continue;
            }
            objects.push(o.name.clone());
            let sealed = match self.inner.backend.get(&o.name).await {
                Ok(b) => b,
                Err(e) if e.code() == code::NOTFOUND_OBJECT => continue,
                Err(e) => return Err(e),
            };
            match self.open_catalog(deployment, &o.name, &sealed) {
                Ok(body) => {
                    for e in body.backups {
                        entries.insert(e.summary.backup_id.clone(), e);
                    }
                }
                Err(e) => {
                    tracing::warn!(code = e.code(), "ignoring backup catalog {}: {e}", o.name)
                }
            }
        }
        Ok((objects, entries))
    }

    /// Whether a catalog object opens and belongs to `deployment` (`repo verify`).
    pub(crate) fn check_catalog(&self, deployment: &str, name: &str, sealed: &[u8]) -> Result<()> {
        self.open_catalog(deployment, name, sealed).map(|_| ())
    }

    fn open_catalog(&self, deployment: &str, name: &str, sealed: &[u8]) -> Result<Body> {
        let bad = |what: &str| {
            Error::new(
                code::VERIFY_CATALOG_INVALID.as_str(),
                format!("backup catalog {name} {what}"),
            )
        };
        let packed = open_record(
            self,
            CATALOG_MAGIC,
            name,
            sealed,
            code::VERIFY_CATALOG_INVALID.as_str(),
        )?;
        let json = hs_chunk::decompress(&packed, CATALOG_MAX_BYTES)
            .map_err(|e| bad("does not decompress").with_source(e))?;
        let body: Body =
            serde_json::from_slice(&json).map_err(|e| bad("is not valid").with_source(e))?;
        if body.version != CATALOG_VERSION || body.deployment != deployment {
            return Err(bad("has another version or deployment"));
        }
        Ok(body)
    }

    /// Writes a catalog object holding `entries` (named after the newest one), then
    /// deletes the catalog objects in `superseded`.
    async fn write_catalog(
        &self,
        deployment: &str,
        entries: &[Entry],
        superseded: &[String],
    ) -> Result<()> {
        let Some(newest) = entries
            .iter()
            .map(|e| e.summary.backup_id.as_str())
            .max_by(|a, b| {
                crate::manifest::backup_id_order(a).cmp(&crate::manifest::backup_id_order(b))
            })
        else {
            return Ok(());
        };
        let mut nonce = [0u8; 8];
        rand::Rng::fill(&mut rand::thread_rng(), &mut nonce);
        let name = format!(
            "{}{newest}-{}",
            catalog_prefix(deployment),
            hex::encode(nonce)
        );
        let body = Body {
            version: CATALOG_VERSION,
            deployment: deployment.to_owned(),
            backups: entries.to_vec(),
        };
        let json = serde_json::to_vec(&body).map_err(|e| {
            Error::new(
                code::IO_ENCODE_FAILED,
                "could not encode the backup catalog",
            )
            .with_source(e)
        })?;
        let packed = hs_chunk::compress(&json, self.compression_level());
        let sealed = seal_record(self, CATALOG_MAGIC, &name, &packed)?;
        if !self
            .inner
            .backend
            .put_if_absent(&name, Bytes::from(sealed))
            .await?
        {
            return Ok(());
        }
        for old in superseded.iter().filter(|o| **o != name) {
            self.inner.backend.delete(old).await?;
        }
        Ok(())
    }
}
