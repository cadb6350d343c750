//! Chunk lists: a long file's list of chunk references is itself stored as
//! content-addressed chunks, so a manifest names a few list chunks instead of one
//! reference per 8 KiB page, and an unchanged file costs a new backup nothing.
//!
//! A list chunk holds up to [`CHUNK_LIST_GROUP`] references, cut at fixed positions
//! from the start of the file; since relation files are cut into fixed pages, an
//! unchanged run of pages produces the same list chunk and deduplicates.

use bytes::{BufMut, Bytes, BytesMut};
use hs_base::code;
use hs_chunk::ChunkId;

use crate::error::{Error, Result};
use crate::manifest::{ChunkRef, FileEntry};
use crate::reader::ChunkReader;
use crate::writer::ChunkWriter;

/// References per list chunk (36 bytes each, so a list chunk is at most 36 KiB + 5).
pub const CHUNK_LIST_GROUP: usize = 1024;

/// Files with at most this many chunks keep their references inline in the manifest.
pub const INLINE_CHUNK_LIMIT: usize = 64;

const MAGIC: &[u8; 4] = b"HSCL";
const VERSION: u8 = 1;
const ENTRY_LEN: usize = 36;

/// Encodes one group of references as a list chunk.
pub fn encode_chunk_list(refs: &[ChunkRef]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + refs.len() * ENTRY_LEN);
    b.put_slice(MAGIC);
    b.put_u8(VERSION);
    for r in refs {
        b.put_slice(r.id.as_bytes());
        b.put_u32_le(r.len);
    }
    b.freeze()
}

/// Decodes a list chunk made by [`encode_chunk_list`].
pub fn decode_chunk_list(data: &[u8]) -> Result<Vec<ChunkRef>> {
    let bad = || {
        Error::new(
            code::VERIFY_CHUNK_LIST_INVALID,
            "a chunk list in the repository is malformed",
        )
        .with_suggestion("run `pg_hardstorage repo verify`; restore another backup")
    };
    if data.len() < 5 || &data[..4] != MAGIC || data[4] != VERSION {
        return Err(bad());
    }
    let body = &data[5..];
    if !body.len().is_multiple_of(ENTRY_LEN) {
        return Err(bad());
    }
    body.chunks_exact(ENTRY_LEN)
        .map(|e| {
            let mut id = [0u8; 32];
            id.copy_from_slice(&e[..32]);
            let mut len = [0u8; 4];
            len.copy_from_slice(&e[32..]);
            Ok(ChunkRef {
                id: ChunkId::from_bytes(id),
                len: u32::from_le_bytes(len),
            })
        })
        .collect()
}

impl ChunkWriter {
    /// Moves a long file's chunk references out of the manifest: each group of
    /// [`CHUNK_LIST_GROUP`] references is stored as a list chunk and
    /// `entry.chunk_lists` names them. Short lists stay inline in `entry.chunks`.
    pub async fn store_chunk_list(&mut self, entry: &mut FileEntry) -> Result<()> {
        if entry.chunks.len() <= INLINE_CHUNK_LIMIT {
            return Ok(());
        }
        let chunks = std::mem::take(&mut entry.chunks);
        for group in chunks.chunks(CHUNK_LIST_GROUP) {
            let r = self.add(encode_chunk_list(group)).await?;
            entry.chunk_lists.push(r);
        }
        Ok(())
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
    }
}
