//! Incremental (sans-IO) tar parser for the archives inside a BASE_BACKUP stream.
//!
//! Handles ustar and GNU headers: 512-byte blocks, octal or GNU base-256 numbers,
//! the ustar `prefix` field, GNU `L`/`K` long names, pax `x` records (path, linkpath,
//! size), regular files, directories and symlinks. File content is surfaced as slices of
//! the input as it arrives; nothing is buffered beyond one header.

use bytes::{Buf, Bytes, BytesMut};
use hs_base::code;

use crate::error::{Error, ErrorKind, Result};

const BLOCK: usize = 512;
const MAX_LONG_NAME: u64 = 64 * 1024;

/// What a tar entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file; its content follows as `Data` events.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (e.g. `pg_tblspc/<oid>` or a linked `pg_wal`).
    Symlink {
        /// Link target.
        target: String,
    },
}

/// Header of one archive member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntryHeader {
    /// Path inside the archive, without a trailing `/`.
    pub path: String,
    /// File, directory or symlink.
    pub kind: EntryKind,
    /// Permission bits (e.g. `0o600`).
    pub mode: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Content length in bytes (0 for directories and symlinks).
    pub size: u64,
}

/// One step of tar parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarEvent {
    /// A new member starts.
    Entry(TarEntryHeader),
    /// Next piece of the current file's content.
    Data(Bytes),
    /// The current member is complete.
    EntryEnd,
    /// The end-of-archive marker (two zero blocks) was read.
    End,
}

#[derive(Debug)]
enum State {
    Header,
    Data {
        remaining: u64,
        padding: usize,
    },
    Padding {
        remaining: usize,
    },
    Collect {
        which: Collect,
        remaining: u64,
        padding: usize,
        buf: Vec<u8>,
    },
    Finished,
}

#[derive(Debug, Clone, Copy)]
enum Collect {
    LongName,
    LongLink,
    Pax,
    Skip,
}

/// Sans-IO tar parser: feed it bytes, pull events.
///
/// ```
/// use bytes::Bytes;
/// use hs_proto::{TarEvent, TarParser};
/// let mut p = TarParser::new();
/// let mut input = Bytes::from(vec![0u8; 1024]); // an empty archive
/// assert_eq!(p.next_event(&mut input).unwrap(), Some(TarEvent::End));
/// assert!(p.is_finished());
/// ```
#[derive(Debug)]
pub struct TarParser {
    state: State,
    hdr: BytesMut,
    zero_blocks: u8,
    long_name: Option<String>,
    long_link: Option<String>,
    pax_path: Option<String>,
    pax_link: Option<String>,
    pax_size: Option<u64>,
    pending_end: bool,
}

impl Default for TarParser {
    fn default() -> Self {
        TarParser::new()
    }
}

fn corrupt(msg: impl Into<String>) -> Error {
    Error::of_kind(ErrorKind::Protocol, code::PROTOCOL_TAR_INVALID, msg)
}

fn parse_num(field: &[u8], what: &str) -> Result<u64> {
    if let Some(&first) = field.first() {
        if first & 0x80 != 0 {
            // GNU base-256: big-endian two's complement; we accept only non-negative values.
            if first & 0x40 != 0 {
                return Err(corrupt(format!("negative {what} in tar header")));
            }
            let mut v: u64 = u64::from(first & 0x3f);
            for &b in &field[1..] {
                v = v
                    .checked_mul(256)
                    .and_then(|v| v.checked_add(u64::from(b)))
                    .ok_or_else(|| corrupt(format!("{what} too large in tar header")))?;
            }
            return Ok(v);
        }
    }
    let mut v: u64 = 0;
    let mut seen = false;
    for &b in field {
        match b {
            b'0'..=b'7' => {
                seen = true;
                v = v
                    .checked_mul(8)
                    .and_then(|v| v.checked_add(u64::from(b - b'0')))
                    .ok_or_else(|| corrupt(format!("{what} too large in tar header")))?;
            }
            b' ' if !seen => {}
            0 | b' ' => break,
            _ => return Err(corrupt(format!("invalid {what} in tar header"))),
        }
    }
    Ok(v)
}

