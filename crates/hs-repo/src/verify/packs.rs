//! Packs (read whole: hash, header, every frame and chunk) and index objects.

use std::collections::HashSet;

use hs_chunk::{ChunkId, PackEntry, PackHeader};
use hs_crypt::Domain;

use super::{base_name, VerifyReport};
use crate::error::Result;
use crate::index::{self, Index};
use crate::repo::{pack_name, Repository};

/// Checks a whole pack in memory: its name is the BLAKE3 hash of its bytes
/// (version 1) or the id its header names (versions 2 and 3), its header opens,
/// parses and has the trailer's version, and every frame opens, decompresses to
/// its recorded length and holds chunks that match their ids. Returns the header
/// entries (if the header is readable), the problems found and the chunks found
/// damaged.
pub(super) fn check_pack(repo: &Repository, name: &str, data: &[u8]) -> PackCheck {
    let mut c = check_pack_content(repo, data);
    if !data.ends_with(&hs_chunk::PACK_MAGIC) {
        if let Some(id) = c.pack_id {
            if pack_name(&id) != name {
                c.problems.push((
                    "verify.pack_corrupt",
                    format!(
                        "its header names another pack ({}): it was copied or renamed",
                        hex::encode(id)
                    ),
                ));
            }
        }
        return c;
    }
    // Last: a damaged frame or header says more than the hash does.
    if blake3::hash(data).to_hex().as_str() != base_name(name) {
        c.problems.push((
            "verify.pack_corrupt",
            "its content does not match its name (BLAKE3 of the pack)".to_string(),
        ));
    }
    c
}

/// [`check_pack`] but for the name.
fn check_pack_content(repo: &Repository, data: &[u8]) -> PackCheck {
    let mut problems = Vec::new();
    let mut bad = HashSet::new();
    let (blobs, sealed) = match hs_chunk::split_pack(data) {
        Ok(x) => x,
        Err(e) => {
            problems.push(("verify.pack_corrupt", format!("{e} ({})", e.code())));
            return PackCheck::unreadable(problems);
        }
    };
    let header = repo
        .inner
        .master
        .open(Domain::PackHeader, sealed)
        .and_then(|plain| PackHeader::decode(&plain, blobs.len() as u64))
        .and_then(|h| h.check_magic(&data[data.len() - 8..]).map(|()| h));
    let (entries, pack_id) = match header {
        Ok(h) => (h.entries, h.pack_id),
        Err(e) => {
            problems.push((
                "verify.pack_corrupt",
                format!("its header does not open: {e} ({})", e.code()),
            ));
            return PackCheck::unreadable(problems);
        }
    };
    let mut i = 0;
    while i < entries.len() {
        let f = entries[i];
        let mut j = i;
        while j < entries.len() && entries[j].frame_offset == f.frame_offset {
            j += 1;
        }
        let frame = &entries[i..j];
        i = j;
        let start = f.frame_offset as usize;
        let Some(blob) = blobs.get(start..start + f.frame_length as usize) else {
            problems.push((
                "verify.pack_corrupt",
                format!("the frame at offset {start} lies outside the pack"),
            ));
            bad.extend(frame.iter().map(|c| c.id));
            continue;
        };
        let plain = match repo.inner.master.open(Domain::Chunk, blob) {
            Ok(p) => p,
            Err(e) => {
                problems.push((
                    "verify.pack_corrupt",
                    format!(
                        "the frame at offset {start} does not open: {e} ({})",
                        e.code()
                    ),
                ));
                bad.extend(frame.iter().map(|c| c.id));
                continue;
            }
        };
        let plain = if f.compressed {
            match hs_chunk::decompress(&plain, f.frame_raw_length as usize) {
                Ok(p) => p,
                Err(e) => {
                    problems.push((
                        "verify.pack_corrupt",
                        format!("the frame at offset {start} does not decompress: {e}"),
                    ));
                    bad.extend(frame.iter().map(|c| c.id));
                    continue;
                }
            }
        } else {
            plain
        };
        if plain.len() != f.frame_raw_length as usize {
            problems.push((
                "verify.pack_corrupt",
                format!(
                    "the frame at offset {start} holds {} bytes, not {}",
                    plain.len(),
                    f.frame_raw_length
                ),
            ));
            bad.extend(frame.iter().map(|c| c.id));
            continue;
        }
        for c in frame {
            let s = c.chunk_offset as usize;
            let ok = plain
                .get(s..s + c.raw_length as usize)
                .is_some_and(|d| repo.chunk_id(d) == c.id);
            if !ok {
                bad.insert(c.id);
                problems.push((
                    "verify.pack_corrupt",
                    format!(
                        "chunk {} in the frame at offset {start} does not match its id",
                        c.id
                    ),
                ));
            }
        }
    }
    PackCheck {
        entries: Some(entries),
        pack_id,
        problems,
        bad,
    }
}

