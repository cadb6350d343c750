//! WAL file naming and segment math ([`SegmentName`], and the size-independent name helpers
//! the repository's listings use), the `wal_segment_size` setting, and timeline history
//! files ([`parse_timeline_history`]). Pure functions, no I/O.

use std::fmt;

use crate::lsn::{Lsn, TimelineId};
use hs_base::{code, Error, ErrorKind, Result};

/// PostgreSQL's default (and by far most common) WAL segment size, 16 MiB. The real value
/// is a cluster property set at initdb time; read it with `SHOW wal_segment_size` and
/// [`parse_wal_segment_size`].
pub const DEFAULT_WAL_SEGMENT_SIZE: u64 = 16 << 20;
/// Smallest WAL segment size PostgreSQL allows (1 MiB).
pub const MIN_WAL_SEGMENT_SIZE: u64 = 1 << 20;
/// Largest WAL segment size PostgreSQL allows (1 GiB).
pub const MAX_WAL_SEGMENT_SIZE: u64 = 1 << 30;

/// Whether `n` is a WAL segment size PostgreSQL allows (a power of two from 1 MiB to 1 GiB).
pub fn is_valid_wal_segment_size(n: u64) -> bool {
    n.is_power_of_two() && (MIN_WAL_SEGMENT_SIZE..=MAX_WAL_SEGMENT_SIZE).contains(&n)
}

fn check_seg_size(seg_size: u64) -> Result<()> {
    if !is_valid_wal_segment_size(seg_size) {
        return Err(Error::new(
            code::USAGE_WAL_SEGMENT_SIZE_INVALID,
            format!("{seg_size} is not a valid WAL segment size"),
        )
        .with_suggestion("a WAL segment size is a power of two between 1 MiB and 1 GiB"));
    }
    Ok(())
}

/// Segments per "xlogid" (the middle 8 hex digits of a name): `2^32 / seg_size`.
/// `seg_size` should be valid (see [`is_valid_wal_segment_size`]); 0 is treated as 16 MiB.
pub fn segs_per_xlogid(seg_size: u64) -> u64 {
    let s = if seg_size == 0 {
        DEFAULT_WAL_SEGMENT_SIZE
    } else {
        seg_size
    };
    (0x1_0000_0000u64 / s).max(1)
}

/// Whether every byte is a digit or an upper-case hex letter (PostgreSQL's `%08X`).
fn upper_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// Parses a 24-hex-digit segment name (upper case) into (timeline, log, seg), without
/// knowing the segment size (so "seg" is not range-checked; [`SegmentName::parse`] does that).
pub fn parse_wal_segment_name(name: &str) -> Option<(u32, u32, u32)> {
    if name.len() != 24 || !upper_hex(name) {
        return None;
    }
    let p = |r: std::ops::Range<usize>| u32::from_str_radix(&name[r], 16).ok();
    Some((p(0..8)?, p(8..16)?, p(16..24)?))
}

/// The name of segment `segno` of timeline `tli` for segments of `seg_size` bytes.
pub fn wal_segment_name(tli: u32, segno: u64, seg_size: u64) -> String {
    let per = segs_per_xlogid(seg_size);
    format!("{tli:08X}{:08X}{:08X}", segno / per, segno % per)
}

/// The name of timeline `tli`'s history file, `TTTTTTTT.history`.
pub fn timeline_history_name(tli: u32) -> String {
    format!("{tli:08X}.history")
}

