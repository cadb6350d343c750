//! A push-based (sans-IO) decoder of the LZ4 frame format, for the archives a server
//! compresses itself (`BASE_BACKUP ( COMPRESSION 'lz4' )`): compressed bytes are pushed
//! as they arrive in CopyData messages, and each complete block comes out as one
//! [`Bytes`] of plaintext.
//!
//! The frame layout (lz4's `lz4_Frame_format.md`): a 4-byte magic, a descriptor (flags,
//! block size, optional content size and dictionary id, a one-byte descriptor check),
//! then blocks, each a 4-byte little-endian length (top bit: stored uncompressed) and
//! an optional block checksum, ended by a zero length and an optional content checksum.
//! Every checksum the frame carries is verified. Linked blocks (the default of lz4's
//! frame API, which PostgreSQL uses) may refer back to the last 64 KiB of earlier
//! output; that window is kept. Dictionary ids and skippable frames are refused: a
//! server never sends them.

use std::hash::Hasher;

use bytes::{Buf, Bytes, BytesMut};
use twox_hash::XxHash32;

use crate::error::Result;

const MAGIC: u32 = 0x184D_2204;
/// How far back a linked block may refer.
const WINDOW: usize = 64 << 10;
/// Flag bits of the descriptor's first byte.
const FLAG_INDEPENDENT: u8 = 0x20;
const FLAG_BLOCK_CHECKSUM: u8 = 0x10;
const FLAG_CONTENT_SIZE: u8 = 0x08;
const FLAG_CONTENT_CHECKSUM: u8 = 0x04;
const FLAG_RESERVED: u8 = 0x02;
const FLAG_DICT_ID: u8 = 0x01;
/// A block length with this bit set is stored uncompressed.
const UNCOMPRESSED: u32 = 0x8000_0000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Blocks,
    ContentChecksum,
    Done,
}

/// The last up to [`WINDOW`] bytes of output, which a linked block may copy from.
#[derive(Debug)]
enum Window {
    /// A whole output block of at least `WINDOW` bytes (its tail is the window).
    Block(Bytes),
    /// Shorter output, gathered.
    Gathered(Vec<u8>),
}

impl Window {
    fn bytes(&self) -> &[u8] {
        match self {
            Window::Block(b) => &b[b.len() - WINDOW..],
            Window::Gathered(v) => v,
        }
    }

    fn extend(&mut self, out: &Bytes) {
        if out.len() >= WINDOW {
            *self = Window::Block(out.clone());
            return;
        }
        let mut v = self.bytes().to_vec();
        v.extend_from_slice(out);
        let excess = v.len().saturating_sub(WINDOW);
        v.drain(..excess);
        *self = Window::Gathered(v);
    }
}

/// Decodes one LZ4 frame pushed in pieces of any size.
#[derive(Debug)]
pub(crate) struct Lz4FrameDecoder {
    input: BytesMut,
    state: State,
    flags: u8,
    max_block: usize,
    content_size: Option<u64>,
    produced: u64,
    content_hash: Option<XxHash32>,
    window: Window,
}

impl Lz4FrameDecoder {
    pub(crate) fn new() -> Lz4FrameDecoder {
        Lz4FrameDecoder {
            input: BytesMut::new(),
            state: State::Header,
            flags: 0,
            max_block: 0,
            content_size: None,
            produced: 0,
            content_hash: None,
            window: Window::Gathered(Vec::new()),
        }
    }

