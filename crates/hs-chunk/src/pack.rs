//! The pack format: frames, a sealed header, a length and a magic trailer.
//!
//! ```text
//! pack       = frame* sealed_header header_len magic
//! frame      = sealed (zstd-compressed or raw) concatenation of chunks
//! header_len = u32 little-endian, length of sealed_header
//! magic      = "HSPACK01", "HSPACK02" or "HSPACK03" (8 bytes; the pack format version)
//! header plaintext = version:u8 (=1) frames                     (HSPACK01)
//!                  | version:u8 (=2) pack_id:[u8;32] frames     (HSPACK02)
//!                  | version:u8 (=3) pack_id:[u8;32] frames     (HSPACK03)
//! frames     = frame_count:u32le frame_desc*frame_count
//! frame_desc = offset:u32le length:u32le raw_length:u32le flags:u8
//!              chunk_count:u32le (chunk_id chunk_raw_length:u32le)*chunk_count
//! chunk_id   = [u8;16] (version 3) | [u8;32] (versions 1 and 2: the whole keyed
//!              BLAKE3, of which readers keep the first 16 bytes)
//! flags      = bit 0: the opened frame is one zstd frame; other bits zero
//! ```
//!
//! Several chunks are compressed together as one frame, so zstd sees the
//! redundancy between neighbouring 8 KiB pages; each chunk keeps its own id
//! and is located by (frame, offset of the chunk inside the decompressed
//! frame). A chunk's offset inside its frame is the sum of the raw lengths
//! of the chunks listed before it; the raw lengths of a frame's chunks add up
//! to the frame's `raw_length`.
//!
//! Version 1 packs are named by the BLAKE3 hash of their bytes, known only
//! once the pack is complete. Version 2 packs get a random id when they are
//! opened ([`PackBuilder::with_id`]), so a writer can tell where a chunk will
//! live before the pack is finished; the sealed header repeats the id, which
//! binds the pack to its name. Version 3 is version 2 with 16-byte chunk ids
//! ([`ChunkId::LEN`]); writers write only version 3.
//!
//! This module neither encrypts nor does I/O: sealing of the header is a
//! closure supplied by the caller, and opening is done by the caller before
//! [`PackHeader::decode`].

use hs_base::code;

use crate::error::{Error, ErrorKind, Result};
use crate::id::ChunkId;

/// The 8 bytes every version 1 pack ends with.
pub const PACK_MAGIC: [u8; 8] = *b"HSPACK01";
/// The 8 bytes every version 2 pack (one with an id in its header) ends with.
pub const PACK_MAGIC_V2: [u8; 8] = *b"HSPACK02";
/// The 8 bytes every version 3 pack (an id in its header, 16-byte chunk ids) ends with.
pub const PACK_MAGIC_V3: [u8; 8] = *b"HSPACK03";
/// Length of the trailer: 4-byte header length plus [`PACK_MAGIC`].
pub const PACK_TRAILER_LEN: usize = 12;
/// Encoded length of one frame description without its chunks.
pub const PACK_FRAME_DESC_LEN: usize = 17;
/// Encoded length of one chunk inside a frame description of version 3.
pub const PACK_CHUNK_DESC_LEN: usize = IdWidth::Short.chunk_desc_len();
const FLAG_COMPRESSED: u8 = 1;

/// How wide the chunk ids of a frame list are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdWidth {
    /// 32 bytes, the whole keyed BLAKE3: pack headers of versions 1 and 2 and index
    /// objects of version 1. Readers keep the first [`ChunkId::LEN`] bytes. Writing
    /// this width (only tests do, to make such objects) pads the ids with zeros.
    Long,
    /// [`ChunkId::LEN`] (16) bytes: pack headers of version 3, index objects of
    /// version 2.
    Short,
}

impl IdWidth {
    /// Bytes of one chunk id.
    pub const fn id_len(self) -> usize {
        match self {
            IdWidth::Long => ChunkId::LONG_LEN,
            IdWidth::Short => ChunkId::LEN,
        }
    }

