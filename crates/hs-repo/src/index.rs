//! Index objects: which pack holds which chunk.
//!
//! Plaintext (sealed with `Domain::Index` before storing):
//! ```text
//! version:u8 (=2; 1 is read) pack_count:u32le
//! per pack: pack_id:[u8;32] frames
//! frames = the pack header's frame list (see hs_chunk's pack module):
//!   frame_count:u32le, per frame offset, length, raw_length, flags and its
//!   chunks (id, raw_length); ids are 16 bytes in version 2, 32 in version 1
//! ```

use std::collections::HashMap;

use hs_base::code;
use hs_chunk::{ChunkId, IdWidth, PackEntry};

use crate::error::{Error, Result};

/// The version this build writes: 16-byte chunk ids.
const INDEX_VERSION: u8 = 2;
/// The version format 1 and 2 builds wrote: 32-byte chunk ids.
const INDEX_VERSION_LONG_IDS: u8 = 1;

/// The entries of one pack as recorded in an index object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IndexedPack {
    pub id: [u8; 32],
    pub entries: Vec<PackEntry>,
}

fn corrupt(msg: &str) -> Error {
    Error::new(code::VERIFY_INDEX_CORRUPT, msg.to_string())
        .with_suggestion("run a repository check; an index object is damaged")
}

pub(crate) fn encode(packs: &[IndexedPack]) -> Vec<u8> {
    encode_with(packs, IdWidth::Short)
}

/// [`encode`] with ids `ids` wide: [`IdWidth::Long`] makes a version 1 object (tests
/// that make old repositories).
pub(crate) fn encode_with(packs: &[IndexedPack], ids: IdWidth) -> Vec<u8> {
    let n: usize = packs
        .iter()
        .map(|p| 32 + hs_chunk::encoded_entries_len(&p.entries, ids))
        .sum();
    let mut out = Vec::with_capacity(5 + n);
    out.push(match ids {
        IdWidth::Short => INDEX_VERSION,
        IdWidth::Long => INDEX_VERSION_LONG_IDS,
    });
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in packs {
        out.extend_from_slice(&p.id);
        hs_chunk::encode_entries(&p.entries, ids, &mut out);
    }
    out
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
    if b.len() < n {
        return Err(corrupt("an index object is truncated"));
    }
    let (h, t) = b.split_at(n);
    *b = t;
    Ok(h)
}

pub(crate) fn decode(mut b: &[u8]) -> Result<Vec<IndexedPack>> {
    let b = &mut b;
    let ids = match take(b, 1)?[0] {
        INDEX_VERSION => IdWidth::Short,
        INDEX_VERSION_LONG_IDS => IdWidth::Long,
        _ => return Err(corrupt("an index object has an unknown version")),
    };
    let c = take(b, 4)?;
    let count = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize;
    let mut packs = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let mut id = [0u8; 32];
        id.copy_from_slice(take(b, 32)?);
        let entries = hs_chunk::decode_entries(b, ids, None)
            .map_err(|e| corrupt(&format!("an index object is malformed: {e}")))?;
        packs.push(IndexedPack { id, entries });
    }
    if !b.is_empty() {
        return Err(corrupt("an index object has trailing bytes"));
    }
    Ok(packs)
}

/// Fuzzing entry point: parses `data` as an index object's plaintext and returns the
/// number of chunk entries it lists. Never panics, whatever the input.
#[cfg(feature = "fuzz")]
pub fn fuzz_index(data: &[u8]) -> usize {
    decode(data).map_or(0, |p| p.iter().map(|p| p.entries.len()).sum())
}

/// Where a chunk is stored.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Location {
    pub pack: u32,
    pub frame_offset: u32,
    pub frame_length: u32,
    pub frame_raw_length: u32,
    pub chunk_offset: u32,
    pub raw_length: u32,
    pub compressed: bool,
}

/// The merged in-memory index: pack names plus chunk locations.
#[derive(Default)]
pub(crate) struct Index {
    pub pack_names: Vec<String>,
    pub map: HashMap<ChunkId, Location>,
}

impl Index {
    pub fn add(&mut self, pack_name: String, entries: &[PackEntry]) {
        let pack = self.pack_names.len() as u32;
        self.pack_names.push(pack_name);
        for e in entries {
            // The first location seen wins; duplicates (two writers storing
            // the same chunk) are harmless.
            self.map.entry(e.id).or_insert(Location {
                pack,
                frame_offset: e.frame_offset,
                frame_length: e.frame_length,
                frame_raw_length: e.frame_raw_length,
                chunk_offset: e.chunk_offset,
                raw_length: e.raw_length,
                compressed: e.compressed,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let packs = vec![
            IndexedPack {
                id: [9; 32],
                entries: [(1u8, 0u32, 8192u32), (2, 8192, 100)]
                    .iter()
                    .map(|&(b, chunk_offset, raw_length)| PackEntry {
                        id: ChunkId::from_bytes([b; ChunkId::LEN]),
                        frame_offset: 0,
                        frame_length: 40,
                        frame_raw_length: 8292,
                        chunk_offset,
                        raw_length,
                        compressed: true,
                    })
                    .collect(),
            },
            IndexedPack {
                id: [8; 32],
                entries: vec![],
            },
        ];
        let b = encode(&packs);
        assert_eq!(b[0], 2);
        assert_eq!(decode(&b).unwrap(), packs);
        // 16-byte ids: 20 bytes per chunk.
        assert_eq!(b.len(), 5 + 2 * 32 + 4 + 17 + 2 * 20 + 4);
        // Version 1 (32-byte ids, as format 1 and 2 wrote them) reads to the same.
        let long = encode_with(&packs, IdWidth::Long);
        assert_eq!((long[0], long.len()), (1, b.len() + 2 * 16));
        assert_eq!(decode(&long).unwrap(), packs);
        assert_eq!(
            decode(&b[..b.len() - 1]).unwrap_err().code(),
            "verify.index_corrupt"
        );
        let mut extra = b.clone();
        extra.push(0);
        assert!(decode(&extra).is_err());
        assert!(decode(&[]).is_err());
    }
}
