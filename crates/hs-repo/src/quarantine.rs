//! Quarantine of damaged packs: `quarantine/<pack id>` records that make writers stop
//! deduplicating against a pack and readers prefer any other copy of its chunks.
//!
//! A pack found damaged by `repo verify` still holds chunk ids that the index lists, so
//! without a quarantine every new backup would reference the damaged copies again. Once a
//! pack is quarantined:
//!
//! - writers ([`Repository::writer`]) treat it as absent, as they treat condemned packs,
//!   so the next backup stores fresh copies of whatever of its chunks the cluster still has;
//! - readers merge it into the index last, so a chunk that also lives in another pack is
//!   read from there: an older backup whose chunks were stored again by a newer one reads
//!   correctly again (chunk ids are keyed hashes of the content, so the copies are equal);
//! - `repo gc` counts it as referenced only while it holds the only copy of a chunk a
//!   manifest references, then condemns and deletes it like any other pack, and removes
//!   the record once the pack is gone;
//! - `repo verify` keeps reporting its damage as a problem, naming the backups, while
//!   some backup still reads a damaged chunk from it (no other copy), and as a warning
//!   (`verify.pack_quarantined`) once none does.
//!
//! The record's name carries the pack id, so the quarantine holds even if the record's
//! content is damaged; the sealed content (why and when) is informational.

use std::collections::HashSet;

use bytes::Bytes;
use hs_base::code;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lock::{now_unix, open_record, seal_record};
use crate::repo::Repository;

pub(crate) const QUARANTINE_PREFIX: &str = "quarantine/";
pub(crate) const QUARANTINE_MAGIC: &[u8; 8] = b"HSQUAR01";

/// Why and when a pack was quarantined (the content of `quarantine/<pack id>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    /// The pack, `data/<xx>/<pack id>`.
    pub pack: String,
    /// The error code that condemned it, e.g. `verify.pack_corrupt`.
    pub reason: String,
    /// When it was quarantined (Unix seconds).
    pub recorded: i64,
}

