//! Properties of the restore target parsers beyond "never panics" (the unit tests in
//! target.rs). Each parser is checked against a model written from its documentation:
//! an input the model accepts must parse to exactly the model's value, and an input the
//! model rejects must be refused with the documented `usage.*` code and a suggestion. So
//! a parser that accepts everything fails the `*_garbage_is_*_invalid` properties (their
//! inputs are invalid by construction), and one that rejects everything fails the
//! `*_parsed_exactly` ones (which generate both kinds and require both outcomes).

use hs_pg::Lsn;
use hs_pitr::{parse_target_lsn, parse_target_name, parse_target_time};
use proptest::prelude::*;
use time::macros::datetime;
use time::{Date, Duration, Month, OffsetDateTime, PrimitiveDateTime, Time};

const NOW: OffsetDateTime = datetime!(2026-11-26 12:00 UTC);

/// `r` is an error with exactly `code` and a suggestion.
fn rejected_as<T: std::fmt::Debug>(
    what: &str,
    input: &str,
    r: Result<T, hs_pitr::Error>,
    code: &str,
) -> Result<(), TestCaseError> {
    match r {
        Ok(v) => Err(TestCaseError::fail(format!(
            "{what} {input:?} was accepted as {v:?}"
        ))),
        Err(e) => {
            prop_assert_eq!(e.code(), code, "{} {:?}: {}", what, input, e);
            prop_assert!(
                e.suggestion().is_some_and(|s| !s.is_empty()),
                "{what} {input:?}: no suggestion"
            );
            Ok(())
        }
    }
}

/// `r` is what the model expects: `Some(v)` parses to exactly `v`, `None` is refused
/// with `code`.
fn as_modelled<T: std::fmt::Debug + PartialEq>(
    what: &str,
    input: &str,
    r: Result<T, hs_pitr::Error>,
    model: Option<T>,
    code: &str,
) -> Result<(), TestCaseError> {
    match model {
        Some(want) => match r {
            Ok(got) => {
                prop_assert_eq!(got, want, "{} {:?}", what, input);
                Ok(())
            }
            Err(e) => Err(TestCaseError::fail(format!(
                "{what} {input:?} was refused ({e}), expected {want:?}"
            ))),
        },
        None => rejected_as(what, input, r, code),
    }
}

/// Seconds per unit of `N <unit> ago`, as documented (`None`: not a unit).
fn unit_seconds(unit: &str) -> Option<i64> {
    Some(match unit {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 7 * 86_400,
        _ => return None,
    })
}

const UNITS: &[&str] = &[
    "s",
    "sec",
    "seconds",
    "min",
    "minutes",
    "h",
    "hours",
    "d",
    "days",
    "w",
    "weeks",
    "fortnights",
    "m",
    "secondz",
    "",
];

/// `N <unit> ago`: at most 100 years back.
fn model_ago(n: i64, unit: &str) -> Option<OffsetDateTime> {
    let secs = n.checked_mul(unit_seconds(unit)?)?;
    (secs <= 100 * 366 * 86_400).then(|| NOW - Duration::seconds(secs))
}