fn cstr(field: &[u8]) -> Result<String> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8(field[..end].to_vec()).map_err(|_| corrupt("non-UTF-8 name in tar header"))
}

fn trim_nul(mut v: Vec<u8>) -> Result<String> {
    if let Some(p) = v.iter().position(|&b| b == 0) {
        v.truncate(p);
    }
    String::from_utf8(v).map_err(|_| corrupt("non-UTF-8 long name in tar archive"))
}

fn padding_for(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

impl TarParser {
    /// A parser at the start of an archive.
    pub fn new() -> TarParser {
        TarParser {
            state: State::Header,
            hdr: BytesMut::with_capacity(BLOCK),
            zero_blocks: 0,
            long_name: None,
            long_link: None,
            pax_path: None,
            pax_link: None,
            pax_size: None,
            pending_end: false,
        }
    }

    /// True once the end-of-archive marker was seen.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Finished)
    }

    /// True when the parser sits exactly between members (a stream may end here even
    /// without the end-of-archive marker).
    pub fn at_member_boundary(&self) -> bool {
        matches!(self.state, State::Header | State::Finished)
            && self.hdr.is_empty()
            && !self.pending_end
            && self.long_name.is_none()
            && self.long_link.is_none()
            && self.pax_path.is_none()
            && self.pax_size.is_none()
    }

    /// Consumes bytes from the front of `input` and returns the next event, or `Ok(None)`
    /// when `input` is used up and more bytes are needed. `Data` events are zero-copy
    /// slices of `input`. Bytes after the end-of-archive marker are discarded.
    pub fn next_event(&mut self, input: &mut Bytes) -> Result<Option<TarEvent>> {
        if self.pending_end {
            self.pending_end = false;
            return Ok(Some(TarEvent::EntryEnd));
        }
        loop {
            match &mut self.state {
                State::Finished => {
                    input.advance(input.len());
                    return Ok(None);
                }
                State::Data { remaining, padding } => {
                    if *remaining == 0 {
                        let p = *padding;
                        self.state = State::Padding { remaining: p };
                        return Ok(Some(TarEvent::EntryEnd));
                    }
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let n = (*remaining).min(input.len() as u64) as usize;
                    *remaining -= n as u64;
                    return Ok(Some(TarEvent::Data(input.split_to(n))));
                }
                State::Padding { remaining } => {
                    let n = (*remaining).min(input.len());
                    input.advance(n);
                    *remaining -= n;
                    if *remaining > 0 {
                        return Ok(None);
                    }
                    self.state = State::Header;
                }
                State::Collect {
                    which,
                    remaining,
                    padding,
                    buf,
                } => {
                    let n = (*remaining).min(input.len() as u64) as usize;
                    if !matches!(which, Collect::Skip) {
                        buf.extend_from_slice(&input[..n]);
                    }
                    input.advance(n);
                    *remaining -= n as u64;
                    if *remaining > 0 {
                        return Ok(None);
                    }
                    let which = *which;
                    let padding = *padding;
                    let buf = std::mem::take(buf);
                    match which {
                        Collect::LongName => self.long_name = Some(trim_nul(buf)?),
                        Collect::LongLink => self.long_link = Some(trim_nul(buf)?),
                        Collect::Pax => self.parse_pax(&buf)?,
                        Collect::Skip => {}
                    }
                    self.state = State::Padding { remaining: padding };
                }
                State::Header => {
                    let need = BLOCK - self.hdr.len();
                    let n = need.min(input.len());
                    self.hdr.extend_from_slice(&input[..n]);
                    input.advance(n);
                    if self.hdr.len() < BLOCK {
                        return Ok(None);
                    }
                    let block = self.hdr.split().freeze();
                    if let Some(ev) = self.header(&block)? {
                        return Ok(Some(ev));
                    }
                }
            }
        }
    }

    fn parse_pax(&mut self, data: &[u8]) -> Result<()> {
        let mut rest = data;
        while !rest.is_empty() {
            let sp = rest
                .iter()
                .position(|&b| b == b' ')
                .ok_or_else(|| corrupt("malformed pax record"))?;
            let len: usize = std::str::from_utf8(&rest[..sp])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| corrupt("malformed pax record length"))?;
            if len <= sp + 1 || len > rest.len() {
                return Err(corrupt("malformed pax record length"));
            }
            let rec = &rest[sp + 1..len];
            let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
            if let Some(eq) = rec.iter().position(|&b| b == b'=') {
                let key = &rec[..eq];
                let val = String::from_utf8(rec[eq + 1..].to_vec())
                    .map_err(|_| corrupt("non-UTF-8 pax value"))?;
                match key {
                    b"path" => self.pax_path = Some(val),
                    b"linkpath" => self.pax_link = Some(val),
                    b"size" => {
                        self.pax_size = Some(val.parse().map_err(|_| corrupt("invalid pax size"))?)
                    }
                    _ => {}
                }
            }
            rest = &rest[len..];
        }
        Ok(())
    }

    fn header(&mut self, h: &[u8]) -> Result<Option<TarEvent>> {
        if h.iter().all(|&b| b == 0) {
            self.zero_blocks += 1;
            if self.zero_blocks >= 2 {
                self.state = State::Finished;
                return Ok(Some(TarEvent::End));
            }
            return Ok(None);
        }
        self.zero_blocks = 0;
        let stored = parse_num(&h[148..156], "checksum")?;
        let mut unsigned: u64 = 0;
        let mut signed: i64 = 0;
        for (i, &b) in h.iter().enumerate() {
            let b = if (148..156).contains(&i) { b' ' } else { b };
            unsigned += u64::from(b);
            signed += i64::from(b as i8);
        }
        if stored != unsigned && i64::try_from(stored).ok() != Some(signed) {
            return Err(corrupt("tar header checksum mismatch"));
        }
        let typeflag = h[156];
        let mut size = parse_num(&h[124..136], "size")?;
        let padding = padding_for(size);
        match typeflag {
            b'L' | b'K' | b'x' | b'g' => {
                let which = match typeflag {
                    b'L' => Collect::LongName,
                    b'K' => Collect::LongLink,
                    b'x' => Collect::Pax,
                    _ => Collect::Skip,
                };
                if !matches!(which, Collect::Skip) && size > MAX_LONG_NAME {
                    return Err(corrupt("tar extended header is too large"));
                }
                self.state = State::Collect {
                    which,
                    remaining: size,
                    padding,
                    buf: Vec::new(),
                };
                return Ok(None);
            }
            _ => {}
        }
        let mut name = cstr(&h[0..100])?;
        let ustar = &h[257..262] == b"ustar";
        if ustar && &h[257..263] == b"ustar\0" {
            // POSIX ustar: 155-byte prefix (GNU uses those bytes for other things).
            let prefix = cstr(&h[345..500])?;
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        if let Some(n) = self.long_name.take() {
            name = n;
        }
        if let Some(n) = self.pax_path.take() {
            name = n;
        }
        if let Some(s) = self.pax_size.take() {
            size = s;
        }
        let mut link = cstr(&h[157..257])?;
        if let Some(l) = self.long_link.take() {
            link = l;
        }
        if let Some(l) = self.pax_link.take() {
            link = l;
        }
        let mode = (parse_num(&h[100..108], "mode")? & 0o7777) as u32;
        let mtime = i64::try_from(parse_num(&h[136..148], "mtime")?)
            .map_err(|_| corrupt("mtime out of range in tar header"))?;
        let path = name.trim_end_matches('/').to_string();
        if path.is_empty() {
            return Err(corrupt("empty member name in tar archive"));
        }
        let kind = match typeflag {
            b'0' | 0 | b'7' => {
                if name.ends_with('/') && typeflag == 0 {
                    EntryKind::Dir
                } else {
                    EntryKind::File
                }
            }
            b'5' => EntryKind::Dir,
            b'2' => EntryKind::Symlink { target: link },
            other => {
                return Err(corrupt(format!(
                    "unsupported tar member type {:?} for {path:?}",
                    other as char
                )))
            }
        };
        let header = TarEntryHeader {
            path,
            size: if kind == EntryKind::File { size } else { 0 },
            kind,
            mode,
            mtime,
        };
        if header.kind == EntryKind::File {
            self.state = State::Data {
                remaining: size,
                padding: padding_for(size),
            };
        } else {
            // Directories and symlinks carry no data; skip any the header claims.
            self.state = State::Padding {
                remaining: (size as usize).saturating_add(padding_for(size)),
            };
            self.pending_end = true;
        }
        Ok(Some(TarEvent::Entry(header)))
    }
}

