//! The pack format: blobs, a sealed header, a length and a magic trailer.
//!
//! ```text
//! pack    = blob* sealed_header header_len magic
//! blob    = sealed (zstd-compressed or raw) chunk bytes
//! header_len = u32 little-endian, length of sealed_header
//! magic   = "HSPACK01" (8 bytes; "01" is the pack format version)
//! header plaintext = version:u8 (=1) count:u32le entry*count
//! entry   = chunk_id:[u8;32] offset:u32le length:u32le raw_length:u32le flags:u8
//! flags   = bit 0: blob plaintext is zstd-compressed; other bits zero
//! ```
//!
//! This module neither encrypts nor does I/O: sealing of the header is a
//! closure supplied by the caller, and opening is done by the caller before
//! [`PackHeader::decode`].

use crate::error::{Error, ErrorKind, Result};
use crate::id::ChunkId;

/// The 8 bytes every pack ends with.
pub const PACK_MAGIC: [u8; 8] = *b"HSPACK01";
/// Length of the trailer: 4-byte header length plus [`PACK_MAGIC`].
pub const PACK_TRAILER_LEN: usize = 12;
/// Encoded length of one header entry.
pub const PACK_ENTRY_LEN: usize = 45;
const HEADER_VERSION: u8 = 1;
const FLAG_COMPRESSED: u8 = 1;

/// Where one blob lives inside a pack and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PackEntry {
    /// The chunk's id (keyed hash of the uncompressed plaintext).
    pub id: ChunkId,
    /// Byte offset of the blob from the start of the pack.
    pub offset: u32,
    /// Length of the blob as stored (sealed).
    pub length: u32,
    /// Length of the chunk's plaintext after opening and decompressing.
    pub raw_length: u32,
    /// Whether the opened blob is a zstd frame (otherwise it is the raw chunk).
    pub compressed: bool,
}

impl PackEntry {
    /// Appends the 45-byte encoding of this entry to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.raw_length.to_le_bytes());
        out.push(if self.compressed { FLAG_COMPRESSED } else { 0 });
    }

    /// Decodes one entry from exactly [`PACK_ENTRY_LEN`] bytes.
    pub fn decode(b: &[u8]) -> Result<PackEntry> {
        if b.len() != PACK_ENTRY_LEN {
            return Err(corrupt("a pack entry has the wrong length"));
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&b[..32]);
        let u = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let flags = b[44];
        if flags & !FLAG_COMPRESSED != 0 {
            return Err(corrupt("a pack entry has unknown flags"));
        }
        Ok(PackEntry {
            id: ChunkId::from_bytes(id),
            offset: u(32),
            length: u(36),
            raw_length: u(40),
            compressed: flags & FLAG_COMPRESSED != 0,
        })
    }
}

fn corrupt(msg: &str) -> Error {
    Error::new(ErrorKind::Corrupt, "verify.pack_corrupt", msg.to_string())
        .with_suggestion("run a repository check; the pack may have been damaged in storage")
}

/// The list of blobs in a pack (the header's plaintext).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackHeader {
    /// The entries in the order the blobs were written.
    pub entries: Vec<PackEntry>,
}

impl PackHeader {
    /// The header plaintext (to be sealed by the caller).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + self.entries.len() * PACK_ENTRY_LEN);
        out.push(HEADER_VERSION);
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            e.encode_into(&mut out);
        }
        out
    }

    /// Parses an opened header. `blobs_len` is the length of the blob area
    /// (pack length minus sealed header minus trailer); every entry must lie
    /// inside it.
    pub fn decode(plain: &[u8], blobs_len: u64) -> Result<PackHeader> {
        if plain.len() < 5 || plain[0] != HEADER_VERSION {
            return Err(corrupt("the pack header has an unknown version"));
        }
        let count = u32::from_le_bytes([plain[1], plain[2], plain[3], plain[4]]) as usize;
        let body = &plain[5..];
        if body.len() != count.saturating_mul(PACK_ENTRY_LEN) {
            return Err(corrupt(
                "the pack header length does not match its entry count",
            ));
        }
        let mut entries = Vec::with_capacity(count);
        for b in body.chunks_exact(PACK_ENTRY_LEN) {
            let e = PackEntry::decode(b)?;
            if u64::from(e.offset) + u64::from(e.length) > blobs_len {
                return Err(corrupt("a pack header entry points outside the pack"));
            }
            entries.push(e);
        }
        Ok(PackHeader { entries })
    }
}

/// Parses the 12-byte trailer of a pack of `pack_len` bytes and returns
/// `(offset, length)` of the sealed header.
pub fn parse_trailer(pack_len: u64, trailer: &[u8]) -> Result<(u64, u32)> {
    if trailer.len() != PACK_TRAILER_LEN || pack_len < PACK_TRAILER_LEN as u64 {
        return Err(corrupt("the pack is too short to hold a trailer"));
    }
    if trailer[4..] != PACK_MAGIC {
        return Err(Error::new(
            ErrorKind::Corrupt,
            "verify.pack_magic_mismatch",
            "the object does not end with the pack magic HSPACK01",
        )
        .with_suggestion("the object is not a pack of this format version, or it was truncated"));
    }
    let len = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let end = pack_len - PACK_TRAILER_LEN as u64;
    if u64::from(len) > end {
        return Err(corrupt("the pack header length is larger than the pack"));
    }
    Ok((end - u64::from(len), len))
}

