//! hs-chunk: how pg_hardstorage cuts files into chunks, names them, compresses
//! them and bundles them into packs.
//!
//! - [`FileClass::of`] tells relation files (cut into 8 KiB pages, one chunk
//!   per page: PostgreSQL rewrites pages in place, so whole pages are what
//!   repeats between backups) from everything else (FastCDC,
//!   64 KiB / 256 KiB / 1 MiB by default).
//! - [`Chunker`] is streaming: feed a file's bytes as they arrive; the chunks
//!   do not depend on how the input was split.
//! - [`ChunkId`] is keyed BLAKE3 of a chunk's plaintext.
//! - [`compress`], [`decompress`] and the reusable [`Compressor`] wrap zstd.
//! - [`PackBuilder`], [`PackHeader`], [`split_pack`] and [`parse_trailer`]
//!   implement the pack format: chunks stored together are compressed as one
//!   zstd frame, each chunk located by (frame, offset inside the frame); see
//!   the `pack` module docs and docs/repository-format.md.
//!
//! This crate does no storage I/O and no encryption: sealing is a closure
//! passed in by the caller (hs-repo, using hs-crypt).
//!
//! ```
//! use hs_chunk::{Chunker, ChunkerConfig, FileClass};
//! let cfg = ChunkerConfig::default();
//! let class = FileClass::of("base/16384/16385");
//! assert_eq!(class, FileClass::Relation);
//! let mut c = Chunker::new(class, &cfg);
//! let mut sizes = Vec::new();
//! c.push(&vec![0u8; 20000], &mut |ch| sizes.push(ch.len()));
//! c.finish(&mut |ch| sizes.push(ch.len()));
//! assert_eq!(sizes, vec![8192, 8192, 3616]);
//! ```
#![deny(missing_docs)]

mod chunker;
mod compress;
mod error;
mod id;
mod pack;

pub use chunker::{Chunker, ChunkerConfig, FileClass};
pub use compress::{
    compress, compress_streamed, decompress, decompress_into, decompress_into_aligned,
    decompress_reader, Compressor, FrameBuilder, DEFAULT_LEVEL,
};
pub use error::{Error, ErrorKind, Result};
pub use id::ChunkId;
pub use pack::{
    decode_entries, encode_entries, encoded_entries_len, parse_trailer, split_pack, IdWidth,
    PackBuilder, PackEntry, PackFormat, PackHeader, PACK_CHUNK_DESC_LEN, PACK_FRAME_DESC_LEN,
    PACK_MAGIC, PACK_MAGIC_V2, PACK_MAGIC_V3, PACK_TRAILER_LEN,
};
