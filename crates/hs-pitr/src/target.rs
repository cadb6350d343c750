//! Point-in-time recovery targets as a user types them: `--to TIME`,
//! `--to-lsn X/Y`, `--to-name NAME`, `--to-latest`.
//!
//! Times are resolved to a UTC instant against a `now` the caller passes in
//! (so the parser is deterministic and testable). Accepted forms:
//!
//! - RFC 3339: `2026-11-26T03:15:00Z`, `2026-11-26T04:15:00.25+01:00`
//! - `YYYY-MM-DD HH:MM[:SS[.ffffff]]` (or with `T`), read as UTC
//! - `now`
//! - `N seconds|minutes|hours|days|weeks ago` (singular or plural; `s`,
//!   `sec`, `secs`, `min`, `mins`, `h`, `hr`, `hrs`, `d`, `w`; `5min ago` too)
//! - `today HH:MM[:SS]`, `yesterday HH:MM[:SS]` (UTC days)

use std::fmt;

use hs_base::code;
use hs_pg::Lsn;
use time::format_description::well_known::Rfc3339;
use time::{Date, Duration, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use crate::error::{Error, ErrorKind, Result};

/// Where a point-in-time restore stops, as resolved from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PitrTarget {
    /// Replay everything archived.
    Latest,
    /// Stop at the first transaction that committed after this instant (UTC).
    Time(OffsetDateTime),
    /// Stop at this WAL position.
    Lsn(Lsn),
    /// Stop at this restore point (`pg_create_restore_point`).
    Name(String),
}

impl fmt::Display for PitrTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PitrTarget::Latest => f.write_str("latest (all archived WAL)"),
            PitrTarget::Time(t) => write!(f, "time {}", format_utc(*t)),
            PitrTarget::Lsn(l) => write!(f, "LSN {l}"),
            PitrTarget::Name(n) => write!(f, "restore point {n:?}"),
        }
    }
}

impl PitrTarget {
    /// A short word for the kind of target: `latest`, `time`, `lsn` or `name`.
    pub fn kind(&self) -> &'static str {
        match self {
            PitrTarget::Latest => "latest",
            PitrTarget::Time(_) => "time",
            PitrTarget::Lsn(_) => "lsn",
            PitrTarget::Name(_) => "name",
        }
    }
}

const TIME_EXAMPLES: &str = "use RFC 3339 (2026-11-26T03:15:00Z), \"2026-11-26 03:15[:00]\" (UTC), \"now\", \"5 minutes ago\", \"90s ago\", \"today 14:00\" or \"yesterday 14:00\" (UTC)";

fn invalid_time(input: &str, why: &str) -> Error {
    Error::of_kind(
        ErrorKind::Usage,
        code::USAGE_TARGET_TIME_INVALID,
        format!("cannot read {input:?} as a recovery target time: {why}"),
    )
    .with_suggestion(TIME_EXAMPLES)
}

/// Formats an instant as RFC 3339 in UTC with a `Z`, keeping microseconds
/// only when they are not zero (`2026-11-26T03:15:00Z`,
/// `2026-11-26T03:15:00.250000Z`). PostgreSQL accepts both for
/// `recovery_target_time`.
pub fn format_utc(t: OffsetDateTime) -> String {
    let whole = hs_pg::rfc3339(t);
    match t.microsecond() {
        0 => whole,
        us => format!("{}.{us:06}Z", whole.trim_end_matches('Z')),
    }
}

/// The value for `recovery_target_time`: RFC 3339 in UTC with a numeric
/// offset (`2026-11-26T03:15:00.250000+00:00`). PostgreSQL refuses time
/// zone abbreviations there, and `Z` is one to it.
pub fn format_recovery_target_time(t: OffsetDateTime) -> String {
    let z = format_utc(t);
    format!("{}+00:00", z.trim_end_matches('Z'))
}

/// Microseconds since the Unix epoch of `t`.
pub fn unix_micros(t: OffsetDateTime) -> i64 {
    let n = t.unix_timestamp_nanos() / 1000;
    i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX })
}

/// The instant `micros` microseconds after the Unix epoch, if representable.
pub fn from_unix_micros(micros: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).ok()
}