    /// Bytes of one chunk inside a frame description (id and raw length).
    pub const fn chunk_desc_len(self) -> usize {
        self.id_len() + 4
    }
}

/// The version of a pack, from its trailer magic and header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PackFormat {
    /// `HSPACK01`: named by the BLAKE3 hash of its bytes, 32-byte chunk ids.
    V1,
    /// `HSPACK02`: an id in its header (its name), 32-byte chunk ids.
    V2,
    /// `HSPACK03`: an id in its header, 16-byte chunk ids. What writers write.
    #[default]
    V3,
}

impl PackFormat {
    /// The trailer magic.
    pub const fn magic(self) -> [u8; 8] {
        match self {
            PackFormat::V1 => PACK_MAGIC,
            PackFormat::V2 => PACK_MAGIC_V2,
            PackFormat::V3 => PACK_MAGIC_V3,
        }
    }

    const ALL: [PackFormat; 3] = [PackFormat::V1, PackFormat::V2, PackFormat::V3];

    /// The format whose trailer magic is `magic`.
    pub fn from_magic(magic: &[u8]) -> Option<PackFormat> {
        Self::ALL.into_iter().find(|f| f.magic() == magic)
    }

    /// The format whose header starts with the version byte `v`.
    fn from_header_version(v: u8) -> Option<PackFormat> {
        Self::ALL.into_iter().find(|f| f.header_version() == v)
    }

    /// The width of the chunk ids in its header.
    pub const fn ids(self) -> IdWidth {
        match self {
            PackFormat::V1 | PackFormat::V2 => IdWidth::Long,
            PackFormat::V3 => IdWidth::Short,
        }
    }

    const fn header_version(self) -> u8 {
        match self {
            PackFormat::V1 => 1,
            PackFormat::V2 => 2,
            PackFormat::V3 => 3,
        }
    }
}

/// Where one chunk lives: its frame inside a pack, and its place inside the
/// decompressed frame. This is the flat, per-chunk view of a pack header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PackEntry {
    /// The chunk's id (keyed hash of the chunk's plaintext).
    pub id: ChunkId,
    /// Byte offset of the sealed frame from the start of the pack.
    pub frame_offset: u32,
    /// Length of the sealed frame as stored.
    pub frame_length: u32,
    /// Length of the frame's plaintext after opening and decompressing.
    pub frame_raw_length: u32,
    /// Offset of the chunk inside the decompressed frame.
    pub chunk_offset: u32,
    /// Length of the chunk's plaintext.
    pub raw_length: u32,
    /// Whether the opened frame is a zstd frame (otherwise it is raw).
    pub compressed: bool,
}

impl PackEntry {
    fn same_frame(&self, o: &PackEntry) -> bool {
        self.frame_offset == o.frame_offset
            && self.frame_length == o.frame_length
            && self.frame_raw_length == o.frame_raw_length
            && self.compressed == o.compressed
    }
}

fn corrupt(msg: &str) -> Error {
    Error::of_kind(
        ErrorKind::Corrupt,
        code::VERIFY_PACK_CORRUPT,
        msg.to_string(),
    )
    .with_suggestion("run a repository check; the pack may have been damaged in storage")
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
    if b.len() < n {
        return Err(corrupt("a pack header or index is truncated"));
    }
    let (h, t) = b.split_at(n);
    *b = t;
    Ok(h)
}