    /// Appends compressed bytes.
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.input.extend_from_slice(data);
    }

    /// Whether the frame's end (and its checksum, if any) was decoded.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The next block of plaintext, or `Ok(None)` when more input is needed or the frame
    /// has ended. Bytes after the frame's end are an error.
    pub(crate) fn next_block(&mut self) -> Result<Option<Bytes>> {
        loop {
            match self.state {
                State::Header => {
                    if !self.header()? {
                        return Ok(None);
                    }
                }
                State::Blocks => return self.block(),
                State::ContentChecksum => {
                    if self.input.len() < 4 {
                        return Ok(None);
                    }
                    let stored = self.input.get_u32_le();
                    let hash = self.content_hash.take().map(|h| h.finish_32());
                    if hash.is_some_and(|h| h != stored) {
                        return Err(invalid("its content checksum does not match"));
                    }
                    self.finish()?;
                }
                State::Done => {
                    if !self.input.is_empty() {
                        return Err(invalid("bytes follow the end of the frame"));
                    }
                    return Ok(None);
                }
            }
        }
    }

    /// Parses the frame descriptor once it is complete; false if more input is needed.
    fn header(&mut self) -> Result<bool> {
        if self.input.len() < 7 {
            return Ok(false);
        }
        let magic =
            u32::from_le_bytes([self.input[0], self.input[1], self.input[2], self.input[3]]);
        if magic != MAGIC {
            return Err(invalid(format!(
                "it does not start with the LZ4 frame magic (found {magic:#010x})"
            )));
        }
        let flags = self.input[4];
        let bd = self.input[5];
        if flags >> 6 != 0b01 {
            return Err(invalid(format!(
                "its frame version is {}, not 1",
                flags >> 6
            )));
        }
        if flags & (FLAG_RESERVED | FLAG_DICT_ID) != 0 || bd & 0x8F != 0 {
            return Err(invalid(
                "its descriptor sets reserved bits or names a dictionary",
            ));
        }
        self.max_block = match (bd >> 4) & 0x7 {
            4 => 64 << 10,
            5 => 256 << 10,
            6 => 1 << 20,
            7 => 4 << 20,
            other => {
                return Err(invalid(format!(
                    "its block size code {other} is not defined"
                )));
            }
        };
        let desc_len = 2 + if flags & FLAG_CONTENT_SIZE != 0 { 8 } else { 0 };
        if self.input.len() < 4 + desc_len + 1 {
            return Ok(false);
        }
        let desc = &self.input[4..4 + desc_len];
        let check = ((XxHash32::oneshot(0, desc) >> 8) & 0xFF) as u8;
        if check != self.input[4 + desc_len] {
            return Err(invalid("its descriptor checksum does not match"));
        }
        if flags & FLAG_CONTENT_SIZE != 0 {
            let mut size = [0u8; 8];
            size.copy_from_slice(&self.input[6..14]);
            // 0 means "unknown", as lz4's own decoder reads it.
            self.content_size = Some(u64::from_le_bytes(size)).filter(|&n| n != 0);
        }
        self.flags = flags;
        if flags & FLAG_CONTENT_CHECKSUM != 0 {
            self.content_hash = Some(XxHash32::with_seed(0));
        }
        self.input.advance(4 + desc_len + 1);
        self.state = State::Blocks;
        Ok(true)
    }

    /// Decodes one block if it is complete.
    fn block(&mut self) -> Result<Option<Bytes>> {
        if self.input.len() < 4 {
            return Ok(None);
        }
        let word = u32::from_le_bytes([self.input[0], self.input[1], self.input[2], self.input[3]]);
        if word == 0 {
            self.input.advance(4);
            if self.flags & FLAG_CONTENT_CHECKSUM != 0 {
                self.state = State::ContentChecksum;
            } else {
                self.finish()?;
            }
            return self.next_block();
        }
        let stored = word & UNCOMPRESSED != 0;
        let len = (word & !UNCOMPRESSED) as usize;
        if len > self.max_block {
            return Err(invalid(format!(
                "a block of {len} bytes exceeds the frame's block size of {}",
                self.max_block
            )));
        }
        let checksum = if self.flags & FLAG_BLOCK_CHECKSUM != 0 {
            4
        } else {
            0
        };
        if self.input.len() < 4 + len + checksum {
            return Ok(None);
        }
        self.input.advance(4);
        let data = self.input.split_to(len).freeze();
        if checksum != 0 {
            let stored_sum = self.input.get_u32_le();
            if XxHash32::oneshot(0, &data) != stored_sum {
                return Err(invalid("a block checksum does not match"));
            }
        }
        let out = if stored {
            data
        } else {
            let mut buf = vec![0u8; self.max_block];
            let n = if self.flags & FLAG_INDEPENDENT != 0 {
                lz4_flex::block::decompress_into(&data, &mut buf)
            } else {
                lz4_flex::block::decompress_into_with_dict(&data, &mut buf, self.window.bytes())
            }
            .map_err(|e| invalid(format!("a block does not decode: {e}")))?;
            buf.truncate(n);
            Bytes::from(buf)
        };
        if self.flags & FLAG_INDEPENDENT == 0 {
            self.window.extend(&out);
        }
        if let Some(h) = self.content_hash.as_mut() {
            h.write(&out);
        }
        self.produced += out.len() as u64;
        Ok(Some(out))
    }

    fn finish(&mut self) -> Result<()> {
        if let Some(size) = self.content_size {
            if size != self.produced {
                return Err(invalid(format!(
                    "it decoded to {} bytes, but its header says {size}",
                    self.produced
                )));
            }
        }
        self.state = State::Done;
        Ok(())
    }
}

