//! The bodies of the fuzz targets, one function per target: each takes arbitrary bytes,
//! must never panic, and returns a count so the work cannot be optimised away.
//!
//! The libFuzzer binaries in `fuzz_targets/` call these, and so does the corpus replay test
//! of the main workspace (`crates/hs-cli/tests/it/fuzz_corpus.rs` includes this file), so
//! every input committed under `fuzz/corpus/<target>/` runs in CI through the same code.

use bytes::Bytes;

/// A target body: arbitrary bytes in, a count of the work done out.
pub type Target = fn(&[u8]) -> usize;

/// Every target by name, as the directories under `fuzz/corpus/` are named.
pub const TARGETS: &[(&str, Target)] = &[
    ("proto_codec", proto_codec),
    ("tar_parser", tar_parser),
    ("wal_segment", wal_segment),
    ("pack_header", pack_header),
    ("index", index),
    ("manifest", manifest),
];

/// Backend messages of a replication connection: the message codec, the `BASE_BACKUP`
/// and WAL streaming state machines fed with whatever parsed, and the replication
/// `CopyData` payloads (`hs_proto::fuzz_input`).
pub fn proto_codec(data: &[u8]) -> usize {
    hs_proto::fuzz_input(data)
}

/// A `BASE_BACKUP` tar stream, fed to the incremental parser in pieces whose size the
/// first byte chooses (so member boundaries fall anywhere in a piece). When that byte is
/// odd, every non-zero 512-byte block gets a correct header checksum first, so that
/// mutated headers get past the checksum to the field parsers (in data blocks the
/// checksum field is just 8 more bytes of data).
pub fn tar_parser(data: &[u8]) -> usize {
    let Some((&step, rest)) = data.split_first() else {
        return 0;
    };
    let mut fixed;
    let rest = if step % 2 == 1 {
        fixed = rest.to_vec();
        for block in fixed.chunks_exact_mut(512) {
            fix_tar_checksum(block);
        }
        &fixed[..]
    } else {
        rest
    };
    let step = usize::from(step) * 13 + 1;
    let mut parser = hs_proto::TarParser::new();
    let mut events = 0;
    let mut pending: Vec<u8> = Vec::new();
    for piece in rest.chunks(step) {
        pending.extend_from_slice(piece);
        let mut input = Bytes::from(std::mem::take(&mut pending));
        loop {
            match parser.next_event(&mut input) {
                Ok(Some(_)) => events += 1,
                Ok(None) => break,
                Err(_) => return events,
            }
        }
        // The parser consumes everything it is given; keep any rest for the next piece.
        pending.extend_from_slice(&input);
    }
    events + usize::from(parser.is_finished()) + usize::from(parser.at_member_boundary())
}

/// Writes the ustar checksum of a 512-byte header block (left alone if all zero: that is
/// the end-of-archive marker).
fn fix_tar_checksum(block: &mut [u8]) {
    if block.iter().all(|&b| b == 0) {
        return;
    }
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    let field = format!("{sum:06o}\0 ");
    block[148..156].copy_from_slice(field.as_bytes());
}

