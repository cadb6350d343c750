//! A sans-IO decoder of PostgreSQL 15-18 WAL segment files, for the point-in-time-recovery
//! index: per segment, the transaction commits/aborts with their commit-time range and the
//! named restore points (`pg_create_restore_point`).
//!
//! [`SegmentDecoder`] takes the bytes of one segment, or of consecutive segments, in pieces of
//! any size, and yields one [`SegmentSummary`] per segment once it is final. A record is
//! attributed to the segment in which it *starts*; a record that continues into the next
//! segment is completed from that segment's head when the caller feeds it, otherwise it is
//! reported as [`SegmentEnd::Truncated`]. [`decode_segment`] is the one-segment shortcut (a
//! leading continuation of a record from the previous segment is skipped).
//!
//! Every record is checked the way PostgreSQL's reader checks it: page headers (magic, page
//! address, flags, continuation lengths), the record header (length, back link), CRC-32C, and
//! the layout of block references and main data. Decoding stops at the first invalid
//! record or page: that is the end of valid WAL (e.g. the zeroed tail of a partial segment,
//! or stale content of a recycled segment file). WAL is read as little-endian (every
//! platform PostgreSQL is packaged for).

use std::collections::VecDeque;

use crate::crc32c::crc32c_update;
use crate::lsn::Lsn;
use crate::wal::SegmentName;
use hs_base::{code, Error, ErrorKind, Result};

/// Microseconds between the Unix epoch and the PostgreSQL epoch (2000-01-01 00:00 UTC).
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800 * 1_000_000;

/// `XLOG_PAGE_MAGIC` of each supported major version (`src/include/access/xlog_internal.h`).
const PAGE_MAGICS: [(u16, u32); 4] = [(0xD110, 15), (0xD113, 16), (0xD116, 17), (0xD118, 18)];

const SHORT_PAGE_HEADER: usize = 24;
const LONG_PAGE_HEADER: usize = 40;
const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0004;
const XLP_ALL_FLAGS: u16 = 0x0007;
/// Where `xlp_sysid` sits in a long page header.
const XLP_SYSID_OFFSET: usize = 24;

/// Size of the fixed record header (`XLogRecord`); `xl_crc` is its last field, at 20.
const RECORD_HEADER: usize = 24;
const CRC_OFFSET: usize = 20;
/// PostgreSQL refuses records larger than this (`XLogRecordMaxSize`, 1020 MB).
const MAX_RECORD_LEN: u64 = 1020 * 1024 * 1024;
/// Block references and data headers of one record never take more than this many bytes
/// (33 blocks of at most 27 header bytes, plus origin, top-level xid and data header).
const MAX_BLOCK_HEADERS: usize = 1024;

const RM_XLOG_ID: u8 = 0;
const RM_XACT_ID: u8 = 1;
const XLOG_SWITCH: u8 = 0x40;
const XLOG_RESTORE_POINT: u8 = 0x70;
const XLOG_XACT_OPMASK: u8 = 0x70;
const XLOG_XACT_COMMIT: u8 = 0x00;
const XLOG_XACT_ABORT: u8 = 0x20;
const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
const XLOG_XACT_ABORT_PREPARED: u8 = 0x40;
/// `xl_restore_point`: `TimestampTz rp_time; char rp_name[MAXFNAMELEN = 64]`.
const RESTORE_POINT_LEN: usize = 8 + 64;

const XLR_MAX_BLOCK_ID: u8 = 32;
const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
const XLR_BLOCK_ID_ORIGIN: u8 = 253;
const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;
const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
const BKPBLOCK_HAS_DATA: u8 = 0x20;
const BKPBLOCK_SAME_REL: u8 = 0x80;
const BKPIMAGE_HAS_HOLE: u8 = 0x01;
/// PGLZ, LZ4 and ZSTD compression bits of `bimg_info` (PostgreSQL 15+).
const BKPIMAGE_COMPRESSED: u8 = 0x04 | 0x08 | 0x10;
/// `RelFileLocator` (15: `RelFileNode`): three 4-byte OIDs.
const REL_FILE_LOCATOR_LEN: usize = 12;

/// Converts a PostgreSQL timestamp (microseconds since 2000-01-01 00:00 UTC, as in WAL
/// records) to microseconds since the Unix epoch. Saturates instead of overflowing.
pub fn pg_time_to_unix_micros(pg_micros: i64) -> i64 {
    pg_micros.saturating_add(PG_EPOCH_OFFSET_MICROS)
}

/// A named restore point (`pg_create_restore_point`) found in WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePoint {
    /// The name given to `pg_create_restore_point` (at most 63 bytes; lossily UTF-8 decoded).
    pub name: String,
    /// The end of the restore point record: where recovery with `recovery_target_name` stops,
    /// and the LSN `pg_create_restore_point` returned.
    pub lsn: Lsn,
    /// Where the record starts (the LSN `pg_waldump` prints for it).
    pub start_lsn: Lsn,
    /// When it was created, PostgreSQL epoch microseconds (see [`pg_time_to_unix_micros`]).
    pub time: i64,
}

/// How decoding of a segment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SegmentEnd {
    /// Valid up to the end of the segment. A last record that continues into the next segment
    /// was completed from that segment's head.
    Complete,
    /// The segment was ended early by an `XLOG_SWITCH` record (`pg_switch_wal()`,
    /// `archive_timeout`); the rest of the file is unused.
    Switch,
    /// The input ended first: a partial segment, or a last record that continues into a
    /// segment that was not given. `incomplete_record` is where that cut-off record starts.
    Truncated {
        /// Start of the record that was cut off, if one was being read.
        incomplete_record: Option<Lsn>,
    },
    /// WAL stops being valid at `at` (zeroed or stale page, bad CRC, broken record). This is
    /// how the end of WAL looks in a partial or recycled segment file.
    Invalid {
        /// The page or record start where validity ends.
        at: Lsn,
        /// What was wrong, for logs.
        reason: String,
    },
}

/// What one WAL segment contains, for the PITR index. Records are attributed to the segment
/// in which they start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSummary {
    /// The segment.
    pub segment: SegmentName,
    /// PostgreSQL major version, from the page magic (`None` if no valid page was seen).
    pub pg_major: Option<u32>,
    /// Start of the first record that starts in this segment (`None` if none does: the
    /// segment holds only the middle of one huge record, or no valid WAL).
    pub first_record_lsn: Option<Lsn>,
    /// End of the valid WAL decoded for this segment: the end of the last complete record
    /// starting here (which may lie in the next segment), else the end of the leading
    /// continuation, else the segment start.
    pub end_of_valid_wal: Lsn,
    /// Complete, valid records that start in this segment.
    pub records: u64,
    /// Transaction commits (`COMMIT` and `COMMIT PREPARED`).
    pub commits: u64,
    /// Transaction aborts (`ABORT` and `ABORT PREPARED`).
    pub aborts: u64,
    /// Earliest commit timestamp, PostgreSQL epoch microseconds.
    pub min_commit_time: Option<i64>,
    /// Latest commit timestamp, PostgreSQL epoch microseconds.
    pub max_commit_time: Option<i64>,
    /// Restore points, in WAL order.
    pub restore_points: Vec<RestorePoint>,
    /// How decoding of this segment ended.
    pub end: SegmentEnd,
}

impl SegmentSummary {
    fn new(segment: SegmentName) -> SegmentSummary {
        SegmentSummary {
            segment,
            pg_major: None,
            first_record_lsn: None,
            end_of_valid_wal: segment.start_lsn(segment.seg_size()),
            records: 0,
            commits: 0,
            aborts: 0,
            min_commit_time: None,
            max_commit_time: None,
            restore_points: Vec::new(),
            end: SegmentEnd::Complete,
        }
    }

    fn add_commit(&mut self, t: i64) {
        self.commits += 1;
        self.min_commit_time = Some(self.min_commit_time.map_or(t, |m| m.min(t)));
        self.max_commit_time = Some(self.max_commit_time.map_or(t, |m| m.max(t)));
    }
}

/// Decodes the decoded-so-far header of a record.
#[derive(Debug, Clone, Copy)]
struct RecordHeader {
    tot_len: u64,
    prev: u64,
    info: u8,
    rmid: u8,
    crc: u32,
}

impl RecordHeader {
    fn parse(b: &[u8; RECORD_HEADER]) -> RecordHeader {
        RecordHeader {
            tot_len: u64::from(le_u32(b, 0)),
            prev: le_u64(b, 8),
            info: b[16],
            rmid: b[17],
            crc: le_u32(b, CRC_OFFSET),
        }
    }

