//! Deployment names and backup ids: what is allowed and how ids are made.

use std::fmt;
use std::str::FromStr;

use hs_base::{code, Error, Result};

/// Longest deployment name accepted. The replication slot name
/// `pg_hardstorage_<deployment>` must fit PostgreSQL's 63-byte identifier limit.
pub const MAX_DEPLOYMENT_LEN: usize = 48;

/// Longest name the repository layer accepts for a deployment or a backup id
/// ([`is_repository_name`]).
pub const MAX_REPOSITORY_NAME_LEN: usize = 128;

/// The name of a deployment (one PostgreSQL cluster) in a repository.
///
/// # One rule, and the repository's laxer check
///
/// A deployment name is 1 to [`MAX_DEPLOYMENT_LEN`] (48) characters of `a-z`, `0-9` and `_`,
/// starting with a letter or digit: [`DeploymentName::parse`] enforces exactly that, with
/// code `usage.deployment_invalid`. It is the rule every name a user types goes through (the
/// CLI, the config file, the API server), because the name becomes part of a replication
/// slot name (`pg_hardstorage_<deployment>`, 63 bytes at most, lower case) and an object-name
/// component in the repository.
///
/// The repository layer (hs-repo) checks names it is handed with [`is_repository_name`]
/// instead: 1 to 128 of `A-Za-z0-9._-`, not starting with `.` (the same check as for
/// backup ids). That check only keeps object names safe (no `/`, no `..`, no empty component); it is kept
/// laxer on purpose, not merged into the rule above, because hs-repo is a library whose
/// public API has accepted such names since the first repository format: a repository
/// written by an embedder under a name like `Orders-DB.eu` must stay readable, listable
/// and verifiable. Every name [`DeploymentName::parse`] accepts passes it too.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeploymentName(String);

impl DeploymentName {
    /// Checks `name` against the one naming rule (see the type's documentation). Errors with
    /// code `usage.deployment_invalid` and a suggestion.
    pub fn parse(name: &str) -> Result<DeploymentName> {
        if !DeploymentName::is_valid(name) {
            return Err(Error::new(
                code::USAGE_DEPLOYMENT_INVALID,
                format!("invalid deployment name {name:?}"),
            )
            .with_suggestion(
                "use 1 to 48 characters of a-z, 0-9 and _, starting with a letter or digit, e.g. `main_db`",
            ));
        }
        Ok(DeploymentName(name.to_owned()))
    }

    /// Whether `name` follows the one naming rule ([`DeploymentName::parse`] accepts it).
    pub fn is_valid(name: &str) -> bool {
        let ok_chars = name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        let ok_start = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        !name.is_empty() && name.len() <= MAX_DEPLOYMENT_LEN && ok_chars && ok_start
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DeploymentName {
    type Err = Error;

    fn from_str(s: &str) -> Result<DeploymentName> {
        DeploymentName::parse(s)
    }
}

impl fmt::Display for DeploymentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for DeploymentName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Whether the repository layer accepts `s` as a deployment name or backup id: 1 to
/// [`MAX_REPOSITORY_NAME_LEN`] (128) of `A-Za-z0-9._-`, not starting with `.`. These become
/// object-name components, so this keeps them safe; what a user may type is the stricter
/// [`DeploymentName::parse`].
pub fn is_repository_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_REPOSITORY_NAME_LEN
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Makes a backup id from a UTC time: `YYYYMMDDTHHMMSSZ`, so ids sort by start time (the
/// [`rfc3339`] form without its `-` and `:`).
pub fn backup_id_for(t: time::OffsetDateTime) -> String {
    rfc3339(t).replace(['-', ':'], "")
}

/// Formats a time as RFC 3339 UTC with second precision (the form manifests store).
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_names() {
        for ok in ["main", "db1", "0db", "a_b", &"x".repeat(48)] {
            assert!(DeploymentName::parse(ok).is_ok(), "{ok}");
            assert!(is_repository_name(ok), "{ok}");
            assert_eq!(ok.parse::<DeploymentName>().unwrap().as_str(), ok);
        }
        for bad in ["", "_x", "Main", "a-b", "a/b", "a b", "..", &"x".repeat(49)] {
            let e = DeploymentName::parse(bad).unwrap_err();
            assert_eq!(e.code(), "usage.deployment_invalid", "{bad}");
            assert_eq!(e.to_string(), format!("invalid deployment name {bad:?}"));
            assert!(e.suggestion().is_some());
        }
    }

    #[test]
    fn repository_names_are_laxer() {
        for ok in ["Main", "a-b", "a.b", "_x", &"x".repeat(128)] {
            assert!(is_repository_name(ok), "{ok}");
        }
        for bad in ["", ".x", "..", "a/b", "a b", "ä", &"x".repeat(129)] {
            assert!(!is_repository_name(bad), "{bad}");
        }
    }

    #[test]
    fn backup_ids_sort_by_time() {
        let a = time::macros::datetime!(2026-01-02 03:04:05 UTC);
        let b = time::macros::datetime!(2026-11-02 00:00:00 UTC);
        assert_eq!(backup_id_for(a), "20260102T030405Z");
        assert!(backup_id_for(a) < backup_id_for(b));
        assert!(is_repository_name(&backup_id_for(a)));
        assert_eq!(rfc3339(a), "2026-01-02T03:04:05Z");
    }
}