/// Parses a `--to` time relative to `now`; the result is in UTC.
/// Errors with `usage.target_time_invalid` (the suggestion lists examples).
pub fn parse_target_time(input: &str, now: OffsetDateTime) -> Result<OffsetDateTime> {
    let now = now.to_offset(UtcOffset::UTC);
    let s = input.trim();
    if s.is_empty() {
        return Err(invalid_time(input, "it is empty"));
    }
    if s.len() > 64 {
        return Err(invalid_time(input, "it is too long"));
    }
    let lower = s.to_ascii_lowercase();
    if lower == "now" {
        return Ok(now);
    }
    if let Some(rest) = lower.strip_suffix("ago") {
        return parse_ago(input, rest.trim(), now);
    }
    for (word, days_back) in [("today", 0i64), ("yesterday", 1)] {
        if let Some(rest) = lower.strip_prefix(word) {
            let clock = rest.trim();
            if clock.is_empty() || !rest.starts_with(char::is_whitespace) {
                return Err(invalid_time(
                    input,
                    &format!("give a clock time after {word:?}, e.g. \"{word} 14:00\""),
                ));
            }
            let t = parse_clock(clock)
                .ok_or_else(|| invalid_time(input, "the clock time must be HH:MM or HH:MM:SS"))?;
            let day = now
                .date()
                .checked_sub(Duration::days(days_back))
                .ok_or_else(|| invalid_time(input, "that is out of range"))?;
            return Ok(PrimitiveDateTime::new(day, t).assume_utc());
        }
    }
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t.to_offset(UtcOffset::UTC));
    }
    // Lower-case `t`/`z` as RFC 3339 allows.
    if let Ok(t) = OffsetDateTime::parse(&s.to_ascii_uppercase(), &Rfc3339) {
        return Ok(t.to_offset(UtcOffset::UTC));
    }
    if let Some(t) = parse_naive_utc(s) {
        return Ok(t);
    }
    Err(invalid_time(input, "unrecognised format"))
}

fn parse_ago(input: &str, rest: &str, now: OffsetDateTime) -> Result<OffsetDateTime> {
    let digits_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    if digits_end == 0 {
        return Err(invalid_time(
            input,
            "expected a whole number before the unit, e.g. \"5 minutes ago\"",
        ));
    }
    let n: i64 = rest[..digits_end]
        .parse()
        .map_err(|_| invalid_time(input, "the number is too large"))?;
    let unit = rest[digits_end..].trim();
    let secs_per: i64 = match unit {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 7 * 86_400,
        "" => {
            return Err(invalid_time(
                input,
                "missing unit (seconds, minutes, hours, days)",
            ))
        }
        _ => {
            return Err(invalid_time(
                input,
                &format!("unknown unit {unit:?} (use seconds, minutes, hours, days or weeks)"),
            ))
        }
    };
    // Refuse anything before year 1 or absurdly far back (100 years).
    let secs = n
        .checked_mul(secs_per)
        .filter(|s| *s <= 100 * 366 * 86_400)
        .ok_or_else(|| invalid_time(input, "that is more than 100 years ago"))?;
    now.checked_sub(Duration::seconds(secs))
        .ok_or_else(|| invalid_time(input, "that is out of range"))
}

/// `HH:MM` or `HH:MM:SS[.ffffff]`.
fn parse_clock(s: &str) -> Option<Time> {
    let (hms, frac) = match s.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let parts: Vec<&str> = hms.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return None;
    }
    let num = |p: &str, max: u8| -> Option<u8> {
        if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse::<u8>().ok().filter(|v| *v <= max)
    };
    let h = num(parts[0], 23)?;
    let m = num(parts[1], 59)?;
    let sec = match parts.get(2) {
        Some(p) => num(p, 59)?,
        None => 0,
    };
    let micro = match frac {
        None => 0,
        Some(f) => {
            if parts.len() != 3
                || f.is_empty()
                || f.len() > 6
                || !f.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            let v: u32 = f.parse().ok()?;
            v * 10u32.pow(6 - f.len() as u32)
        }
    };
    Time::from_hms_micro(h, m, sec, micro).ok()
}