/// Splits a whole pack into its blob area and its sealed header.
pub fn split_pack(pack: &[u8]) -> Result<(&[u8], &[u8])> {
    let n = pack.len();
    if n < PACK_TRAILER_LEN {
        return Err(corrupt("the pack is too short to hold a trailer"));
    }
    let (off, len) = parse_trailer(n as u64, &pack[n - PACK_TRAILER_LEN..])?;
    let off = off as usize;
    Ok((&pack[..off], &pack[off..off + len as usize]))
}

/// Accumulates sealed blobs into one pack buffer.
pub struct PackBuilder {
    buf: Vec<u8>,
    header: PackHeader,
}

impl PackBuilder {
    /// An empty pack whose buffer has room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> PackBuilder {
        PackBuilder {
            buf: Vec::with_capacity(capacity),
            header: PackHeader::default(),
        }
    }

    /// Bytes of blobs so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no blob was added yet.
    pub fn is_empty(&self) -> bool {
        self.header.entries.is_empty()
    }

    /// The entries added so far.
    pub fn entries(&self) -> &[PackEntry] {
        &self.header.entries
    }

    /// Appends one sealed blob. Fails with `usage.pack_too_large` when the
    /// pack would pass 4 GiB (offsets are 32-bit).
    pub fn add_blob(
        &mut self,
        id: ChunkId,
        blob: &[u8],
        raw_length: u32,
        compressed: bool,
    ) -> Result<PackEntry> {
        let offset = u32::try_from(self.buf.len()).ok();
        let length = u32::try_from(blob.len()).ok();
        let (Some(offset), Some(length)) = (offset, length) else {
            return Err(too_large());
        };
        if offset.checked_add(length).is_none() {
            return Err(too_large());
        }
        self.buf.extend_from_slice(blob);
        let e = PackEntry {
            id,
            offset,
            length,
            raw_length,
            compressed,
        };
        self.header.entries.push(e);
        Ok(e)
    }

    /// Seals the header with `seal` (which receives the header plaintext),
    /// appends it and the trailer, and returns the finished pack bytes and
    /// its header.
    pub fn finish(mut self, seal: impl FnOnce(&[u8]) -> Vec<u8>) -> Result<(Vec<u8>, PackHeader)> {
        let sealed = seal(&self.header.encode());
        let len = u32::try_from(sealed.len()).map_err(|_| too_large())?;
        self.buf.extend_from_slice(&sealed);
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(&PACK_MAGIC);
        Ok((self.buf, self.header))
    }
}

fn too_large() -> Error {
    Error::new(
        ErrorKind::TooLarge,
        "usage.pack_too_large",
        "a pack cannot be larger than 4 GiB",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden bytes of a small pack with an identity "seal": the format of
    /// version 1 must not change silently.
    #[test]
    fn golden_pack_v1() {
        let mut b = PackBuilder::with_capacity(0);
        b.add_blob(ChunkId::from_bytes([0xab; 32]), b"XY", 7, true)
            .unwrap();
        let (pack, _) = b.finish(|p| p.to_vec()).unwrap();
        let mut want = b"XY".to_vec();
        want.push(1); // header version
        want.extend_from_slice(&1u32.to_le_bytes()); // count
        want.extend_from_slice(&[0xab; 32]);
        want.extend_from_slice(&0u32.to_le_bytes()); // offset
        want.extend_from_slice(&2u32.to_le_bytes()); // length
        want.extend_from_slice(&7u32.to_le_bytes()); // raw length
        want.push(1); // flags: compressed
        want.extend_from_slice(&50u32.to_le_bytes()); // header length
        want.extend_from_slice(b"HSPACK01");
        assert_eq!(pack, want);
    }

    #[test]
    fn build_split_decode() {
        let mut b = PackBuilder::with_capacity(100);
        let e1 = b
            .add_blob(ChunkId::from_bytes([1; 32]), b"aaaa", 10, true)
            .unwrap();
        let e2 = b
            .add_blob(ChunkId::from_bytes([2; 32]), b"bbbbbb", 6, false)
            .unwrap();
        assert_eq!((e2.offset, e2.length), (4, 6));
        // A toy "seal": reverse the bytes.
        let (pack, header) = b.finish(|p| p.iter().rev().copied().collect()).unwrap();
        assert!(pack.ends_with(b"HSPACK01"));
        let (blobs, sealed) = split_pack(&pack).unwrap();
        assert_eq!(blobs, b"aaaabbbbbb");
        let plain: Vec<u8> = sealed.iter().rev().copied().collect();
        let h = PackHeader::decode(&plain, blobs.len() as u64).unwrap();
        assert_eq!(h, header);
        assert_eq!(h.entries, vec![e1, e2]);
        // Entries outside the blob area are refused.
        assert_eq!(
            PackHeader::decode(&plain, 5).unwrap_err().code(),
            "verify.pack_corrupt"
        );
        let mut bad = pack.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert_eq!(
            split_pack(&bad).unwrap_err().code(),
            "verify.pack_magic_mismatch"
        );
        assert!(split_pack(b"short").is_err());
        assert!(PackHeader::decode(&[1, 5, 0, 0, 0], 0).is_err());
    }
}
