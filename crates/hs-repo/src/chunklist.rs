//! Chunk lists: a long file's list of chunk references is itself stored as
//! content-addressed chunks, so a manifest names a few list chunks instead of one
//! reference per 8 KiB page, and an unchanged file costs a new backup nothing.
//!
//! A list chunk holds up to [`CHUNK_LIST_GROUP`] references, cut at fixed positions
//! from the start of the file; since relation files are cut into fixed pages, an
//! unchanged run of pages produces the same list chunk and deduplicates.
//!
//! ```text
//! version 1: "HSCL" 1 (chunk_id:[u8;32] len:u32le)*
//! version 2: "HSCL" 2 pack_count:u16le pack_id:[u8;32]*pack_count
//!            (chunk_id:[u8;32] len:u32le pack:u16le)*
//!            pack: index into the pack table, 0xFFFF for "no pack recorded"
//! version 3: as version 2 with chunk_id:[u8;16]
//! ```
//! Readers keep the first 16 bytes of the ids of versions 1 and 2 (see
//! [`ChunkId::from_long`]).
//! Version 2 (written since manifest format 2) names the pack of every chunk, so
//! a reader finds a chunk from its pack's header without the repository index.
//! A backup that keeps a page where its parent had it keeps the parent's pack,
//! so an unchanged run of pages still produces the same list chunk.

use bytes::{BufMut, Bytes, BytesMut};
use hs_base::code;
use hs_chunk::{ChunkId, IdWidth};

use crate::error::{Error, Result};
use std::collections::HashMap;

use crate::manifest::{BackupManifest, ChunkRef, FileEntry, FileKind, PackId};
use crate::reader::ChunkReader;
use crate::writer::ChunkWriter;

/// References per list chunk (22 bytes each, plus a table of the distinct packs: about
/// 180 KiB). A manifest holds one reference per list chunk, so this sets how big a
/// manifest grows with the database: 160 thousand list references for 10 TB of 8 KiB
/// pages (it was 1024 until format 2, eight times as many). Readers take the group size
/// from the lists themselves, so parents written with another size still give hints.
pub const CHUNK_LIST_GROUP: usize = 8192;

/// Files with at most this many chunks keep their references inline in the manifest.
pub const INLINE_CHUNK_LIMIT: usize = 64;

const MAGIC: &[u8; 4] = b"HSCL";
const VERSION_1: u8 = 1;
const VERSION_2: u8 = 2;
const VERSION_3: u8 = 3;
const NO_PACK: u16 = u16::MAX;

/// Encodes one group of references (at most 65535 distinct packs) as a version 3
/// list chunk.
pub fn encode_chunk_list(refs: &[ChunkRef]) -> Bytes {
    let mut packs: Vec<PackId> = Vec::new();
    let mut slots: Vec<u16> = Vec::with_capacity(refs.len());
    for r in refs {
        let slot = match r.pack {
            None => NO_PACK,
            Some(p) => match packs.iter().rposition(|q| *q == p) {
                Some(i) => i as u16,
                None if packs.len() < usize::from(NO_PACK) => {
                    packs.push(p);
                    (packs.len() - 1) as u16
                }
                None => NO_PACK,
            },
        };
        slots.push(slot);
    }
    let mut b = BytesMut::with_capacity(
        7 + packs.len() * 32 + refs.len() * (IdWidth::Short.chunk_desc_len() + 2),
    );
    b.put_slice(MAGIC);
    b.put_u8(VERSION_3);
    b.put_u16_le(packs.len() as u16);
    for p in &packs {
        b.put_slice(&p.0);
    }
    for (r, slot) in refs.iter().zip(slots) {
        b.put_slice(r.id.as_bytes());
        b.put_u32_le(r.len);
        b.put_u16_le(slot);
    }
    b.freeze()
}