/// A WAL segment (or its first bytes) of a 16 MiB-segment cluster: the page header
/// checks and the record decoder, whole and in three pieces; and the same bytes as a
/// timeline history file and a `wal_segment_size` setting.
pub fn wal_segment(data: &[u8]) -> usize {
    const SEG: u64 = 16 * 1024 * 1024;
    let mut n = 0;
    let Ok(name) = hs_proto::SegmentName::from_segno(hs_proto::TimelineId(1), 1, SEG) else {
        return 0;
    };
    if let Ok(s) = hs_proto::decode_segment(name, data) {
        n += s.records as usize;
    }
    let mut dec = hs_proto::SegmentDecoder::new(name);
    let (a, rest) = data.split_at(data.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    for piece in [a, b, c] {
        if dec.push(piece).is_err() {
            break;
        }
        while dec.next_summary().is_some() {
            n += 1;
        }
    }
    n += dec.finish().len();
    let text = String::from_utf8_lossy(data);
    n += hs_proto::parse_timeline_history(&text).map_or(0, |h| h.len());
    n += hs_proto::parse_wal_segment_size(&text).map_or(0, |_| 1);
    n + wal_records(data)
}

/// The same bytes read as a list of WAL records (commits, aborts, restore points, switches,
/// records with block references and page images, large records), which a small WAL writer
/// lays out in pages with correct page headers, back links and CRCs; a few knobs corrupt one
/// thing in a record. Random bytes almost never carry a valid CRC-32C, so without this the
/// fuzzer would not get past the first record into the block-reference and event decoders.
/// The WAL is decoded as one segment, and as a run of segments in two pieces. Inputs over
/// 4 KiB are left to the raw path.
fn wal_records(data: &[u8]) -> usize {
    const SEG: u64 = 1024 * 1024;
    let Ok(name) = hs_proto::SegmentName::from_segno(hs_proto::TimelineId(1), 1, SEG) else {
        return 0;
    };
    if data.len() > 4096 {
        return 0; // a real segment's bytes: records from them only slow the raw path down
    }
    let mut r = Reader(data);
    let Some(conf) = r.u8() else {
        return 0;
    };
    let split = usize::from(r.u8().unwrap_or(0));
    let mut w = WalWriter {
        out: Vec::new(),
        base: SEG,
        seg: SEG,
        blcksz: 1024 << (conf & 3),
        magic: [0xD110, 0xD113, 0xD116, 0xD118][usize::from(conf >> 2) & 3],
        prev: 0,
    };
    // Room to cross into a second segment; more only slows every execution down.
    while w.out.len() < (SEG + SEG / 8) as usize {
        let Some(rec) = wal_record(&mut r) else {
            break;
        };
        w.record(&rec);
    }
    if conf & 0x10 != 0 {
        // PostgreSQL's zeroed rest of the page: a record header with length 0.
        w.page_header(0);
        let end = w.lsn().next_multiple_of(w.blcksz);
        w.out.resize((end - w.base) as usize, 0);
    }
    let mut n = 0;
    let first = &w.out[..w.out.len().min(SEG as usize)];
    if let Ok(s) = hs_proto::decode_segment(name, first) {
        n += s.records as usize + s.commits as usize + s.restore_points.len();
    }
    let mut dec = hs_proto::SegmentDecoder::new(name);
    let (a, b) = w.out.split_at(w.out.len() * split / 256);
    if dec.push(a).is_ok() && dec.push(b).is_ok() {
        while dec.next_summary().is_some() {
            n += 1;
        }
        n += dec
            .finish()
            .iter()
            .map(|s| s.records as usize)
            .sum::<usize>();
    }
    n
}

/// Reads fuzz bytes from the front.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    /// `n` bytes, zero-filled once the input runs out.
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let k = n.min(self.0.len());
        let mut v = self.0[..k].to_vec();
        self.0 = &self.0[k..];
        v.resize(n, 0);
        v
    }
}

/// One WAL record to write: resource manager, info bits, body (block headers, main data
/// header, block data, main data) and a corruption knob.
struct WalRecord {
    rmid: u8,
    info: u8,
    body: Vec<u8>,
    corrupt: u8,
}

