//! PostgreSQL's `backup_manifest` (the JSON document `BASE_BACKUP` sends after the
//! archives): the list of files with their sizes and checksums.
//!
//! A backup keeps it as the server sent it (or, for an incremental backup, rewritten to
//! describe the full files). An incremental backup reads the parent's list to derive
//! checksums; a restore checks every file it writes against it.

use std::collections::HashMap;

use hs_base::{code, Error, ErrorKind, Result};

/// One file of a `backup_manifest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestFile {
    /// Its size in bytes.
    pub size: u64,
    /// Its CRC-32C, when that is the manifest's checksum for it (the server's default;
    /// `None` for `SHA*` checksums or none).
    pub crc32c: Option<u32>,
}

/// The files a `backup_manifest` lists, by path relative to the data directory
/// (`pg_tblspc/<oid>/...` for a tablespace's files). Entries without a path or a size
/// are left out; a text that is not a manifest is `verify.manifest_invalid`.
pub fn backup_manifest_files(text: &str) -> Result<HashMap<String, ManifestFile>> {
    let invalid = |why: String| {
        Error::of_kind(
            ErrorKind::Corrupt,
            code::VERIFY_MANIFEST_INVALID,
            format!("PostgreSQL's backup_manifest {why}"),
        )
    };
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| invalid(format!("does not parse: {e}")))?;
    let files = v["Files"]
        .as_array()
        .ok_or_else(|| invalid("has no Files list".to_string()))?;
    let mut out = HashMap::with_capacity(files.len());
    for f in files {
        let (Some(path), Some(size)) = (f["Path"].as_str(), f["Size"].as_u64()) else {
            continue;
        };
        let crc32c = (f["Checksum-Algorithm"].as_str() == Some("CRC32C"))
            .then(|| f["Checksum"].as_str())
            .flatten()
            .and_then(parse_crc_hex);
        out.insert(path.to_string(), ManifestFile { size, crc32c });
    }
    Ok(out)
}

/// A manifest's CRC-32C: the four bytes of the value in memory order (little-endian),
/// in hex.
fn parse_crc_hex(s: &str) -> Option<u32> {
    if s.len() != 8 {
        return None;
    }
    let mut b = [0u8; 4];
    for (i, out) in b.iter_mut().enumerate() {
        *out = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(u32::from_le_bytes(b))
}

/// How a manifest writes the CRC-32C `crc` (see [`backup_manifest_files`]).
pub fn crc32c_hex(crc: u32) -> String {
    crc.to_le_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_sizes_and_checksums_are_read() {
        let text = r#"{ "PostgreSQL-Backup-Manifest-Version": 1,
"Files": [
{ "Path": "backup_label", "Size": 227, "Last-Modified": "2026-12-06 06:43:27 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "78563412" },
{ "Path": "base/1/112", "Size": 8192, "Last-Modified": "2026-12-06 06:43:27 GMT", "Checksum-Algorithm": "SHA256", "Checksum": "00" },
{ "Path": "global/pg_control", "Size": 8192, "Last-Modified": "2026-12-06 06:43:27 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "zz" },
{ "Size": 1 }
] }"#;
        let f = backup_manifest_files(text).unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(
            f["backup_label"],
            ManifestFile {
                size: 227,
                crc32c: Some(0x1234_5678)
            }
        );
        assert_eq!(f["base/1/112"].crc32c, None);
        assert_eq!(f["global/pg_control"].crc32c, None);
        assert_eq!(crc32c_hex(0x1234_5678), "78563412");
        for bad in ["", "[]", "{\"Files\": 3}"] {
            assert_eq!(
                backup_manifest_files(bad).unwrap_err().code(),
                "verify.manifest_invalid"
            );
        }
    }
}
