//! PostgreSQL 17+ incremental base backups, stored without chains.
//!
//! With `UPLOAD_MANIFEST` and `BASE_BACKUP ( INCREMENTAL )` the server sends a changed
//! relation file as `INCREMENTAL.<name>`: a header (magic, block count, truncation
//! length, block numbers, padded to a whole block when blocks follow) and the changed
//! blocks. Here each such member becomes the full file's chunk list: a sent block is a
//! new chunk, an unchanged block below the truncation length is the parent backup's
//! chunk at the same position (chunks of relation files are their 8 KiB pages), and
//! anything else is a zero page, as `pg_combinebackup` would write it. So every backup
//! restores on its own.
//!
//! The manifest stored with the backup describes the full files: each reconstructed
//! file's CRC-32C is derived from the parent's (its manifest entry), the old and new
//! contents of the changed blocks and the lengths (`hs_pg::crc32c_shift`), so the
//! unchanged blocks are never read. `pg_verifybackup` after a restore then checks every
//! byte written against checksums that go back to what the server sent.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use hs_base::code;
use hs_pg::{crc32c_from_raw, crc32c_hex, crc32c_raw, crc32c_shift, crc32c_to_raw};
use hs_repo::{ChunkReader, ChunkRef, ChunkWriter};
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};

/// `INCREMENTAL_MAGIC` of PostgreSQL's incremental files.
const INCREMENTAL_MAGIC: u32 = 0xd3ae_1f0d;
/// PostgreSQL's block size; our relation chunks are pages of this size.
pub(crate) const BLCKSZ: usize = 8192;
/// Sanity bound of block counts and numbers in a header (PostgreSQL's default segment
/// holds 131072 blocks; a build with larger segments stays well below this).
const MAX_BLOCKS: u32 = 1 << 22;
/// The file name prefix of an incremental member.
const PREFIX: &str = "INCREMENTAL.";

/// The full file an `INCREMENTAL.<name>` member stands for, if `path` is one.
pub(crate) fn full_path_of(path: &str) -> Option<String> {
    let (dir, name) = match path.rsplit_once('/') {
        Some((d, n)) => (Some(d), n),
        None => (None, path),
    };
    let name = name.strip_prefix(PREFIX)?;
    let full = match dir {
        Some(d) => format!("{d}/{name}"),
        None => name.to_string(),
    };
    (hs_chunk::FileClass::of(&full) == hs_chunk::FileClass::Relation).then_some(full)
}

fn bad(path: &str, what: impl std::fmt::Display) -> Error {
    Error::of_kind(
        ErrorKind::Protocol,
        code::PROTOCOL_BACKUP_STREAM_INVALID,
        format!("the server's incremental file {path} is not as expected: {what}"),
    )
    .with_suggestion(
        "take a full backup with `backup --full` and report this with the server version",
    )
}

/// The header of an incremental file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    /// Changed blocks, ascending, relative to the segment.
    blocks: Vec<u32>,
    /// Blocks below this that were not sent come from the parent backup.
    truncation: u32,
    /// Header bytes including the padding.
    len: usize,
}

impl Header {
    /// Parses the header from the member's first bytes; `Ok(None)` until enough arrived.
    fn parse(path: &str, buf: &[u8]) -> Result<Option<Header>> {
        if buf.len() < 12 {
            return Ok(None);
        }
        let word = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        if word(0) != INCREMENTAL_MAGIC {
            return Err(bad(path, format!("magic {:#x}", word(0))));
        }
        let (n, truncation) = (word(4), word(8));
        if n > MAX_BLOCKS || truncation > MAX_BLOCKS {
            return Err(bad(
                path,
                format!("{n} blocks, truncation length {truncation}"),
            ));
        }
        let raw_len = 12 + 4 * n as usize;
        if buf.len() < raw_len {
            return Ok(None);
        }
        let blocks: Vec<u32> = (0..n as usize).map(|i| word(12 + 4 * i)).collect();
        if blocks.windows(2).any(|w| w[0] >= w[1]) || blocks.iter().any(|&b| b >= MAX_BLOCKS) {
            return Err(bad(path, "block numbers are not ascending"));
        }
        let len = if n > 0 {
            raw_len.div_ceil(BLCKSZ) * BLCKSZ
        } else {
            raw_len
        };
        Ok(Some(Header {
            blocks,
            truncation,
            len,
        }))
    }