/// A calendar date and clock time, if they exist.
fn model_datetime(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> Option<OffsetDateTime> {
    let small = |v: i64, max: i64| (0..=max).contains(&v).then_some(v as u8);
    let date = Date::from_calendar_date(
        i32::try_from(y).ok().filter(|y| (0..=9999).contains(y))?,
        Month::try_from(small(mo, 12)?).ok()?,
        small(d, 31)?,
    )
    .ok()?;
    let t = Time::from_hms(small(h, 23)?, small(mi, 59)?, small(s, 59)?).ok()?;
    Some(PrimitiveDateTime::new(date, t).assume_utc())
}

/// Numbers in every range the shapes below care about: small (valid fields), four
/// digits (years), and far too large.
fn number() -> impl Strategy<Value = i64> {
    prop_oneof![-3i64..70, 0i64..10_000, 0i64..100_000_000_000]
}

/// A time-like input and what the documented grammar makes of it.
fn time_input() -> impl Strategy<Value = (String, Option<OffsetDateTime>)> {
    (
        number(),
        number(),
        number(),
        0u8..7,
        prop::sample::select(UNITS),
    )
        .prop_map(|(a, b, c, shape, unit)| {
            let clock = |h: i64, m: i64, s: i64| {
                let ok = |v: i64, max: i64| (0..=max).contains(&v);
                (ok(h, 23) && ok(m, 59) && ok(s, 59))
                    .then(|| Time::from_hms(h as u8, m as u8, s as u8).ok())
                    .flatten()
            };
            // `{v:02}` of a number above 99 has more than two digits: not a field.
            let two = |v: i64| (0..=99).contains(&v);
            match shape {
                0 if a >= 0 => (format!("{a} {unit} ago"), model_ago(a, unit)),
                1 => (
                    format!("{a:04}-{b:02}-{c:02} {b:02}:{c:02}"),
                    model_datetime(a, b, c, b, c, 0).filter(|_| two(b) && two(c)),
                ),
                2 => (
                    format!("{a:04}-{b:02}-{c:02}T{b:02}:{c:02}:{c:02}Z"),
                    model_datetime(a, b, c, b, c, c).filter(|_| two(b) && two(c)),
                ),
                3 => (
                    format!("today {b}:{c:02}"),
                    clock(b, c, 0)
                        .filter(|_| two(b) && two(c))
                        .map(|t| PrimitiveDateTime::new(NOW.date(), t).assume_utc()),
                ),
                4 => (
                    format!("yesterday {b:02}:{c:02}:{a}"),
                    clock(b, c, a).filter(|_| two(b) && two(c)).map(|t| {
                        PrimitiveDateTime::new(NOW.date().previous_day().unwrap(), t).assume_utc()
                    }),
                ),
                5 if a >= 0 => (format!("{a}{unit} ago"), model_ago(a, unit)),
                _ => (format!("{b}:{c} tomorrow"), None),
            }
        })
}

/// An LSN-like input and its value: `X/Y`, each 1 to 8 hex digits, spaces around.
fn model_lsn(s: &str) -> Option<Lsn> {
    let (hi, lo) = s.trim().split_once('/')?;
    let part = |p: &str| {
        (!p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u64::from_str_radix(p, 16).ok())
            .flatten()
    };
    Some(Lsn((part(hi)? << 32) | part(lo)?))
}

/// Hex digits, 1 to 8 of them.
fn hex_part() -> impl Strategy<Value = String> {
    "[0-9A-Fa-f]{1,8}"
}

/// An LSN that is wrong by construction: no slash, two slashes, an empty side, a side of
/// more than 8 hex digits, or a character that is not a hex digit in a side.
fn lsn_garbage() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9A-Fa-f]{0,17}",
        (hex_part(), hex_part(), hex_part()).prop_map(|(a, b, c)| format!("{a}/{b}/{c}")),
        hex_part().prop_map(|a| format!("{a}/")),
        hex_part().prop_map(|a| format!("/{a}")),
        (hex_part(), "[0-9A-Fa-f]{9,16}").prop_map(|(a, b)| format!("{a}/{b}")),
        ("[0-9A-Fa-f]{9,16}", hex_part()).prop_map(|(a, b)| format!("{a}/{b}")),
        (
            hex_part(),
            hex_part(),
            "[g-zG-Z_.:+ -]",
            0usize..8,
            any::<bool>()
        )
            .prop_map(|(a, b, bad, at, left)| {
                let put = |p: &str| {
                    let i = at.min(p.len());
                    format!("{}{bad}{}", &p[..i], &p[i..])
                };
                if left {
                    format!("{}/{b}", put(&a))
                } else {
                    format!("{a}/{}", put(&b))
                }
            }),
    ]
    // A space the generator put at either end would be trimmed away: keep it inside.
    .prop_filter("inner garbage only", |s| s.trim() == s)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn time_like_garbage_is_target_time_invalid(
        a in 0i64..100_000_000_000,
        month in prop_oneof![Just(0i64), 13i64..100],
        hour in 24i64..100,
        minute in 60i64..100,
        shape in 0u8..7,
        unit in prop::sample::select(&["fortnights", "m", "secondz", "", "ago", "years"][..]),
    ) {
        // Each shape breaks the grammar in a way no valid input has.
        let s = match shape {
            0 => format!("{a} {unit} ago"),
            1 => format!("2026-{month:02}-01 12:00"),
            2 => format!("2026-11-01T{hour:02}:00:00Z"),
            3 => format!("today {hour}:00"),
            4 => format!("yesterday 12:{minute}"),
            5 => format!("{}-11-26 12:00", 10_000 + a),
            _ => format!("{} weeks ago", 5_300 + a),
        };
        rejected_as("--to", &s, parse_target_time(&s, NOW), "usage.target_time_invalid")?;
    }

    #[test]
    fn time_like_input_is_parsed_exactly_or_target_time_invalid((s, model) in time_input()) {
        as_modelled("--to", &s, parse_target_time(&s, NOW), model, "usage.target_time_invalid")?;
    }

    #[test]
    fn lsn_like_garbage_is_lsn_invalid(s in lsn_garbage()) {
        prop_assert!(model_lsn(&s).is_none(), "the generator made a valid LSN {s:?}");
        rejected_as("--to-lsn", &s, parse_target_lsn(&s), "usage.lsn_invalid")?;
    }

    #[test]
    fn lsn_like_input_is_parsed_exactly_or_lsn_invalid(s in "[0-9A-Fa-fxg/ -]{0,22}") {
        as_modelled("--to-lsn", &s, parse_target_lsn(&s), model_lsn(&s), "usage.lsn_invalid")?;
    }

    #[test]
    fn every_lsn_round_trips(v in any::<u64>(), lower in any::<bool>(), pad in " {0,2}") {
        let shown = Lsn(v).to_string();
        let s = format!("{pad}{}{pad}", if lower { shown.to_lowercase() } else { shown });
        as_modelled("--to-lsn", &s, parse_target_lsn(&s), Some(Lsn(v)), "usage.lsn_invalid")?;
    }

    #[test]
    fn restore_point_name_is_accepted_exactly_or_name_invalid(s in "(\\PC|\\x00){0,80}") {
        // What pg_create_restore_point accepts: 1 to 63 bytes, no NUL; kept as given.
        let model = (!s.is_empty() && s.len() <= 63 && !s.contains('\0')).then(|| s.clone());
        as_modelled(
            "--to-name",
            &s,
            parse_target_name(&s),
            model,
            "usage.restore_point_name_invalid",
        )?;
    }
}