/// Appends the `frames` encoding (frame count, then each frame with its
/// chunks, ids `ids` wide) of `entries` to `out`. Entries must be grouped by
/// frame, in frame order, with each frame's chunks in order of their offsets,
/// as [`PackBuilder`] produces them and [`decode_entries`] returns them.
pub fn encode_entries(entries: &[PackEntry], ids: IdWidth, out: &mut Vec<u8>) {
    let pad = [0u8; ChunkId::LONG_LEN - ChunkId::LEN];
    let groups = frame_groups(entries);
    out.extend_from_slice(&(groups.len() as u32).to_le_bytes());
    for g in groups {
        let f = &g[0];
        out.extend_from_slice(&f.frame_offset.to_le_bytes());
        out.extend_from_slice(&f.frame_length.to_le_bytes());
        out.extend_from_slice(&f.frame_raw_length.to_le_bytes());
        out.push(if f.compressed { FLAG_COMPRESSED } else { 0 });
        out.extend_from_slice(&(g.len() as u32).to_le_bytes());
        for e in g {
            out.extend_from_slice(e.id.as_bytes());
            if ids == IdWidth::Long {
                out.extend_from_slice(&pad);
            }
            out.extend_from_slice(&e.raw_length.to_le_bytes());
        }
    }
}

/// Length of [`encode_entries`]' output for `entries`.
pub fn encoded_entries_len(entries: &[PackEntry], ids: IdWidth) -> usize {
    4 + frame_groups(entries).len() * PACK_FRAME_DESC_LEN + entries.len() * ids.chunk_desc_len()
}

fn frame_groups(entries: &[PackEntry]) -> Vec<&[PackEntry]> {
    let mut groups = Vec::new();
    let mut start = 0;
    for i in 1..=entries.len() {
        if i == entries.len() || !entries[i].same_frame(&entries[start]) {
            if i > start {
                groups.push(&entries[start..i]);
            }
            start = i;
        }
    }
    groups
}

/// Reads one `frames` encoding from the front of `b` (advancing it) and
/// returns the flat entries; chunk ids are `ids` wide. Checks that every
/// frame has at least one chunk, that its chunks' lengths add up to its raw
/// length, and, when `blobs_len` is given, that every frame lies inside the
/// first `blobs_len` bytes.
pub fn decode_entries(
    b: &mut &[u8],
    ids: IdWidth,
    blobs_len: Option<u64>,
) -> Result<Vec<PackEntry>> {
    let desc_len = ids.chunk_desc_len();
    let frames = u32_at(take(b, 4)?, 0) as usize;
    // Sized exactly: a pack of 8 KiB pages lists tens of thousands of chunks, and
    // readers keep several headers, so growth slack and regrowth copies would be
    // megabytes each.
    let mut entries = Vec::with_capacity(count_entries(b, frames, desc_len));
    for _ in 0..frames {
        let d = take(b, PACK_FRAME_DESC_LEN)?;
        let (frame_offset, frame_length, frame_raw_length) =
            (u32_at(d, 0), u32_at(d, 4), u32_at(d, 8));
        let flags = d[12];
        let count = u32_at(d, 13) as usize;
        if flags & !FLAG_COMPRESSED != 0 {
            return Err(corrupt("a pack frame has unknown flags"));
        }
        if count == 0 {
            return Err(corrupt("a pack frame lists no chunks"));
        }
        if let Some(limit) = blobs_len {
            if u64::from(frame_offset) + u64::from(frame_length) > limit {
                return Err(corrupt("a pack frame lies outside the pack"));
            }
        }
        let body = take(
            b,
            count
                .checked_mul(desc_len)
                .ok_or_else(|| corrupt("a pack frame has too many chunks"))?,
        )?;
        let mut chunk_offset: u64 = 0;
        for c in body.chunks_exact(desc_len) {
            let mut id = [0u8; ChunkId::LEN];
            id.copy_from_slice(&c[..ChunkId::LEN]);
            let raw_length = u32_at(c, ids.id_len());
            entries.push(PackEntry {
                id: ChunkId::from_bytes(id),
                frame_offset,
                frame_length,
                frame_raw_length,
                chunk_offset: chunk_offset as u32,
                raw_length,
                compressed: flags & FLAG_COMPRESSED != 0,
            });
            chunk_offset += u64::from(raw_length);
        }
        if chunk_offset != u64::from(frame_raw_length) {
            return Err(corrupt(
                "the chunks of a pack frame do not add up to the frame's length",
            ));
        }
    }
    Ok(entries)
}

