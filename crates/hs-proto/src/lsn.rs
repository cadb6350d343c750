//! WAL positions ([`Lsn`]) and timeline ids ([`TimelineId`]).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A WAL location (log sequence number), displayed like PostgreSQL: `"16/B374D848"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The invalid / zero location `0/0`.
    pub const INVALID: Lsn = Lsn(0);
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = Error;

    /// Parses `"X/Y"` where X and Y are 1 to 8 hex digits (either case).
    fn from_str(s: &str) -> Result<Lsn> {
        let bad = || {
            Error::usage("usage.lsn_invalid", format!("invalid LSN {s:?}"))
                .with_suggestion("write an LSN as two hex numbers separated by '/', e.g. 0/3000028")
        };
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let part = |p: &str| -> Result<u64> {
            if p.is_empty() || p.len() > 8 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            u64::from_str_radix(p, 16).map_err(|_| bad())
        };
        Ok(Lsn((part(hi)? << 32) | part(lo)?))
    }
}

impl From<u64> for Lsn {
    fn from(v: u64) -> Lsn {
        Lsn(v)
    }
}

impl From<Lsn> for u64 {
    fn from(v: Lsn) -> u64 {
        v.0
    }
}

/// A PostgreSQL timeline id (1 for a cluster that never had a promotion).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TimelineId(pub u32);

impl fmt::Display for TimelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for TimelineId {
    type Err = Error;

    fn from_str(s: &str) -> Result<TimelineId> {
        s.trim().parse::<u32>().map(TimelineId).map_err(|_| {
            Error::usage(
                "usage.timeline_invalid",
                format!("invalid timeline id {s:?}"),
            )
            .with_suggestion("a timeline id is a positive decimal number, e.g. 1")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn display_matches_postgres() {
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert_eq!(Lsn(0x3000028).to_string(), "0/3000028");
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(Lsn(u64::MAX).to_string(), "FFFFFFFF/FFFFFFFF");
    }

    #[test]
    fn parse_rejects_garbage() {
        for s in [
            "",
            "/",
            "0/",
            "/0",
            "0/0/0",
            "g/0",
            "123456789/0",
            "0x1/0",
            " 0/1",
        ] {
            assert!(s.parse::<Lsn>().is_err(), "{s:?}");
        }
        assert_eq!("16/b374d848".parse::<Lsn>().ok(), Some(Lsn(0x16_B374_D848)));
        assert!(Lsn(1) < Lsn(0x1_0000_0000));
    }

    proptest! {
        #[test]
        fn lsn_roundtrip(v in any::<u64>()) {
            let s = Lsn(v).to_string();
            prop_assert_eq!(s.parse::<Lsn>().ok(), Some(Lsn(v)));
            prop_assert_eq!(s.to_uppercase(), s);
        }
    }
}