/// Decodes a list chunk of version 1, 2 or 3 (see the module documentation).
pub fn decode_chunk_list(data: &[u8]) -> Result<Vec<ChunkRef>> {
    let bad = || {
        Error::new(
            code::VERIFY_CHUNK_LIST_INVALID,
            "a chunk list in the repository is malformed",
        )
        .with_suggestion("run `pg_hardstorage repo verify`; restore another backup")
    };
    if data.len() < 5 || &data[..4] != MAGIC {
        return Err(bad());
    }
    // Version 1 has no pack table and no pack slots; versions 1 and 2 hold 32-byte ids.
    let (packs, body, ids) = match data[4] {
        VERSION_1 => (None, &data[5..], IdWidth::Long),
        v @ (VERSION_2 | VERSION_3) => {
            let n = data.get(5..7).ok_or_else(bad)?;
            let n = usize::from(u16::from_le_bytes([n[0], n[1]]));
            let table = data.get(7..7 + n * 32).ok_or_else(bad)?;
            let packs: Vec<PackId> = table
                .chunks_exact(32)
                .map(|p| {
                    let mut id = [0u8; 32];
                    id.copy_from_slice(p);
                    PackId(id)
                })
                .collect();
            let ids = if v == VERSION_2 {
                IdWidth::Long
            } else {
                IdWidth::Short
            };
            (Some(packs), &data[7 + n * 32..], ids)
        }
        _ => return Err(bad()),
    };
    let id_len = ids.id_len();
    let entry_len = ids.chunk_desc_len() + if packs.is_some() { 2 } else { 0 };
    if !body.len().is_multiple_of(entry_len) {
        return Err(bad());
    }
    body.chunks_exact(entry_len)
        .map(|e| {
            let mut id = [0u8; ChunkId::LEN];
            id.copy_from_slice(&e[..ChunkId::LEN]);
            let len = u32::from_le_bytes([e[id_len], e[id_len + 1], e[id_len + 2], e[id_len + 3]]);
            let pack = match &packs {
                Some(packs) => match u16::from_le_bytes([e[id_len + 4], e[id_len + 5]]) {
                    NO_PACK => None,
                    i => Some(*packs.get(usize::from(i)).ok_or_else(bad)?),
                },
                None => None,
            };
            Ok(ChunkRef {
                id: ChunkId::from_bytes(id),
                len,
                pack,
            })
        })
        .collect()
}

impl ChunkWriter {
    /// Moves a long file's chunk references out of the manifest: each group of
    /// [`CHUNK_LIST_GROUP`] references is stored as a list chunk and
    /// `entry.chunk_lists` names them. Short lists stay inline in `entry.chunks`.
    pub async fn store_chunk_list(&mut self, entry: &mut FileEntry) -> Result<()> {
        self.store_chunk_list_hinted(entry, None).await
    }

    /// [`store_chunk_list`](Self::store_chunk_list), with the same file of the
    /// parent backup as a hint: an unchanged group keeps the parent's list chunk.
    pub async fn store_chunk_list_hinted(
        &mut self,
        entry: &mut FileEntry,
        parent: Option<&FileEntry>,
    ) -> Result<()> {
        if entry.chunks.len() <= INLINE_CHUNK_LIMIT {
            return Ok(());
        }
        let chunks = std::mem::take(&mut entry.chunks);
        for (i, group) in chunks.chunks(CHUNK_LIST_GROUP).enumerate() {
            let hint = parent.and_then(|p| p.chunk_lists.get(i));
            let r = self.add_hinted(encode_chunk_list(group), hint).await?;
            entry.chunk_lists.push(r);
        }
        Ok(())
    }
}

/// The files of a parent backup, for deduplicating a new backup of the same
/// deployment position by position ([`ChunkWriter::add_hinted`]).
pub struct ParentFiles {
    manifest: BackupManifest,
    by_path: HashMap<(String, String), (usize, usize)>,
    reader: ChunkReader,
}

impl ParentFiles {
    /// The files of `manifest`, whose list chunks `reader` reads when needed.
    pub fn new(manifest: BackupManifest, reader: ChunkReader) -> ParentFiles {
        let mut by_path = HashMap::new();
        for (a, arch) in manifest.archives.iter().enumerate() {
            for (f, file) in arch.files.iter().enumerate() {
                if file.kind == FileKind::File {
                    by_path.insert((arch.name.clone(), file.path.clone()), (a, f));
                }
            }
        }
        ParentFiles {
            manifest,
            by_path,
            reader,
        }
    }

    /// The parent backup's manifest.
    pub fn manifest(&self) -> &BackupManifest {
        &self.manifest
    }

    /// The parent's file `path` of archive `archive`, if it had one.
    pub fn file(&self, archive: &str, path: &str) -> Option<&FileEntry> {
        let (a, f) = *self.by_path.get(&(archive.to_string(), path.to_string()))?;
        Some(&self.manifest.archives[a].files[f])
    }

    /// A cursor over the parent's references of file `path` in `archive`.
    pub fn cursor(&self, archive: &str, path: &str) -> Option<ParentCursor> {
        let entry = self.file(archive, path)?;
        Some(ParentCursor {
            inline: entry.chunks.clone(),
            lists: entry.chunk_lists.clone(),
            group: Vec::new(),
            group_index: None,
            group_len: None,
            reader: self.reader.clone(),
        })
    }
}