/// The timeline of a history file name `TTTTTTTT.history` (upper-case hex), if it is one.
pub fn parse_timeline_history_name(name: &str) -> Option<u32> {
    let hex = name.strip_suffix(".history")?;
    if hex.len() != 8 || !upper_hex(hex) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

/// Parses the output of `SHOW wal_segment_size` (`"16MB"`, `"1GB"`, or plain bytes) into bytes.
/// Errors (code `usage.wal_segment_size_invalid`) unless the result is a power of two between
/// 1 MiB and 1 GiB.
pub fn parse_wal_segment_size(show: &str) -> Result<u64> {
    let s = show.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let bad = || {
        Error::new(
            code::USAGE_WAL_SEGMENT_SIZE_INVALID,
            format!("cannot read WAL segment size {show:?}"),
        )
    };
    let n: u64 = s[..digits].parse().map_err(|_| bad())?;
    let mult: u64 = match s[digits..].trim() {
        "" | "B" => 1,
        "kB" => 1024,
        "MB" => 1024 * 1024,
        "GB" => 1024 * 1024 * 1024,
        _ => return Err(bad()),
    };
    let v = n.checked_mul(mult).ok_or_else(bad)?;
    check_seg_size(v)?;
    Ok(v)
}

impl Lsn {
    /// Offset of this location inside its WAL segment.
    pub fn segment_offset(self, seg_size: u64) -> u64 {
        self.0 % seg_size.max(1)
    }

    /// The start of the segment containing this location.
    pub fn segment_start(self, seg_size: u64) -> Lsn {
        Lsn(self.0 - self.segment_offset(seg_size))
    }
}

impl TimelineId {
    /// The name of this timeline's history file, e.g. `00000002.history`.
    pub fn history_file_name(self) -> String {
        timeline_history_name(self.0)
    }
}

/// A WAL segment file name, `TTTTTTTTXXXXXXXXYYYYYYYY` (timeline, then the segment number
/// split into "log" and "seg" parts, 8 upper-case hex digits each).
///
/// The name depends on the segment size (the "seg" part counts segments within 4 GiB), so
/// the size is carried along; ordering is by timeline, then segment number (the order of the
/// file names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentName {
    tli: TimelineId,
    segno: u64,
    seg_size: u64,
}

impl SegmentName {
    /// The segment of timeline `tli` containing `lsn`. Errors for an invalid `seg_size`.
    pub fn from_lsn(tli: TimelineId, lsn: Lsn, seg_size: u64) -> Result<SegmentName> {
        check_seg_size(seg_size)?;
        Ok(SegmentName {
            tli,
            segno: lsn.0 / seg_size,
            seg_size,
        })
    }

    /// Segment number `segno` (the LSN divided by the segment size) on timeline `tli`.
    pub fn from_segno(tli: TimelineId, segno: u64, seg_size: u64) -> Result<SegmentName> {
        check_seg_size(seg_size)?;
        if segno > u64::MAX / seg_size {
            return Err(Error::new(
                code::USAGE_WAL_SEGMENT_INVALID,
                format!("segment number {segno} is beyond the end of WAL"),
            ));
        }
        Ok(SegmentName {
            tli,
            segno,
            seg_size,
        })
    }

    /// Parses a 24-character WAL file name (upper-case hex, as PostgreSQL writes it and
    /// passes as `%f` to `restore_command`). Errors with code `usage.wal_segment_invalid`.
    pub fn parse(name: &str, seg_size: u64) -> Result<SegmentName> {
        check_seg_size(seg_size)?;
        let bad = || {
            Error::new(
                code::USAGE_WAL_SEGMENT_INVALID,
                format!("{name:?} is not a WAL segment file name"),
            )
            .with_suggestion(
                "a WAL segment name is 24 upper-case hex digits, e.g. 000000010000000000000003",
            )
        };
        let (tli, log, seg) = parse_wal_segment_name(name).ok_or_else(bad)?;
        let per_log = segs_per_xlogid(seg_size);
        if u64::from(seg) >= per_log {
            return Err(bad());
        }
        Ok(SegmentName {
            tli: TimelineId(tli),
            segno: u64::from(log) * per_log + u64::from(seg),
            seg_size,
        })
    }

    /// The timeline.
    pub fn timeline(&self) -> TimelineId {
        self.tli
    }

    /// The segment number (first LSN of the segment divided by the segment size).
    pub fn segno(&self) -> u64 {
        self.segno
    }

    /// The segment size this name was computed with.
    pub fn seg_size(&self) -> u64 {
        self.seg_size
    }

    /// The first LSN in this segment. (`seg_size` must be the size the name was made
    /// with; it is taken as an argument so call sites read like PostgreSQL's macros.)
    pub fn start_lsn(&self, seg_size: u64) -> Lsn {
        debug_assert_eq!(seg_size, self.seg_size);
        Lsn(self.segno.saturating_mul(self.seg_size))
    }

    /// The first LSN after this segment (the next segment's start).
    pub fn end_lsn(&self) -> Lsn {
        Lsn(self.segno.saturating_add(1).saturating_mul(self.seg_size))
    }