impl PackCheck {
    /// A pack whose trailer or header does not read: only `problems`.
    fn unreadable(problems: Vec<(&'static str, String)>) -> PackCheck {
        PackCheck {
            entries: None,
            pack_id: None,
            problems,
            bad: HashSet::new(),
        }
    }
}

/// What [`check_pack`] found in one pack.
pub(super) struct PackCheck {
    /// The header's entries, `None` if the header (or the trailer) is unreadable:
    /// then every chunk the index lists for the pack counts as damaged.
    pub(super) entries: Option<Vec<PackEntry>>,
    /// The id a version 2 or 3 header names (its pack's name).
    pub(super) pack_id: Option<[u8; 32]>,
    /// Each finding: its code and message, in pack order.
    pub(super) problems: Vec<(&'static str, String)>,
    /// The chunks of frames that do not open, and chunks that do not match their id.
    pub(super) bad: HashSet<ChunkId>,
}

/// Index objects as loaded for verifying a format 1 backup.
pub(super) struct LoadedIndex {
    pub(super) index: Index,
}

impl Repository {
    /// Loads every index object that opens; the others are reported (as
    /// problems, or as warnings when `damage_is_warning`).
    pub(super) async fn load_index_checked(
        &self,
        report: &mut VerifyReport,
        damage_is_warning: bool,
    ) -> Result<LoadedIndex> {
        let mut names = self.index_object_names().await?;
        names.sort();
        let mut out = LoadedIndex {
            index: Index::default(),
        };
        // As readers do: condemned and quarantined packs last, so a chunk that also
        // lives in another pack is checked where a restore would read it.
        let late_packs = self.condemned_or_quarantined().await?;
        let mut late = Vec::new();
        for name in names {
            let Some(sealed) = self.get_listed(&name).await? else {
                continue;
            };
            report.bytes_read += sealed.len() as u64;
            let bad = |report: &mut VerifyReport, msg: String| {
                if damage_is_warning {
                    report.warn("verify.index_corrupt", &name, msg);
                } else {
                    report.problem("verify.index_corrupt", &name, msg);
                }
            };
            if blake3::hash(&sealed).to_hex().as_str() != base_name(&name) {
                bad(
                    report,
                    "its content does not match its name (BLAKE3 of the object)".to_string(),
                );
            }
            let decoded = self
                .inner
                .master
                .open(Domain::Index, &sealed)
                .and_then(|p| index::decode(&p));
            match decoded {
                Ok(packs) => {
                    for p in packs {
                        let pn = pack_name(&p.id);
                        if late_packs.contains(&pn) {
                            late.push((pn, p.entries));
                        } else {
                            out.index.add(pn, &p.entries);
                        }
                    }
                }
                Err(e) => bad(report, format!("it does not open: {e} ({})", e.code())),
            }
        }
        for (pn, entries) in late {
            out.index.add(pn, &entries);
        }
        Ok(out)
    }
}