    /// Blocks of the reconstructed file.
    fn output_blocks(&self) -> u32 {
        self.blocks
            .last()
            .map_or(self.truncation, |&b| self.truncation.max(b + 1))
    }
}

/// The parent backup's version of the file: its chunk references and manifest entry.
pub(crate) struct ParentFile {
    /// One reference per block.
    pub refs: Vec<ChunkRef>,
    /// The parent's CRC-32C of the whole file, when its manifest has one.
    pub crc: Option<u32>,
}

/// One `INCREMENTAL.*` member being received.
pub(crate) struct IncrementalFile {
    /// The member's path in its archive.
    member: String,
    /// The full file's path in its archive.
    pub full_path: String,
    parent: ParentFile,
    header: Option<Header>,
    /// Bytes before the header is complete, then the partial block.
    buf: BytesMut,
    /// Member bytes received (checked against the tar header; the member's size and
    /// CRC-32C against the server's manifest are checked with every file's, `sent.rs`).
    received: u64,
    /// Index in `header.blocks` of the next block to arrive.
    next: usize,
    /// The next output block to append.
    out: u32,
    /// Raw CRC accumulator of the output (see `start_crc`).
    acc: u32,
    /// Parent chunks whose content goes into `acc` at the end (block, reference).
    to_read: Vec<(u32, ChunkRef)>,
    /// Whether `acc` sums the whole output (the parent's CRC does not apply).
    direct: bool,
    /// The output file's chunks.
    pub chunks: Vec<ChunkRef>,
    /// Blocks reused from the parent, for the statistics.
    pub reused: u64,
    /// Reads parent chunks: their content for the CRC, or to store again when their
    /// pack can no longer be referenced.
    reader: ChunkReader,
}

impl IncrementalFile {
    pub(crate) fn new(
        member: String,
        full_path: String,
        parent: ParentFile,
        reader: ChunkReader,
    ) -> IncrementalFile {
        IncrementalFile {
            reader,
            member,
            full_path,
            parent,
            header: None,
            buf: BytesMut::new(),
            received: 0,
            next: 0,
            out: 0,
            acc: 0,
            to_read: Vec::new(),
            direct: false,
            chunks: Vec::new(),
            reused: 0,
        }
    }

    fn parent_blocks(&self) -> u32 {
        self.parent.refs.len() as u32
    }

    /// Sets up the CRC accumulator once the output length is known. With the parent's
    /// CRC and an output at least as long as the parent, the accumulator starts as the
    /// raw CRC of the parent zero-extended to the output length and every block that
    /// differs adds `raw(old) ^ raw(new)` at its place; otherwise it sums every block.
    fn start_crc(&mut self, h: &Header) {
        let n = u64::from(h.output_blocks());
        let p = u64::from(self.parent_blocks());
        match self.parent.crc {
            Some(crc) if n >= p => {
                let raw = crc32c_to_raw(crc, p * BLCKSZ as u64);
                self.acc = crc32c_shift(raw, (n - p) * BLCKSZ as u64);
                self.direct = false;
            }
            _ => {
                self.acc = 0;
                self.direct = true;
            }
        }
    }

    /// Adds `raw` (the raw CRC of block `b`'s content) at block `b` of the output.
    fn fold(&mut self, b: u32, raw: u32) {
        let Some(h) = &self.header else { return };
        let after = u64::from(h.output_blocks() - 1 - b) * BLCKSZ as u64;
        self.acc ^= crc32c_shift(raw, after);
    }

    /// Takes in the member's next bytes; stores the blocks that completed.
    pub(crate) async fn push(&mut self, data: &[u8], writer: &mut ChunkWriter) -> Result<()> {
        self.received += data.len() as u64;
        self.buf.extend_from_slice(data);
        if self.header.is_none() {
            let Some(h) = Header::parse(&self.member, &self.buf)? else {
                return Ok(());
            };
            if self.buf.len() < h.len {
                return Ok(());
            }
            let _ = self.buf.split_to(h.len);
            self.start_crc(&h);
            self.header = Some(h);
        }
        while self.buf.len() >= BLCKSZ {
            let block = self.buf.split_to(BLCKSZ).freeze();
            let b = {
                let h = self.header.as_ref().expect("header parsed above");
                *h.blocks
                    .get(self.next)
                    .ok_or_else(|| bad(&self.member, "more blocks than its header lists"))?
            };
            self.next += 1;
            self.fill_to(b, writer).await?;
            self.fold(b, crc32c_raw(&block));
            if b < self.parent_blocks() && !self.direct {
                // The parent's content of this block leaves the accumulator.
                self.to_read.push((b, self.parent.refs[b as usize]));
            }
            let hint = self.parent.refs.get(b as usize).copied();
            let r = writer.add_hinted(block, hint.as_ref()).await?;
            self.chunks.push(r);
            self.out = b + 1;
        }
        Ok(())
    }

