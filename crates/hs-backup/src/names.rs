//! Deployment names and backup ids: what is allowed and how ids are made.

use crate::error::{Error, ErrorKind, Result};

/// Longest deployment name accepted. The replication slot name
/// `pg_hardstorage_<deployment>` must fit PostgreSQL's 63-byte identifier limit.
pub const MAX_DEPLOYMENT_LEN: usize = 48;

/// Checks a deployment name: 1 to 48 characters of `a-z`, `0-9`, `_`, starting with a
/// letter or digit. These names become object-name components in the repository and
/// part of a replication slot name, so nothing else is accepted.
pub fn validate_deployment(name: &str) -> Result<()> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    let ok_start = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if name.is_empty() || name.len() > MAX_DEPLOYMENT_LEN || !ok_chars || !ok_start {
        return Err(Error::of_kind(
            ErrorKind::Usage,
            "usage.deployment_invalid",
            format!("invalid deployment name {name:?}"),
        )
        .with_suggestion(
            "use 1 to 48 characters of a-z, 0-9 and _, starting with a letter or digit, e.g. `main_db`",
        ));
    }
    Ok(())
}

/// Makes a backup id from a UTC time: `YYYYMMDDTHHMMSSZ`, so ids sort by start time.
pub fn backup_id_for(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Formats a time as RFC 3339 UTC with second precision.
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
            assert!(validate_deployment(ok).is_ok(), "{ok}");
        }
        for bad in ["", "_x", "Main", "a-b", "a/b", "a b", "..", &"x".repeat(49)] {
            let e = validate_deployment(bad).unwrap_err();
            assert_eq!(e.code(), "usage.deployment_invalid", "{bad}");
            assert!(e.suggestion().is_some());
        }
    }

    #[test]
    fn backup_ids_sort_by_time() {
        let a = time::macros::datetime!(2026-01-02 03:04:05 UTC);
        let b = time::macros::datetime!(2026-11-02 00:00:00 UTC);
        assert_eq!(backup_id_for(a), "20260102T030405Z");
        assert!(backup_id_for(a) < backup_id_for(b));
        assert_eq!(rfc3339(a), "2026-01-02T03:04:05Z");
    }
}