/// The chunks that the `frames` frame descriptions at the front of `b` list, counting
/// only those whose descriptions are all present (so at most `b.len() / desc_len`);
/// what is malformed is left for [`decode_entries`] to report.
fn count_entries(mut b: &[u8], frames: usize, desc_len: usize) -> usize {
    let mut n = 0usize;
    for _ in 0..frames {
        let Ok(d) = take(&mut b, PACK_FRAME_DESC_LEN) else {
            break;
        };
        let count = u32_at(d, 13) as usize;
        match count.checked_mul(desc_len) {
            Some(len) if take(&mut b, len).is_ok() => n += count,
            _ => break,
        }
    }
    n
}

/// The list of frames and chunks in a pack (the header's plaintext).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackHeader {
    /// One entry per chunk, grouped by frame, in the order written.
    pub entries: Vec<PackEntry>,
    /// The pack's id (its object name) for version 2 and 3 packs; `None` for
    /// version 1 packs, which are named by the hash of their bytes.
    pub pack_id: Option<[u8; 32]>,
    /// The pack's version. [`encode`](Self::encode) writes an all-zero id for a
    /// version 2 or 3 header without `pack_id`.
    pub format: PackFormat,
}

impl PackHeader {
    /// The header plaintext (to be sealed by the caller).
    pub fn encode(&self) -> Vec<u8> {
        let ids = self.format.ids();
        let mut out = Vec::with_capacity(33 + encoded_entries_len(&self.entries, ids));
        out.push(self.format.header_version());
        if self.format != PackFormat::V1 {
            out.extend_from_slice(&self.pack_id.unwrap_or_default());
        }
        encode_entries(&self.entries, ids, &mut out);
        out
    }

    /// The trailer magic of a pack with this header.
    pub fn magic(&self) -> [u8; 8] {
        self.format.magic()
    }

    /// Checks that the pack's trailer `magic` is the one of this header's version
    /// (`verify.pack_corrupt` otherwise). The header is sealed and the magic is not, so
    /// readers take the version from the header; a magic that disagrees means the pack
    /// was altered in storage.
    pub fn check_magic(&self, magic: &[u8]) -> Result<()> {
        if magic == self.format.magic() {
            Ok(())
        } else {
            Err(corrupt(
                "the pack's trailer magic and its header's version disagree",
            ))
        }
    }

    /// Parses an opened header. `blobs_len` is the length of the frame area
    /// (pack length minus sealed header minus trailer); every frame must lie
    /// inside it.
    pub fn decode(plain: &[u8], blobs_len: u64) -> Result<PackHeader> {
        let mut b = plain;
        let format = PackFormat::from_header_version(take(&mut b, 1)?[0])
            .ok_or_else(|| corrupt("the pack header has an unknown version"))?;
        let pack_id = match format {
            PackFormat::V1 => None,
            PackFormat::V2 | PackFormat::V3 => {
                let mut id = [0u8; 32];
                id.copy_from_slice(take(&mut b, 32)?);
                Some(id)
            }
        };
        let entries = decode_entries(&mut b, format.ids(), Some(blobs_len))?;
        if !b.is_empty() {
            return Err(corrupt("the pack header has trailing bytes"));
        }
        Ok(PackHeader {
            entries,
            pack_id,
            format,
        })
    }
}