    /// Records whose main data we need: commits/aborts and restore points.
    fn wanted(&self) -> bool {
        match self.rmid {
            RM_XACT_ID => matches!(
                self.info & XLOG_XACT_OPMASK,
                XLOG_XACT_COMMIT
                    | XLOG_XACT_ABORT
                    | XLOG_XACT_COMMIT_PREPARED
                    | XLOG_XACT_ABORT_PREPARED
            ),
            RM_XLOG_ID => self.info & 0xF0 == XLOG_RESTORE_POINT,
            _ => false,
        }
    }
}

/// Bytes kept of a record's main data: enough for `xl_restore_point` (and the commit time).
const MAIN_KEEP: usize = RESTORE_POINT_LEN;

/// A record body being read. Memory stays bounded whatever `xl_tot_len` says: the CRC is
/// computed as bytes pass, and only the block headers (at most [`MAX_BLOCK_HEADERS`] bytes at
/// the start) and the first [`MAIN_KEEP`] bytes of main data of wanted records are kept.
#[derive(Debug)]
struct Body {
    start: u64,
    hdr: RecordHeader,
    hdr_bytes: [u8; RECORD_HEADER],
    body_len: u64,
    read: u64,
    crc: u32,
    prefix: Vec<u8>,
    /// Offset of the main data in the body, once the block headers were parsed.
    layout: Option<Result<u64, String>>,
    main: Vec<u8>,
    wanted: bool,
}

impl Body {
    fn remaining(&self) -> u64 {
        self.body_len - self.read
    }

    fn feed(&mut self, chunk: &[u8]) {
        let at = self.read;
        self.crc = crc32c_update(self.crc, chunk);
        let room = MAX_BLOCK_HEADERS
            .saturating_sub(self.prefix.len())
            .min(chunk.len());
        self.prefix.extend_from_slice(&chunk[..room]);
        self.read += chunk.len() as u64;
        if self.layout.is_none()
            && (self.prefix.len() == MAX_BLOCK_HEADERS || self.read == self.body_len)
        {
            self.layout = Some(self.parse_layout());
        }
        if self.wanted {
            if let Some(Ok(main_start)) = self.layout {
                capture(&mut self.main, main_start, &self.prefix, 0);
                capture(&mut self.main, main_start, chunk, at);
            }
        }
    }

    fn parse_layout(&self) -> Result<u64, String> {
        parse_block_headers(&self.prefix, self.body_len).map(|main_len| self.body_len - main_len)
    }
}

/// Appends to `out` the next wanted main-data bytes found in `bytes` (body offset `at`).
fn capture(out: &mut Vec<u8>, main_start: u64, bytes: &[u8], at: u64) {
    let want = main_start + out.len() as u64;
    if out.len() >= MAIN_KEEP || want < at {
        return;
    }
    let Ok(from) = usize::try_from(want - at) else {
        return;
    };
    if from >= bytes.len() {
        return;
    }
    let n = (MAIN_KEEP - out.len()).min(bytes.len() - from);
    out.extend_from_slice(&bytes[from..from + n]);
}

/// Where the page-level reader is.
#[derive(Debug)]
enum PageState {
    /// Collecting a page header (24 bytes, 40 once `XLP_LONG_HEADER` is seen).
    Header {
        buf: [u8; LONG_PAGE_HEADER],
        have: usize,
        need: usize,
    },
    /// Inside the page's payload, which ends at this LSN.
    Payload { end: u64 },
}

/// Where the record-level reader is.
#[derive(Debug)]
enum RecState {
    /// The first page of the decoder has not been read yet.
    Fresh,
    /// Skipping the continuation of a record that started before our first segment.
    SkipCont { remaining: u64 },
    /// Between records: skipping alignment padding.
    Align,
    /// Collecting a record header.
    Header {
        start: u64,
        buf: [u8; RECORD_HEADER],
        have: usize,
    },
    /// Reading a record body.
    Body(Box<Body>),
    /// After `XLOG_SWITCH`: the rest of the segment is skipped unread.
    SkipSwitch,
}

/// Incremental WAL decoder over one segment or a run of consecutive segments; see the
/// [module docs](self).
///
/// ```
/// use hs_pg::{SegmentDecoder, SegmentName, TimelineId, DEFAULT_WAL_SEGMENT_SIZE};
///
/// # fn demo(segments: &[Vec<u8>]) -> hs_pg::Result<()> {
/// let first = SegmentName::from_segno(TimelineId(1), 3, DEFAULT_WAL_SEGMENT_SIZE)?;
/// let mut dec = SegmentDecoder::new(first);
/// for seg in segments {
///     dec.push(seg)?;
///     while let Some(s) = dec.next_summary() {
///         println!("{}: {} commits, restore points {:?}", s.segment, s.commits, s.restore_points);
///     }
/// }
/// for s in dec.finish() {
///     println!("{}: ended {:?}", s.segment, s.end);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SegmentDecoder {
    first: SegmentName,
    seg_size: u64,
    blcksz: u64,
    magic: Option<u16>,
    sysid: Option<u64>,
    page_tli: u32,
    /// LSN of the next input byte.
    pos: u64,
    page: PageState,
    rec: RecState,
    /// Start of the last valid record, for the `xl_prev` check.
    prev_record: Option<u64>,
    /// Summaries not final yet, oldest first; the last one is the segment being read.
    pending: VecDeque<SegmentSummary>,
    ready: VecDeque<SegmentSummary>,
    stopped: bool,
}

fn new_page_header() -> PageState {
    PageState::Header {
        buf: [0; LONG_PAGE_HEADER],
        have: 0,
        need: SHORT_PAGE_HEADER,
    }
}

/// Result of page-header validation.
enum PageCheck {
    Ok,
    Invalid(String),
}

impl SegmentDecoder {
    /// A decoder whose input starts at the beginning of segment `first` (its name gives the
    /// LSN every page must carry and the expected segment size). A record continued from the
    /// previous segment is skipped.
    pub fn new(first: SegmentName) -> SegmentDecoder {
        let seg_size = first.seg_size();
        let pos = first.start_lsn(seg_size).0;
        let mut pending = VecDeque::new();
        pending.push_back(SegmentSummary::new(first));
        SegmentDecoder {
            first,
            seg_size,
            blcksz: 0,
            magic: None,
            sysid: None,
            page_tli: 0,
            pos,
            page: new_page_header(),
            rec: RecState::Fresh,
            prev_record: None,
            pending,
            ready: VecDeque::new(),
            stopped: false,
        }
    }

    /// The LSN of the next byte the decoder expects.
    pub fn position(&self) -> Lsn {
        Lsn(self.pos)
    }