/// Builds the next record from the fuzz bytes, or `None` when they are used up.
fn wal_record(r: &mut Reader<'_>) -> Option<WalRecord> {
    let kind = r.u8()?;
    let variant = r.u8().unwrap_or(0);
    let (rmid, info, main) = match kind % 6 {
        // Commit (or commit prepared): the main data starts with the commit time.
        0 => {
            let len = if variant & 1 == 0 {
                8
            } else {
                usize::from(variant >> 4)
            };
            (1, [0x00, 0x30][usize::from(variant >> 1) & 1], r.bytes(len))
        }
        // Abort (or abort prepared).
        1 => {
            let len = if variant & 1 == 0 {
                8
            } else {
                usize::from(variant >> 4)
            };
            (1, [0x20, 0x40][usize::from(variant >> 1) & 1], r.bytes(len))
        }
        // Restore point: time and a 64-byte name (or too little data).
        2 => {
            let len = if variant & 1 == 0 {
                72
            } else {
                usize::from(variant >> 1)
            };
            (0, 0x70, r.bytes(len))
        }
        // XLOG_SWITCH: the rest of the segment is unused.
        3 => (0, 0x40, Vec::new()),
        // A large record of any resource manager, to span pages and segments.
        4 => {
            let len = usize::from(variant) * 64 + usize::from(r.u8().unwrap_or(0));
            (r.u8().unwrap_or(0), r.u8().unwrap_or(0), vec![0x5a; len])
        }
        // Any resource manager and info, short main data.
        _ => {
            let len = usize::from(variant);
            (r.u8().unwrap_or(0), r.u8().unwrap_or(0), r.bytes(len))
        }
    };
    let mut heads = Vec::new();
    let mut payload = Vec::new();
    let mut id = (kind >> 3) % 4;
    for i in 0..(kind >> 5) % 4 {
        let mut flags = r.u8().unwrap_or(0) & 0xBF;
        if i == 0 {
            flags &= 0x7F; // the first block names its relation
        }
        heads.push(id);
        let data_len = if flags & 0x20 != 0 {
            u16::from(r.u8().unwrap_or(0)) + 1
        } else {
            0
        };
        heads.push(flags);
        heads.extend_from_slice(&data_len.to_le_bytes());
        if flags & 0x10 != 0 {
            let len = u16::from(r.u8().unwrap_or(0)) * 4 + 1;
            let bimg_info = r.u8().unwrap_or(0) & 0x1d;
            let hole_offset: u16 = if bimg_info & 1 != 0 {
                1 + u16::from(id)
            } else {
                0
            };
            heads.extend_from_slice(&len.to_le_bytes());
            heads.extend_from_slice(&hole_offset.to_le_bytes());
            heads.push(bimg_info);
            if bimg_info & 1 != 0 && bimg_info & 0x1c != 0 {
                heads.extend_from_slice(&(8192 - len).to_le_bytes());
            }
            payload.extend(std::iter::repeat_n(0xa5, usize::from(len)));
        }
        if flags & 0x80 == 0 {
            heads.extend_from_slice(&[0x7f, 0, 0, 0, 5, 0, 0, 0, 0x10, 0x27, 0, 0]);
        }
        heads.extend_from_slice(&u32::from(i).to_le_bytes());
        payload.extend(r.bytes(usize::from(data_len)));
        id += 1 + (flags & 1);
    }
    if variant & 0x80 != 0 && kind % 6 != 3 {
        heads.extend_from_slice(&[252, 0xe8, 0x03, 0, 0]); // top-level xid
    }
    if !main.is_empty() {
        match u8::try_from(main.len()) {
            Ok(len) => heads.extend_from_slice(&[255, len]),
            Err(_) => {
                heads.push(254);
                heads.extend_from_slice(&(main.len() as u32).to_le_bytes());
            }
        }
    }
    heads.extend_from_slice(&payload);
    heads.extend_from_slice(&main);
    let corrupt = r.u8().unwrap_or(0);
    Some(WalRecord {
        rmid,
        info,
        body: heads,
        corrupt,
    })
}

/// Lays records out in WAL pages the way PostgreSQL does: a long page header at each
/// segment start, a short one at every other page, records 8-byte aligned and split across
/// pages with the continuation flag and remaining length.
struct WalWriter {
    /// The WAL from `base` on.
    out: Vec<u8>,
    base: u64,
    seg: u64,
    blcksz: u64,
    magic: u16,
    /// Start of the last record written.
    prev: u64,
}

impl WalWriter {
    fn lsn(&self) -> u64 {
        self.base + self.out.len() as u64
    }