/// `YYYY-MM-DD HH:MM[:SS[.ffffff]]` (space or `T`), as UTC.
fn parse_naive_utc(s: &str) -> Option<OffsetDateTime> {
    let (date, clock) = s.split_once([' ', 'T', 't'])?;
    let mut it = date.split('-');
    let (y, mo, d) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some()
        || y.len() != 4
        || mo.len() != 2
        || d.len() != 2
        || ![y, mo, d]
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let clock = clock.trim();
    let clock = clock
        .strip_suffix(" UTC")
        .or_else(|| clock.strip_suffix(" utc"))
        .unwrap_or(clock);
    let date = Date::from_calendar_date(
        y.parse().ok()?,
        Month::try_from(mo.parse::<u8>().ok()?).ok()?,
        d.parse().ok()?,
    )
    .ok()?;
    Some(PrimitiveDateTime::new(date, parse_clock(clock)?).assume_utc())
}

/// Parses a `--to-lsn` value (`X/Y`, hex). Errors with `usage.lsn_invalid`.
pub fn parse_target_lsn(input: &str) -> Result<Lsn> {
    input.trim().parse::<Lsn>().map_err(|_| {
        Error::of_kind(
            ErrorKind::Usage,
            code::USAGE_LSN_INVALID,
            format!("{input:?} is not an LSN"),
        )
        .with_suggestion(
            "write an LSN as two hex numbers separated by '/', as pg_current_wal_lsn() prints it, e.g. 0/3000028",
        )
    })
}