    /// Whether `lsn` falls inside this segment.
    pub fn contains(&self, lsn: Lsn) -> bool {
        lsn.0 / self.seg_size == self.segno
    }

    /// The following segment on the same timeline.
    pub fn next(&self) -> SegmentName {
        SegmentName {
            segno: self.segno.saturating_add(1),
            ..*self
        }
    }

    /// The same segment number on another timeline (after a switch, the new timeline's
    /// first segment has the same number as the old timeline's last).
    pub fn with_timeline(&self, tli: TimelineId) -> SegmentName {
        SegmentName { tli, ..*self }
    }
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per_log = segs_per_xlogid(self.seg_size);
        write!(
            f,
            "{:08X}{:08X}{:08X}",
            self.tli.0,
            self.segno / per_log,
            self.segno % per_log
        )
    }
}

/// One line of a timeline history file: timeline `tli` ended at `switch_lsn`, where the
/// next timeline (the one the file is named after, or a later line's) began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineHistoryEntry {
    /// A parent timeline.
    pub tli: TimelineId,
    /// Where `tli` ended (the first LSN of the child timeline).
    pub switch_lsn: Lsn,
    /// Free text the server wrote (e.g. `no recovery target specified`).
    pub reason: String,
}

/// Parses a timeline history file (`NNNNNNNN.history`): lines `tli<TAB>X/Y<TAB>reason`;
/// blank lines and lines starting with `#` are skipped, as PostgreSQL does. Timeline ids
/// must increase. Errors with code `verify.timeline_history_invalid`.
pub fn parse_timeline_history(content: &str) -> Result<Vec<TimelineHistoryEntry>> {
    let mut out: Vec<TimelineHistoryEntry> = Vec::new();
    for (i, raw) in content.lines().enumerate() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |what: &str| {
            Error::of_kind(
                ErrorKind::Protocol,
                code::VERIFY_TIMELINE_HISTORY_INVALID,
                format!("timeline history line {}: {what}: {raw:?}", i + 1),
            )
        };
        let mut fields = line.splitn(3, ['\t', ' ']);
        let tli = fields
            .next()
            .and_then(|t| t.parse::<u32>().ok())
            .ok_or_else(|| bad("invalid timeline id"))?;
        let lsn = fields
            .next()
            .map(str::trim)
            .and_then(|l| l.parse::<Lsn>().ok())
            .ok_or_else(|| bad("invalid switch point"))?;
        let reason = fields.next().unwrap_or("").trim().to_string();
        if let Some(prev) = out.last() {
            if tli <= prev.tli.0 {
                return Err(bad("timeline ids must increase"));
            }
            if lsn < prev.switch_lsn {
                return Err(bad("switch points must not go backwards"));
            }
        }
        out.push(TimelineHistoryEntry {
            tli: TimelineId(tli),
            switch_lsn: lsn,
            reason,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEG: u64 = DEFAULT_WAL_SEGMENT_SIZE;

    #[test]
    fn names_match_postgres() {
        let n = SegmentName::from_lsn(TimelineId(1), Lsn(0x0300_0028), SEG).unwrap();
        assert_eq!(n.to_string(), "000000010000000000000003");
        assert_eq!(n.start_lsn(SEG), Lsn(0x0300_0000));
        assert_eq!(n.end_lsn(), Lsn(0x0400_0000));
        let n = SegmentName::from_lsn(TimelineId(2), Lsn(0x16_B374_D848), SEG).unwrap();
        assert_eq!(n.to_string(), "0000000200000016000000B3");
        // The last segment of a 4 GiB "log" rolls over into the next log.
        let last = SegmentName::parse("0000000100000000000000FF", SEG).unwrap();
        assert_eq!(last.next().to_string(), "000000010000000100000000");
        // 1 GiB segments: four per log.
        let big =
            SegmentName::from_lsn(TimelineId(1), Lsn(0x1_C000_0000), MAX_WAL_SEGMENT_SIZE).unwrap();
        assert_eq!(big.to_string(), "000000010000000100000003");
        assert!(SegmentName::parse("000000010000000100000004", MAX_WAL_SEGMENT_SIZE).is_err());
        assert!(SegmentName::parse("000000010000000100000100", SEG).is_err());
        assert!(SegmentName::parse("00000001000000010000000a", SEG).is_err());
        assert!(SegmentName::parse("00000001000000010000000", SEG).is_err());
        assert!(SegmentName::from_lsn(TimelineId(1), Lsn(0), 3_000_000).is_err());
        assert!(SegmentName::parse("000000010000000100000000", SEG).unwrap() > last);
        assert_eq!(TimelineId(10).history_file_name(), "0000000A.history");
    }

    #[test]
    fn size_independent_names() {
        assert_eq!(
            parse_wal_segment_name("00000002000000A1000000FF"),
            Some((2, 0xA1, 0xFF))
        );
        for bad in [
            "",
            "00000002000000a1000000FF",
            "00000002000000A1000000F",
            "00000002000000A1000000FFF",
            "0000000200000XA1000000FF",
        ] {
            assert_eq!(parse_wal_segment_name(bad), None, "{bad}");
        }
        assert_eq!(
            wal_segment_name(1, 0x1FF, 16 << 20),
            "0000000100000001000000FF"
        );
        assert_eq!(wal_segment_name(3, 5, 1 << 30), "000000030000000100000001");
        assert_eq!(timeline_history_name(10), "0000000A.history");
        assert_eq!(parse_timeline_history_name("0000000A.history"), Some(10));
        assert_eq!(parse_timeline_history_name("0000000a.history"), None);
        assert_eq!(parse_timeline_history_name("0000000A"), None);
        assert_eq!(segs_per_xlogid(16 << 20), 256);
        assert_eq!(segs_per_xlogid(0), 256);
        assert!(is_valid_wal_segment_size(16 << 20));
        assert!(!is_valid_wal_segment_size(3 << 20));
        assert!(!is_valid_wal_segment_size(512 << 10));
        assert!(!is_valid_wal_segment_size(2 << 30));
    }

    #[test]
    fn segment_size_setting() {
        assert_eq!(parse_wal_segment_size("16MB").unwrap(), SEG);
        assert_eq!(parse_wal_segment_size("1GB").unwrap(), MAX_WAL_SEGMENT_SIZE);
        assert_eq!(
            parse_wal_segment_size("1048576").unwrap(),
            MIN_WAL_SEGMENT_SIZE
        );
        for bad in [
            "",
            "16",
            "15MB",
            "2GB",
            "16 XB",
            "MB",
            "99999999999999999999GB",
        ] {
            assert!(parse_wal_segment_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn history_files() {
        let h = "1\t0/3000158\tno recovery target specified\n\n\
                 # comment\n\
                 2\t0/5000000\tat restore point \"before upgrade\"\n";
        let e = parse_timeline_history(h).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].tli, TimelineId(1));
        assert_eq!(e[0].switch_lsn, Lsn(0x300_0158));
        assert_eq!(e[0].reason, "no recovery target specified");
        assert_eq!(e[1].reason, "at restore point \"before upgrade\"");
        assert!(parse_timeline_history("").unwrap().is_empty());
        for bad in ["x\t0/1\tr", "1\tnope\tr", "2\t0/1\tr\n1\t0/2\tr", "1"] {
            let err = parse_timeline_history(bad).unwrap_err();
            assert_eq!(err.code(), "verify.timeline_history_invalid", "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn segment_roundtrip(tli in 1u32.., lsn in any::<u64>(), shift in 20u32..=30) {
            let seg = 1u64 << shift;
            let n = SegmentName::from_lsn(TimelineId(tli), Lsn(lsn), seg).unwrap();
            let s = n.to_string();
            prop_assert_eq!(s.len(), 24);
            let back = SegmentName::parse(&s, seg).unwrap();
            prop_assert_eq!(back, n);
            prop_assert!(n.contains(Lsn(lsn)));
            prop_assert!(n.start_lsn(seg) <= Lsn(lsn));
            prop_assert_eq!(Lsn(lsn).segment_start(seg), n.start_lsn(seg));
            if n.segno() < u64::MAX / seg {
                prop_assert_eq!(n.next().start_lsn(seg), n.end_lsn());
                prop_assert!(n.next() > n);
            }
        }
    }
}