fn invalid(what: impl std::fmt::Display) -> crate::error::Error {
    crate::error::protocol(format!(
        "the server's lz4-compressed archive is not a valid LZ4 frame: {what}"
    ))
    .with_suggestion(UNCOMPRESSED_HINT)
}

/// What to do when a compressed archive is damaged in transit or not what PostgreSQL
/// sends: `backup --max-rate` asks for the plain stream.
pub(crate) const UNCOMPRESSED_HINT: &str = "retry the backup; if it fails the same way, take it \
     with `--max-rate` (the server then sends its archives uncompressed) and report the error";

#[cfg(test)]
mod tests {
    use super::*;
    use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
    use proptest::prelude::*;
    use std::io::Write;

    /// Encodes `pieces` as one frame, flushing after each (a flush ends a block, so
    /// small pieces make small linked blocks).
    fn encode(pieces: &[Vec<u8>], info: FrameInfo) -> Vec<u8> {
        let mut enc = FrameEncoder::with_frame_info(info, Vec::new());
        for p in pieces {
            enc.write_all(p).unwrap();
            enc.flush().unwrap();
        }
        enc.finish().unwrap()
    }

    /// Decodes `frame` pushed `step` bytes at a time.
    fn decode(frame: &[u8], step: usize) -> Result<(Vec<u8>, bool)> {
        let mut d = Lz4FrameDecoder::new();
        let mut out = Vec::new();
        for piece in frame.chunks(step.max(1)) {
            d.push(piece);
            while let Some(b) = d.next_block()? {
                out.extend_from_slice(&b);
            }
        }
        Ok((out, d.is_done()))
    }

    fn every_option() -> FrameInfo {
        FrameInfo::new()
            .block_mode(BlockMode::Linked)
            .block_size(BlockSize::Max64KB)
            .block_checksums(true)
            .content_checksum(true)
            .content_size(Some(0))
    }

