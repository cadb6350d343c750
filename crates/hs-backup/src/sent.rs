//! The files of a backup as they arrived, checked against the server's own account of
//! what it sent: its `backup_manifest`.
//!
//! The server computes each file's CRC-32C over the bytes it sends and lists it, with
//! the size, in the manifest it sends after the archives. A backup computes the same
//! from the bytes it receives (after the lz4 stream is decoded and the tar is parsed)
//! and compares them before it writes its own manifest. A file changed on the way (a
//! proxy, a fault in our decoding or parsing), cut short, or never sent, then fails the
//! backup with `verify.received_checksum_mismatch`: nothing is recorded, where a
//! restore would otherwise find it months later. The manifest's own SHA-256
//! (`Manifest-Checksum`) is checked first, so a damaged manifest cannot pass a damaged
//! file.

use std::collections::HashMap;

use hs_base::code;
use hs_pg::{crc32c_hex, ManifestFile};
use hs_repo::{ArchiveEntry, FileKind};

use crate::error::{Error, ErrorKind, Result};
use crate::incremental;

/// A regular file (an archive member) as received: its size and CRC-32C.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sent {
    pub(crate) size: u64,
    pub(crate) crc: u32,
    /// The member was `INCREMENTAL.<name>`, recorded under `<name>`: the manifest
    /// lists it under the member's name.
    pub(crate) incremental_member: bool,
}

/// How many files [`check`] compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct SentCheck {
    /// Files whose size and CRC-32C matched the manifest.
    pub(crate) crc_checked: u64,
    /// Files the manifest lists with another checksum (or none): only their size was
    /// compared.
    pub(crate) size_only: u64,
    /// WAL segments in `pg_wal/`, which the manifest does not list (their
    /// `archive_status` files are listed). `pg_verifybackup` parses them at a restore.
    pub(crate) wal: u64,
}

/// Checks what arrived against `manifest`, the server's `backup_manifest` as sent.
/// `sent` holds one entry per regular file of `archives`, in order (directories and
/// symlinks have none).
///
/// Every file the manifest lists must have arrived with its size and, when the
/// manifest's checksum is CRC-32C, its CRC; every file that arrived must be listed,
/// except the WAL segments in the base archive's `pg_wal/` (any other unlisted file
/// there is refused too).
pub(crate) fn check(manifest: &str, archives: &[ArchiveEntry], sent: &[Sent]) -> Result<SentCheck> {
    if !incremental::manifest_checksum_ok(manifest) {
        return Err(mismatch(
            "its Manifest-Checksum does not match its content".to_string(),
        ));
    }
    let mut listed: HashMap<String, ManifestFile> = hs_pg::backup_manifest_files(manifest)
        .map_err(|e| mismatch(format!("it does not parse: {e}")))?;
    let files = archives.iter().flat_map(|a| {
        a.files
            .iter()
            .filter(|f| f.kind == FileKind::File)
            .map(move |f| (a, f))
    });
    let mut done = SentCheck::default();
    let mut sent = sent.iter();
    for (archive, f) in files {
        let s = sent
            .next()
            .ok_or_else(|| internal(format!("no size and CRC-32C kept for {}", f.path)))?;
        let member = if s.incremental_member {
            incremental::member_of(&f.path)
        } else {
            f.path.clone()
        };
        let path = archive.pg_path(&member);
        let Some(m) = listed.remove(&path) else {
            if archive.tablespace_oid.is_none() && is_wal_segment(&path) {
                done.wal += 1;
                continue;
            }
            return Err(mismatch(format!(
                "{path} arrived ({} bytes) but the manifest does not list it",
                s.size
            )));
        };
        if m.size != s.size || m.crc32c.is_some_and(|crc| crc != s.crc) {
            let listed_crc = m.crc32c.map_or("no CRC-32C".to_string(), crc32c_hex);
            return Err(mismatch(format!(
                "{path}: the manifest lists {} bytes with {listed_crc}, but {} bytes with CRC-32C {} arrived",
                m.size,
                s.size,
                crc32c_hex(s.crc)
            )));
        }
        if m.crc32c.is_some() {
            done.crc_checked += 1;
        } else {
            done.size_only += 1;
        }
    }
    if sent.next().is_some() {
        return Err(internal(
            "more sizes and CRC-32Cs kept than files received".to_string(),
        ));
    }
    if !listed.is_empty() {
        let mut missing: Vec<&String> = listed.keys().collect();
        missing.sort();
        let shown: Vec<&str> = missing.iter().take(5).map(|p| p.as_str()).collect();
        return Err(mismatch(format!(
            "it lists {} file(s) that never arrived: {}{}",
            missing.len(),
            shown.join(", "),
            if missing.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        )));
    }
    Ok(done)
}