    /// At a page start: writes the page header (`cont` record bytes still to come).
    fn page_header(&mut self, cont: u64) {
        let at = self.lsn();
        if !at.is_multiple_of(self.blcksz) {
            return;
        }
        let long = at.is_multiple_of(self.seg);
        let info: u16 = u16::from(long) * 2 + u16::from(cont > 0);
        self.out.extend_from_slice(&self.magic.to_le_bytes());
        self.out.extend_from_slice(&info.to_le_bytes());
        self.out.extend_from_slice(&1u32.to_le_bytes());
        self.out.extend_from_slice(&at.to_le_bytes());
        self.out.extend_from_slice(&(cont as u32).to_le_bytes());
        self.out.extend_from_slice(&[0; 4]);
        if long {
            self.out.extend_from_slice(&7u64.to_le_bytes());
            self.out.extend_from_slice(&(self.seg as u32).to_le_bytes());
            self.out
                .extend_from_slice(&(self.blcksz as u32).to_le_bytes());
        }
    }

    fn record(&mut self, rec: &WalRecord) {
        let pad = self.lsn().next_multiple_of(8) - self.lsn();
        self.out.extend(std::iter::repeat_n(0, pad as usize));
        self.page_header(0);
        let start = self.lsn();
        let tot = (24 + rec.body.len()) as u32;
        let mut hdr = [0u8; 24];
        hdr[..4].copy_from_slice(&tot.to_le_bytes());
        hdr[4..8].copy_from_slice(&1000u32.to_le_bytes());
        hdr[8..16].copy_from_slice(&self.prev.to_le_bytes());
        hdr[16] = rec.info;
        hdr[17] = rec.rmid;
        let crc = !hs_proto::crc32c_update(hs_proto::crc32c_update(!0, &rec.body), &hdr[..20]);
        hdr[20..].copy_from_slice(&crc.to_le_bytes());
        let mut bytes = hdr.to_vec();
        bytes.extend_from_slice(&rec.body);
        match rec.corrupt {
            0xf8 => bytes[20] ^= 1,                      // CRC
            0xf9 => bytes[8] ^= 8,                       // back link
            0xfa => bytes[0] = bytes[0].wrapping_add(8), // total length
            0xfb => {
                let last = bytes.len() - 1; // a body byte (or the CRC itself)
                bytes[last] ^= 0x40;
            }
            _ => {}
        }
        let mut left = bytes.len() as u64;
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            self.page_header(left);
            let room = self.blcksz - self.lsn() % self.blcksz;
            let n = rest.len().min(room as usize);
            self.out.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            left -= n as u64;
        }
        self.prev = start;
        if rec.rmid == 0 && rec.info & 0xf0 == 0x40 {
            // After a switch PostgreSQL fills the segment with zeros.
            let end = self.lsn().next_multiple_of(self.seg);
            self.out.resize((end - self.base) as usize, 0);
        }
    }
}

/// A whole pack (trailer, header location) and a pack header's plaintext.
pub fn pack_header(data: &[u8]) -> usize {
    let mut n = 0;
    if let Ok((blobs, header)) = hs_chunk::split_pack(data) {
        n += blobs.len() + header.len();
    }
    // As an opened header, with a frame area of a size taken from the input's length.
    let blobs_len = (data.len() as u64).saturating_mul(97);
    n += hs_chunk::PackHeader::decode(data, blobs_len).map_or(0, |h| h.entries.len());
    for ids in [hs_chunk::IdWidth::Short, hs_chunk::IdWidth::Long] {
        let mut b = data;
        n += hs_chunk::decode_entries(&mut b, ids, None).map_or(0, |e| e.len());
    }
    n
}

/// An index object's plaintext (`hs_repo::fuzz_index`).
pub fn index(data: &[u8]) -> usize {
    hs_repo::fuzz_index(data)
}

/// A manifest body (`hs_repo::fuzz_manifest`: zstd-compressed or plain JSON) and a list
/// chunk (`hs_repo::decode_chunk_list`).
pub fn manifest(data: &[u8]) -> usize {
    hs_repo::fuzz_manifest(data) + hs_repo::decode_chunk_list(data).map_or(0, |l| l.len())
}
