//! Properties of the restore target parsers beyond "never panics" (the unit tests in
//! target.rs): a rejected `--to`, `--to-lsn` or `--to-name` is always the documented
//! `usage.*` code with a suggestion, also for inputs shaped like valid ones.

use hs_pitr::{parse_target_lsn, parse_target_name, parse_target_time};
use proptest::prelude::*;
use time::macros::datetime;

fn rejected_as(
    what: &str,
    input: &str,
    r: Result<impl std::fmt::Debug, hs_pitr::Error>,
    code: &str,
) -> Result<(), TestCaseError> {
    if let Err(e) = r {
        prop_assert_eq!(e.code(), code, "{} {:?}: {}", what, input, e);
        prop_assert!(
            e.suggestion().is_some_and(|s| !s.is_empty()),
            "{what} {input:?}: no suggestion"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn time_like_garbage_is_target_time_invalid(
        a in 0i64..100_000_000_000,
        b in -5i64..100,
        c in 0i64..100,
        shape in 0u8..6,
        unit in prop::sample::select(&["seconds", "minutes", "hours", "days", "weeks", "fortnights", "s", "m", ""][..]),
    ) {
        let s = match shape {
            0 => format!("{a} {unit} ago"),
            1 => format!("{a:04}-{b:02}-{c:02} {b:02}:{c:02}"),
            2 => format!("{a:04}-{b:02}-{c:02}T{b:02}:{c:02}:{c:02}Z"),
            3 => format!("today {b}:{c}"),
            4 => format!("yesterday {b:02}:{c:02}:{a}"),
            _ => format!("{a}{unit} ago"),
        };
        let now = datetime!(2026-11-26 12:00 UTC);
        rejected_as("--to", &s, parse_target_time(&s, now), "usage.target_time_invalid")?;
    }

    #[test]
    fn lsn_like_garbage_is_lsn_invalid(s in "[0-9A-Fa-fxg/ -]{0,22}") {
        rejected_as("--to-lsn", &s, parse_target_lsn(&s), "usage.lsn_invalid")?;
    }

    #[test]
    fn any_restore_point_name_is_accepted_or_name_invalid(s in "\\PC{0,80}") {
        rejected_as("--to-name", &s, parse_target_name(&s), "usage.restore_point_name_invalid")?;
    }
}