/// The references of one parent file, by position; reads one list chunk at a time.
pub struct ParentCursor {
    inline: Vec<ChunkRef>,
    lists: Vec<ChunkRef>,
    group: Vec<ChunkRef>,
    group_index: Option<usize>,
    /// References per list chunk of this file (every list but the last is full), from
    /// its first list chunk.
    group_len: Option<usize>,
    reader: ChunkReader,
}

impl ParentCursor {
    /// The parent's reference at position `pos` of the file, if it had one. A
    /// list chunk that cannot be read only costs the hints it held (logged).
    pub async fn at(&mut self, pos: usize) -> Option<ChunkRef> {
        if self.lists.is_empty() {
            return self.inline.get(pos).copied();
        }
        let group_len = match self.group_len {
            Some(n) => n,
            None => {
                self.load_group(0).await;
                // A first list that does not read (or is empty) leaves the size unknown:
                // assume this version's, which only costs hints if it is wrong.
                let n = if self.group.is_empty() {
                    CHUNK_LIST_GROUP
                } else {
                    self.group.len()
                };
                self.group_len = Some(n);
                n
            }
        };
        let gi = pos / group_len;
        if self.group_index != Some(gi) {
            self.load_group(gi).await;
        }
        self.group.get(pos % group_len).copied()
    }

    /// Reads list chunk `gi` into `group` (empty if it does not exist or read).
    async fn load_group(&mut self, gi: usize) {
        self.group_index = Some(gi);
        let Some(list) = self.lists.get(gi) else {
            self.group = Vec::new();
            return;
        };
        self.group = match self
            .reader
            .read(list)
            .await
            .and_then(|d| decode_chunk_list(&d))
        {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(
                    code = e.code(),
                    "a list chunk of the parent backup does not read; its pages are stored again: {e}"
                );
                Vec::new()
            }
        };
    }
}

impl ChunkReader {
    /// The file's chunk references in order, reading its list chunks when it has them.
    pub async fn file_chunks(&self, entry: &FileEntry) -> Result<Vec<ChunkRef>> {
        if entry.chunk_lists.is_empty() {
            return Ok(entry.chunks.clone());
        }
        let mut out = Vec::with_capacity(entry.chunk_lists.len() * CHUNK_LIST_GROUP);
        for l in &entry.chunk_lists {
            out.extend(decode_chunk_list(&self.read(l).await?)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_round_trip_and_rejects_garbage() {
        let refs: Vec<ChunkRef> = (0..100u32)
            .map(|i| ChunkRef {
                id: ChunkId::compute(&[7; 32], &i.to_le_bytes()),
                len: i * 3,
                pack: match i % 3 {
                    0 => None,
                    k => Some(PackId([k as u8; 32])),
                },
            })
            .collect();
        let enc = encode_chunk_list(&refs);
        assert_eq!(decode_chunk_list(&enc).unwrap(), refs);
        assert_eq!(
            decode_chunk_list(&enc[..enc.len() - 1]).unwrap_err().code(),
            "verify.chunk_list_invalid"
        );
        assert!(decode_chunk_list(b"nope!").is_err());
        assert_eq!(decode_chunk_list(&encode_chunk_list(&[])).unwrap(), vec![]);
        // Two distinct packs, stored once each in the table.
        assert_eq!(enc[4], 3);
        assert_eq!(enc.len(), 7 + 2 * 32 + 100 * 22);
        // The same list in version 2 (32-byte ids, as format 2 wrote it) reads to the
        // same references.
        let mut v2 = enc[..7 + 2 * 32].to_vec();
        v2[4] = 2;
        for e in enc[7 + 2 * 32..].chunks(22) {
            v2.extend_from_slice(&e[..16]);
            v2.extend_from_slice(&[0xee; 16]);
            v2.extend_from_slice(&e[16..]);
        }
        assert_eq!(decode_chunk_list(&v2).unwrap(), refs);
        // A pack slot past the table is refused.
        let mut bad = enc.to_vec();
        let n = bad.len();
        bad[n - 2..].copy_from_slice(&7u16.to_le_bytes());
        assert!(decode_chunk_list(&bad).is_err());
        // Version 1 lists (written before packs were recorded) still decode.
        let mut v1 = b"HSCL\x01".to_vec();
        v1.extend_from_slice(&[3; 32]);
        v1.extend_from_slice(&9u32.to_le_bytes());
        assert_eq!(
            decode_chunk_list(&v1).unwrap(),
            vec![ChunkRef::unplaced(ChunkId::from_bytes([3; 16]), 9)]
        );
    }
}
