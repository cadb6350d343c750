//! WAL positions ([`Lsn`]) and timeline ids ([`TimelineId`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use hs_base::{code, Error, Result};

/// A WAL location (log sequence number), displayed like PostgreSQL: `"16/B374D848"`.
///
/// Serialized (serde) as that same `"X/Y"` text, the form backup manifests have always
/// stored; deserializing accepts what [`FromStr`] accepts.
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
            Error::new(code::USAGE_LSN_INVALID, format!("invalid LSN {s:?}"))
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

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Lsn, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Lsn;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an LSN as \"X/Y\" (two hex numbers)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Lsn, E> {
                v.parse::<Lsn>().map_err(E::custom)
            }
        }
        d.deserialize_str(Visit)
    }
}

impl Lsn {
    /// `self + n`, or `None` on overflow.
    pub fn checked_add(self, n: u64) -> Option<Lsn> {
        self.0.checked_add(n).map(Lsn)
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
            Error::new(
                code::USAGE_TIMELINE_INVALID,
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
            "0",
            "/",
            "0/",
            "1/",
            "x/1",
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
        assert_eq!("1/0".parse::<Lsn>().ok(), Some(Lsn(1 << 32)));
        assert_eq!("FFFFFFFF/FFFFFFFF".parse::<Lsn>().ok(), Some(Lsn(u64::MAX)));
        assert!(Lsn(1) < Lsn(0x1_0000_0000));
    }

    #[test]
    fn serde_is_the_text_form() {
        let l = Lsn(0x16_B374_D848);
        assert_eq!(serde_json::to_string(&l).unwrap(), "\"16/B374D848\"");
        assert_eq!(serde_json::from_str::<Lsn>("\"16/b374d848\"").unwrap(), l);
        assert!(serde_json::from_str::<Lsn>("\"16\"").is_err());
        assert!(serde_json::from_str::<Lsn>("1").is_err());
        let e = "x".parse::<Lsn>().unwrap_err();
        assert_eq!(e.code(), "usage.lsn_invalid");
        assert!(e.suggestion().is_some());
        assert_eq!(" 7 ".parse::<TimelineId>().unwrap(), TimelineId(7));
        assert_eq!(
            "x".parse::<TimelineId>().unwrap_err().code(),
            "usage.timeline_invalid"
        );
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