    /// Pages that repeat one another (so linked blocks refer back), and random bytes
    /// (which the encoder stores uncompressed).
    fn sample(seed: u8) -> Vec<Vec<u8>> {
        let mut random = Vec::with_capacity(70_000);
        let mut x = u32::from(seed) | 1;
        while random.len() < 70_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            random.extend_from_slice(&x.to_le_bytes());
        }
        vec![
            b"PG_VERSION 15\n".repeat(300),
            vec![seed; 100],
            b"PG_VERSION 15\n".repeat(10),
            random,
            vec![7u8; 200_000],
        ]
    }

    #[test]
    fn decodes_what_lz4_encodes_with_every_option() {
        let pieces = sample(3);
        let plain = pieces.concat();
        let mut info = every_option();
        info.content_size = Some(plain.len() as u64);
        for info in [
            info,
            FrameInfo::new().block_mode(BlockMode::Linked),
            FrameInfo::new().block_mode(BlockMode::Independent),
        ] {
            let frame = encode(&pieces, info);
            for step in [1, 7, 4096, frame.len()] {
                let (out, done) = decode(&frame, step).unwrap();
                assert!(done);
                assert_eq!(out, plain);
            }
        }
    }

    #[test]
    fn a_linked_block_copies_from_a_stored_one() {
        // Random bytes fill one block, stored uncompressed; the next block repeats most of
        // them (from 1000 bytes in: a copy reaches back at most 65535 bytes), which the
        // encoder writes as a copy from the window: the stored block must be in it.
        let random = sample(5)[3][..64 << 10].to_vec();
        let pieces = [random.clone(), random[1000..].to_vec()];
        let info = FrameInfo::new()
            .block_mode(BlockMode::Linked)
            .block_size(BlockSize::Max64KB);
        let frame = encode(&pieces, info);
        assert!(
            frame.len() < (64 << 10) + (8 << 10),
            "the second block was not written as a copy: {} bytes",
            frame.len()
        );
        let (out, done) = decode(&frame, 5000).unwrap();
        assert!(done);
        assert_eq!(out, pieces.concat());
    }

    #[test]
    fn a_frame_cut_short_is_not_done() {
        let frame = encode(&sample(1), FrameInfo::new().block_mode(BlockMode::Linked));
        // Every block is there, the end mark is not.
        let (out, done) = decode(&frame[..frame.len() - 1], 4096).unwrap();
        assert!(!done);
        assert_eq!(out, sample(1).concat());
        let (out, done) = decode(&frame[..frame.len() - 5], 4096).unwrap();
        assert!(!done);
        assert!(out.len() < sample(1).concat().len());
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let pieces = sample(9);
        let frame = encode(&pieces, every_option().content_size(None));
        // A changed byte anywhere after the magic: the descriptor check, a block length, a
        // block checksum or the content checksum catches it.
        for at in (4..frame.len()).step_by(97) {
            let mut bad = frame.clone();
            bad[at] ^= 0x40;
            let res = decode(&bad, 1000);
            assert!(
                !matches!(res, Ok((ref out, true)) if *out == pieces.concat()),
                "damage at {at} went unnoticed"
            );
        }
        let mut trailing = frame.clone();
        trailing.push(0);
        let e = decode(&trailing, 1000).unwrap_err();
        assert!(e.to_string().contains("bytes follow the end"), "{e}");
        // A header whose content size (with a matching descriptor check) is not the
        // content's.
        let plain_len = pieces.concat().len() as u64;
        let mut wrong_size = encode(&pieces, every_option().content_size(Some(plain_len)));
        wrong_size[6..14].copy_from_slice(&5u64.to_le_bytes());
        wrong_size[14] = ((XxHash32::oneshot(0, &wrong_size[4..14]) >> 8) & 0xFF) as u8;
        let e = decode(&wrong_size, 1000).unwrap_err();
        assert!(e.to_string().contains("header says 5"), "{e}");
        wrong_size[0] = 0;
        let e = decode(&wrong_size, 1000).unwrap_err();
        assert!(e.to_string().contains("magic"), "{e}");
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000), step in 1usize..300) {
            let _ = decode(&data, step);
            // The same after a valid header.
            let mut framed = encode(&[], every_option().content_size(None));
            framed.truncate(7);
            framed.extend_from_slice(&data);
            let _ = decode(&framed, step);
        }

        #[test]
        fn piece_sizes_do_not_matter(seed in any::<u8>(), step in 1usize..100_000) {
            let pieces = sample(seed);
            let frame = encode(&pieces, FrameInfo::new().block_mode(BlockMode::Linked));
            let (out, done) = decode(&frame, step).unwrap();
            prop_assert!(done);
            prop_assert_eq!(out, pieces.concat());
        }
    }
}