/// Checks a `--to-name` value: what `pg_create_restore_point` accepts
/// (1 to 63 bytes, no NUL). Errors with `usage.restore_point_name_invalid`.
pub fn parse_target_name(input: &str) -> Result<String> {
    if input.is_empty() || input.len() > 63 || input.contains('\0') {
        return Err(Error::of_kind(
            ErrorKind::Usage,
            code::USAGE_RESTORE_POINT_NAME_INVALID,
            format!("{input:?} cannot be a restore point name (1 to 63 bytes)"),
        )
        .with_suggestion(
            "pass the name given to pg_create_restore_point(), e.g. --to-name before_release",
        ));
    }
    Ok(input.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-26 03:33:20.5 UTC);

    fn p(s: &str) -> Result<OffsetDateTime> {
        parse_target_time(s, NOW)
    }

    #[test]
    fn absolute_forms() {
        assert_eq!(
            p("2026-11-26T03:15:00Z").unwrap(),
            datetime!(2026-11-26 03:15 UTC)
        );
        assert_eq!(
            p("2026-11-26t04:15:00.25+01:00").unwrap(),
            datetime!(2026-11-26 03:15:00.25 UTC)
        );
        assert_eq!(
            p("2026-11-26 03:15").unwrap(),
            datetime!(2026-11-26 03:15 UTC)
        );
        assert_eq!(
            p("2026-11-26 03:15:07").unwrap(),
            datetime!(2026-11-26 03:15:07 UTC)
        );
        assert_eq!(
            p(" 2026-11-26T03:15:07.123 ").unwrap(),
            datetime!(2026-11-26 03:15:07.123 UTC)
        );
        assert_eq!(
            p("2026-11-26 03:15 UTC").unwrap(),
            datetime!(2026-11-26 03:15 UTC)
        );
    }

    #[test]
    fn relative_forms() {
        assert_eq!(p("now").unwrap(), NOW);
        assert_eq!(p("NOW").unwrap(), NOW);
        assert_eq!(p("5 minutes ago").unwrap(), NOW - Duration::minutes(5));
        assert_eq!(p("1 minute ago").unwrap(), NOW - Duration::minutes(1));
        assert_eq!(p("5min ago").unwrap(), NOW - Duration::minutes(5));
        assert_eq!(p("90 s ago").unwrap(), NOW - Duration::seconds(90));
        assert_eq!(p("90s ago").unwrap(), NOW - Duration::seconds(90));
        assert_eq!(p("30 sec ago").unwrap(), NOW - Duration::seconds(30));
        assert_eq!(p("1 second ago").unwrap(), NOW - Duration::seconds(1));
        assert_eq!(p("2 hours ago").unwrap(), NOW - Duration::hours(2));
        assert_eq!(p("2h ago").unwrap(), NOW - Duration::hours(2));
        assert_eq!(p("3 days ago").unwrap(), NOW - Duration::days(3));
        assert_eq!(p("1 d ago").unwrap(), NOW - Duration::days(1));
        assert_eq!(p("1 week ago").unwrap(), NOW - Duration::days(7));
        assert_eq!(p("today 01:00").unwrap(), datetime!(2026-11-26 01:00 UTC));
        assert_eq!(
            p("yesterday 14:00").unwrap(),
            datetime!(2026-11-25 14:00 UTC)
        );
        assert_eq!(
            p("Yesterday 14:00:30").unwrap(),
            datetime!(2026-11-25 14:00:30 UTC)
        );
        // "yesterday" across a month boundary.
        let first = datetime!(2026-12-01 00:10 UTC);
        assert_eq!(
            parse_target_time("yesterday 23:59", first).unwrap(),
            datetime!(2026-11-30 23:59 UTC)
        );
        // A non-UTC `now` is converted first.
        let local = datetime!(2026-11-26 01:00 +05:00);
        assert_eq!(
            parse_target_time("today 12:00", local).unwrap(),
            datetime!(2026-11-25 12:00 UTC)
        );
    }

    #[test]
    fn bad_input() {
        for bad in [
            "",
            "   ",
            "soon",
            "5 fortnights ago",
            "ago",
            "minutes ago",
            "-5 minutes ago",
            "5.5 minutes ago",
            "99999999999999999999 s ago",
            "200 weeks ago 1",
            "101000 days ago",
            "today",
            "yesterday",
            "todayx 12:00",
            "today 25:00",
            "today 12:60",
            "today 12",
            "2026-13-01 00:00",
            "2026-02-30 00:00",
            "2026-11-26",
            "26/11/2026 03:00",
            "2026-11-26 03:00:00.1234567",
            "2026-11-26T03:00:00+25:00",
        ] {
            let e = p(bad).unwrap_err();
            assert_eq!(e.code(), "usage.target_time_invalid", "{bad:?}");
            assert!(e.suggestion().unwrap().contains("5 minutes ago"));
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(
            format_utc(datetime!(2026-11-26 03:15 UTC)),
            "2026-11-26T03:15:00Z"
        );
        assert_eq!(
            format_utc(datetime!(2026-11-26 04:15:00.25 +01:00)),
            "2026-11-26T03:15:00.250000Z"
        );
        assert_eq!(
            format_recovery_target_time(datetime!(2026-11-26 04:15:00.25 +01:00)),
            "2026-11-26T03:15:00.250000+00:00"
        );
        let t = datetime!(2026-11-26 03:15:00.000123 UTC);
        assert_eq!(p(&format_recovery_target_time(t)).unwrap(), t);
        assert_eq!(from_unix_micros(unix_micros(t)), Some(t));
        assert_eq!(p(&format_utc(t)).unwrap(), t);
    }

    #[test]
    fn lsn_and_name() {
        assert_eq!(parse_target_lsn("0/3000028").unwrap(), Lsn(0x300_0028));
        assert_eq!(parse_target_lsn(" 1/a ").unwrap(), Lsn((1 << 32) | 0xA));
        for bad in ["", "3000028", "0/", "x/1", "0/123456789"] {
            assert_eq!(
                parse_target_lsn(bad).unwrap_err().code(),
                "usage.lsn_invalid"
            );
        }
        assert_eq!(parse_target_name("before_batch3").unwrap(), "before_batch3");
        assert_eq!(
            parse_target_name("").unwrap_err().code(),
            "usage.restore_point_name_invalid"
        );
        assert!(parse_target_name(&"x".repeat(64)).is_err());
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC{0,80}") {
            let _ = parse_target_time(&s, NOW);
            let _ = parse_target_lsn(&s);
            let _ = parse_target_name(&s);
        }

        #[test]
        fn ago_is_exact(n in 0i64..100_000, unit in 0usize..4) {
            let (word, secs) = [("seconds", 1i64), ("minutes", 60), ("hours", 3600), ("days", 86_400)][unit];
            let r = parse_target_time(&format!("{n} {word} ago"), NOW);
            if n * secs <= 100 * 366 * 86_400 {
                proptest::prop_assert_eq!(r.unwrap(), NOW - Duration::seconds(n * secs));
            } else {
                proptest::prop_assert!(r.is_err());
            }
        }

        #[test]
        fn structured_input_parses_or_errs(y in 1970i32..2100, mo in 0u8..14, d in 0u8..33, h in 0u8..26, mi in 0u8..62) {
            let s = format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}");
            match parse_target_time(&s, NOW) {
                Ok(t) => {
                    proptest::prop_assert_eq!(t.hour(), h);
                    proptest::prop_assert_eq!(t.minute(), mi);
                }
                Err(e) => proptest::prop_assert_eq!(e.code(), "usage.target_time_invalid"),
            }
        }
    }
}