    /// Whether decoding has stopped at the end of valid WAL (further input is ignored).
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Feeds the next bytes: the segments' content in order, split anywhere. Invalid WAL is
    /// not an error (decoding stops there, see [`SegmentEnd::Invalid`]); errors are for input
    /// this decoder cannot read: an unsupported PostgreSQL version
    /// (`protocol.wal_version_unsupported`) or a segment size other than the name's
    /// (`usage.wal_segment_size_mismatch`). After an error the decoder is stopped.
    pub fn push(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() && !self.stopped {
            let segno = self.pos / self.seg_size;
            if self.pending.back().map(|s| s.segment.segno()) != Some(segno) {
                self.enter_segment();
                continue;
            }
            if matches!(self.rec, RecState::SkipSwitch) {
                let seg_end = (self.pos / self.seg_size + 1) * self.seg_size;
                let n = usize_min(data.len(), seg_end - self.pos);
                self.pos += n as u64;
                data = &data[n..];
                if self.pos == seg_end {
                    self.rec = RecState::Align;
                    self.page = new_page_header();
                    self.release_final();
                }
                continue;
            }
            match &mut self.page {
                PageState::Header { buf, have, need } => {
                    let n = (*need - *have).min(data.len());
                    buf[*have..*have + n].copy_from_slice(&data[..n]);
                    *have += n;
                    self.pos += n as u64;
                    data = &data[n..];
                    if *have < *need {
                        continue;
                    }
                    let info = le_u16(&buf[..], 2);
                    if *need == SHORT_PAGE_HEADER && info & XLP_LONG_HEADER != 0 {
                        *need = LONG_PAGE_HEADER;
                        continue;
                    }
                    let hdr = *buf;
                    let len = *need;
                    self.page_header_done(&hdr[..len])?;
                }
                PageState::Payload { end } => {
                    let end = *end;
                    let n = usize_min(data.len(), end - self.pos);
                    self.payload(&data[..n]);
                    data = &data[n..];
                    if self.stopped {
                        break;
                    }
                    if self.pos == end {
                        self.page = new_page_header();
                        if end.is_multiple_of(self.seg_size) {
                            self.release_final();
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The next summary that is final (its segment fully read and every record starting in
    /// it completed), oldest first.
    pub fn next_summary(&mut self) -> Option<SegmentSummary> {
        self.ready.pop_front()
    }

    /// Ends the input and returns every summary not yet taken, oldest first. The segment the
    /// input ended in is [`SegmentEnd::Truncated`] unless it was complete.
    pub fn finish(mut self) -> Vec<SegmentSummary> {
        let incomplete = match &self.rec {
            RecState::Header { start, .. } => Some(*start),
            RecState::Body(b) => Some(b.start),
            _ => None,
        };
        let pos = self.pos;
        let stopped = self.stopped;
        let seg_size = self.seg_size;
        for s in self.pending.iter_mut() {
            if stopped {
                continue; // already marked Invalid
            }
            let start = s.segment.start_lsn(seg_size).0;
            let end = s.segment.end_lsn().0;
            let cut = incomplete.filter(|&i| i >= start && i < end);
            if (cut.is_some() || pos < end) && s.end == SegmentEnd::Complete {
                s.end = SegmentEnd::Truncated {
                    incomplete_record: cut.map(Lsn),
                };
            }
        }
        let mut out: Vec<SegmentSummary> = self.ready.drain(..).collect();
        out.extend(self.pending.drain(..));
        out
    }

    /// Called when the first byte of a new segment arrives.
    fn enter_segment(&mut self) {
        let segno = self.pos / self.seg_size;
        let name = match SegmentName::from_segno(self.first.timeline(), segno, self.seg_size) {
            Ok(n) => n,
            Err(_) => {
                self.stop(
                    Lsn(self.pos),
                    "WAL position past the end of the address space",
                );
                return;
            }
        };
        let mut s = SegmentSummary::new(name);
        s.pg_major = self.magic.and_then(major_of);
        self.pending.push_back(s);
        self.release_final();
    }

    /// Moves summaries that can no longer change to `ready`.
    fn release_final(&mut self) {
        let inflight = match &self.rec {
            RecState::Header { start, .. } => Some(*start),
            RecState::Body(b) => Some(b.start),
            _ => None,
        };
        while let Some(front) = self.pending.front() {
            let end = front.segment.end_lsn().0;
            if self.pos < end || inflight.is_some_and(|i| i < end) {
                break;
            }
            if let Some(s) = self.pending.pop_front() {
                self.ready.push_back(s);
            }
        }
    }

    /// Stops decoding: every pending summary ends at `at`.
    fn stop(&mut self, at: Lsn, reason: impl Into<String>) {
        let reason = reason.into();
        self.stopped = true;
        for s in self.pending.iter_mut() {
            if !matches!(s.end, SegmentEnd::Switch) {
                s.end = SegmentEnd::Invalid {
                    at,
                    reason: reason.clone(),
                };
            }
        }
        self.ready.extend(self.pending.drain(..));
    }

    fn current(&mut self) -> Option<&mut SegmentSummary> {
        self.pending.back_mut()
    }

    fn summary_for(&mut self, lsn: u64) -> Option<&mut SegmentSummary> {
        let segno = lsn / self.seg_size;
        self.pending.iter_mut().find(|s| s.segment.segno() == segno)
    }

    /// Validates a complete page header and sets up the payload and record state.
    fn page_header_done(&mut self, h: &[u8]) -> Result<()> {
        let page_start = self.pos - h.len() as u64;
        let magic = le_u16(h, 0);
        let info = le_u16(h, 2);
        let tli = le_u32(h, 4);
        let pageaddr = le_u64(h, 8);
        let rem_len = u64::from(le_u32(h, 16));
        let at = Lsn(page_start);

        if let PageCheck::Invalid(why) =
            self.check_page(h, page_start, magic, info, tli, pageaddr)?
        {
            self.stop(at, why);
            return Ok(());
        }
        if self.blcksz == 0 {
            // check_page guarantees the first page is long and sets the block size.
            self.stop(at, "no WAL block size known");
            return Ok(());
        }
        let page_end = page_start + self.blcksz;
        if self.pos >= page_end {
            self.stop(at, "page header larger than the page");
            return Ok(());
        }
        self.page_tli = tli;
        self.page = PageState::Payload { end: page_end };
        let cont = info & XLP_FIRST_IS_CONTRECORD != 0;
        match &mut self.rec {
            RecState::Fresh => {
                self.rec = if cont {
                    RecState::SkipCont { remaining: rem_len }
                } else {
                    RecState::Align
                };
            }
            RecState::SkipCont { remaining } => {
                if !cont || rem_len != *remaining {
                    let why = format!(
                        "page {at} should continue a record with {} bytes left (flags {info:#x}, xlp_rem_len {rem_len})",
                        remaining
                    );
                    self.stop(at, why);
                }
            }
            RecState::Header { .. } | RecState::Body(_) => {
                let gathered_left = match &self.rec {
                    RecState::Header { buf, have, .. } if *have >= 4 => {
                        Some(u64::from(le_u32(&buf[..], 0)).saturating_sub(*have as u64))
                    }
                    RecState::Body(b) => Some(b.remaining()),
                    _ => None,
                };
                if !cont && info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0 {
                    // The record we were reading was torn and overwritten after a crash:
                    // abandon it and read on from this page.
                    self.rec = RecState::Align;
                    self.release_final();
                } else if !cont {
                    self.stop(at, format!("no continuation flag at page {at}"));
                } else if gathered_left.is_some_and(|left| left != rem_len) {
                    self.stop(
                        at,
                        format!("invalid continuation length {rem_len} at page {at}"),
                    );
                }
            }
            RecState::Align => {
                if cont {
                    self.stop(at, format!("unexpected continuation data at page {at}"));
                }
            }
            RecState::SkipSwitch => {}
        }
        Ok(())
    }

    fn check_page(
        &mut self,
        h: &[u8],
        page_start: u64,
        magic: u16,
        info: u16,
        tli: u32,
        pageaddr: u64,
    ) -> Result<PageCheck> {
        if pageaddr != page_start {
            return Ok(PageCheck::Invalid(format!(
                "page at {} carries address {}",
                Lsn(page_start),
                Lsn(pageaddr)
            )));
        }
        match self.magic {
            None => {
                if magic == 0 {
                    return Ok(PageCheck::Invalid(format!(
                        "zeroed page at {}",
                        Lsn(page_start)
                    )));
                }
                if major_of(magic).is_none() {
                    let e = Error::of_kind(
                        ErrorKind::Protocol,
                        code::PROTOCOL_WAL_VERSION_UNSUPPORTED,
                        format!(
                            "WAL page magic {magic:#06X} at {} is not PostgreSQL 15, 16, 17 or 18",
                            Lsn(page_start)
                        ),
                    )
                    .with_suggestion("pg_hardstorage reads WAL of PostgreSQL 15 to 18");
                    self.stop(Lsn(page_start), e.to_string());
                    return Err(e);
                }
                self.magic = Some(magic);
                let major = major_of(magic);
                for s in self.pending.iter_mut() {
                    s.pg_major = major;
                }
            }
            Some(m) if m != magic => {
                return Ok(PageCheck::Invalid(format!(
                    "page at {} has magic {magic:#06X}, expected {m:#06X}",
                    Lsn(page_start)
                )));
            }
            Some(_) => {}
        }
        if info & !XLP_ALL_FLAGS != 0 {
            return Ok(PageCheck::Invalid(format!(
                "invalid page flags {info:#06X} at {}",
                Lsn(page_start)
            )));
        }
        if tli == 0 || tli < self.page_tli {
            return Ok(PageCheck::Invalid(format!(
                "out-of-sequence timeline {tli} at {}",
                Lsn(page_start)
            )));
        }
        let seg_start = page_start.is_multiple_of(self.seg_size);
        if seg_start && info & XLP_LONG_HEADER == 0 {
            return Ok(PageCheck::Invalid(format!(
                "first page of segment at {} has no long header",
                Lsn(page_start)
            )));
        }
        if info & XLP_LONG_HEADER != 0 {
            let sysid = le_u64(h, XLP_SYSID_OFFSET);
            let seg_size = u64::from(le_u32(h, 32));
            let blcksz = u64::from(le_u32(h, 36));
            if seg_size != self.seg_size {
                let e = Error::new(
                    code::USAGE_WAL_SEGMENT_SIZE_MISMATCH,
                    format!(
                        "WAL segment at {} is {seg_size} bytes per its header, not {}",
                        Lsn(page_start),
                        self.seg_size
                    ),
                )
                .with_suggestion("use the cluster's wal_segment_size (SHOW wal_segment_size)");
                self.stop(Lsn(page_start), e.to_string());
                return Err(e);
            }
            if !blcksz.is_power_of_two()
                || !(1024..=65536).contains(&blcksz)
                || (self.blcksz != 0 && blcksz != self.blcksz)
            {
                return Ok(PageCheck::Invalid(format!(
                    "invalid WAL block size {blcksz} at {}",
                    Lsn(page_start)
                )));
            }
            if self.sysid.is_some_and(|s| s != sysid) {
                return Ok(PageCheck::Invalid(format!(
                    "segment at {} belongs to another database system",
                    Lsn(page_start)
                )));
            }
            self.sysid = Some(sysid);
            self.blcksz = blcksz;
        }
        Ok(PageCheck::Ok)
    }

    /// Consumes payload bytes of the current page.
    fn payload(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.stopped {
            match &mut self.rec {
                RecState::Fresh | RecState::SkipSwitch => {
                    // After XLOG_SWITCH the rest of the page (and segment) is unused. (Fresh
                    // cannot occur here: a page header always sets a state first.)
                    self.pos += data.len() as u64;
                    return;
                }
                RecState::SkipCont { remaining } => {
                    let n = usize_min(data.len(), *remaining);
                    *remaining -= n as u64;
                    self.pos += n as u64;
                    data = &data[n..];
                    if *remaining == 0 {
                        self.rec = RecState::Align;
                        let end = align8(self.pos);
                        if let Some(s) = self.current() {
                            s.end_of_valid_wal = s.end_of_valid_wal.max(Lsn(end));
                        }
                    }
                }
                RecState::Align => {
                    let pad = align8(self.pos) - self.pos;
                    if pad > 0 {
                        let n = usize_min(data.len(), pad);
                        self.pos += n as u64;
                        data = &data[n..];
                        continue;
                    }
                    self.rec = RecState::Header {
                        start: self.pos,
                        buf: [0; RECORD_HEADER],
                        have: 0,
                    };
                }
                RecState::Header { start, buf, have } => {
                    let start = *start;
                    let n = (RECORD_HEADER - *have).min(data.len());
                    buf[*have..*have + n].copy_from_slice(&data[..n]);
                    let before = *have;
                    *have += n;
                    self.pos += n as u64;
                    data = &data[n..];
                    if before < 4 && *have >= 4 {
                        let tot = u64::from(le_u32(&buf[..], 0));
                        if tot == 0 {
                            self.stop(
                                Lsn(start),
                                format!("end of WAL (zeroed record header) at {}", Lsn(start)),
                            );
                            return;
                        }
                        if tot < RECORD_HEADER as u64 || tot > MAX_RECORD_LEN {
                            self.stop(
                                Lsn(start),
                                format!("invalid record length {tot} at {}", Lsn(start)),
                            );
                            return;
                        }
                    }
                    if *have == RECORD_HEADER {
                        let hdr_bytes = *buf;
                        self.header_done(start, hdr_bytes);
                    }
                }
                RecState::Body(body) => {
                    let n = usize_min(data.len(), body.remaining());
                    body.feed(&data[..n]);
                    let done = body.remaining() == 0;
                    self.pos += n as u64;
                    data = &data[n..];
                    if done {
                        self.record_done();
                    }
                }
            }
        }
    }

    /// The 24-byte record header is complete.
    fn header_done(&mut self, start: u64, hdr_bytes: [u8; RECORD_HEADER]) {
        let hdr = RecordHeader::parse(&hdr_bytes);
        let prev_ok = match self.prev_record {
            Some(p) => hdr.prev == p,
            None => hdr.prev < start,
        };
        if !prev_ok {
            self.stop(
                Lsn(start),
                format!(
                    "record at {} has wrong back link {}",
                    Lsn(start),
                    Lsn(hdr.prev)
                ),
            );
            return;
        }
        let body_len = hdr.tot_len - RECORD_HEADER as u64;
        self.rec = RecState::Body(Box::new(Body {
            start,
            hdr,
            hdr_bytes,
            body_len,
            read: 0,
            crc: !0,
            prefix: Vec::new(),
            layout: None,
            main: Vec::new(),
            wanted: hdr.wanted(),
        }));
        if body_len == 0 {
            self.record_done();
        }
    }

    /// A record's last byte has been read: check it and account for it.
    fn record_done(&mut self) {
        let state = std::mem::replace(&mut self.rec, RecState::Align);
        let RecState::Body(body) = state else {
            return;
        };
        let Body {
            start,
            hdr,
            hdr_bytes,
            crc,
            ..
        } = *body;
        let at = Lsn(start);
        let crc = !crc32c_update(crc, &hdr_bytes[..CRC_OFFSET]);
        if crc != hdr.crc {
            self.stop(at, format!("record at {at} has an incorrect CRC"));
            return;
        }
        let layout = match &body.layout {
            Some(l) => l.clone(),
            None => body.parse_layout(),
        };
        if let Err(why) = layout {
            self.stop(at, format!("record at {at}: {why}"));
            return;
        }
        let end = align8(self.pos);
        let mut event = None;
        if body.wanted {
            match decode_event(&hdr, &body.main, start, end) {
                Ok(e) => event = e,
                Err(why) => {
                    self.stop(at, format!("record at {at}: {why}"));
                    return;
                }
            }
        }
        let is_switch = hdr.rmid == RM_XLOG_ID && hdr.info & 0xF0 == XLOG_SWITCH;
        self.prev_record = Some(start);
        if let Some(s) = self.summary_for(start) {
            s.records += 1;
            s.first_record_lsn.get_or_insert(Lsn(start));
            s.end_of_valid_wal = s.end_of_valid_wal.max(Lsn(end));
            match event {
                Some(Event::Commit(t)) => s.add_commit(t),
                Some(Event::Abort) => s.aborts += 1,
                Some(Event::RestorePoint(rp)) => s.restore_points.push(rp),
                None => {}
            }
            if is_switch {
                s.end = SegmentEnd::Switch;
            }
        }
        if let Some(s) = self.current() {
            s.end_of_valid_wal = s.end_of_valid_wal.max(Lsn(end));
        }
        if is_switch && !self.pos.is_multiple_of(self.seg_size) {
            self.rec = RecState::SkipSwitch;
        }
        self.release_final();
    }
}

enum Event {
    Commit(i64),
    Abort,
    RestorePoint(RestorePoint),
}

fn decode_event(
    hdr: &RecordHeader,
    main: &[u8],
    start: u64,
    end: u64,
) -> Result<Option<Event>, String> {
    let time = || -> Result<i64, String> {
        main.get(..8)
            .map(|b| le_u64(b, 0) as i64)
            .ok_or_else(|| format!("main data too short ({} bytes)", main.len()))
    };
    Ok(match hdr.rmid {
        RM_XACT_ID => match hdr.info & XLOG_XACT_OPMASK {
            XLOG_XACT_COMMIT | XLOG_XACT_COMMIT_PREPARED => Some(Event::Commit(time()?)),
            XLOG_XACT_ABORT | XLOG_XACT_ABORT_PREPARED => {
                time()?;
                Some(Event::Abort)
            }
            _ => None,
        },
        RM_XLOG_ID if hdr.info & 0xF0 == XLOG_RESTORE_POINT => {
            if main.len() < RESTORE_POINT_LEN {
                return Err(format!(
                    "restore point data too short ({} bytes)",
                    main.len()
                ));
            }
            let name = &main[8..RESTORE_POINT_LEN];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            Some(Event::RestorePoint(RestorePoint {
                name: String::from_utf8_lossy(name).into_owned(),
                lsn: Lsn(end),
                start_lsn: Lsn(start),
                time: time()?,
            }))
        }
        _ => None,
    })
}

/// Walks the block reference headers at the start of a record body (`prefix` is at least
/// the first [`MAX_BLOCK_HEADERS`] bytes, or the whole body) and returns the main data length.
/// Checks that the headers account for exactly `body_len` bytes, as PostgreSQL's
/// `DecodeXLogRecord` does.
fn parse_block_headers(prefix: &[u8], body_len: u64) -> Result<u64, String> {
    let mut off = 0usize;
    let mut datatotal: u64 = 0;
    let mut main_len: u64 = 0;
    let mut last_block: Option<u8> = None;
    let mut have_rel = false;
    let short = || "block headers run past the record".to_string();
    let take = |off: &mut usize, n: usize| -> Result<&[u8], String> {
        let s = prefix.get(*off..*off + n).ok_or_else(short)?;
        *off += n;
        Ok(s)
    };
    while body_len.saturating_sub(off as u64) > datatotal {
        let id = take(&mut off, 1)?[0];
        match id {
            XLR_BLOCK_ID_DATA_SHORT => {
                main_len = u64::from(take(&mut off, 1)?[0]);
                datatotal += main_len;
                break;
            }
            XLR_BLOCK_ID_DATA_LONG => {
                main_len = u64::from(le_u32(take(&mut off, 4)?, 0));
                datatotal += main_len;
                break;
            }
            XLR_BLOCK_ID_ORIGIN => {
                take(&mut off, 2)?;
            }
            XLR_BLOCK_ID_TOPLEVEL_XID => {
                take(&mut off, 4)?;
            }
            0..=XLR_MAX_BLOCK_ID => {
                if last_block.is_some_and(|l| id <= l) {
                    return Err(format!("out-of-order block id {id}"));
                }
                last_block = Some(id);
                let h = take(&mut off, 3)?;
                let flags = h[0];
                let data_len = u64::from(le_u16(h, 1));
                let has_data = flags & BKPBLOCK_HAS_DATA != 0;
                if has_data != (data_len != 0) {
                    return Err(format!(
                        "block {id}: data flag and data length {data_len} disagree"
                    ));
                }
                datatotal += data_len;
                if flags & BKPBLOCK_HAS_IMAGE != 0 {
                    let img = take(&mut off, 5)?;
                    let bimg_len = u64::from(le_u16(img, 0));
                    let hole_offset = le_u16(img, 2);
                    let bimg_info = img[4];
                    let has_hole = bimg_info & BKPIMAGE_HAS_HOLE != 0;
                    let compressed = bimg_info & BKPIMAGE_COMPRESSED != 0;
                    if has_hole && compressed {
                        let hole_len = le_u16(take(&mut off, 2)?, 0);
                        if hole_offset == 0 || hole_len == 0 {
                            return Err(format!("block {id}: invalid image hole"));
                        }
                    } else if !has_hole && hole_offset != 0 {
                        return Err(format!("block {id}: hole offset without a hole"));
                    }
                    if bimg_len == 0 {
                        return Err(format!("block {id}: empty page image"));
                    }
                    datatotal += bimg_len;
                }
                if flags & BKPBLOCK_SAME_REL == 0 {
                    take(&mut off, REL_FILE_LOCATOR_LEN)?;
                    have_rel = true;
                } else if !have_rel {
                    return Err(format!("block {id}: same relation as no previous block"));
                }
                take(&mut off, 4)?; // BlockNumber
            }
            other => return Err(format!("invalid block id {other}")),
        }
    }
    if off as u64 + datatotal != body_len {
        return Err(format!(
            "headers and data cover {} bytes, the record has {body_len}",
            off as u64 + datatotal
        ));
    }
    Ok(main_len)
}

/// Decodes one segment on its own: a leading continuation of a record from the previous
/// segment is skipped, and a last record continuing into the next segment is reported as
/// [`SegmentEnd::Truncated`] (it is not counted). `data` may be shorter than the segment (a
/// `.partial` file). Errors as [`SegmentDecoder::push`], or `usage.wal_segment_too_long`.
pub fn decode_segment(name: SegmentName, data: &[u8]) -> Result<SegmentSummary> {
    if data.len() as u64 > name.seg_size() {
        return Err(Error::new(
            code::USAGE_WAL_SEGMENT_TOO_LONG,
            format!(
                "{} bytes given for WAL segment {name} of {} bytes",
                data.len(),
                name.seg_size()
            ),
        ));
    }
    let mut dec = SegmentDecoder::new(name);
    dec.push(data)?;
    let mut all = dec.finish();
    if all.is_empty() {
        return Ok(SegmentSummary::new(name));
    }
    Ok(all.swap_remove(0))
}

fn major_of(magic: u16) -> Option<u32> {
    PAGE_MAGICS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, v)| *v)
}

fn align8(v: u64) -> u64 {
    v.saturating_add(7) & !7
}

fn usize_min(a: usize, b: u64) -> usize {
    usize::try_from(b).map_or(a, |b| a.min(b))
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    let mut x = [0u8; 2];
    x.copy_from_slice(&b[at..at + 2]);
    u16::from_le_bytes(x)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Fuzz helper: decodes `data` as a segment on its own, and again behind a valid long page
/// header (so that arbitrary bytes reach the record parser). Returns the records seen.
/// Never panics. (hs-proto's `fuzz_input` calls it; not meant for anything else.)
#[cfg(feature = "fuzz")]
pub fn fuzz_decode(data: &[u8]) -> usize {
    const SEG: u64 = 1024 * 1024;
    let Ok(name) = SegmentName::from_segno(crate::TimelineId(1), 1, SEG) else {
        return 0;
    };
    let mut n = 0;
    let take = &data[..data.len().min(SEG as usize)];
    if let Ok(s) = decode_segment(name, take) {
        n += s.records as usize;
    }
    let mut seg = Vec::with_capacity(LONG_PAGE_HEADER + take.len());
    seg.extend_from_slice(&0xD110u16.to_le_bytes());
    seg.extend_from_slice(&XLP_LONG_HEADER.to_le_bytes());
    seg.extend_from_slice(&1u32.to_le_bytes());
    seg.extend_from_slice(&SEG.to_le_bytes());
    seg.extend_from_slice(&[0; 8]);
    seg.extend_from_slice(&7u64.to_le_bytes());
    seg.extend_from_slice(&(SEG as u32).to_le_bytes());
    seg.extend_from_slice(&8192u32.to_le_bytes());
    let room = SEG as usize - seg.len();
    seg.extend_from_slice(&take[..take.len().min(room)]);
    let mut dec = SegmentDecoder::new(name);
    // Two pieces, to exercise carried state.
    let mid = seg.len() / 3;
    if dec.push(&seg[..mid]).is_ok() && dec.push(&seg[mid..]).is_ok() {
        n += dec
            .finish()
            .iter()
            .map(|s| s.records as usize)
            .sum::<usize>();
    }
    n
}

/// The database system identifier (`xlp_sysid`) in the long page header that starts
/// every WAL segment, if `segment` starts with one (and it is not zero). Reads only
/// the header: a cheap way to tell which cluster a stored segment belongs to.
pub fn segment_system_identifier(segment: &[u8]) -> Option<u64> {
    let h = segment.get(..LONG_PAGE_HEADER)?;
    if le_u16(h, 2) & XLP_LONG_HEADER == 0 {
        return None;
    }
    Some(le_u64(h, XLP_SYSID_OFFSET)).filter(|&id| id != 0)
}

#[cfg(test)]
pub(crate) mod testutil {
    //! A synthetic WAL writer for tests: lays records out in pages like PostgreSQL does.

    use super::*;

    pub(crate) struct WalWriter {
        pub seg_size: u64,
        pub blcksz: u64,
        pub start: u64,
        pub buf: Vec<u8>,
        pub prev: u64,
        pub magic: u16,
        pub tli: u32,
    }

    impl WalWriter {
        pub fn new(start_segno: u64, seg_size: u64, blcksz: u64) -> WalWriter {
            WalWriter {
                seg_size,
                blcksz,
                start: start_segno * seg_size,
                buf: Vec::new(),
                prev: (start_segno * seg_size).saturating_sub(64),
                magic: 0xD110,
                tli: 1,
            }
        }

        pub fn pos(&self) -> u64 {
            self.start + self.buf.len() as u64
        }

        fn page_header(&mut self, rem_len: u64) {
            let pos = self.pos();
            let long = pos.is_multiple_of(self.seg_size);
            let mut info = 0u16;
            if rem_len > 0 {
                info |= XLP_FIRST_IS_CONTRECORD;
            }
            if long {
                info |= XLP_LONG_HEADER;
            }
            self.buf.extend_from_slice(&self.magic.to_le_bytes());
            self.buf.extend_from_slice(&info.to_le_bytes());
            self.buf.extend_from_slice(&self.tli.to_le_bytes());
            self.buf.extend_from_slice(&pos.to_le_bytes());
            self.buf.extend_from_slice(&(rem_len as u32).to_le_bytes());
            self.buf.extend_from_slice(&[0; 4]);
            if long {
                self.buf.extend_from_slice(&7u64.to_le_bytes());
                self.buf
                    .extend_from_slice(&(self.seg_size as u32).to_le_bytes());
                self.buf
                    .extend_from_slice(&(self.blcksz as u32).to_le_bytes());
            }
        }

        /// Writes bytes of a record, inserting page headers; `left` counts the record bytes
        /// not yet written (for xlp_rem_len).
        fn write(&mut self, mut bytes: &[u8], left: &mut u64) {
            while !bytes.is_empty() {
                if self.pos().is_multiple_of(self.blcksz) {
                    self.page_header(*left);
                }
                let room = self.blcksz - self.pos() % self.blcksz;
                let n = (room as usize).min(bytes.len());
                self.buf.extend_from_slice(&bytes[..n]);
                *left -= n as u64;
                bytes = &bytes[n..];
            }
        }

        /// Appends a record; returns (start, aligned end).
        pub fn record(&mut self, rmid: u8, info: u8, body: &[u8]) -> (u64, u64) {
            // Align, or move past a page header at a page boundary.
            while !self.pos().is_multiple_of(8) {
                self.buf.push(0);
            }
            if self.pos().is_multiple_of(self.blcksz) {
                self.page_header(0);
            }
            let start = self.pos();
            let tot = (RECORD_HEADER + body.len()) as u32;
            let mut hdr = [0u8; RECORD_HEADER];
            hdr[0..4].copy_from_slice(&tot.to_le_bytes());
            hdr[4..8].copy_from_slice(&1000u32.to_le_bytes());
            hdr[8..16].copy_from_slice(&self.prev.to_le_bytes());
            hdr[16] = info;
            hdr[17] = rmid;
            let crc = !crc32c_update(crc32c_update(!0, body), &hdr[..CRC_OFFSET]);
            hdr[20..24].copy_from_slice(&crc.to_le_bytes());
            let mut left = u64::from(tot);
            self.write(&hdr, &mut left);
            self.write(body, &mut left);
            self.prev = start;
            (start, align8(self.pos()))
        }

        /// Pads with zeros to the end of the current segment.
        pub fn pad_segment(&mut self) {
            while !self.pos().is_multiple_of(self.seg_size) {
                self.buf.push(0);
            }
        }

        /// Appends an XLOG_SWITCH record and zero padding to the segment end.
        pub fn switch(&mut self) -> (u64, u64) {
            let r = self.record(RM_XLOG_ID, XLOG_SWITCH, &[]);
            self.pad_segment();
            r
        }
    }

    /// A body with only main data.
    pub fn main_only(main: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        if main.len() < 256 {
            b.push(XLR_BLOCK_ID_DATA_SHORT);
            b.push(main.len() as u8);
        } else {
            b.push(XLR_BLOCK_ID_DATA_LONG);
            b.extend_from_slice(&(main.len() as u32).to_le_bytes());
        }
        b.extend_from_slice(main);
        b
    }

    pub fn commit_body(t: i64) -> Vec<u8> {
        let mut main = t.to_le_bytes().to_vec();
        main.extend_from_slice(&[0; 8]);
        main_only(&main)
    }

    pub fn restore_point_body(t: i64, name: &str) -> Vec<u8> {
        let mut main = t.to_le_bytes().to_vec();
        let mut n = [0u8; 64];
        n[..name.len()].copy_from_slice(name.as_bytes());
        main.extend_from_slice(&n);
        main_only(&main)
    }

    /// A heap-insert-like body: block 0 with a compressed image with a hole and data, block 1
    /// with same-rel data, an origin, then main data.
    pub fn block_body(image_len: usize, data_len: usize, main_len: usize) -> Vec<u8> {
        let mut b = Vec::new();
        b.push(0);
        b.push(BKPBLOCK_HAS_IMAGE | BKPBLOCK_HAS_DATA);
        b.extend_from_slice(&(data_len as u16).to_le_bytes());
        b.extend_from_slice(&(image_len as u16).to_le_bytes());
        b.extend_from_slice(&100u16.to_le_bytes());
        b.push(BKPIMAGE_HAS_HOLE | 0x08);
        b.extend_from_slice(&200u16.to_le_bytes());
        b.extend_from_slice(&[1; REL_FILE_LOCATOR_LEN]);
        b.extend_from_slice(&9u32.to_le_bytes());
        b.push(1);
        b.push(BKPBLOCK_HAS_DATA | BKPBLOCK_SAME_REL);
        b.extend_from_slice(&3u16.to_le_bytes());
        b.extend_from_slice(&10u32.to_le_bytes());
        b.push(XLR_BLOCK_ID_ORIGIN);
        b.extend_from_slice(&5u16.to_le_bytes());
        b.push(XLR_BLOCK_ID_TOPLEVEL_XID);
        b.extend_from_slice(&77u32.to_le_bytes());
        b.push(XLR_BLOCK_ID_DATA_LONG);
        b.extend_from_slice(&(main_len as u32).to_le_bytes());
        b.extend_from_slice(&vec![0xAB; image_len]);
        b.extend_from_slice(&vec![0xCD; data_len]);
        b.extend_from_slice(&[0xEE; 3]);
        b.extend_from_slice(&vec![0x11; main_len]);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use crate::lsn::TimelineId;
    use proptest::prelude::*;

    #[test]
    fn system_identifier_from_a_long_page_header() {
        // PostgreSQL 15's first page of a segment: magic D110, XLP_LONG_HEADER.
        let mut page = vec![0u8; 8192];
        page[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        page[2..4].copy_from_slice(&0x0002u16.to_le_bytes());
        page[24..32].copy_from_slice(&7_312_345_678_901_234_567u64.to_le_bytes());
        page[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
        assert_eq!(
            segment_system_identifier(&page),
            Some(7_312_345_678_901_234_567)
        );
        // A short header (not a segment start), zeros or too few bytes: unknown.
        page[2..4].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(segment_system_identifier(&page), None);
        assert_eq!(segment_system_identifier(&[0u8; 8192]), None);
        assert_eq!(segment_system_identifier(&[2u8; 39]), None);
    }

    const SEG: u64 = 1024 * 1024;
    const BLCK: u64 = 8192;

    fn name(segno: u64) -> SegmentName {
        SegmentName::from_segno(TimelineId(1), segno, SEG).expect("valid")
    }

    #[test]
    fn crc32c_known_vector() {
        assert_eq!(!crc32c_update(!0, b"123456789"), 0xE306_9283);
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let whole = crc32c_update(!0, &data);
        let split = crc32c_update(crc32c_update(!0, &data[..13]), &data[13..]);
        assert_eq!(whole, split);
    }

    #[test]
    fn pg_epoch_conversion() {
        assert_eq!(pg_time_to_unix_micros(0), 946_684_800_000_000);
        assert_eq!(pg_time_to_unix_micros(i64::MAX), i64::MAX);
    }

    /// A segment with commits, an abort, a restore point, a record spanning pages and a
    /// block-reference record, then zeros.
    fn sample() -> (Vec<u8>, Vec<(u64, u64)>) {
        let mut w = WalWriter::new(3, SEG, BLCK);
        let mut recs = vec![w.record(RM_XACT_ID, XLOG_XACT_COMMIT, &commit_body(500))];
        recs.push(w.record(10, 0, &block_body(3000, 40, 20)));
        recs.push(w.record(RM_XACT_ID, XLOG_XACT_ABORT, &commit_body(600)));
        recs.push(w.record(11, 0, &main_only(&vec![7u8; 20_000])));
        recs.push(w.record(
            RM_XLOG_ID,
            XLOG_RESTORE_POINT,
            &restore_point_body(650, "before_x"),
        ));
        recs.push(w.record(
            RM_XACT_ID,
            XLOG_XACT_COMMIT_PREPARED | 0x80,
            &commit_body(400),
        ));
        recs.push(w.record(RM_XACT_ID, XLOG_XACT_COMMIT, &commit_body(900)));
        w.pad_segment();
        (w.buf, recs)
    }

    #[test]
    fn decodes_synthetic_segment() {
        let (seg, recs) = sample();
        let s = decode_segment(name(3), &seg).expect("decodes");
        assert_eq!(s.pg_major, Some(15));
        assert_eq!(s.records, 7);
        assert_eq!(s.commits, 3);
        assert_eq!(s.aborts, 1);
        assert_eq!(s.min_commit_time, Some(400));
        assert_eq!(s.max_commit_time, Some(900));
        assert_eq!(s.first_record_lsn, Some(Lsn(3 * SEG + 40)));
        assert_eq!(
            s.restore_points,
            vec![RestorePoint {
                name: "before_x".into(),
                lsn: Lsn(recs[4].1),
                start_lsn: Lsn(recs[4].0),
                time: 650,
            }]
        );
        assert_eq!(s.end_of_valid_wal, Lsn(recs[6].1));
        assert!(
            matches!(&s.end, SegmentEnd::Invalid { at, .. } if *at == Lsn(recs[6].1)),
            "{:?}",
            s.end
        );
    }

    #[test]
    fn corrupt_crc_stops_there() {
        let (mut seg, recs) = sample();
        // Flip a byte inside the third record's body.
        let off = (recs[2].0 - 3 * SEG) as usize + RECORD_HEADER + 3;
        seg[off] ^= 0xFF;
        let s = decode_segment(name(3), &seg).expect("decodes");
        assert_eq!(s.records, 2);
        assert_eq!(s.aborts, 0);
        assert_eq!(s.end_of_valid_wal, Lsn(recs[1].1));
        assert!(
            matches!(&s.end, SegmentEnd::Invalid { at, reason } if *at == Lsn(recs[2].0) && reason.contains("CRC"))
        );
    }

    #[test]
    fn wrong_segment_or_zeroes_is_invalid_not_error() {
        let (seg, _) = sample();
        let s = decode_segment(name(4), &seg).expect("stale page is end of WAL");
        assert_eq!(s.records, 0);
        assert!(matches!(s.end, SegmentEnd::Invalid { .. }));
        let s = decode_segment(name(3), &vec![0u8; SEG as usize]).expect("zeros");
        assert_eq!(s.records, 0);
        assert_eq!(s.end_of_valid_wal, Lsn(3 * SEG));
        let s = decode_segment(name(3), &[]).expect("empty");
        assert_eq!(
            s.end,
            SegmentEnd::Truncated {
                incomplete_record: None
            }
        );
    }

    #[test]
    fn unsupported_version_and_size_are_errors() {
        let (mut seg, _) = sample();
        seg[0..2].copy_from_slice(&0xD10Du16.to_le_bytes());
        let e = decode_segment(name(3), &seg).unwrap_err();
        assert_eq!(e.code(), "protocol.wal_version_unsupported");
        let (seg, _) = sample();
        // Segment 6 of 1 MiB starts where segment 3 of 2 MiB does.
        let mut w = WalWriter::new(6, SEG, BLCK);
        w.record(RM_XACT_ID, 0, &commit_body(1));
        let two = SegmentName::from_segno(TimelineId(1), 3, 2 * SEG).expect("valid");
        let e = decode_segment(two, &w.buf).unwrap_err();
        assert_eq!(e.code(), "usage.wal_segment_size_mismatch");
        assert!(decode_segment(name(3), &[seg.clone(), vec![0]].concat()).is_err());
    }

    #[test]
    fn partial_segment_reports_incomplete_record() {
        let (seg, recs) = sample();
        let cut = (recs[3].0 - 3 * SEG) as usize + 5000; // inside the 20 kB record
        let s = decode_segment(name(3), &seg[..cut]).expect("decodes");
        assert_eq!(s.records, 3);
        assert_eq!(
            s.end,
            SegmentEnd::Truncated {
                incomplete_record: Some(Lsn(recs[3].0))
            }
        );
    }

    /// Two segments with a record crossing the boundary, then a switch.
    fn two_segments() -> (Vec<u8>, (u64, u64), (u64, u64)) {
        let mut w = WalWriter::new(3, SEG, BLCK);
        w.record(RM_XACT_ID, 0, &commit_body(1));
        while w.pos() < 4 * SEG - 30_000 {
            w.record(10, 0, &main_only(&[3u8; 3000]));
        }
        w.record(RM_XACT_ID, 0, &commit_body(2));
        let cross = w.record(RM_XLOG_ID, XLOG_RESTORE_POINT, &{
            // Big enough to surely straddle: a restore point with long main data.
            let mut body = vec![XLR_BLOCK_ID_DATA_LONG];
            let mut main = 3i64.to_le_bytes().to_vec();
            let mut n = [0u8; 64];
            n[..2].copy_from_slice(b"rp");
            main.extend_from_slice(&n);
            main.extend_from_slice(&[0; 40_000]);
            body.extend_from_slice(&(main.len() as u32).to_le_bytes());
            body.extend_from_slice(&main);
            body
        });
        assert!(cross.0 < 4 * SEG && cross.1 > 4 * SEG);
        w.record(RM_XACT_ID, 0, &commit_body(4));
        let sw = w.switch();
        (w.buf, cross, sw)
    }

    #[test]
    fn record_across_segments_belongs_to_its_start() {
        let (buf, cross, sw) = two_segments();
        let (a, b) = buf.split_at(SEG as usize);
        // Alone: segment 3 has the record cut off, segment 4 skips its continuation.
        let s3 = decode_segment(name(3), a).expect("decodes");
        assert_eq!(
            s3.end,
            SegmentEnd::Truncated {
                incomplete_record: Some(Lsn(cross.0))
            }
        );
        assert!(s3.restore_points.is_empty());
        assert_eq!(s3.commits, 2);
        let s4 = decode_segment(name(4), b).expect("decodes");
        assert_eq!(s4.commits, 1);
        assert_eq!(s4.records, 2);
        assert_eq!(s4.end, SegmentEnd::Switch);
        assert_eq!(s4.first_record_lsn, Some(Lsn(cross.1)));
        assert_eq!(s4.end_of_valid_wal, Lsn(sw.1));
        // Together: the restore point is decoded and attributed to segment 3.
        let mut dec = SegmentDecoder::new(name(3));
        dec.push(a).expect("push");
        assert!(
            dec.next_summary().is_none(),
            "segment 3 waits for its last record"
        );
        let split = (cross.1 - 4 * SEG) as usize;
        dec.push(&b[..split - 8]).expect("push");
        assert!(dec.next_summary().is_none(), "last record still incomplete");
        dec.push(&b[split - 8..split]).expect("push");
        let s = dec.next_summary().expect("final now");
        assert_eq!(s.segment, name(3));
        assert_eq!(s.end, SegmentEnd::Complete);
        assert_eq!(s.restore_points.len(), 1);
        assert_eq!(s.restore_points[0].lsn, Lsn(cross.1));
        assert_eq!(s.end_of_valid_wal, Lsn(cross.1));
        dec.push(&b[split..]).expect("push");
        let rest = dec.finish();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].segment, name(4));
        assert_eq!(rest[0].end, SegmentEnd::Switch);
        assert_eq!(rest[0].commits, 1);
        assert_eq!(rest[0].records, 2);
    }

    #[test]
    fn switch_then_next_segment() {
        let mut w = WalWriter::new(3, SEG, BLCK);
        w.record(RM_XACT_ID, 0, &commit_body(1));
        w.switch();
        w.record(RM_XACT_ID, 0, &commit_body(2));
        w.pad_segment();
        let mut dec = SegmentDecoder::new(name(3));
        dec.push(&w.buf).expect("push");
        let s3 = dec.next_summary().expect("segment 3 final");
        assert_eq!(
            (s3.records, s3.commits, s3.end.clone()),
            (2, 1, SegmentEnd::Switch)
        );
        let s4 = dec.finish().pop().expect("segment 4");
        assert_eq!(s4.commits, 1);
        assert_eq!(s4.max_commit_time, Some(2));
        assert!(matches!(s4.end, SegmentEnd::Invalid { .. }));
    }

    #[test]
    fn main_data_far_into_the_record() {
        // A commit whose main data follows 3 kB of block data, and one with 300 kB of main
        // data: the time is found, and only bounded prefixes are kept while reading.
        let mut w = WalWriter::new(3, SEG, BLCK);
        let mut body = block_body(3000, 40, 16);
        let n = body.len();
        body[n - 16..n - 8].copy_from_slice(&4242i64.to_le_bytes());
        w.record(RM_XACT_ID, XLOG_XACT_COMMIT, &body);
        let mut main = 77i64.to_le_bytes().to_vec();
        main.resize(300_000, 9);
        w.record(RM_XACT_ID, XLOG_XACT_ABORT_PREPARED, &main_only(&main));
        w.record(RM_XACT_ID, XLOG_XACT_COMMIT, &main_only(&main));
        w.pad_segment();
        let s = decode_segment(name(3), &w.buf).expect("decodes");
        assert_eq!((s.records, s.commits, s.aborts), (3, 2, 1));
        assert_eq!(s.min_commit_time, Some(77));
        assert_eq!(s.max_commit_time, Some(4242));
    }

    #[test]
    fn block_header_layouts() {
        let b = block_body(100, 5, 300);
        assert_eq!(parse_block_headers(&b, b.len() as u64), Ok(300));
        let b = main_only(&[1, 2, 3]);
        assert_eq!(parse_block_headers(&b, b.len() as u64), Ok(3));
        assert_eq!(parse_block_headers(&[], 0), Ok(0));
        assert!(parse_block_headers(&b, b.len() as u64 + 1).is_err());
        assert!(parse_block_headers(&[40, 0, 0, 0], 4).is_err());
        // Same-rel without a previous relation.
        let bad = [0u8, BKPBLOCK_SAME_REL, 0, 0, 0, 0, 0, 0];
        assert!(parse_block_headers(&bad, 8).is_err());
        // Out-of-order block ids.
        let mut two = vec![1u8, 0, 0, 0];
        two.extend_from_slice(&[0; 16]);
        two.extend_from_slice(&[0u8, BKPBLOCK_SAME_REL, 0, 0, 0, 0, 0, 0]);
        assert!(parse_block_headers(&two, two.len() as u64).is_err());
    }

    #[test]
    fn overwrite_contrecord_abandons_torn_record() {
        let mut w = WalWriter::new(3, SEG, BLCK);
        let first = w.record(RM_XACT_ID, 0, &commit_body(1));
        let torn = w.record(11, 0, &main_only(&[5u8; 9000]));
        // Overwrite the page where the torn record continues with a fresh page flagged
        // XLP_FIRST_IS_OVERWRITE_CONTRECORD and a new record.
        let page = (torn.0 / BLCK + 1) * BLCK;
        w.buf.truncate((page - w.start) as usize);
        // PostgreSQL links the next record to the last complete one, not the torn one.
        w.prev = first.0;
        w.page_header_overwrite();
        w.record(RM_XACT_ID, 0, &commit_body(2));
        w.pad_segment();
        let s = decode_segment(name(3), &w.buf).expect("decodes");
        assert_eq!(s.commits, 2, "{s:?}");
        assert_eq!(s.records, 2);
    }

    impl WalWriter {
        fn page_header_overwrite(&mut self) {
            let pos = self.pos();
            self.buf.extend_from_slice(&self.magic.to_le_bytes());
            self.buf
                .extend_from_slice(&XLP_FIRST_IS_OVERWRITE_CONTRECORD.to_le_bytes());
            self.buf.extend_from_slice(&self.tli.to_le_bytes());
            self.buf.extend_from_slice(&pos.to_le_bytes());
            self.buf.extend_from_slice(&[0; 8]);
        }
    }

    fn summaries_split(buf: &[u8], first: SegmentName, cuts: &[usize]) -> Vec<SegmentSummary> {
        let mut dec = SegmentDecoder::new(first);
        let mut out = Vec::new();
        let mut last = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (buf.len() + 1)).collect();
        cuts.sort_unstable();
        for c in cuts.into_iter().chain([buf.len()]) {
            dec.push(&buf[last..c]).expect("push");
            last = c;
            while let Some(s) = dec.next_summary() {
                out.push(s);
            }
        }
        out.extend(dec.finish());
        out
    }

    /// One generated record: its kind (which body and header), an info byte, byte edits to
    /// its body, and a size.
    type RecordSpec = (u8, u8, Vec<(usize, u8)>, usize);

    /// Writes `specs` as records with correct CRCs (whatever their bodies hold); returns
    /// the segment, how many records precede the first one with an edited or random body,
    /// and the commits and aborts of an unedited sequence.
    fn crc_valid_records(specs: &[RecordSpec]) -> (Vec<u8>, usize, u64, u64) {
        let mut w = WalWriter::new(3, SEG, BLCK);
        let mut intact = None;
        let (mut commits, mut aborts) = (0, 0);
        for (i, (kind, info, edits, size)) in specs.iter().enumerate() {
            let (rmid, info, mut body) = match kind % 6 {
                0 => {
                    commits += 1;
                    (RM_XACT_ID, XLOG_XACT_COMMIT, commit_body(*size as i64))
                }
                1 => {
                    aborts += 1;
                    (RM_XACT_ID, XLOG_XACT_ABORT, commit_body(*size as i64))
                }
                2 => (11, 0, main_only(&vec![*info; *size])),
                3 => (
                    10,
                    0,
                    block_body(100 + size % 6000, 1 + size % 300, 1 + size % 100),
                ),
                4 => (
                    RM_XLOG_ID,
                    XLOG_RESTORE_POINT,
                    restore_point_body(*size as i64, "rp"),
                ),
                // A random header and body: any resource manager, any info bits.
                _ => (
                    (*size % 40) as u8,
                    *info,
                    (0..*size % 400).map(|j| (j * 31 + *size) as u8).collect(),
                ),
            };
            let random = kind % 6 == 5;
            for (at, v) in edits {
                if !body.is_empty() {
                    let n = body.len();
                    body[at % n] = *v;
                }
            }
            if intact.is_none() && (random || !edits.is_empty()) {
                intact = Some(i);
            }
            w.record(rmid, info, &body);
        }
        w.pad_segment();
        let intact = intact.unwrap_or(specs.len());
        if intact < specs.len() {
            (commits, aborts) = (0, 0);
        }
        (w.buf, intact, commits, aborts)
    }

    fn record_spec() -> impl Strategy<Value = RecordSpec> {
        (
            0u8..6,
            any::<u8>(),
            prop_oneof![
                3 => Just(Vec::new()),
                1 => proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            ],
            0usize..12_000,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(384))]

        /// Damage under a correct CRC: what a CRC check lets through (a bug in the writer,
        /// or a collision) reaches the block-header walk and the record decoders, which
        /// must stop cleanly; the CRC check is never what stops them here. Records before
        /// the first damaged one all count, and an undamaged sequence decodes exactly.
        #[test]
        fn damaged_records_under_valid_crcs_reach_the_decoders(
            specs in proptest::collection::vec(record_spec(), 1..24),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let (buf, intact, commits, aborts) = crc_valid_records(&specs);
            let all = summaries_split_lenient(&buf, &cuts);
            prop_assert_eq!(all.len(), 1, "{:?}", all);
            let s = &all[0];
            if let SegmentEnd::Invalid { reason, .. } = &s.end {
                prop_assert!(!reason.contains("CRC"), "{}", reason);
            }
            prop_assert!(s.records as usize >= intact, "{} < {}: {:?}", s.records, intact, s);
            if intact == specs.len() {
                prop_assert_eq!(s.records as usize, specs.len());
                prop_assert_eq!(s.commits, commits);
                prop_assert_eq!(s.aborts, aborts);
                prop_assert!(matches!(s.end, SegmentEnd::Invalid { .. }), "{:?}", s.end);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_split_gives_the_same_summaries(cuts in proptest::collection::vec(any::<usize>(), 0..40)) {
            let (buf, _, _) = two_segments();
            let whole = summaries_split(&buf, name(3), &[]);
            prop_assert_eq!(whole.len(), 2);
            prop_assert_eq!(summaries_split(&buf, name(3), &cuts), whole);
            let (seg, _) = sample();
            let one = decode_segment(name(3), &seg).expect("decodes");
            prop_assert_eq!(summaries_split(&seg, name(3), &cuts), vec![one]);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(192))]

        /// Raw byte damage: nearly always stopped by a record or page check (the CRC above
        /// all); `damaged_records_under_valid_crcs_reach_the_decoders` covers what lies past it.
        #[test]
        fn corrupted_wal_never_panics(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..20),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let (mut buf, _, _) = two_segments();
            // Keep edits in the interesting first pages and around the boundary.
            let n = buf.len();
            for (i, (at, v)) in edits.into_iter().enumerate() {
                let at = if i % 2 == 0 { at % 40_000 } else { (SEG as usize - 20_000) + at % 60_000 };
                if at < n {
                    buf[at] = v;
                }
            }
            let _ = summaries_split_lenient(&buf, &cuts);
        }

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..20_000)) {
            let _ = decode_segment(name(3), &data);
            let mut seg = sample().0;
            let k = data.len().min(seg.len() - 100);
            seg[100..100 + k].copy_from_slice(&data[..k]);
            let _ = decode_segment(name(3), &seg);
        }
    }

    fn summaries_split_lenient(buf: &[u8], cuts: &[usize]) -> Vec<SegmentSummary> {
        let mut dec = SegmentDecoder::new(name(3));
        let mut last = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (buf.len() + 1)).collect();
        cuts.sort_unstable();
        for c in cuts.into_iter().chain([buf.len()]) {
            if dec.push(&buf[last..c]).is_err() {
                break;
            }
            last = c;
        }
        dec.finish()
    }
}