    /// Appends the unsent output blocks before `upto`: the parent's chunk below the
    /// truncation length, a zero page above it.
    async fn fill_to(&mut self, upto: u32, writer: &mut ChunkWriter) -> Result<()> {
        let truncation = self.header.as_ref().map_or(0, |h| h.truncation);
        while self.out < upto {
            let b = self.out;
            let parent = self.parent.refs.get(b as usize).copied();
            match parent {
                Some(r) if b < truncation => {
                    if self.direct {
                        self.to_read.push((b, r));
                    }
                    let kept = match writer.reuse(&r) {
                        Some(k) => k,
                        // Its pack was condemned or quarantined since: store it again.
                        None => writer.add(self.reader.read(&r).await?).await?,
                    };
                    self.chunks.push(kept);
                    self.reused += 1;
                }
                _ => {
                    if let Some(r) = parent.filter(|_| !self.direct) {
                        // The parent had data here; the output has zeros.
                        self.to_read.push((b, r));
                    }
                    let zero = Bytes::from_static(&ZERO_PAGE);
                    let r = writer.add_hinted(zero, parent.as_ref()).await?;
                    self.chunks.push(r);
                }
            }
            self.out += 1;
        }
        Ok(())
    }

    /// The member ended: checks its length, appends the remaining blocks, and folds the
    /// parent content it needs into the CRC (read through `reader`). Returns the full
    /// file's size and CRC-32C, and the member's own size and CRC-32C.
    pub(crate) async fn finish(&mut self, writer: &mut ChunkWriter) -> Result<Finished> {
        let Some(h) = self.header.clone() else {
            return Err(bad(&self.member, "it ended inside its header"));
        };
        if !self.buf.is_empty() || self.next != h.blocks.len() {
            return Err(bad(
                &self.member,
                format!(
                    "{} of {} blocks and {} stray bytes arrived",
                    self.next,
                    h.blocks.len(),
                    self.buf.len()
                ),
            ));
        }
        let n = h.output_blocks();
        self.fill_to(n, writer).await?;
        for (b, r) in std::mem::take(&mut self.to_read) {
            let content = self.reader.read(&r).await?;
            self.fold(b, crc32c_raw(&content));
        }
        let size = u64::from(n) * BLCKSZ as u64;
        Ok(Finished {
            size,
            crc: crc32c_from_raw(self.acc, size),
            member_size: self.received,
        })
    }
}

/// What one incremental member became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Finished {
    /// Size of the full file.
    pub size: u64,
    /// CRC-32C of the full file.
    pub crc: u32,
    /// Size of the `INCREMENTAL.*` member as sent.
    pub member_size: u64,
}

static ZERO_PAGE: [u8; BLCKSZ] = [0; BLCKSZ];

/// `backup_label` of an incremental backup without its `INCREMENTAL FROM` lines (which
/// make PostgreSQL refuse to start: the restored directory is a full one).
pub(crate) fn full_backup_label(label: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(label.len());
    for line in label.split_inclusive(|&b| b == b'\n') {
        if !line.starts_with(b"INCREMENTAL FROM ") {
            out.extend_from_slice(line);
        }
    }
    out
}

/// Size and CRC-32C of a file as the full-files manifest lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FullEntry {
    pub size: u64,
    pub crc: u32,
}

/// The bytes `Manifest-Checksum` covers: everything before its own line (up to and
/// including the newline that ends the line before it).
fn checksummed_part(text: &str) -> Option<&str> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    let cut = body.rfind('\n')?;
    Some(&text[..=cut])
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `dir/INCREMENTAL.name` for `dir/name`: the member the server sends in place of a
/// relation file it sends only the changed blocks of.
pub(crate) fn member_of(full: &str) -> String {
    match full.rsplit_once('/') {
        Some((d, n)) => format!("{d}/INCREMENTAL.{n}"),
        None => format!("INCREMENTAL.{full}"),
    }
}

