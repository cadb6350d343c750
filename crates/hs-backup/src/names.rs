//! Deployment names and backup ids. The rules are hs-pg's ([`hs_pg::DeploymentName`],
//! [`hs_pg::backup_id_for`]); this module keeps the paths this crate has always exported.

pub use hs_pg::{backup_id_for, rfc3339, MAX_DEPLOYMENT_LEN};

use crate::error::Result;

/// Checks a deployment name against the one naming rule ([`hs_pg::DeploymentName::parse`]):
/// 1 to 48 characters of `a-z`, `0-9`, `_`, starting with a letter or digit. These names
/// become object-name components in the repository and part of a replication slot name,
/// so nothing else is accepted. Errors with `usage.deployment_invalid`.
pub fn validate_deployment(name: &str) -> Result<()> {
    hs_pg::DeploymentName::parse(name).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The rule itself is tested in hs-pg; this checks the error is the one callers get.
    #[test]
    fn deployment_names() {
        assert!(validate_deployment("main_db").is_ok());
        let e = validate_deployment("Main").unwrap_err();
        assert_eq!(e.code(), "usage.deployment_invalid");
        assert_eq!(e.kind(), crate::error::ErrorKind::Usage);
        assert!(e.suggestion().is_some());
    }
}
