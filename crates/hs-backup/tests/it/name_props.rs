//! Property: deployment names are accepted exactly when they match the documented rule
//! (1 to 48 of a-z, 0-9, `_`, not starting with `_`); anything else is
//! `usage.deployment_invalid`, never a panic.

use hs_backup::{validate_deployment, MAX_DEPLOYMENT_LEN};
use proptest::prelude::*;

fn documented_rule(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_DEPLOYMENT_LEN
        && !s.starts_with('_')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn deployment_names_follow_the_documented_rule(
        s in "\\PC{0,60}|[a-z0-9_]{0,60}|[a-zA-Z0-9_./ -]{0,12}"
    ) {
        match validate_deployment(&s) {
            Ok(()) => prop_assert!(documented_rule(&s), "{s:?} was accepted"),
            Err(e) => {
                prop_assert!(!documented_rule(&s), "{s:?} was rejected: {e}");
                prop_assert_eq!(e.code(), "usage.deployment_invalid");
            }
        }
    }
}