/// `data/<xx>/<64 hex>` -> `quarantine/<64 hex>`; anything else is not a pack name.
pub(crate) fn record_name(pack: &str) -> Option<String> {
    let mut parts = pack.split('/');
    let (Some("data"), Some(shard), Some(id), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    if id.len() != 64 || !hex(id) || shard.len() != 2 || !id.starts_with(shard) {
        return None;
    }
    Some(format!("{QUARANTINE_PREFIX}{id}"))
}

/// `quarantine/<64 hex>` -> `data/<xx>/<64 hex>`.
pub(crate) fn pack_of_record(name: &str) -> Option<String> {
    let id = name.strip_prefix(QUARANTINE_PREFIX)?;
    let pack = format!("data/{}/{id}", id.get(..2)?);
    (record_name(&pack).as_deref() == Some(name)).then_some(pack)
}

impl Repository {
    /// Quarantines `pack` (`data/<xx>/<pack id>`) because of `reason` (an error code):
    /// see the module docs. Returns `false` if it was already quarantined. A name that is
    /// not a pack is `usage.invalid_object_name`; a pack that does not exist is
    /// `notfound.object`.
    pub async fn quarantine_pack(&self, pack: &str, reason: &str) -> Result<bool> {
        let Some(name) = record_name(pack) else {
            return Err(Error::new(
                code::USAGE_INVALID_OBJECT_NAME,
                format!("{pack:?} is not a pack name (data/<xx>/<64 hex digits>)"),
            )
            .with_suggestion("name a pack as `repo verify` reports it, e.g. data/ab/ab12..."));
        };
        let backend = self.backend();
        if backend.stat(pack).await?.is_none() {
            return Err(
                Error::new(code::NOTFOUND_OBJECT, format!("pack {pack} does not exist"))
                    .with_suggestion(
                        "nothing to quarantine: run `pg_hardstorage repo verify` again",
                    ),
            );
        }
        let rec = QuarantineRecord {
            pack: pack.to_string(),
            reason: reason.to_string(),
            recorded: now_unix(),
        };
        let json = serde_json::to_vec(&rec).map_err(|e| {
            Error::new(
                code::IO_ENCODE_FAILED,
                "could not encode a quarantine record",
            )
            .with_source(e)
        })?;
        let sealed = seal_record(self, QUARANTINE_MAGIC, &name, &json)?;
        backend.put_if_absent(&name, Bytes::from(sealed)).await
    }

    /// Quarantines every pack a verification problem names (`verify` and `repo
    /// verify` report damaged chunks by their pack). Returns the packs named, each with
    /// whether this call quarantined it (`false`: it already was).
    pub async fn quarantine_damaged(
        &self,
        report: &crate::VerifyReport,
    ) -> Result<Vec<(String, bool)>> {
        let mut out: Vec<(String, bool)> = Vec::new();
        for p in &report.problems {
            if record_name(&p.object).is_none() || out.iter().any(|(n, _)| n == &p.object) {
                continue;
            }
            match self.quarantine_pack(&p.object, p.code).await {
                Ok(new) => out.push((p.object.clone(), new)),
                // Reported missing: nothing left to quarantine.
                Err(e) if e.code() == code::NOTFOUND_OBJECT => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The quarantined packs, from the record names alone (a damaged record still
    /// quarantines its pack).
    pub(crate) async fn quarantined_set(&self) -> Result<HashSet<String>> {
        Ok(self
            .backend()
            .list(QUARANTINE_PREFIX)
            .await?
            .iter()
            .filter_map(|o| pack_of_record(&o.name))
            .collect())
    }

    /// Every quarantine record, opened. A record that does not open is
    /// `verify.quarantine_record_invalid` (its pack stays quarantined regardless).
    pub async fn quarantined_packs(&self) -> Result<Vec<QuarantineRecord>> {
        let backend = self.backend();
        let mut out = Vec::new();
        for o in backend.list(QUARANTINE_PREFIX).await? {
            let Some(sealed) = self.get_listed(&o.name).await? else {
                continue;
            };
            out.push(self.open_quarantine_record(&o.name, &sealed)?);
        }
        out.sort_by(|a, b| a.pack.cmp(&b.pack));
        Ok(out)
    }

    pub(crate) fn open_quarantine_record(
        &self,
        name: &str,
        sealed: &[u8],
    ) -> Result<QuarantineRecord> {
        let invalid = |what: &str| {
            Error::new(
                code::VERIFY_QUARANTINE_RECORD_INVALID,
                format!("quarantine record {name} {what}"),
            )
            .with_suggestion(
                "the pack it names stays quarantined; delete the record and run \
                 `pg_hardstorage repo verify --quarantine` to write it again",
            )
        };
        let json = open_record(
            self,
            QUARANTINE_MAGIC,
            name,
            sealed,
            "verify.quarantine_record_invalid",
        )?;
        let rec: QuarantineRecord =
            serde_json::from_slice(&json).map_err(|_| invalid("is not valid JSON"))?;
        if record_name(&rec.pack).as_deref() != Some(name) {
            return Err(invalid("names another pack"));
        }
        Ok(rec)
    }

    /// Deletes the records of quarantined packs that no longer exist (gc deleted them).
    pub(crate) async fn drop_stale_quarantine(
        &self,
        exists: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<usize> {
        let backend = self.backend();
        let mut removed = 0;
        for o in backend.list(QUARANTINE_PREFIX).await? {
            let stale = match pack_of_record(&o.name) {
                Some(p) => !exists(&p),
                None => false,
            };
            if stale {
                backend.delete(&o.name).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::{pack_of_record, record_name};

    #[test]
    fn record_names_round_trip_and_refuse_what_is_not_a_pack() {
        let id = "ab".to_string() + &"0123456789abcdef".repeat(4)[2..];
        let pack = format!("data/ab/{id}");
        let name = record_name(&pack).unwrap();
        assert_eq!(name, format!("quarantine/{id}"));
        assert_eq!(pack_of_record(&name).unwrap(), pack);
        for bad in [
            "data/ab".to_string(),
            format!("data/cd/{id}"),
            format!("data/ab/{id}/x"),
            format!("index/{id}"),
            format!("data/AB/{}", id.to_uppercase()),
            "data/ab/abc".to_string(),
        ] {
            assert_eq!(record_name(&bad), None, "{bad}");
        }
        assert_eq!(pack_of_record("quarantine/xyz"), None);
        assert_eq!(pack_of_record("locks/abc"), None);
    }
}