/// Checks a manifest's `Manifest-Checksum` line against its content.
pub(crate) fn manifest_checksum_ok(text: &str) -> bool {
    let Some(part) = checksummed_part(text) else {
        return false;
    };
    let last = &text[part.len()..];
    let want = format!(
        "\"Manifest-Checksum\": \"{}\"}}",
        sha256_hex(part.as_bytes())
    );
    last.trim_end() == want
}

fn manifest_error(what: impl std::fmt::Display) -> Error {
    Error::of_kind(
        ErrorKind::Protocol,
        code::PROTOCOL_BACKUP_STREAM_INVALID,
        format!("the server's backup_manifest of an incremental backup: {what}"),
    )
    .with_suggestion(
        "take a full backup with `backup --full` and report this with the server version",
    )
}

/// Rewrites the server's manifest of an incremental backup into the manifest of the
/// full files it restores to: `changed` maps a manifest path (`INCREMENTAL.*` members
/// and `backup_label`) to the full file's path and entry. Every `INCREMENTAL.*` entry
/// must be in `changed` (that the members arrived as listed is checked before, with
/// every file: `sent::check`). The result carries a fresh `Manifest-Checksum`.
pub(crate) fn full_files_manifest(
    server: &str,
    changed: &HashMap<String, (String, FullEntry)>,
) -> Result<String> {
    if !manifest_checksum_ok(server) {
        return Err(manifest_error(
            "its Manifest-Checksum does not match its content",
        ));
    }
    let part = checksummed_part(server).ok_or_else(|| manifest_error("it has no lines"))?;
    let mut out = String::with_capacity(server.len());
    let mut seen = 0usize;
    for line in part.split_inclusive('\n') {
        let Some(rest) = line.strip_prefix("{ \"Path\": ") else {
            out.push_str(line);
            continue;
        };
        let end = rest
            .rfind('}')
            .ok_or_else(|| manifest_error(format!("a file line without an end: {line:?}")))?;
        let object = format!("{{ \"Path\": {}", &rest[..=end]);
        let tail = &rest[end + 1..];
        let v: Value = serde_json::from_str(&object)
            .map_err(|e| manifest_error(format!("a file line does not parse ({e}): {line:?}")))?;
        let path = v["Path"].as_str().unwrap_or_default();
        let Some((full, entry)) = changed.get(path) else {
            if path
                .rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with(PREFIX))
            {
                return Err(manifest_error(format!(
                    "{path} was listed but not received"
                )));
            }
            out.push_str(line);
            continue;
        };
        seen += 1;
        out.push_str(&format!(
            "{{ \"Path\": {}, \"Size\": {}, \"Last-Modified\": {}, \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"{}\" }}{tail}",
            Value::String(full.clone()),
            entry.size,
            v["Last-Modified"],
            crc32c_hex(entry.crc)
        ));
    }
    if seen != changed.len() {
        return Err(manifest_error(format!(
            "it lists {seen} of the {} rewritten files",
            changed.len()
        )));
    }
    let sum = sha256_hex(out.as_bytes());
    out.push_str(&format!("\"Manifest-Checksum\": \"{sum}\"}}\n"));
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn header(blocks: &[u32], truncation: u32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&INCREMENTAL_MAGIC.to_le_bytes());
        h.extend_from_slice(&(blocks.len() as u32).to_le_bytes());
        h.extend_from_slice(&truncation.to_le_bytes());
        for b in blocks {
            h.extend_from_slice(&b.to_le_bytes());
        }
        if !blocks.is_empty() {
            h.resize(h.len().div_ceil(BLCKSZ) * BLCKSZ, 0);
        }
        h
    }

    /// A block of content that depends on (seed, block).
    fn page(seed: u8, b: u32) -> Vec<u8> {
        (0..BLCKSZ)
            .map(|i| {
                (i as u32)
                    .wrapping_mul(31)
                    .wrapping_add(b * 7 + u32::from(seed)) as u8
            })
            .collect()
    }

    /// Reconstructs `INCREMENTAL` members against a stored parent file and checks the
    /// chunks read back and the derived CRC against the expected full file, for output
    /// longer, equal and shorter than the parent, with and without the parent's CRC.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn members_become_full_files_with_the_right_crc() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = hs_crypt::Keyring::create(&dir.path().join("keyring")).unwrap();
        let url = format!("file://{}/repo", dir.path().display());
        let repo = hs_repo::Repository::init(&url, &keyring).await.unwrap();

        let parent_len = 10u32;
        let parent: Vec<u8> = (0..parent_len).flat_map(|b| page(1, b)).collect();
        let mut w = repo.writer().await.unwrap();
        let mut refs = Vec::new();
        for p in parent.chunks(BLCKSZ) {
            refs.push(w.add(Bytes::copy_from_slice(p)).await.unwrap());
        }
        w.finish().await.unwrap();
        let parent_crc = hs_pg::crc32c(&parent);

        // (sent blocks, truncation length)
        let cases: &[(&[u32], u32)] = &[
            (&[0, 3, 12, 14], 10), // grows: 10 -> 15, with a zero block at 10, 11, 13
            (&[2, 9], 10),         // same length
            (&[1], 6),             // truncated to 6
            (&[], 4),              // truncated, nothing sent
            (&[7], 5),             // truncated to 5, then block 7: zeros at 5 and 6
        ];
        for &(sent, truncation) in cases {
            for with_crc in [true, false] {
                let mut member = header(sent, truncation);
                for &b in sent {
                    member.extend_from_slice(&page(2, b));
                }
                let n = sent.last().map_or(truncation, |&l| truncation.max(l + 1));
                let expected: Vec<u8> = (0..n)
                    .flat_map(|b| {
                        if sent.contains(&b) {
                            page(2, b)
                        } else if b < truncation && b < parent_len {
                            page(1, b)
                        } else {
                            vec![0; BLCKSZ]
                        }
                    })
                    .collect();
                let reader = repo.reader().await.unwrap();
                let mut w = repo.writer().await.unwrap();
                let pf = ParentFile {
                    refs: refs.clone(),
                    crc: with_crc.then_some(parent_crc),
                };
                let mut f = IncrementalFile::new("m".into(), "f".into(), pf, reader.clone());
                // Arbitrary split of the member's bytes.
                for piece in member.chunks(5000) {
                    f.push(piece, &mut w).await.unwrap();
                }
                let done = f.finish(&mut w).await.unwrap();
                w.finish().await.unwrap();
                let what = format!("sent {sent:?} truncation {truncation} parent crc {with_crc}");
                assert_eq!(done.size, expected.len() as u64, "{what}");
                assert_eq!(done.crc, hs_pg::crc32c(&expected), "{what}");
                assert_eq!(done.member_size, member.len() as u64, "{what}");
                let mut got = Vec::new();
                for r in &f.chunks {
                    got.extend_from_slice(&reader.read(r).await.unwrap());
                }
                assert!(got == expected, "{what}: content differs");
                let reused = (0..truncation.min(parent_len))
                    .filter(|b| !sent.contains(b))
                    .count() as u64;
                assert_eq!(f.reused, reused, "{what}");
            }
        }

        // A member cut short, or with a block too many, is refused.
        let mut member = header(&[1], 10);
        member.extend_from_slice(&page(2, 1));
        let mut w = repo.writer().await.unwrap();
        let pf = ParentFile {
            refs: refs.clone(),
            crc: None,
        };
        let reader = repo.reader().await.unwrap();
        let mut f = IncrementalFile::new("m".into(), "f".into(), pf, reader.clone());
        f.push(&member[..member.len() - 1], &mut w).await.unwrap();
        assert!(f.finish(&mut w).await.is_err());
        let pf = ParentFile { refs, crc: None };
        let mut f = IncrementalFile::new("m".into(), "f".into(), pf, reader);
        member.extend_from_slice(&page(2, 2));
        assert!(f.push(&member, &mut w).await.is_err());
    }

    #[test]
    fn member_names_map_to_relation_files_only() {
        assert_eq!(
            full_path_of("base/5/INCREMENTAL.16384").as_deref(),
            Some("base/5/16384")
        );
        assert_eq!(
            full_path_of("base/5/INCREMENTAL.16384_vm.2").as_deref(),
            Some("base/5/16384_vm.2")
        );
        assert_eq!(
            full_path_of("PG_17_202406281/5/INCREMENTAL.16390").as_deref(),
            Some("PG_17_202406281/5/16390")
        );
        assert_eq!(full_path_of("base/5/16384"), None);
        assert_eq!(full_path_of("INCREMENTAL.backup_label"), None);
        assert_eq!(full_path_of("base/5/INCREMENTAL.pg_filenode.map"), None);
    }

    #[test]
    fn headers_parse_with_padding_and_refuse_damage() {
        let h = header(&[0, 7, 9], 12);
        assert_eq!(Header::parse("f", &h[..11]).unwrap(), None);
        let p = Header::parse("f", &h).unwrap().unwrap();
        assert_eq!(
            (p.blocks.clone(), p.truncation, p.len),
            (vec![0, 7, 9], 12, BLCKSZ)
        );
        assert_eq!(p.output_blocks(), 12);
        let empty = header(&[], 5);
        let p = Header::parse("f", &empty).unwrap().unwrap();
        assert_eq!((p.len, p.output_blocks()), (12, 5));
        assert_eq!(header(&[3, 40], 2).len(), BLCKSZ);
        let p = Header::parse("f", &header(&[3, 40], 2)).unwrap().unwrap();
        assert_eq!(p.output_blocks(), 41);
        let mut wrong = h.clone();
        wrong[0] ^= 1;
        assert!(Header::parse("f", &wrong).is_err());
        let unsorted = header(&[4, 2], 5);
        assert!(Header::parse("f", &unsorted).is_err());
        let mut huge = header(&[], 0);
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Header::parse("f", &huge).is_err());
    }

    #[test]
    fn backup_label_loses_only_the_incremental_lines() {
        let label = b"START WAL LOCATION: 0/4000028 (file 000000010000000000000004)\nCHECKPOINT LOCATION: 0/4000080\nINCREMENTAL FROM LSN: 0/2000028\nINCREMENTAL FROM TLI: 1\nSTART TIMELINE: 1\n";
        let out = full_backup_label(label);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "START WAL LOCATION: 0/4000028 (file 000000010000000000000004)\nCHECKPOINT LOCATION: 0/4000080\nSTART TIMELINE: 1\n"
        );
    }

    /// A `backup_manifest` as the server writes it, with a correct checksum.
    pub(crate) fn manifest_with(files: &[(&str, u64, u32)]) -> String {
        let mut m = String::from(
            "{ \"PostgreSQL-Backup-Manifest-Version\": 2,\n\"System-Identifier\": 7,\n\"Files\": [\n",
        );
        for (i, (p, size, crc)) in files.iter().enumerate() {
            let sep = if i + 1 == files.len() { " ],\n" } else { ",\n" };
            m.push_str(&format!(
                "{{ \"Path\": \"{p}\", \"Size\": {size}, \"Last-Modified\": \"2026-12-06 03:00:00 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"{}\" }}{sep}",
                crc32c_hex(*crc)
            ));
        }
        m.push_str("\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }\n],\n");
        let sum = sha256_hex(m.as_bytes());
        m.push_str(&format!("\"Manifest-Checksum\": \"{sum}\"}}\n"));
        m
    }

    #[test]
    fn full_files_manifest_rewrites_listed_entries_and_checksums_itself() {
        let server = manifest_with(&[
            ("backup_label", 200, 1),
            ("base/5/INCREMENTAL.16384", 8204, 0xAABBCCDD),
            ("base/5/16385", 8192, 3),
        ]);
        assert!(manifest_checksum_ok(&server));
        let mut changed = HashMap::new();
        changed.insert(
            "base/5/INCREMENTAL.16384".to_string(),
            (
                "base/5/16384".to_string(),
                FullEntry {
                    size: 81920,
                    crc: 0x0102_0304,
                },
            ),
        );
        changed.insert(
            "backup_label".to_string(),
            ("backup_label".to_string(), FullEntry { size: 150, crc: 9 }),
        );
        let full = full_files_manifest(&server, &changed).unwrap();
        assert!(manifest_checksum_ok(&full), "{full}");
        let files = hs_pg::backup_manifest_files(&full).unwrap();
        let got = |p: &str| (files[p].size, files[p].crc32c);
        assert_eq!(got("base/5/16384"), (81920, Some(0x0102_0304)));
        assert_eq!(got("backup_label"), (150, Some(9)));
        assert_eq!(got("base/5/16385"), (8192, Some(3)));
        assert!(!files.contains_key("base/5/INCREMENTAL.16384"));

        // A listed incremental member that never arrived is refused.
        changed.remove("base/5/INCREMENTAL.16384");
        assert!(full_files_manifest(&server, &changed).is_err());
        // So is a manifest whose checksum is wrong.
        let tampered = server.replace("\"Size\": 8192", "\"Size\": 8193");
        assert!(!manifest_checksum_ok(&tampered));
    }
}
