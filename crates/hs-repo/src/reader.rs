//! ChunkReader: fetch, open, decompress and verify chunks by id.

use std::sync::Arc;

use bytes::Bytes;
use hs_chunk::ChunkId;
use hs_crypt::Domain;

use crate::error::{Error, Result};
use crate::index::Index;
use crate::manifest::ChunkRef;
use crate::repo::Repository;

/// Reads chunks. Cheap to clone (an `Arc`), `Send + Sync`, usable from many
/// tasks at once. Holds the index as it was when created.
#[derive(Clone)]
pub struct ChunkReader {
    inner: Arc<ReaderInner>,
}

struct ReaderInner {
    repo: Repository,
    index: Index,
}

impl ChunkReader {
    pub(crate) fn new(repo: Repository, index: Index) -> ChunkReader {
        ChunkReader {
            inner: Arc::new(ReaderInner { repo, index }),
        }
    }

    /// Whether the index knows the chunk.
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.inner.index.map.contains_key(id)
    }

    /// Number of distinct chunks in the index.
    pub fn len(&self) -> usize {
        self.inner.index.map.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.inner.index.map.is_empty()
    }

    /// Reads one chunk: range-read from its pack, open, decompress, and
    /// check that its keyed id matches (`verify.chunk_id_mismatch`).
    /// Unknown ids are `notfound.chunk`.
    pub async fn read(&self, r: &ChunkRef) -> Result<Bytes> {
        let inner = &self.inner;
        let Some(loc) = inner.index.map.get(&r.id).copied() else {
            return Err(Error::new(
                "notfound.chunk",
                format!("chunk {} is not in the repository index", r.id),
            )
            .with_suggestion(
                "run a repository check; a backup references a chunk that is missing",
            ));
        };
        if loc.raw_length != r.len {
            return Err(Error::new(
                "verify.chunk_length_mismatch",
                format!(
                    "chunk {} is {} bytes in the index but {} in the reference",
                    r.id, loc.raw_length, r.len
                ),
            ));
        }
        let pack = &inner.index.pack_names[loc.pack as usize];
        let sealed = inner
            .repo
            .inner
            .backend
            .get_range(pack, u64::from(loc.offset), u64::from(loc.length))
            .await?;
        let plain = inner.repo.inner.master.open(Domain::Chunk, &sealed)?;
        let data = if loc.compressed {
            hs_chunk::decompress(&plain, loc.raw_length as usize)?
        } else {
            plain
        };
        if data.len() != loc.raw_length as usize || inner.repo.chunk_id(&data) != r.id {
            return Err(Error::new(
                "verify.chunk_id_mismatch",
                format!("chunk {} read from {pack} does not match its id", r.id),
            )
            .with_suggestion("run a repository check; the pack or index was damaged"));
        }
        Ok(Bytes::from(data))
    }
}