/// Parses the 12-byte trailer of a pack of `pack_len` bytes and returns
/// `(offset, length)` of the sealed header.
pub fn parse_trailer(pack_len: u64, trailer: &[u8]) -> Result<(u64, u32)> {
    if trailer.len() != PACK_TRAILER_LEN || pack_len < PACK_TRAILER_LEN as u64 {
        return Err(corrupt("the pack is too short to hold a trailer"));
    }
    if PackFormat::from_magic(&trailer[4..]).is_none() {
        return Err(Error::of_kind(
            ErrorKind::Corrupt,
            code::VERIFY_PACK_MAGIC_MISMATCH,
            "the object does not end with the pack magic HSPACK01, HSPACK02 or HSPACK03",
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

/// Accumulates sealed frames into one pack buffer.
pub struct PackBuilder {
    buf: Vec<u8>,
    header: PackHeader,
}

impl PackBuilder {
    /// An empty version 3 pack with the id `id` (its name once stored), whose buffer
    /// has room for `capacity` bytes.
    pub fn with_id(capacity: usize, id: [u8; 32]) -> PackBuilder {
        PackBuilder::with_format(capacity, PackFormat::V3, Some(id))
    }

    /// An empty pack of an older `format` (for tests that make old repositories;
    /// see [`IdWidth::Long`]). `id` is ignored for version 1.
    pub fn with_format(capacity: usize, format: PackFormat, id: Option<[u8; 32]>) -> PackBuilder {
        PackBuilder {
            buf: Vec::with_capacity(capacity),
            header: PackHeader {
                entries: Vec::new(),
                pack_id: if format == PackFormat::V1 { None } else { id },
                format,
            },
        }
    }

    /// The id given to [`with_id`](Self::with_id), `None` for a version 1 pack.
    pub fn id(&self) -> Option<[u8; 32]> {
        self.header.pack_id
    }

    /// Bytes of frames so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no frame was added yet.
    pub fn is_empty(&self) -> bool {
        self.header.entries.is_empty()
    }

    /// The entries added so far.
    pub fn entries(&self) -> &[PackEntry] {
        &self.header.entries
    }

    /// Appends one sealed frame holding `chunks` (id and plaintext length of
    /// each, in the order they were concatenated; at least one). `compressed`
    /// says whether the opened frame is a zstd frame. Returns the entries of
    /// the frame's chunks. Fails with `usage.pack_too_large` when the pack
    /// would pass 4 GiB or the frame's plaintext would pass 4 GiB (lengths and
    /// offsets are 32-bit), and with `usage.empty_frame` for no chunks.
    pub fn add_frame(
        &mut self,
        sealed: &[u8],
        compressed: bool,
        chunks: &[(ChunkId, u32)],
    ) -> Result<&[PackEntry]> {
        if chunks.is_empty() {
            return Err(Error::of_kind(
                ErrorKind::Internal,
                code::USAGE_EMPTY_FRAME,
                "a pack frame must hold at least one chunk",
            ));
        }
        let offset = u32::try_from(self.buf.len()).ok();
        let length = u32::try_from(sealed.len()).ok();
        let raw: u64 = chunks.iter().map(|c| u64::from(c.1)).sum();
        let (Some(frame_offset), Some(frame_length), Ok(frame_raw_length)) =
            (offset, length, u32::try_from(raw))
        else {
            return Err(too_large());
        };
        if frame_offset.checked_add(frame_length).is_none() {
            return Err(too_large());
        }
        self.buf.extend_from_slice(sealed);
        let first = self.header.entries.len();
        let mut chunk_offset = 0u32;
        for &(id, raw_length) in chunks {
            self.header.entries.push(PackEntry {
                id,
                frame_offset,
                frame_length,
                frame_raw_length,
                chunk_offset,
                raw_length,
                compressed,
            });
            chunk_offset += raw_length; // cannot overflow: the sum fits in u32
        }
        Ok(&self.header.entries[first..])
    }

    /// Seals the header with `seal` (which receives the header plaintext),
    /// appends it and the trailer, and returns the finished pack bytes and
    /// its header.
    pub fn finish(mut self, seal: impl FnOnce(&[u8]) -> Vec<u8>) -> Result<(Vec<u8>, PackHeader)> {
        let sealed = seal(&self.header.encode());
        let len = u32::try_from(sealed.len()).map_err(|_| too_large())?;
        self.buf.extend_from_slice(&sealed);
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(&self.header.magic());
        Ok((self.buf, self.header))
    }
}

fn too_large() -> Error {
    Error::of_kind(
        ErrorKind::TooLarge,
        code::USAGE_PACK_TOO_LARGE,
        "a pack (or one frame's plaintext) cannot be larger than 4 GiB",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> ChunkId {
        ChunkId::from_bytes([b; ChunkId::LEN])
    }

    /// The bytes of one chunk description: `id(b)`, zero-padded to `ids`, and `len`.
    fn desc(b: u8, ids: IdWidth, len: u32) -> Vec<u8> {
        let mut d = vec![b; ChunkId::LEN];
        d.resize(ids.id_len(), 0);
        d.extend_from_slice(&len.to_le_bytes());
        d
    }

    /// Golden bytes of a small pack with an identity "seal": the format of
    /// version 3 must not change silently.
    #[test]
    fn golden_pack_v3() {
        let mut b = PackBuilder::with_id(0, [0x5a; 32]);
        b.add_frame(b"XY", true, &[(id(0xab), 7), (id(0xcd), 3)])
            .unwrap();
        b.add_frame(b"Z", false, &[(id(0xef), 1)]).unwrap();
        let (pack, _) = b.finish(|p| p.to_vec()).unwrap();
        let mut want = b"XYZ".to_vec();
        want.push(3); // header version
        want.extend_from_slice(&[0x5a; 32]); // pack id
        want.extend_from_slice(&2u32.to_le_bytes()); // frame count
        want.extend_from_slice(&0u32.to_le_bytes()); // frame offset
        want.extend_from_slice(&2u32.to_le_bytes()); // frame length
        want.extend_from_slice(&10u32.to_le_bytes()); // frame raw length
        want.push(1); // flags: compressed
        want.extend_from_slice(&2u32.to_le_bytes()); // chunk count
        want.extend_from_slice(&[0xab; 16]);
        want.extend_from_slice(&7u32.to_le_bytes());
        want.extend_from_slice(&[0xcd; 16]);
        want.extend_from_slice(&3u32.to_le_bytes());
        want.extend_from_slice(&2u32.to_le_bytes()); // frame offset
        want.extend_from_slice(&1u32.to_le_bytes()); // frame length
        want.extend_from_slice(&1u32.to_le_bytes()); // frame raw length
        want.push(0); // flags: raw
        want.extend_from_slice(&1u32.to_le_bytes()); // chunk count
        want.extend_from_slice(&[0xef; 16]);
        want.extend_from_slice(&1u32.to_le_bytes());
        let header_len = 1 + 32 + 4 + 2 * PACK_FRAME_DESC_LEN + 3 * PACK_CHUNK_DESC_LEN;
        assert_eq!(header_len, 131);
        want.extend_from_slice(&(header_len as u32).to_le_bytes()); // header length
        want.extend_from_slice(b"HSPACK03");
        assert_eq!(pack, want);
    }

    /// A version 2 header written by a format 2 build holds whole 32-byte ids; the
    /// reader keeps their first 16 bytes, the id this build computes.
    #[test]
    fn version_2_headers_decode_to_16_byte_ids() {
        let long = |b: u8| -> Vec<u8> { (0..32).map(|i| b.wrapping_add(i)).collect() };
        let mut plain = vec![2u8];
        plain.extend_from_slice(&[0x77; 32]); // pack id
        plain.extend_from_slice(&1u32.to_le_bytes()); // one frame
        plain.extend_from_slice(&0u32.to_le_bytes());
        plain.extend_from_slice(&5u32.to_le_bytes());
        plain.extend_from_slice(&12u32.to_le_bytes());
        plain.push(1);
        plain.extend_from_slice(&2u32.to_le_bytes());
        for (b, len) in [(0x10u8, 8u32), (0x90, 4)] {
            plain.extend_from_slice(&long(b));
            plain.extend_from_slice(&len.to_le_bytes());
        }
        let h = PackHeader::decode(&plain, 5).unwrap();
        assert_eq!(h.format, PackFormat::V2);
        assert_eq!(h.pack_id, Some([0x77; 32]));
        let want: Vec<(ChunkId, u32, u32)> = vec![
            (ChunkId::from_long(&long(0x10).try_into().unwrap()), 0, 8),
            (ChunkId::from_long(&long(0x90).try_into().unwrap()), 8, 4),
        ];
        let got: Vec<(ChunkId, u32, u32)> = h
            .entries
            .iter()
            .map(|e| (e.id, e.chunk_offset, e.raw_length))
            .collect();
        assert_eq!(got, want);
        assert_eq!(h.entries[0].id.as_bytes()[..], long(0x10)[..16]);
        // The same bytes read as version 3 are refused: the widths disagree.
        plain[0] = 3;
        assert!(PackHeader::decode(&plain, 5).is_err());
    }

    /// Golden bytes of version 1 as written by tests that make old repositories
    /// (ids zero-padded to 32 bytes).
    #[test]
    fn golden_pack_v1() {
        let mut b = PackBuilder::with_format(0, PackFormat::V1, None);
        b.add_frame(b"XY", true, &[(id(0xab), 7), (id(0xcd), 3)])
            .unwrap();
        b.add_frame(b"Z", false, &[(id(0xef), 1)]).unwrap();
        let (pack, _) = b.finish(|p| p.to_vec()).unwrap();
        let mut want = b"XYZ".to_vec();
        want.push(1); // header version
        want.extend_from_slice(&2u32.to_le_bytes()); // frame count
        want.extend_from_slice(&0u32.to_le_bytes()); // frame offset
        want.extend_from_slice(&2u32.to_le_bytes()); // frame length
        want.extend_from_slice(&10u32.to_le_bytes()); // frame raw length
        want.push(1); // flags: compressed
        want.extend_from_slice(&2u32.to_le_bytes()); // chunk count
        want.extend_from_slice(&desc(0xab, IdWidth::Long, 7));
        want.extend_from_slice(&desc(0xcd, IdWidth::Long, 3));
        want.extend_from_slice(&2u32.to_le_bytes()); // frame offset
        want.extend_from_slice(&1u32.to_le_bytes()); // frame length
        want.extend_from_slice(&1u32.to_le_bytes()); // frame raw length
        want.push(0); // flags: raw
        want.extend_from_slice(&1u32.to_le_bytes()); // chunk count
        want.extend_from_slice(&desc(0xef, IdWidth::Long, 1));
        let header_len = 1 + 4 + 2 * PACK_FRAME_DESC_LEN + 3 * IdWidth::Long.chunk_desc_len();
        assert_eq!(header_len, 147);
        want.extend_from_slice(&(header_len as u32).to_le_bytes()); // header length
        want.extend_from_slice(b"HSPACK01");
        assert_eq!(pack, want);
    }

    #[test]
    fn version_2_and_3_packs_carry_their_id() {
        for (format, magic) in [(PackFormat::V2, b"HSPACK02"), (PackFormat::V3, b"HSPACK03")] {
            let mut b = PackBuilder::with_format(0, format, Some([0x5a; 32]));
            assert_eq!(b.id(), Some([0x5a; 32]));
            b.add_frame(b"XY", true, &[(id(1), 7)]).unwrap();
            let (pack, header) = b.finish(|p| p.to_vec()).unwrap();
            assert!(pack.ends_with(magic));
            assert_eq!(PackFormat::from_magic(magic), Some(format));
            let (blobs, plain) = split_pack(&pack).unwrap();
            assert_eq!(plain[0], format.header_version());
            assert_eq!(&plain[1..33], &[0x5a; 32]);
            let h = PackHeader::decode(plain, blobs.len() as u64).unwrap();
            assert_eq!(h, header);
            assert_eq!((h.pack_id, h.format), (Some([0x5a; 32]), format));
            assert_eq!(
                plain.len(),
                33 + encoded_entries_len(&h.entries, format.ids())
            );
            h.check_magic(&pack[pack.len() - 8..]).unwrap();
            assert_eq!(
                h.check_magic(b"HSPACK01").unwrap_err().code(),
                "verify.pack_corrupt"
            );
            // A header cut inside its id is refused.
            assert!(PackHeader::decode(&plain[..20], blobs.len() as u64).is_err());
        }
    }

    #[test]
    fn build_split_decode() {
        let mut b = PackBuilder::with_format(100, PackFormat::V1, None);
        let f1 = b
            .add_frame(b"aaaa", true, &[(id(1), 10), (id(2), 0), (id(3), 5)])
            .unwrap()
            .to_vec();
        assert_eq!(
            f1.iter().map(|e| e.chunk_offset).collect::<Vec<_>>(),
            vec![0, 10, 10]
        );
        assert!(f1.iter().all(|e| e.frame_raw_length == 15));
        let f2 = b
            .add_frame(b"bbbbbb", false, &[(id(4), 6)])
            .unwrap()
            .to_vec();
        assert_eq!((f2[0].frame_offset, f2[0].frame_length), (4, 6));
        assert!(b.add_frame(b"c", false, &[]).is_err());
        // A toy "seal": reverse the bytes.
        let (pack, header) = b.finish(|p| p.iter().rev().copied().collect()).unwrap();
        assert!(pack.ends_with(b"HSPACK01"));
        let (blobs, sealed) = split_pack(&pack).unwrap();
        assert_eq!(blobs, b"aaaabbbbbb");
        let plain: Vec<u8> = sealed.iter().rev().copied().collect();
        let h = PackHeader::decode(&plain, blobs.len() as u64).unwrap();
        assert_eq!(h, header);
        assert_eq!(h.entries, [f1, f2].concat());
        assert_eq!(
            h.entries.capacity(),
            h.entries.len(),
            "decoded without slack"
        );
        assert_eq!(
            plain.len(),
            1 + encoded_entries_len(&h.entries, IdWidth::Long)
        );
        // A frame count larger than the descriptions present, or a chunk count larger
        // than its body: refused, after a capacity bounded by what is there.
        let mut bad = plain.clone();
        bad[1] = 200;
        assert!(PackHeader::decode(&bad, 100).is_err());
        let mut bad = plain.clone();
        bad[1 + 4 + 13..1 + 4 + 17].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(PackHeader::decode(&bad, 100).is_err());
        assert_eq!(count_entries(&plain[1 + 4..], 2, 36), 4);
        assert_eq!(count_entries(&plain[1 + 4..], 3, 36), 4);
        assert_eq!(count_entries(&bad[1 + 4..], 2, 36), 0);
        // Frames outside the blob area are refused.
        assert_eq!(
            PackHeader::decode(&plain, 5).unwrap_err().code(),
            "verify.pack_corrupt"
        );
        // Chunk lengths must add up to the frame's raw length.
        let mut bad = plain.clone();
        bad[1 + 4 + 8] ^= 1;
        assert!(PackHeader::decode(&bad, 100).is_err());
        // Unknown flags, truncation and trailing bytes are refused.
        let mut bad = plain.clone();
        bad[1 + 4 + 12] = 2;
        assert!(PackHeader::decode(&bad, 100).is_err());
        assert!(PackHeader::decode(&plain[..plain.len() - 1], 100).is_err());
        let mut bad = plain.clone();
        bad.push(0);
        assert!(PackHeader::decode(&bad, 100).is_err());
        let mut bad = pack.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert_eq!(
            split_pack(&bad).unwrap_err().code(),
            "verify.pack_magic_mismatch"
        );
        assert!(split_pack(b"short").is_err());
        // A frame without chunks is refused.
        assert!(PackHeader::decode(
            &[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            0
        )
        .is_err());
    }
}
