//! Every restored file checked against PostgreSQL's `backup_manifest` from the bytes as
//! they are written, so that the default restore does not read the data directory a
//! second time (`pg_verifybackup --skip-checksums` then makes the structural checks).
//!
//! The units of one file are written by parallel tasks and finish out of order. Each
//! returns the CRC-32C of the bytes it wrote; the CRCs are folded in file order
//! ([`hs_pg::crc32c_combine`]) as they arrive, and only the units that finished early
//! wait, so memory is bounded by the units in flight, not by the file or the backup.
//! When a file's last byte is folded in, its CRC-32C is compared with the manifest's.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use hs_base::code;
use hs_pg::{crc32c_combine, crc32c_hex, ManifestFile};

use crate::error::{Error, ErrorKind, Result};

/// A file being checked: what the manifest expects and how far the check got.
#[derive(Debug)]
struct Open {
    target: PathBuf,
    pg_path: String,
    size: u64,
    want: u32,
    /// Bytes folded in so far (from the start of the file) and their CRC-32C.
    done: u64,
    crc: u32,
    /// Units that finished before the ones in front of them: offset -> (length, CRC).
    early: BTreeMap<u64, (u64, u32)>,
}

/// The checks of one restore.
#[derive(Debug)]
pub(super) struct Checks {
    expected: HashMap<String, ManifestFile>,
    open: HashMap<u64, Open>,
    next_id: u64,
    checked: u64,
}

/// What one written unit reports for its file's check.
#[derive(Debug, Clone, Copy)]
pub(super) struct UnitCrc {
    pub(super) id: u64,
    pub(super) offset: u64,
    pub(super) len: u64,
    pub(super) crc: u32,
}

impl Checks {
    /// The checks against the manifest `pg_manifest`; `None` (with the reason) when
    /// they cannot be made from CRC-32C values: the manifest does not parse or one of
    /// its files has another checksum (or none). The caller then runs the full
    /// `pg_verifybackup`, which reads the files back.
    pub(super) fn new(pg_manifest: &str) -> std::result::Result<Checks, String> {
        let expected = hs_pg::backup_manifest_files(pg_manifest).map_err(|e| e.to_string())?;
        if let Some((path, _)) = expected.iter().find(|(_, f)| f.crc32c.is_none()) {
            return Err(format!(
                "backup_manifest gives {path} no CRC-32C checksum (the backup was taken \
                 with another MANIFEST_CHECKSUMS algorithm)"
            ));
        }
        Ok(Checks {
            expected,
            open: HashMap::new(),
            next_id: 0,
            checked: 0,
        })
    }

    /// A file of `size` bytes is about to be written at `target`; `pg_path` is its
    /// path in the manifest. Returns the id its units report under, or `None` when the
    /// manifest does not list it (WAL in `pg_wal/`: `pg_verifybackup` parses it).
    /// An empty file is checked at once.
    pub(super) fn begin(&mut self, pg_path: &str, target: &Path, size: u64) -> Result<Option<u64>> {
        let Some(m) = self.expected.get(pg_path) else {
            return Ok(None);
        };
        let want = m.crc32c.unwrap_or(0);
        if m.size != size {
            return Err(mismatch(
                target,
                format!(
                    "the backup stores {size} bytes, backup_manifest says {}",
                    m.size
                ),
            ));
        }
        let id = self.next_id;
        self.next_id += 1;
        let open = Open {
            target: target.to_path_buf(),
            pg_path: pg_path.to_string(),
            size,
            want,
            done: 0,
            crc: 0,
            early: BTreeMap::new(),
        };
        if size == 0 {
            self.complete(open)?;
        } else {
            self.open.insert(id, open);
        }
        Ok(Some(id))
    }

    /// Folds in a written unit; checks the file when it is complete.
    pub(super) fn unit_done(&mut self, u: UnitCrc) -> Result<()> {
        let Some(f) = self.open.get_mut(&u.id) else {
            return Err(internal(format!(
                "a unit of an unknown file ({}) finished",
                u.id
            )));
        };
        f.early.insert(u.offset, (u.len, u.crc));
        while let Some((len, crc)) = f.early.remove(&f.done) {
            f.crc = crc32c_combine(f.crc, crc, len);
            f.done += len;
        }
        if f.done >= f.size {
            let f = self.open.remove(&u.id).expect("present");
            self.complete(f)?;
        }
        Ok(())
    }

    fn complete(&mut self, f: Open) -> Result<()> {
        if f.done != f.size || !f.early.is_empty() {
            return Err(internal(format!(
                "{} bytes of {} were written as {} bytes",
                f.size,
                f.target.display(),
                f.done
            )));
        }
        if f.crc != f.want {
            return Err(mismatch(
                &f.target,
                format!(
                    "its CRC-32C is {}, backup_manifest says {} for {}",
                    crc32c_hex(f.crc),
                    crc32c_hex(f.want),
                    f.pg_path
                ),
            ));
        }
        self.checked += 1;
        Ok(())
    }