/// A count that lost track of the files: a bug of ours, never a pass.
fn internal(what: String) -> Error {
    Error::new(code::INTERNAL_UNEXPECTED, what)
        .with_suggestion("take the backup again and report this with the server version")
}

/// `pg_wal/<segment file name>`: a WAL segment the backup carries, which the server does
/// not list in its manifest.
fn is_wal_segment(path: &str) -> bool {
    path.strip_prefix("pg_wal/")
        .is_some_and(|name| hs_pg::parse_wal_segment_name(name).is_some())
}

fn mismatch(what: String) -> Error {
    Error::of_kind(
        ErrorKind::Verify,
        code::VERIFY_RECEIVED_CHECKSUM_MISMATCH,
        format!("what arrived is not what the server's backup_manifest says it sent: {what}"),
    )
    .with_suggestion(
        "nothing was recorded (the packs it uploaded are unreferenced; `repo gc` reclaims \
         them); take the backup again. If it fails the same way, take it with --max-rate (the \
         server then sends its archives uncompressed) and report it with the server version",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hs_repo::FileEntry;

    use crate::incremental::sha256_hex;
    use crate::incremental::tests::manifest_with as manifest;

    fn entry(path: &str, kind: FileKind) -> FileEntry {
        FileEntry {
            path: path.to_string(),
            kind,
            mode: 0o600,
            mtime: 0,
            size: 0,
            chunks: Vec::new(),
            chunk_lists: Vec::new(),
        }
    }

    fn archive(oid: Option<u32>, files: &[(&str, FileKind)]) -> ArchiveEntry {
        ArchiveEntry {
            name: oid.map_or("base.tar".to_string(), |o| format!("{o}.tar")),
            tablespace_oid: oid,
            tablespace_location: oid.map(|o| format!("/ts/{o}")),
            files: files.iter().map(|(p, k)| entry(p, k.clone())).collect(),
        }
    }

    fn sent(size: u64, crc: u32) -> Sent {
        Sent {
            size,
            crc,
            incremental_member: false,
        }
    }

    fn error_of(r: Result<SentCheck>) -> String {
        let e = r.unwrap_err();
        assert_eq!(e.code(), "verify.received_checksum_mismatch", "{e}");
        assert!(e.suggestion().is_some_and(|s| s.contains("--max-rate")));
        e.to_string()
    }

    #[test]
    fn matching_files_pass_and_wal_and_directories_are_not_listed() {
        let m = manifest(&[
            ("PG_VERSION", 3, 7),
            ("base/5/16384", 8192, 0xDEAD_BEEF),
            ("pg_tblspc/16400/PG_15_202209061/5/16401", 16384, 9),
        ]);
        let archives = [
            archive(
                None,
                &[
                    ("base", FileKind::Dir),
                    ("PG_VERSION", FileKind::File),
                    ("base/5/16384", FileKind::File),
                    ("pg_wal/000000010000000000000002", FileKind::File),
                ],
            ),
            archive(Some(16400), &[("PG_15_202209061/5/16401", FileKind::File)]),
        ];
        let got = [
            sent(3, 7),
            sent(8192, 0xDEAD_BEEF),
            sent(16 << 20, 1),
            sent(16384, 9),
        ];
        let done = check(&m, &archives, &got).unwrap();
        assert_eq!(
            done,
            SentCheck {
                crc_checked: 3,
                size_only: 0,
                wal: 1
            }
        );
    }

    #[test]
    fn a_changed_byte_a_short_file_a_missing_or_unlisted_file_fail() {
        let m = manifest(&[("PG_VERSION", 3, 7), ("base/5/16384", 8192, 0xDEAD_BEEF)]);
        let archives = [archive(
            None,
            &[
                ("PG_VERSION", FileKind::File),
                ("base/5/16384", FileKind::File),
            ],
        )];
        let crc = error_of(check(&m, &archives, &[sent(3, 7), sent(8192, 0xDEAD_BEEE)]));
        assert!(
            crc.contains("base/5/16384") && crc.contains("8192 bytes"),
            "{crc}"
        );
        let short = error_of(check(&m, &archives, &[sent(3, 7), sent(4096, 0xDEAD_BEEF)]));
        assert!(short.contains("4096 bytes"), "{short}");

        let fewer = [archive(None, &[("PG_VERSION", FileKind::File)])];
        let missing = error_of(check(&m, &fewer, &[sent(3, 7)]));
        assert!(
            missing.contains("1 file(s) that never arrived: base/5/16384"),
            "{missing}"
        );

        let more = [archive(
            None,
            &[
                ("PG_VERSION", FileKind::File),
                ("base/5/16384", FileKind::File),
                ("base/5/99999", FileKind::File),
            ],
        )];
        let unlisted = error_of(check(
            &m,
            &more,
            &[sent(3, 7), sent(8192, 0xDEAD_BEEF), sent(0, 0)],
        ));
        assert!(unlisted.contains("base/5/99999 arrived"), "{unlisted}");
        // In pg_wal/, only WAL segments may be unlisted.
        let other = [archive(
            None,
            &[
                ("PG_VERSION", FileKind::File),
                ("base/5/16384", FileKind::File),
                ("pg_wal/000000010000000000000002.partial", FileKind::File),
            ],
        )];
        let in_wal = error_of(check(
            &m,
            &other,
            &[sent(3, 7), sent(8192, 0xDEAD_BEEF), sent(5, 5)],
        ));
        assert!(
            in_wal.contains("pg_wal/000000010000000000000002.partial arrived"),
            "{in_wal}"
        );
        // pg_wal/ is exempt in the base archive only.
        let ts = [
            archive(
                None,
                &[
                    ("PG_VERSION", FileKind::File),
                    ("base/5/16384", FileKind::File),
                ],
            ),
            archive(
                Some(16400),
                &[("pg_wal/000000010000000000000002", FileKind::File)],
            ),
        ];
        let in_ts = error_of(check(
            &m,
            &ts,
            &[sent(3, 7), sent(8192, 0xDEAD_BEEF), sent(1, 1)],
        ));
        assert!(
            in_ts.contains("pg_tblspc/16400/pg_wal/000000010000000000000002 arrived"),
            "{in_ts}"
        );
    }

    #[test]
    fn a_damaged_manifest_fails_before_any_file_is_compared() {
        let m = manifest(&[("PG_VERSION", 3, 7)]);
        let archives = [archive(None, &[("PG_VERSION", FileKind::File)])];
        assert!(check(&m, &archives, &[sent(3, 7)]).is_ok());
        // The file's listed size changed, the manifest's checksum not: refused, though
        // the file now "matches".
        let tampered = m.replace("\"Size\": 3", "\"Size\": 4");
        let e = error_of(check(&tampered, &archives, &[sent(4, 7)]));
        assert!(e.contains("Manifest-Checksum"), "{e}");
    }

    #[test]
    fn an_incremental_member_is_compared_under_its_sent_name() {
        let m = manifest(&[("base/5/INCREMENTAL.16384", 8204, 0xAABB_CCDD)]);
        let archives = [archive(None, &[("base/5/16384", FileKind::File)])];
        let member = Sent {
            size: 8204,
            crc: 0xAABB_CCDD,
            incremental_member: true,
        };
        assert_eq!(check(&m, &archives, &[member]).unwrap().crc_checked, 1);
        // The member must have arrived as listed.
        let changed = Sent { crc: 1, ..member };
        let e = error_of(check(&m, &archives, &[changed]));
        assert!(
            e.contains("base/5/INCREMENTAL.16384: the manifest lists 8204 bytes"),
            "{e}"
        );
        let as_full = error_of(check(&m, &archives, &[sent(8204, 0xAABB_CCDD)]));
        assert!(as_full.contains("base/5/16384 arrived"), "{as_full}");
    }

    #[test]
    fn a_manifest_without_crc32c_compares_sizes() {
        let m = manifest(&[("PG_VERSION", 3, 7)]).replace("CRC32C", "NONE");
        // The checksum covers the text, so recompute it for the edited manifest.
        let body = &m[..m.rfind("\"Manifest-Checksum\"").unwrap()];
        let m = format!(
            "{body}\"Manifest-Checksum\": \"{}\"}}\n",
            sha256_hex(body.as_bytes())
        );
        let archives = [archive(None, &[("PG_VERSION", FileKind::File)])];
        let done = check(&m, &archives, &[sent(3, 12345)]).unwrap();
        assert_eq!((done.crc_checked, done.size_only), (0, 1));
        error_of(check(&m, &archives, &[sent(2, 12345)]));
    }
}