/// Builds tar archives in tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A member to write: path, kind, content.
    pub(crate) struct Member<'a> {
        pub path: &'a str,
        pub kind: EntryKind,
        pub data: &'a [u8],
    }

    fn octal(field: &mut [u8], v: u64) {
        let s = format!("{:0w$o}", v, w = field.len() - 1);
        field[..s.len()].copy_from_slice(s.as_bytes());
        field[s.len()] = 0;
    }

    fn header(name: &[u8], typeflag: u8, size: u64, link: &str, gnu: bool, big: bool) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
        octal(&mut h[100..108], 0o600);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        if big {
            h[124] = 0x80;
            h[128..136].copy_from_slice(&size.to_be_bytes());
        } else {
            octal(&mut h[124..136], size);
        }
        octal(&mut h[136..148], 1_700_000_000);
        h[156] = typeflag;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        if gnu {
            h[257..265].copy_from_slice(b"ustar  \0");
        } else {
            h[257..263].copy_from_slice(b"ustar\0");
            h[263..265].copy_from_slice(b"00");
        }
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        h
    }

    fn pad(out: &mut Vec<u8>) {
        while !out.len().is_multiple_of(512) {
            out.push(0);
        }
    }

    /// Writes members: names over 100 bytes use a GNU `L` record when `gnu`, else the
    /// ustar prefix; `big` writes sizes in base-256.
    pub(crate) fn build(members: &[Member<'_>], gnu: bool, big: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for m in members {
            let (tf, size, link) = match &m.kind {
                EntryKind::File => (b'0', m.data.len() as u64, ""),
                EntryKind::Dir => (b'5', 0, ""),
                EntryKind::Symlink { target } => (b'2', 0, target.as_str()),
            };
            let mut name = m.path.as_bytes().to_vec();
            let mut prefix: Vec<u8> = Vec::new();
            if name.len() > 100 {
                if gnu {
                    let mut data = name.clone();
                    data.push(0);
                    out.extend_from_slice(&header(
                        b"././@LongLink",
                        b'L',
                        data.len() as u64,
                        "",
                        true,
                        false,
                    ));
                    out.extend_from_slice(&data);
                    pad(&mut out);
                    name.truncate(100);
                } else {
                    let cut = m.path[..m.path.len() - 1]
                        .rfind('/')
                        .expect("test path splittable");
                    prefix = m.path.as_bytes()[..cut].to_vec();
                    name = m.path.as_bytes()[cut + 1..].to_vec();
                }
            }
            let mut h = header(&name, tf, size, link, gnu, big);
            if !prefix.is_empty() {
                h[345..345 + prefix.len()].copy_from_slice(&prefix);
                h[148..156].copy_from_slice(b"        ");
                let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
                h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
            }
            out.extend_from_slice(&h);
            out.extend_from_slice(m.data);
            pad(&mut out);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use proptest::prelude::*;

    /// Collected view of a parse: entries with their whole content.
    type Parsed = (Vec<(TarEntryHeader, Vec<u8>)>, bool);

    fn collect(chunks: &[Bytes]) -> Result<Parsed> {
        let mut p = TarParser::new();
        let mut out: Vec<(TarEntryHeader, Vec<u8>)> = Vec::new();
        let mut open = false;
        let mut ended = false;
        for c in chunks {
            let mut c = c.clone();
            while let Some(ev) = p.next_event(&mut c)? {
                match ev {
                    TarEvent::Entry(h) => {
                        assert!(!open);
                        open = true;
                        out.push((h, Vec::new()));
                    }
                    TarEvent::Data(d) => {
                        assert!(open);
                        out.last_mut().unwrap().1.extend_from_slice(&d)
                    }
                    TarEvent::EntryEnd => {
                        assert!(open);
                        open = false;
                    }
                    TarEvent::End => ended = true,
                }
            }
            assert!(c.is_empty());
        }
        Ok((out, ended))
    }

    fn sample(gnu: bool, big: bool) -> Vec<u8> {
        let long = format!("base/16384/{}/PG_VERSION", "d".repeat(120));
        build(
            &[
                Member {
                    path: "PG_VERSION",
                    kind: EntryKind::File,
                    data: b"15\n",
                },
                Member {
                    path: "global",
                    kind: EntryKind::Dir,
                    data: b"",
                },
                Member {
                    path: "global/pg_control",
                    kind: EntryKind::File,
                    data: &[7u8; 8192],
                },
                Member {
                    path: "empty",
                    kind: EntryKind::File,
                    data: b"",
                },
                Member {
                    path: "pg_tblspc/16400",
                    kind: EntryKind::Symlink {
                        target: "/srv/ts1".into(),
                    },
                    data: b"",
                },
                Member {
                    path: &long,
                    kind: EntryKind::File,
                    data: &[1u8; 513],
                },
            ],
            gnu,
            big,
        )
    }

    #[test]
    fn parses_members() {
        for (gnu, big) in [(false, false), (true, false), (true, true)] {
            let tar = Bytes::from(sample(gnu, big));
            let (entries, ended) = collect(&[tar]).unwrap();
            assert!(ended);
            let names: Vec<&str> = entries.iter().map(|e| e.0.path.as_str()).collect();
            assert_eq!(names.len(), 6);
            assert_eq!(names[0], "PG_VERSION");
            assert_eq!(entries[0].1, b"15\n");
            assert_eq!(entries[0].0.mode, 0o600);
            assert_eq!(entries[0].0.mtime, 1_700_000_000);
            assert_eq!(entries[1].0.kind, EntryKind::Dir);
            assert_eq!(entries[2].1.len(), 8192);
            assert_eq!(entries[3].0.size, 0);
            assert_eq!(
                entries[4].0.kind,
                EntryKind::Symlink {
                    target: "/srv/ts1".into()
                }
            );
            assert!(names[5].ends_with("/PG_VERSION") && names[5].len() > 130);
            assert_eq!(entries[5].1, vec![1u8; 513]);
        }
    }

    #[test]
    fn checksum_mismatch_is_error() {
        let mut tar = sample(false, false);
        tar[0] ^= 1;
        let e = collect(&[Bytes::from(tar)]).unwrap_err();
        assert_eq!(e.code(), "protocol.tar_invalid");
    }

    proptest! {
        #[test]
        fn split_points_do_not_matter(
            gnu in any::<bool>(),
            cuts in proptest::collection::vec(0usize..12_000, 0..20),
        ) {
            let tar = sample(gnu, false);
            let whole = collect(&[Bytes::from(tar.clone())]).unwrap();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (tar.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut prev = 0;
            for c in cuts.into_iter().chain(std::iter::once(tar.len())) {
                chunks.push(Bytes::copy_from_slice(&tar[prev..c]));
                prev = c;
            }
            let split = collect(&chunks).unwrap();
            prop_assert_eq!(whole, split);
        }

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let mut p = TarParser::new();
            let mut b = Bytes::from(data);
            while let Ok(Some(_)) = p.next_event(&mut b) {}
        }
    }
}