    /// Files checked so far.
    pub(super) fn checked(&self) -> u64 {
        self.checked
    }

    /// Files the manifest lists.
    pub(super) fn listed(&self) -> u64 {
        self.expected.len() as u64
    }

    /// Whether a file was begun but not completed (a restore that ended early).
    pub(super) fn all_complete(&self) -> bool {
        self.open.is_empty()
    }
}

fn mismatch(target: &Path, why: String) -> Error {
    Error::of_kind(
        ErrorKind::Verify,
        code::VERIFY_RESTORED_CHECKSUM_MISMATCH,
        format!(
            "the restored file {} does not match the backup: {why}",
            target.display()
        ),
    )
    .with_suggestion(
        "do not start this directory; run `pg_hardstorage verify` on the backup and restore \
         another one",
    )
}

/// A check that lost track of a file's units: a bug of ours, never a pass.
pub(super) fn internal(what: String) -> Error {
    Error::of_kind(ErrorKind::Io, code::IO_RESTORE_TASK_FAILED, what).with_suggestion(
        "do not start this directory; restore again with --verify=full and report this",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(files: &[(&str, &[u8])]) -> String {
        let list: Vec<String> = files
            .iter()
            .map(|(p, data)| {
                format!(
                    "{{ \"Path\": \"{p}\", \"Size\": {}, \"Last-Modified\": \"2026-12-06 07:00:00 GMT\", \
                     \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"{}\" }}",
                    data.len(),
                    crc32c_hex(hs_pg::crc32c(data))
                )
            })
            .collect();
        format!(
            "{{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n{} ] }}",
            list.join(",\n")
        )
    }

    /// The units of `data` (split at `cuts`), reported in `order`.
    fn feed(c: &mut Checks, id: u64, data: &[u8], cuts: &[usize], order: &[usize]) -> Result<()> {
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(data.len());
        for &i in order {
            let (a, b) = (bounds[i], bounds[i + 1]);
            c.unit_done(UnitCrc {
                id,
                offset: a as u64,
                len: (b - a) as u64,
                crc: hs_pg::crc32c(&data[a..b]),
            })?;
        }
        Ok(())
    }

    #[test]
    fn units_in_any_order_check_the_whole_file() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let text = manifest(&[("base/5/1", &data), ("PG_VERSION", b"15\n"), ("empty", b"")]);
        let mut c = Checks::new(&text).unwrap();
        assert_eq!(c.listed(), 3);
        let id = c
            .begin("base/5/1", Path::new("/t/base/5/1"), 100_000)
            .unwrap()
            .unwrap();
        feed(&mut c, id, &data, &[8192, 16384, 70000], &[2, 0, 3, 1]).unwrap();
        let id = c
            .begin("PG_VERSION", Path::new("/t/PG_VERSION"), 3)
            .unwrap()
            .unwrap();
        feed(&mut c, id, b"15\n", &[], &[0]).unwrap();
        c.begin("empty", Path::new("/t/empty"), 0).unwrap().unwrap();
        assert_eq!(
            c.begin("pg_wal/000000010000000000000002", Path::new("/t/w"), 16)
                .unwrap(),
            None
        );
        assert_eq!(c.checked(), 3);
        assert!(c.all_complete());
    }

    #[test]
    fn a_changed_byte_or_size_is_a_mismatch() {
        let data = vec![7u8; 20_000];
        let text = manifest(&[("base/5/1", &data)]);
        let mut c = Checks::new(&text).unwrap();
        let id = c
            .begin("base/5/1", Path::new("/t/base/5/1"), 20_000)
            .unwrap()
            .unwrap();
        let mut bad = data.clone();
        bad[12_345] ^= 1;
        let e = feed(&mut c, id, &bad, &[8192], &[1, 0]).unwrap_err();
        assert_eq!(e.code(), "verify.restored_checksum_mismatch");
        assert!(e.to_string().contains("/t/base/5/1"), "{e}");
        let e = c.begin("base/5/1", Path::new("/t/x"), 19_999).unwrap_err();
        assert_eq!(e.code(), "verify.restored_checksum_mismatch");
    }

    #[test]
    fn a_manifest_without_crc32c_is_not_checked_here() {
        let text = manifest(&[("a", b"x")]).replace("CRC32C", "SHA256");
        assert!(Checks::new(&text).unwrap_err().contains("no CRC-32C"));
        assert!(Checks::new("not json").is_err());
    }
}
