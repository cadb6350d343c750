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
/// first byte chooses (so member boundaries fall anywhere in a piece).
pub fn tar_parser(data: &[u8]) -> usize {
    let Some((&step, rest)) = data.split_first() else {
        return 0;
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
    n
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
    let mut b = data;
    n += hs_chunk::decode_entries(&mut b, None).map_or(0, |e| e.len());
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
