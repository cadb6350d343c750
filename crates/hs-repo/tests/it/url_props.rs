//! Property: whatever the repository URL, `open_backend` returns a backend or a `usage.*`
//! error with a suggestion, never a panic. (Opening touches no storage.)

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn any_repository_url_opens_or_is_a_usage_error(
        scheme in prop::sample::select(
            &["file://", "s3://", "gcs://", "azblob://", "sftp://", "scp://", "ftp://", "file:", "", "://"][..]
        ),
        rest in "\\PC{0,60}|[a-z0-9.@:/?&=%_-]{0,60}",
    ) {
        let url = format!("{scheme}{rest}");
        if let Err(e) = hs_repo::open_backend(&url) {
            prop_assert!(
                e.code().starts_with("usage."),
                "URL {url:?} was rejected with {} (not usage.*): {e}",
                e.code()
            );
            prop_assert!(e.suggestion().is_some_and(|s| !s.is_empty()), "URL {url:?}: no suggestion");
        }
    }
}
