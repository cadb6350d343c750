//! Moved records: `gc/moved/<from>-<to>` says that every chunk of pack `<from>`
//! that a backup still needed when `repo gc` repacked it is also in pack `<to>`
//! (both 64 hex digits). Manifests are never rewritten, so references keep naming
//! `<from>` after gc deleted it; a reader that finds the named pack gone looks for
//! its moved record and reads the chunk from `<to>`'s header (following up to
//! [`MAX_MOVES`] records when `<to>` was repacked in turn) before it falls back to
//! the whole index. See docs/repository-format.md, "Repacking".
//!
//! The name carries the mapping, so gc and readers need only a listing; the body is
//! a sealed record (magic `HSGCMOV1`, bound to the name) with the same two ids and
//! the time (nothing reads it yet; `repo verify` does not check moved records).

use std::collections::HashMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::lock::{now_unix, seal_record};
use crate::manifest::PackId;
use crate::repo::Repository;

/// Where moved records live.
pub(crate) const MOVED_PREFIX: &str = "gc/moved/";
const MOVED_MAGIC: &[u8; 8] = b"HSGCMOV1";
/// Moved records a reader or gc follows from one named pack at most (a pack whose
/// live chunks were repacked, then the new pack repacked again, and so on).
pub(crate) const MAX_MOVES: usize = 16;

#[derive(Serialize, Deserialize)]
struct MovedRecord {
    from: PackId,
    to: PackId,
    created: i64,
}

/// The object name of the record "the live chunks of `from` are in `to`".
pub(crate) fn moved_name(from: &PackId, to: &PackId) -> String {
    format!("{MOVED_PREFIX}{from}-{to}")
}

/// The two packs of a moved record's name; `None` for any other name.
pub(crate) fn parse_moved_name(name: &str) -> Option<(PackId, PackId)> {
    let rest = name.strip_prefix(MOVED_PREFIX)?;
    let (a, b) = rest.split_once('-')?;
    let mut from = [0u8; 32];
    let mut to = [0u8; 32];
    hex::decode_to_slice(a, &mut from).ok()?;
    hex::decode_to_slice(b, &mut to).ok()?;
    Some((PackId(from), PackId(to)))
}

/// Follows `moves` from `pack` to the end of its chain (at most [`MAX_MOVES`] steps):
/// the pack that now holds what `pack` held, or `pack` itself.
pub(crate) fn chain_end(moves: &HashMap<PackId, PackId>, pack: PackId) -> PackId {
    let mut p = pack;
    for _ in 0..MAX_MOVES {
        match moves.get(&p) {
            Some(q) if *q != pack => p = *q,
            _ => break,
        }
    }
    p
}

/// Whether the moved records lead from `pack` to a pack in `excluded` (condemned or
/// quarantined), or further than [`MAX_MOVES`]: a writer must not name `pack` then, as
/// it must not name the condemned pack itself (the chunk may be in no pack that stays).
pub(crate) fn leads_to(
    moves: &HashMap<PackId, PackId>,
    pack: PackId,
    excluded: &std::collections::HashSet<PackId>,
) -> bool {
    let mut at = pack;
    for _ in 0..MAX_MOVES {
        match moves.get(&at) {
            Some(to) if excluded.contains(to) => return true,
            Some(to) => at = *to,
            None => return false,
        }
    }
    moves.contains_key(&at)
}

impl Repository {
    /// Every moved record, from the listing: source pack -> target pack (of two
    /// records for one source, left by a crashed run, the first listed).
    pub(crate) async fn moved_map(&self) -> Result<HashMap<PackId, PackId>> {
        let mut out = HashMap::new();
        for o in self.inner.backend.list(MOVED_PREFIX).await? {
            if let Some((from, to)) = parse_moved_name(&o.name) {
                out.entry(from).or_insert(to);
            }
        }
        Ok(out)
    }

    /// The pack the live chunks of `from` were moved to, if gc repacked it.
    pub(crate) async fn moved_target(&self, from: PackId) -> Result<Option<PackId>> {
        let prefix = format!("{MOVED_PREFIX}{from}-");
        Ok(self
            .inner
            .backend
            .list(&prefix)
            .await?
            .iter()
            .find_map(|o| parse_moved_name(&o.name).map(|(_, to)| to)))
    }

    /// Writes the moved record `from` -> `to` (after `to` is durable and indexed).
    pub(crate) async fn put_moved(&self, from: &PackId, to: &PackId) -> Result<()> {
        let name = moved_name(from, to);
        let rec = MovedRecord {
            from: *from,
            to: *to,
            created: now_unix(),
        };
        let json = super::encode(&rec)?;
        let sealed = seal_record(self, MOVED_MAGIC, &name, &json)?;
        self.inner
            .backend
            .put_if_absent(&name, Bytes::from(sealed))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_chains_end() {
        let p = |b: u8| PackId([b; 32]);
        let name = moved_name(&p(1), &p(2));
        assert_eq!(parse_moved_name(&name), Some((p(1), p(2))));
        assert_eq!(parse_moved_name("gc/moved/xyz-abc"), None);
        assert_eq!(parse_moved_name("gc/condemned/ab"), None);
        let moves: HashMap<PackId, PackId> = [(p(1), p(2)), (p(2), p(3)), (p(7), p(7))].into();
        assert_eq!(chain_end(&moves, p(1)), p(3));
        assert_eq!(chain_end(&moves, p(3)), p(3));
        assert_eq!(chain_end(&moves, p(7)), p(7));
        let excluded: std::collections::HashSet<PackId> = [p(3)].into();
        assert!(leads_to(&moves, p(1), &excluded));
        assert!(!leads_to(&moves, p(3), &excluded));
        assert!(!leads_to(&moves, p(5), &excluded));
        let long: HashMap<PackId, PackId> = (0..40u8).map(|i| (p(i), p(i + 1))).collect();
        assert!(
            leads_to(&long, p(0), &Default::default()),
            "too long to follow"
        );
        assert!(!leads_to(&long, p(30), &Default::default()));
    }
}
