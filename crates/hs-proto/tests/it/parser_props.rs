//! Properties of the parsers of user input (conninfo, LSN, segment and timeline names):
//! whatever the string, they return a value or a `usage.*` error, never a panic.

use hs_proto::{ConnConfig, Lsn, SegmentName, TimelineId};
use proptest::prelude::*;

fn check<T>(what: &str, input: &str, r: Result<T, hs_proto::Error>) -> Result<(), TestCaseError> {
    if let Err(e) = r {
        prop_assert!(
            e.code().starts_with("usage."),
            "{what} {input:?} was rejected with {} (not usage.*): {e}",
            e.code()
        );
        prop_assert!(
            e.suggestion().is_some_and(|s| !s.is_empty()),
            "{what} {input:?}: no suggestion"
        );
    }
    Ok(())
}

const KEYS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "user",
    "password",
    "dbname",
    "sslmode",
    "sslrootcert",
    "application_name",
    "connect_timeout",
    "channel_binding",
    "passfile",
    "replication",
    "options",
    "target_session_attrs",
    "bogus",
    "",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_conninfo_string_parses_or_is_a_usage_error(s in "\\PC{0,120}") {
        check("conninfo", &s, ConnConfig::parse_with_env(&s, &|_| None))?;
    }

    #[test]
    fn keyword_value_soup_parses_or_is_a_usage_error(
        pairs in proptest::collection::vec(
            (prop::sample::select(KEYS), "[ -~]{0,12}", 0u8..4),
            0..6,
        )
    ) {
        let s: Vec<String> = pairs
            .iter()
            .map(|(k, v, q)| match q {
                0 => format!("{k}={v}"),
                1 => format!("{k} = '{v}'"),
                2 => format!("{k}='{}", v.replace('\'', "\\'")),
                _ => format!("{k}{v}"),
            })
            .collect();
        let s = s.join(" ");
        check("conninfo", &s, ConnConfig::parse_with_env(&s, &|_| None))?;
    }

    #[test]
    fn url_soup_parses_or_is_a_usage_error(
        scheme in prop::sample::select(&["postgresql://", "postgres://", "postgresql:", "http://", ""][..]),
        rest in "[ -~]{0,80}",
    ) {
        let s = format!("{scheme}{rest}");
        check("URL", &s, ConnConfig::parse_with_env(&s, &|_| None))?;
    }

    #[test]
    fn any_lsn_string_parses_or_is_a_usage_error(s in "\\PC{0,24}|[0-9A-Fa-f/]{0,20}") {
        let r = s.parse::<Lsn>();
        if let Ok(l) = &r {
            // What parses prints back to the same position.
            prop_assert_eq!(l.to_string().parse::<Lsn>().ok(), Some(*l));
        }
        check("LSN", &s, r)?;
    }

    #[test]
    fn any_segment_or_timeline_name_parses_or_is_a_usage_error(s in "\\PC{0,30}|[0-9A-F]{20,28}") {
        check("segment name", &s, SegmentName::parse(&s, 16 * 1024 * 1024))?;
        check("timeline", &s, s.parse::<TimelineId>())?;
    }
}
